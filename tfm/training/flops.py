"""Analytical training FLOPs per token and a measured peak, for MFU."""

import time

import numpy as np
import tensorflow as tf


def training_flops_per_token(backbone, sequence_length, predictions_per_token=1.0):
    """Forward + backward FLOPs per token: 6 x matmul parameters + attention, plus the output head.

    Matmul parameters per token are the transformer blocks' (12 H^2-ish, read from the config);
    attention scores and values cost 12 x layers x hidden x sequence_length (PaLM appendix B).
    The vocabulary projection counts only for the fraction of tokens that are predicted (MLM:
    masked positions only; causal LM: every token).

    Args:
        backbone: a tfm BertBackbone or GptBackbone.
        sequence_length: int.
        predictions_per_token: float, fraction of tokens that reach the vocabulary projection.
    """
    h, i, layers = backbone.hidden_dim, backbone.intermediate_dim, backbone.num_layers
    block_params = 4 * h * h + 2 * h * i
    head_params = backbone.vocabulary_size * h + (h * h if predictions_per_token < 1.0 else 0)
    attention = 12 * layers * h * sequence_length
    return 6 * layers * block_params + attention + 6 * head_params * predictions_per_token


def measure_peak_flops(size=2048, repeats=5, dtype="float32"):
    """Measured FLOP/s of a large square matmul on the default device (best of `repeats`).

    Args:
        size: int, matrix side.
        repeats: int.
        dtype: str.
    """
    a = tf.constant(np.random.default_rng(0).standard_normal((size, size)), dtype=dtype)
    matmul = tf.function(lambda x: tf.reduce_sum(tf.matmul(x, x)))
    matmul(a).numpy()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a).numpy()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best
