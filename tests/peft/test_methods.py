"""The PEFT methods' math on tiny models: identity at step 0, parameter counts, merge, switching, saving."""

import numpy as np
import pytest

import keras
import tfm
from tests.peft.helpers import BATCH, METHODS, classifier, spread, tiny_bert
from tfm.peft import core
from tfm.training.config import ConfigError


@pytest.mark.parametrize("method", ["lora", "adalora", "houlsby", "pfeiffer"])
def test_update_methods_leave_the_model_unchanged_at_step_zero(method):
    task = classifier(pooling="mean")
    hidden = keras.Model(task.input, task.backbone(task.input)["sequence_output"])
    before_logits, before_hidden = task(BATCH).numpy(), hidden(BATCH).numpy()
    tfm.peft.apply(task, method=method, **METHODS[method])
    assert core.parameter_counts(task)["peft"] > 0
    np.testing.assert_array_equal(task(BATCH).numpy(), before_logits)  # B = 0, lambda = 0, up-projection = 0
    np.testing.assert_array_equal(hidden(BATCH).numpy(), before_hidden)
    spread(task)
    assert np.abs(task(BATCH).numpy() - before_logits).max() > 1e-3  # ... and trained weights do change it


def test_prefix_attention_equals_a_numpy_reference():
    task = spread(tfm.peft.apply(classifier(), method="prefix", num_virtual_tokens=3))
    attention = task.backbone.transformer_layers[1].self_attention
    x = np.random.default_rng(1).normal(size=(3, 7, 8)).astype("float32")
    mask = BATCH["padding_mask"]
    got = attention(x, attention_mask=tfm.layers.padding_attention_mask(mask)).numpy()
    # Reference: separate heads, prefix keys/values of layer 1 before the sequence's, always visible.
    kernel, bias = attention.qkv_dense.kernel.numpy(), attention.qkv_dense.bias.numpy()
    q, k, v = np.split(x @ kernel + bias, 3, axis=-1)
    kv = core.adapter_layers(task, "default")[-1].call().numpy()[1]  # (2, P, H) of layer 1
    k, v = np.concatenate([np.broadcast_to(kv[0], (3, 3, 8)), k], 1), np.concatenate([np.broadcast_to(kv[1], (3, 3, 8)), v], 1)
    visible = np.concatenate([np.ones((3, 3)), mask], 1)[:, None, None, :]
    heads = lambda t: t.reshape(3, -1, 2, 4).transpose(0, 2, 1, 3)  # noqa: E731
    scores = heads(q) @ heads(k).transpose(0, 1, 3, 2) / 2.0 + (1 - visible) * -1e9
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    context = (probs @ heads(v)).transpose(0, 2, 1, 3).reshape(3, 7, 8)
    out = attention.output_dense
    np.testing.assert_allclose(got, context @ out.kernel.numpy() + out.bias.numpy(), atol=1e-5)


def test_prompt_tokens_are_prepended_seen_by_every_block_and_dropped_before_the_heads():
    task = spread(tfm.peft.apply(classifier(), method="prompt", num_virtual_tokens=3))
    backbone = task.backbone
    got = backbone(BATCH)
    prompts = core.adapter_layers(task, "default")[0].embeddings.numpy()
    tfm.peft.set_adapter(task, None)  # the bare blocks, run by hand on [prompts; embedded tokens]
    embedded = keras.Model(backbone.input, backbone.get_layer("embeddings_dropout").output)(BATCH).numpy()
    x = np.concatenate([np.broadcast_to(prompts, (3, 3, 8)), embedded], axis=1)
    mask = np.concatenate([np.ones((3, 3), "int32"), BATCH["padding_mask"]], axis=1)
    for block in backbone.transformer_layers:
        x = block(x, padding_mask=mask).numpy()
    np.testing.assert_allclose(got["sequence_output"].numpy(), x[:, 3:], atol=1e-5)
    pooled = backbone.pooled_dense(x[:, 3]).numpy()  # the real [CLS], not a virtual token
    np.testing.assert_allclose(got["pooled_output"].numpy(), pooled, atol=1e-5)


