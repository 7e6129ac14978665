"""int8 quantization: the op against numpy (W8A8: against Keras' quantizer, bit for bit), quantized layers within the int8 error bound, W8A8 against a numpy
W8A8, the op path against the portable (XLA) path, generation outside XLA, QLoRA training, save/load."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfm
from tfm import kernels
from tfm.compression.quantization import int8_rows, quantization_error_bound
from tfm.layers.dense import Dense

TINY_GPT = {"vocabulary_size": 64, "num_layers": 2, "num_heads": 2, "hidden_dim": 32, "intermediate_dim": 64,
            "max_sequence_length": 32, "dropout": 0.0}


def _gpt(seed=0):
    keras.utils.set_random_seed(seed)
    lm = tfm.tasks.CausalLM(tfm.models.GptBackbone(**TINY_GPT))
    rng = np.random.default_rng(seed)
    for w in lm.weights:  # spread weights: an untrained tiny model would predict one token everywhere
        w.assign(rng.normal(0.0, 0.3, w.shape).astype("float32"))
    return lm


def _inputs(batch=2, length=6, seed=1):
    ids = np.random.default_rng(seed).integers(0, TINY_GPT["vocabulary_size"], (batch, length)).astype("int32")
    return {"token_ids": ids, "padding_mask": np.ones_like(ids)}


def test_the_op_builds_here():
    assert kernels.load() is not None, kernels.unavailable_reason()
    flags = kernels._cpu_flags().split()
    assert kernels.byte_dot_products() == ("avx512_vnni" in flags and "avx512bw" in flags)


# Rows 1, 2-8 and past 8 (the op's register tile holds 8 rows of x), columns in whole tiles of 32 and past them, K past
# one 64-row chunk, odd output counts for the transposed layout (its tile is two columns).
@pytest.mark.parametrize("lead,k,n,transpose", [((1,), 768, 1000, False), ((1,), 203, 40, False),
                                                ((3,), 37, 513, False), ((2, 4), 100, 7, False), ((1,), 64, 1001, True),
                                                ((5, 1), 33, 9, True), ((0,), 16, 4, False), ((2,), 0, 3, False),
                                                ((8,), 130, 96, False), ((9,), 200, 70, False), ((2, 9), 65, 33, False),
                                                ((8,), 130, 97, True), ((12,), 40, 31, True), ((4, 1), 768, 64, True)])
def test_int8_matmul_op_equals_numpy(lead, k, n, transpose):
    rng = np.random.default_rng(sum(lead) + k + n)
    x = rng.normal(size=lead + (k,)).astype("float32")
    w = rng.integers(-127, 128, (n, k) if transpose else (k, n)).astype("int8")
    scale = rng.uniform(10.0, 200.0, n).astype("float32")
    dense = w.T if transpose else w
    expected = (x.astype("float64") @ dense.astype("float64")) / scale
    got = kernels.int8_matmul(x, w, scale, transpose_w=transpose).numpy()
    assert got.shape == lead + (n,)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(x).sum(axis=-1).max(initial=1)))


# W8A8: one row (the streaming loop), groups of up to 4 rows and past them, whole 64-column tiles and the columns
# past them, K not a multiple of 4 (rows past vpdpbusd's groups of four) and of 64 (the transposed tail).
@pytest.mark.parametrize("lead,k,n,transpose", [((1,), 768, 2304, False), ((1,), 130, 200, False),
                                                ((3,), 256, 128, False), ((9,), 66, 64, False), ((2, 3), 7, 3, False),
                                                ((8,), 768, 96, False), ((1,), 768, 1001, True), ((5,), 100, 33, True),
                                                ((2, 4), 64, 7, True)])
def test_w8a8_op_equals_keras_quantizer_and_an_integer_product(lead, k, n, transpose):
    rng = np.random.default_rng(sum(lead) + k + n)
    x = rng.normal(size=lead + (k,)).astype("float32") * 3.0
    x[..., 0] = 40.0  # an outlier channel, as GPT-2's hidden states have
    w = rng.integers(-127, 128, (n, k) if transpose else (k, n)).astype("int8")
    scale = rng.uniform(10.0, 200.0, n).astype("float32")
    x_q, x_scale = keras.quantizers.abs_max_quantize(x, axis=-1)  # Keras' own W8A8 input quantizer
    dense = (w.T if transpose else w).astype(np.int64)
    product = (np.asarray(x_q).astype(np.int64) @ dense).astype("float32")  # exact in int64, then as Keras casts
    expected = product / (scale * np.asarray(x_scale))
    got = kernels.int8_matmul(x, w, scale, transpose_w=transpose, quantize_x=True).numpy()
    assert got.shape == lead + (n,)
    np.testing.assert_array_equal(got, expected)  # integer sums: bit for bit


def test_w8a8_op_refuses_a_depth_its_int32_sums_cannot_hold():
    k = kernels.MAX_W8A8_DEPTH
    w, scale = np.full((k + 1, 2), 127, "int8"), np.ones(2, "float32")
    # At the limit every lane holds its largest sum, k products (127 + 128) * 127: still exact (127 * 127 * k).
    y = kernels.int8_matmul(np.ones((1, k), "float32"), w[:k], scale, quantize_x=True).numpy()
    np.testing.assert_allclose(y, [[127.0 * k] * 2], rtol=1e-6)
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"at most {k} products in int32; x has K = {k + 1}"):
        kernels.int8_matmul(np.ones((1, k + 1), "float32"), w, scale, quantize_x=True)


@pytest.mark.parametrize("quantize_x", [False, True])
def test_int8_matmul_op_gradient_is_the_dequantized_kernels(quantize_x):
    # W8A8 too: the rounding of x passes the gradient straight through, as Keras' int8 Dense's custom gradient does.
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(3, 1, 8)).astype("float32"))
    w = rng.integers(-127, 128, (8, 5)).astype("int8")
    scale = rng.uniform(10.0, 100.0, 5).astype("float32")
    upstream = rng.normal(size=(3, 1, 5)).astype("float32")
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = kernels.int8_matmul(x, w, scale, quantize_x=quantize_x)
    grad = tape.gradient(y, x, output_gradients=upstream).numpy()
    np.testing.assert_allclose(grad, upstream @ (w.astype("float32") / scale).T, rtol=1e-5, atol=1e-5)


def test_int8_rows_are_symmetric_per_channel():
    w = np.array([[0.5, -2.0], [-0.25, 1.0], [0.1, 0.0]], "float32")
    q, scale = int8_rows(w, axis=0)  # one scale per column
    np.testing.assert_allclose(scale, [127 / 0.5, 127 / 2.0])
    assert q.dtype == np.int8 and q[:, 0].tolist() == [127, -64, 25] and q[:, 1].tolist() == [-127, 64, 0]


@pytest.mark.parametrize("mode", ["int8", "int8_weight_only"])
def test_quantized_dense_is_within_the_int8_error_bound(mode):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 5, 32)).astype("float32")
    task = _gpt()
    dense = task.backbone.get_layer("transformer_layer_0").intermediate_dense
    w, b = [v.numpy() for v in (dense.kernel, dense.bias)]
    exact = x.reshape(-1, 32) @ w + b
    tfm.compression.quantize(task, mode)
    assert dense.quantization_mode == "int8" and dense._kernel.dtype == "int8"
    got = dense(x).numpy().reshape(-1, w.shape[1])
    error = np.abs(got - exact)
    bound = quantization_error_bound(x.reshape(-1, 32), w, activations_quantized=mode == "int8")
    assert (error <= bound + 1e-5).all()
    assert 0 < error.max() < 0.05 * np.abs(exact).max()  # really quantized, and close


def test_w8a8_lm_head_equals_a_numpy_w8a8():
    task = _gpt()
    embedding = task.backbone.token_embedding
    table = embedding.embeddings.numpy()
    tfm.compression.quantize(task, "int8")
    hidden = np.random.default_rng(4).normal(size=(3, 32)).astype("float32")
    w_scale = 127 / np.abs(table).max(axis=1)
    w_q = np.round(table * w_scale[:, None]).astype(np.int64)
    x_scale = 127 / np.abs(hidden).max(axis=1, keepdims=True)
    x_q = np.round(hidden * x_scale).astype(np.int64)
    expected = (x_q @ w_q.T) / (x_scale * w_scale[None, :])
    np.testing.assert_allclose(embedding(hidden, reverse=True).numpy(), expected, rtol=1e-5, atol=1e-5)
    ids = np.array([[0, 5, 63]])
    np.testing.assert_allclose(embedding(ids).numpy()[0], w_q[[0, 5, 63]] / w_scale[[0, 5, 63], None], rtol=1e-6)


@pytest.mark.parametrize("mode", ["int8", "int8_weight_only"])
def test_op_path_equals_the_portable_path(mode):
    task = _gpt()
    tfm.compression.quantize(task, mode)
    x = _inputs()
    eager = task(x).numpy()  # outside XLA: the op
    compiled = tf.function(lambda inputs: task(inputs), jit_compile=True)(x).numpy()  # XLA: dequantize + dot
    with kernels.portable():
        portable = task(x).numpy()
    np.testing.assert_allclose(eager, compiled, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(eager, portable, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mode", ["int8", "int8_weight_only"])
def test_quantized_generation_save_and_load(mode, tmp_path):
    task = _gpt()
    x = _inputs(batch=9)  # rows 0-1 go together, row 0 alone, all nine together
    float_logits = task(x).numpy()
    tfm.compression.quantize(task, mode)
    logits = task(x).numpy()
    assert np.abs(logits - float_logits).max() < 0.1 * np.abs(float_logits).max()
    nine = task.generate(x["token_ids"], max_new_tokens=5)
    out = task.generate(x["token_ids"][:2], max_new_tokens=5)
    one_row = task.generate(x["token_ids"][:1], max_new_tokens=5)
    function = task.generate_function(5)
    if _decodes_outside_xla(mode):  # up to 8 rows outside XLA (tfm's op; 2 and 1 row: a trace each), 9 rows in XLA
        assert function.outside_xla.experimental_get_tracing_count() == 2
        assert function.compiled.experimental_get_tracing_count() == 1
        assert function.compiled.function_spec.jit_compile and not function.outside_xla.function_spec.jit_compile
    else:  # W8A8 without byte dot products: all in XLA
        assert function.function_spec.jit_compile is True and not hasattr(function, "outside_xla")
    # The loop's tokens equal a step-by-step greedy decode of the full forward pass.
    tokens = x["token_ids"]
    for _ in range(5):
        step = task({"token_ids": tokens, "padding_mask": np.ones_like(tokens)}).numpy()
        tokens = np.concatenate([tokens, step[:, -1].argmax(-1)[:, None].astype("int32")], axis=1)
    np.testing.assert_array_equal(nine["token_ids"], tokens)
    np.testing.assert_array_equal(out["token_ids"], tokens[:2])
    np.testing.assert_array_equal(one_row["token_ids"], tokens[:1])
    x = {key: value[:2] for key, value in x.items()}
    logits = task(x).numpy()
    task.save(tmp_path / "q.keras")
    loaded = keras.saving.load_model(tmp_path / "q.keras")
    assert loaded.quantization == mode and loaded.backbone.token_embedding.embeddings.dtype == "int8"
    np.testing.assert_array_equal(loaded(x).numpy(), logits)
    np.testing.assert_array_equal(loaded.generate(x["token_ids"], max_new_tokens=5)["token_ids"], out["token_ids"])


def _decodes_outside_xla(mode):
    """Weight-only always (the op builds here); W8A8 where the CPU has byte dot products (AVX512-VNNI)."""
    return mode == "int8_weight_only" or kernels.byte_dot_products()


@pytest.mark.parametrize("mode", ["int8", "int8_weight_only"])
def test_beam_search_outside_xla_equals_the_compiled_loop(mode):
    if not _decodes_outside_xla(mode):
        pytest.skip("W8A8 decodes in XLA on a CPU without AVX512-VNNI: there is no loop outside XLA to compare")
    task = tfm.compression.quantize(_gpt(), mode)
    x = _inputs(batch=3)
    function = task.generate_function(6, sampler="beam")
    args = (tf.constant(x["token_ids"]), tf.constant(x["padding_mask"]), tf.constant([0, 0], tf.int64))
    outside, compiled = function.outside_xla(*args), function.compiled(*args)  # 3 rows x 5 beams (the default)
    np.testing.assert_array_equal(outside["token_ids"].numpy(), compiled["token_ids"].numpy())
    np.testing.assert_array_equal(outside["padding_mask"].numpy(), compiled["padding_mask"].numpy())
    assert outside["token_ids"].shape == (3, 12)


def test_lora_trains_on_a_quantized_base_and_leaves_the_int8_weights_alone():
    task = _gpt()
    tfm.compression.quantize(task, "int8_weight_only")
    tfm.peft.apply(task, method="lora", rank=4, alpha=8, targets=["query", "value", "intermediate"])
    frozen = {v.path: v.numpy() for v in task.weights if v.dtype == "int8"}
    assert frozen and not any(v.dtype == "int8" for v in task.trainable_weights)
    x = _inputs(batch=8, length=8, seed=5)
    labels = np.roll(x["token_ids"], -1, axis=1)
    task.compile(optimizer=keras.optimizers.Adam(3e-2))
    before = task.evaluate(x, labels, verbose=0, return_dict=True)["loss"]
    task.fit(x, labels, epochs=40, batch_size=8, verbose=0)
    after = task.evaluate(x, labels, verbose=0, return_dict=True)["loss"]
    assert after < 0.8 * before  # measured 4.43 -> 3.17 (2-core Intel Xeon)
    for v in task.weights:
        if v.path in frozen:
            np.testing.assert_array_equal(v.numpy(), frozen[v.path])


def test_bad_quantize_calls_are_refused():
    task = _gpt()
    with pytest.raises(ValueError, match="int4"):
        tfm.compression.quantize(task, "int4")
    with pytest.raises(ValueError, match="int8 only"):
        task.quantize("float8")
    task.quantize("int8", config=keras.quantizers.Int8QuantizationConfig(activation_quantizer=None))
    assert task.quantization == "int8_weight_only"
    with pytest.raises(ValueError, match="already quantized"):
        task.quantize("int8")
    tfm.peft.apply(task, method="lora", rank=2, targets=["query"])
    with pytest.raises(ValueError, match="cannot merge"):
        tfm.peft.merge(task)


def test_keras_quantize_of_a_plain_dense_equals_tfm_dense():
    """tfm's Dense goes through Keras' own int8 machinery: same numbers as a quantized keras.layers.Dense."""
    rng = np.random.default_rng(6)
    ours, theirs = Dense(16), keras.layers.Dense(16)
    ours.build((None, 24))
    theirs.build((None, 24))
    weights = [rng.normal(size=(24, 16)).astype("float32"), rng.normal(size=16).astype("float32")]
    ours.set_weights(weights)
    theirs.set_weights(weights)
    ours.quantize("int8", type_check=False)
    theirs.quantize("int8")
    x = rng.normal(size=(3, 24)).astype("float32")
    np.testing.assert_array_equal(ours(x).numpy(), theirs(x).numpy())


def test_bfloat16_weights_halve_the_bytes_generate_and_save(tmp_path):
    task = _gpt()
    x = _inputs()
    float_logits = task(x).numpy()
    cast = tfm.compression.cast_weights(task)
    assert {w.dtype for w in cast.weights} == {"bfloat16"}  # a causal LM has no float32 head
    assert sum(np.dtype(keras.backend.standardize_dtype(w.dtype)).itemsize * np.prod(w.shape) for w in cast.weights) \
        == sum(w.numpy().nbytes for w in task.weights) / 2
    for a, b in zip(cast.weights, task.weights):  # each weight is its float value rounded to bfloat16
        np.testing.assert_array_equal(np.asarray(a.numpy(), "float32"),
                                      tf.cast(tf.cast(b.numpy(), tf.bfloat16), tf.float32).numpy())
    logits = np.asarray(cast(x), "float32")
    # bfloat16 keeps 8 significant bits (relative rounding 2^-9): through two blocks the logits move by a few %.
    assert 0 < np.abs(logits - float_logits).max() < 0.1 * np.abs(float_logits).max()
    tokens = x["token_ids"]
    for _ in range(5):  # the generate loop equals a step-by-step greedy decode of the bfloat16 forward pass
        step = np.asarray(cast({"token_ids": tokens, "padding_mask": np.ones_like(tokens)}), "float32")
        tokens = np.concatenate([tokens, step[:, -1].argmax(-1)[:, None].astype("int32")], axis=1)
    out = cast.generate(x["token_ids"], max_new_tokens=5)
    np.testing.assert_array_equal(out["token_ids"], tokens)
    cast.save(tmp_path / "bf16.keras")
    loaded = keras.saving.load_model(tmp_path / "bf16.keras")
    assert loaded.backbone.token_embedding.embeddings.dtype == "bfloat16"
    np.testing.assert_array_equal(np.asarray(loaded(x), "float32"), logits)
    tfm.compression.quantize(task, "int8")
    with pytest.raises(ValueError, match="cast the float model"):
        tfm.compression.cast_weights(task)
