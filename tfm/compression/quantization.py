"""int8 weights for tfm models: per-output-channel symmetric int8 with float scales, in two modes.

- `"int8"`: W8A8 dynamic, Keras' `quantize("int8")`: each input row is quantized to int8 at run time (abs-max
  per token), the product accumulates in int32 and is rescaled by both scales. Outside XLA it runs on
  `tfm.kernels`' op (byte dot products, AVX512-VNNI where present), bit for bit Keras' result.
- `"int8_weight_only"`: the activations stay float; the int8 weight is rescaled after the product. Outside XLA
  (the int8 decode loop, eager calls) it runs on `tfm.kernels`' op, which streams int8 bytes.

Scales follow Keras' convention: `q = round(w * scale)`, `w ~ q / scale`, with `scale = 127 / max|w|` over each
output channel (a kernel's column; an embedding's row, which is also the tied LM head's output channel). The
projections and feed-forward layers (tfm's `Dense`, through Keras' own int8 machinery, which refuses subclasses
unless asked) and the token embedding are quantized; layer norms, position embeddings and task heads stay float.
A quantized task records its mode in its Keras config, so `.keras` files rebuild the int8 variables before the
weights load; SavedModel exports trace TensorFlow's own ops only (`tfm.kernels.portable`).
"""

import keras
import numpy as np

from tfm.layers.embeddings import TokenEmbedding, int8_rows  # noqa: F401  (int8_rows: part of the API)

MODES = ("int8", "int8_weight_only")


def keras_config(mode):
    """Keras' `Int8QuantizationConfig` for a mode: per-column weights, and per-row activations unless weight-only."""
    from keras.quantizers import AbsMaxQuantizer, Int8QuantizationConfig

    if mode not in MODES:
        raise ValueError(f"quantization mode {mode!r} is not one of {', '.join(MODES)}")
    activations = AbsMaxQuantizer(axis=-1) if mode == "int8" else None
    return Int8QuantizationConfig(weight_quantizer=AbsMaxQuantizer(axis=0), activation_quantizer=activations)


def quantize(task, mode):
    """Quantizes a built task's backbone in place: its projections, feed-forward layers and token embedding.

    Args:
        task: a built `tfm.tasks` model.
        mode: `"int8"` (W8A8 dynamic) or `"int8_weight_only"`.

    Returns:
        `task`.
    """
    config = keras_config(mode)
    if getattr(task, "quantization", None):
        raise ValueError(f"{task.name} is already quantized ({task.quantization}); quantize the float model once")
    from tfm.peft.core import hook_points

    if any(held.merged for _, _, held in hook_points(task)):
        raise ValueError("a merged PEFT update is part of the float kernels: unmerge it before quantizing")
    for layer in task.backbone._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.Dense):  # tfm's Dense (and BERT's pooler, a Keras Dense)
            layer.quantize("int8", type_check=False, config=config)
        elif isinstance(layer, TokenEmbedding):
            layer.quantize("int8", config=config)
    object.__setattr__(task, "quantization", mode)  # plain data, outside Keras' state tracking
    task.reset_compiled_functions()
    return task


MAX_ROWS_OUTSIDE_XLA = 8  # the int8 op's register tile (AVX-512; 4 rows on AVX2, then two passes)


def decodes_outside_xla(task, batch_size):
    """Whether `task`'s generate loop for `batch_size` rows runs outside XLA: int8 weights (W8A8 only where the CPU
    has byte dot products), the op available here, and at most 8 rows (the op's register tile). A few rows' step
    is a weight read, which the op streams as int8 bytes into all rows at once; XLA's dequantize-and-dot is
    float32's speed at best, and its int8 x int8 dot (W8A8) slower still. On a 2-core AMD EPYC (GPT-2 small,
    16 + 64 tokens, a day its memory read 25 GB/s) the weight-only loop outside XLA stepped in 14 / 28 / 35 ms at
    batch 1 / 4 / 8 against XLA's 19 / 31 / 39, and in 58 against 51 ms at batch 16."""
    from tfm import kernels

    mode = getattr(task, "quantization", None)
    return (mode in MODES and batch_size <= MAX_ROWS_OUTSIDE_XLA and kernels.active() is not None
            and (mode == "int8_weight_only" or kernels.byte_dot_products()))


def quantization_error_bound(x, w, activations_quantized):
    """Elementwise bound on `|x @ w - x @ dequantize(quantize(w))|` for one layer (numpy, per-channel scales).

    Rounding moves each weight by at most half a step, `max|w[:, j]| / 254`, so column `j` of the product moves
    by at most `sum_i |x_i|` times that. With int8 activations each input also moves by half its own step
    `max|x| / 254`, which adds `(max|x| / 254) * sum_i (|w[i, j]| + w_step[j])`.

    Args:
        x: float `(M, K)` inputs.
        w: float `(K, N)` weights.
        activations_quantized: bool, the W8A8 mode.
    """
    x, w = np.asarray(x, "float64"), np.asarray(w, "float64")
    w_step = np.max(np.abs(w), axis=0) / 254.0  # (N,)
    bound = np.abs(x).sum(axis=1, keepdims=True) * w_step[None, :]
    if activations_quantized:
        x_step = np.max(np.abs(x), axis=1, keepdims=True) / 254.0  # (M, 1)
        bound = bound + x_step * (np.abs(w).sum(axis=0)[None, :] + w.shape[0] * w_step[None, :])
    return bound


def cast_weights(task, dtype="bfloat16"):
    """A copy of `task` whose backbone stores (and computes in) `dtype`: half the bytes of float32 per weight.

    The copy is rebuilt from the task's config with the backbone's dtype policy set to `dtype` (Keras variables
    cannot change dtype in place); heads built with float32 layers (the classifier's logits) stay float32.

    Args:
        task: a float32 `tfm.tasks` model, not int8-quantized.
        dtype: `"bfloat16"` (or `"float16"`).

    Returns:
        The new task.
    """
    if getattr(task, "quantization", None):
        raise ValueError(f"{task.name} has int8 weights ({task.quantization}); cast the float model")
    config = task.get_config()
    backbone = dict(config["backbone"])
    backbone["config"] = {**backbone["config"], "dtype": dtype}
    config["backbone"] = backbone
    copy = type(task).from_config(config)
    copy.set_weights(task.get_weights())  # each value cast to its variable's dtype
    return copy