def test_parameter_counts_on_all_minilm_l6_v2_shapes_match_hand_counts():
    """all-MiniLM-L6-v2: 6 layers, hidden 384, 12 heads, feed-forward 1536, 30,522 tokens (random weights)."""
    backbone = tfm.models.BertBackbone(vocabulary_size=30522, num_layers=6, num_heads=12, hidden_dim=384,
                                       intermediate_dim=1536, max_sequence_length=512)
    task = tfm.tasks.TextClassifier(backbone, num_classes=2)
    base, head = 22_713_216, 384 * 2 + 2  # HF PEFT counts 22,786,944 with the 73,728 LoRA parameters below
    assert core.parameter_counts(task)["total"] == base + head
    expected = {
        "lora": ({"rank": 8, "targets": ["query", "value"]}, 6 * 2 * 8 * (384 + 384)),  # 73,728 as HF PEFT
        "adalora": ({"rank": 12, "target_rank": 8, "targets": ["query", "value"], "total_step": 100},
                    6 * 2 * 12 * (384 + 384 + 1)),
        "houlsby": ({"bottleneck_dim": 64}, 6 * 2 * (2 * 384 * 64 + 64 + 384)),
        "pfeiffer": ({"bottleneck_dim": 64}, 6 * (2 * 384 * 64 + 64 + 384)),
        "prompt": ({"num_virtual_tokens": 20}, 20 * 384),
        "prefix": ({"num_virtual_tokens": 20}, 6 * 2 * 20 * 384),
    }
    added = 0
    for method, (keywords, count) in expected.items():
        tfm.peft.apply(task, method=method, name=method, **keywords)
        added += count
        counts = core.parameter_counts(task)
        assert (counts["peft"], counts["trainable"]) == (count, count + head), method
        assert counts["total"] == base + head + added, method  # AdaLoRA's EMAs are state, not parameters
    tfm.peft.set_adapter(task, "lora")
    assert core.parameter_counts(task)["trainable_percent"] == pytest.approx(100 * (73_728 + head) / (base + head
                                                                                                    + added))


@pytest.mark.parametrize("method", ["lora", "adalora"])
def test_merge_equals_the_adapted_model_and_unmerge_restores_the_kernels(method):
    task = spread(tfm.peft.apply(classifier(), method=method, **METHODS[method]))
    kernels = [w.numpy() for w in task.backbone.weights]
    adapted = task(BATCH).numpy()
    tfm.peft.merge(task)
    assert any(np.abs(a - w.numpy()).max() > 1e-3 for a, w in zip(kernels, task.backbone.weights))
    np.testing.assert_allclose(task(BATCH).numpy(), adapted, atol=1e-5)
    with pytest.raises(ValueError, match="already merged"):
        tfm.peft.merge(task)
    tfm.peft.unmerge(task)
    for before, w in zip(kernels, task.backbone.weights):
        np.testing.assert_allclose(w.numpy(), before, atol=1e-6)
    np.testing.assert_allclose(task(BATCH).numpy(), adapted, atol=1e-5)
    other = spread(tfm.peft.apply(classifier(), method="houlsby", bottleneck_dim=2))
    with pytest.raises(ValueError, match="LoRA or AdaLoRA"):
        tfm.peft.merge(other)


def test_adapters_switch_by_name_with_their_own_heads():
    task = classifier()
    bare = task(BATCH).numpy()
    spread(tfm.peft.apply(task, method="lora", name="sst2", rank=2), "sst2", seed=1)
    task.get_layer("logits").kernel.assign(np.full((8, 3), 0.3, "float32"))
    sst2 = task(BATCH).numpy()
    spread(tfm.peft.apply(task, method="houlsby", name="news", bottleneck_dim=2), "news", seed=2)
    task.get_layer("logits").kernel.assign(np.full((8, 3), -0.2, "float32"))
    news = task(BATCH).numpy()
    assert core.active_adapter(task) == "news" and np.abs(news - sst2).max() > 1e-3
    tfm.peft.set_adapter(task, "sst2")
    np.testing.assert_array_equal(task(BATCH).numpy(), sst2)
    assert task.get_layer("logits").kernel.numpy()[0, 0] == pytest.approx(0.3)
    assert {v.path for v in task.trainable_weights} == {v.path for v in core.adapter_variables(task, "sst2")} | {
        v.path for v in core.head_variables(task)}
    tfm.peft.set_adapter(task, "news")
    np.testing.assert_array_equal(task(BATCH).numpy(), news)
    tfm.peft.set_adapter(task, None)  # the bare model with the head it had before any adapter
    np.testing.assert_array_equal(task(BATCH).numpy(), bare)
    with pytest.raises(ValueError, match="no adapter 'nope'"):
        tfm.peft.set_adapter(task, "nope")


@pytest.mark.parametrize("method", sorted(METHODS))
def test_keras_file_round_trip_rebuilds_the_adapter(method, tmp_path):
    task = spread(tfm.peft.apply(classifier(), method=method, **METHODS[method]))
    expected = task(BATCH).numpy()
    task.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert loaded.peft_adapters == task.peft_adapters and core.active_adapter(loaded) == "default"
    np.testing.assert_array_equal(loaded(BATCH).numpy(), expected)
    assert len(loaded.trainable_weights) == len(task.trainable_weights)


