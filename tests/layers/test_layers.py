import math

import numpy as np
import tensorflow as tf
import pytest

from tests.helpers import run_layer_test
from tfm.layers import (
    MaskedLMHead,
    MultiHeadAttention,
    PositionEmbedding,
    TokenEmbedding,
    TransformerDecoderBlock,
    TransformerEncoderBlock,
    causal_attention_mask,
    get_activation,
    padding_attention_mask,
)

X = np.random.default_rng(0).normal(size=(2, 5, 12)).astype("float32")


def test_multi_head_attention_layer():
    # fused qkv (12x36 + 36) + output (12x12 + 12) = 468 + 156
    run_layer_test(
        MultiHeadAttention,
        {"num_heads": 3, "hidden_dim": 12},
        X,
        (2, 5, 12),
        expected_num_trainable_weights=4,
        expected_trainable_params=624,
    )


def test_attention_rejects_indivisible_heads():
    with pytest.raises(ValueError, match="hidden_dim=10 must be divisible by num_heads=3"):
        MultiHeadAttention(num_heads=3, hidden_dim=10)


def test_masks():
    np.testing.assert_array_equal(
        np.asarray(causal_attention_mask(3, 4, query_offset=1))[0],
        [[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]],
    )
    np.testing.assert_array_equal(np.asarray(padding_attention_mask(np.array([[1, 0, 1]]))), [[[True, False, True]]])


def test_attention_ignores_masked_keys():
    layer = MultiHeadAttention(num_heads=2, hidden_dim=12)
    mask = np.array([[[1, 1, 1, 0, 0]]] * 2, bool)
    full = np.asarray(layer(X, attention_mask=mask))
    changed = X.copy()
    changed[:, 3:] = 100.0  # masked keys: changing them must not change the first three outputs
    out = np.asarray(layer(changed, attention_mask=mask))
    np.testing.assert_allclose(out[:, :3], full[:, :3], atol=1e-5)


def test_encoder_block():
    # attention 624 + 2 LayerNorms 48 + ffn (12*20+20)+(20*12+12) = 512 -> 1184
    run_layer_test(
        TransformerEncoderBlock,
        {"num_heads": 3, "hidden_dim": 12, "intermediate_dim": 20},
        X,
        (2, 5, 12),
        expected_num_trainable_weights=12,
        call_kwargs={"padding_mask": np.array([[1, 1, 1, 0, 0], [1] * 5], "int32")},
        expected_trainable_params=1184,
    )


def test_decoder_block_is_causal():
    block = TransformerDecoderBlock(num_heads=3, hidden_dim=12, intermediate_dim=20, activation="gelu_approximate")
    full = np.asarray(block(X))
    changed = X.copy()
    changed[:, 3:] = -7.0  # future tokens must not change earlier outputs
    np.testing.assert_allclose(np.asarray(block(changed))[:, :3], full[:, :3], atol=1e-5)
    run_layer_test(
        TransformerDecoderBlock,
        {"num_heads": 3, "hidden_dim": 12, "intermediate_dim": 20},
        X,
        (2, 5, 12),
        expected_num_trainable_weights=12,
        expected_trainable_params=1184,
    )


def test_embeddings():
    ids = np.array([[1, 2, 3], [4, 5, 0]], "int32")
    emb = run_layer_test(TokenEmbedding, {"vocabulary_size": 7, "hidden_dim": 4}, ids, (2, 3, 4), 1, expected_trainable_params=28)
    logits = np.asarray(emb(np.ones((2, 3, 4), "float32"), reverse=True))
    np.testing.assert_allclose(logits, np.ones((2, 3, 4)) @ np.asarray(emb.embeddings).T, rtol=1e-5, atol=1e-7)
    # The tied projection's gradient, for 3-D and 2-D hidden states: d sum(w * x E^T) / dE = w^T x.
    for shape in [(2, 3, 4), (5, 4)]:
        x = np.random.default_rng(0).normal(size=shape).astype("float32")
        w = np.random.default_rng(1).normal(size=shape[:-1] + (7,)).astype("float32")
        with tf.GradientTape() as tape:
            out = emb(x, reverse=True)
            total = tf.reduce_sum(out * w)
        assert tuple(out.shape) == shape[:-1] + (7,)
        expected = w.reshape(-1, 7).T @ x.reshape(-1, 4)
        np.testing.assert_allclose(tape.gradient(total, emb.embeddings).numpy(), expected, rtol=1e-5, atol=1e-5)
    pos = run_layer_test(PositionEmbedding, {"max_sequence_length": 6, "hidden_dim": 4}, np.zeros((2, 3, 4), "float32"), (2, 3, 4), 1)
    np.testing.assert_array_equal(np.asarray(pos(np.zeros((1, 2, 4)), start_index=3))[0], np.asarray(pos.embeddings)[3:5])


def test_masked_lm_head_gathers_positions_and_ties_embedding():
    emb = TokenEmbedding(vocabulary_size=9, hidden_dim=12)
    emb.build()
    head = MaskedLMHead(emb)
    positions = np.array([[0, 4], [2, 2]], "int32")
    logits = head(X, positions)
    assert tuple(logits.shape) == (2, 2, 9) and logits.dtype == "float32"
    # dense 12x12+12, LayerNorm 24, output bias 9; the embedding is shared, not owned.
    assert sum(int(np.prod(w.shape)) for w in head.trainable_weights if "token_embedding" not in w.path) == 189
    np.testing.assert_allclose(np.asarray(logits)[1, 0], np.asarray(logits)[1, 1], rtol=1e-6)
    emb.embeddings.assign(np.zeros((9, 12), "float32"))
    np.testing.assert_allclose(np.asarray(head(X, positions)), 0.0, atol=1e-6)  # bias starts at zero


def test_gelu_forms():
    x = np.array([-2.0, 0.5, 3.0], "float32")
    exact = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x])
    tanh = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    np.testing.assert_allclose(np.asarray(get_activation("gelu")(x)), exact, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(get_activation("gelu_approximate")(x)), tanh, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="Unknown activation 'swish'"):
        get_activation("swish")