def test_also_train_layer_norms_and_biases():
    task = tfm.peft.apply(classifier(), method="lora", rank=2, also_train=["layer_norm", "bias"])
    names = {v.path.split("/")[-1] for v in task.trainable_weights}
    assert names == {"lora_a", "lora_b", "gamma", "beta", "bias"}
    lora_only = tfm.peft.apply(classifier(), method="lora", rank=2, also_train=[])
    assert {v.path.split("/")[-1] for v in lora_only.trainable_weights} == {"lora_a", "lora_b"}


def _layer_norms(task):
    return {v.path: v.numpy() for v in core.base_variables(task, ["layer_norm"])}


def _two_adapters_training_layer_norms():
    """A classifier with adapters "one" and "two", each with its own head and shifted LayerNorms ("two" active);
    returns it, the bare model's outputs and LayerNorms, and each adapter's outputs."""
    task = classifier()
    bare, bare_norms = task(BATCH).numpy(), _layer_norms(task)
    assert len(bare_norms) == 2 * (1 + 2 * 2)  # gamma and beta of the embeddings' norm and two per block
    shifted = {}
    for index, name in enumerate(("one", "two")):
        tfm.peft.apply(task, method="houlsby", name=name, bottleneck_dim=2, also_train=["head", "layer_norm"])
        # A new adapter starts from the bare model's LayerNorms, whatever the previous adapter made of them.
        for path, value in _layer_norms(task).items():
            np.testing.assert_array_equal(value, bare_norms[path])
        spread(task, name, seed=index)
        for v in core.base_variables(task, ["layer_norm"]):  # what training would do to them
            v.assign(v.numpy() + 0.25 * (index + 1))
        shifted[name] = task(BATCH).numpy()
    return task, bare, bare_norms, shifted


def test_layer_norms_an_adapter_trains_are_its_own_when_switching():
    task, bare, bare_norms, shifted = _two_adapters_training_layer_norms()
    tfm.peft.set_adapter(task, "one")
    np.testing.assert_array_equal(task(BATCH).numpy(), shifted["one"])
    assert all(np.allclose(value, bare_norms[path] + 0.25) for path, value in _layer_norms(task).items())
    tfm.peft.set_adapter(task, "two")
    np.testing.assert_array_equal(task(BATCH).numpy(), shifted["two"])
    tfm.peft.set_adapter(task, None)
    np.testing.assert_array_equal(task(BATCH).numpy(), bare)


def test_keras_file_keeps_each_adapters_head_and_layer_norms_and_the_bare_models(tmp_path):
    task, bare, _, shifted = _two_adapters_training_layer_norms()
    task.save(tmp_path / "model.keras")  # "two" active: "one"'s head and LayerNorms are held outside the variables
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert core.active_adapter(loaded) == "two"
    np.testing.assert_array_equal(loaded(BATCH).numpy(), shifted["two"])
    tfm.peft.set_adapter(loaded, "one")
    np.testing.assert_array_equal(loaded(BATCH).numpy(), shifted["one"])
    tfm.peft.set_adapter(loaded, None)
    np.testing.assert_array_equal(loaded(BATCH).numpy(), bare)
    tfm.peft.set_adapter(loaded, "two")
    np.testing.assert_array_equal(loaded(BATCH).numpy(), shifted["two"])


def test_bad_settings_name_the_key():
    with pytest.raises(ConfigError, match=r"peft.targets has 'qkv'; valid targets: \['query'"):
        tfm.peft.apply(classifier(), method="lora", targets=["qkv"])
    with pytest.raises(ConfigError, match=r"peft.target_rank \(9\) must be <= rank \(8\)"):
        tfm.peft.apply(classifier(), method="adalora", target_rank=9)
    with pytest.raises(ConfigError, match="peft.method"):
        tfm.peft.apply(classifier(), method="ia3")
    task = tfm.peft.apply(classifier(), method="lora")
    with pytest.raises(ValueError, match="already applied"):
        tfm.peft.apply(task, method="lora")
    gpt = tfm.tasks.CausalLM(tfm.models.GptBackbone(vocabulary_size=20, num_layers=1, num_heads=2, hidden_dim=8,
                                                    intermediate_dim=16, max_sequence_length=16))
    with pytest.raises(ValueError, match="prompt tuning is implemented for encoders"):
        tfm.peft.apply(gpt, method="prompt")


def test_mixed_precision_keeps_adapter_weights_in_float32():
    keras.config.set_dtype_policy("mixed_bfloat16")
    task = spread(tfm.peft.apply(classifier(), method="lora", rank=2))
    assert {v.dtype for v in core.adapter_variables(task, "default")} == {"float32"}
    hidden = task.backbone(BATCH)["sequence_output"]
    assert hidden.dtype == "bfloat16" and np.isfinite(keras.ops.convert_to_numpy(hidden).astype("float32")).all()
    assert tiny_bert(dtype="mixed_bfloat16").dtype_policy.name == "mixed_bfloat16"
