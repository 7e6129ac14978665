"""Transformer blocks: post-LN encoder (BERT) and pre-LN decoder with KV cache (GPT-2)."""

import keras

from tfm.layers.activations import get_activation
from tfm.layers.attention import MultiHeadAttention, causal_attention_mask, padding_attention_mask
from tfm.layers.dropout import HashDropout
from tfm.layers.dense import Dense
from keras import ops


def _on(hook):
    """Whether a `tfm.peft` hook point holds an active adapter."""
    return hook is not None and hook.active is not None


class _TransformerBlock(keras.layers.Layer):
    """Shared state of both blocks: attention, two layer norms and the feed-forward network.

    `tfm.peft` hook points (None / 0 unless a method is applied): `attention_adapter` and `feedforward_adapter`
    transform each sublayer's output before its residual add (Houlsby, Pfeiffer); `prompt` prepends virtual
    tokens (first block only); `prompt_length` is how many positions before the real tokens every block keeps
    visible, and `drop_prompt` removes them after the last block, so heads read the real tokens only.
    """

    attention_adapter = None
    feedforward_adapter = None
    prompt = None
    prompt_length = 0
    drop_prompt = False
    taps = None  # `tfm.compression.distillation.Taps`: records each block's output during a distillation step

    def __init__(
        self,
        num_heads,
        hidden_dim,
        intermediate_dim,
        dropout=0.0,
        activation="gelu",
        layer_norm_epsilon=1e-12,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.dropout = dropout
        self.activation = activation
        self.layer_norm_epsilon = layer_norm_epsilon
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self._activation_fn = get_activation(activation)

    def build(self, input_shape):
        hidden_shape = (None, None, self.hidden_dim)
        common = {"dtype": self.dtype_policy, "kernel_initializer": self.kernel_initializer}
        self.self_attention = MultiHeadAttention(
            self.num_heads, self.hidden_dim, dropout=self.dropout, name="self_attention", **common
        )
        self.self_attention.build(hidden_shape)
        self.attention_layer_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name="attention_layer_norm"
        )
        self.attention_layer_norm.build(hidden_shape)
        self.feedforward_layer_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name="feedforward_layer_norm"
        )
        self.feedforward_layer_norm.build(hidden_shape)
        self.intermediate_dense = Dense(self.intermediate_dim, name="intermediate_dense", **common)
        self.intermediate_dense.build(hidden_shape)
        self.output_dense = Dense(self.hidden_dim, name="output_dense", **common)
        self.output_dense.build((None, None, self.intermediate_dim))
        self.attention_dropout = HashDropout(self.dropout, dtype=self.dtype_policy, name="attention_dropout")
        self.feedforward_dropout = HashDropout(self.dropout, dtype=self.dtype_policy, name="feedforward_dropout")
        self.built = True

    def _feedforward(self, x, training):
        x = self.output_dense(self._activation_fn(self.intermediate_dense(x)))
        x = self.feedforward_dropout(x, training=training)
        return self.feedforward_adapter(x, training=training) if _on(self.feedforward_adapter) else x

    def _attention_branch(self, attended, training):
        attended = self.attention_dropout(attended, training=training)
        return self.attention_adapter(attended, training=training) if _on(self.attention_adapter) else attended

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "hidden_dim": self.hidden_dim,
                "intermediate_dim": self.intermediate_dim,
                "dropout": self.dropout,
                "activation": self.activation,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            }
        )
        return config


@keras.saving.register_keras_serializable(package="tfm")
class TransformerEncoderBlock(_TransformerBlock):
    """Post-LN encoder block (BERT): `LN(x + Attn(x))`, then `LN(x + FFN(x))`.

    Args:
        num_heads: int, attention heads.
        hidden_dim: int, model width.
        intermediate_dim: int, feed-forward width.
        dropout: float, dropout on attention probabilities and on both residual branches.
        activation: str, feed-forward activation (`gelu` exact for BERT).
        layer_norm_epsilon: float, 1e-12 for BERT.
        kernel_initializer: initializer for every kernel.

    Example:
    >>> block = TransformerEncoderBlock(num_heads=2, hidden_dim=8, intermediate_dim=16)
    >>> tuple(block(keras.ops.ones((1, 3, 8)), padding_mask=keras.ops.ones((1, 3))).shape)
    (1, 3, 8)
    """

    def call(self, x, padding_mask=None, training=None):
        if _on(self.prompt):
            x = self.prompt(x)  # (B, P + T, H): virtual tokens first
        if padding_mask is not None and self.prompt_length:
            ones = ops.ones((ops.shape(padding_mask)[0], self.prompt_length), padding_mask.dtype)
            padding_mask = ops.concatenate([ones, padding_mask], axis=1)  # virtual tokens are always visible
        mask = None if padding_mask is None else padding_attention_mask(padding_mask)
        attended = self.self_attention(x, attention_mask=mask, training=training)
        x = self.attention_layer_norm(x + self._attention_branch(attended, training))
        x = self.feedforward_layer_norm(x + self._feedforward(x, training))
        if self.taps is not None:
            self.taps.hidden_states.append(x)
        return x[:, self.prompt_length:, :] if self.drop_prompt else x


@keras.saving.register_keras_serializable(package="tfm")
class TransformerDecoderBlock(_TransformerBlock):
    """Pre-LN causal decoder block (GPT-2): `x + Attn(LN(x))`, then `x + FFN(LN(x))`.

    With `cache=(key, value)` and `cache_update_index`, the block attends over the static cache (see
    `MultiHeadAttention`) and returns `(outputs, new_cache)`.

    Args:
        num_heads: int, attention heads.
        hidden_dim: int, model width.
        intermediate_dim: int, feed-forward width.
        dropout: float, dropout on attention probabilities and on both residual branches.
        activation: str, feed-forward activation (`gelu_approximate` for GPT-2).
        layer_norm_epsilon: float, 1e-5 for GPT-2.
        kernel_initializer: initializer for every kernel.

    Example:
    >>> block = TransformerDecoderBlock(num_heads=2, hidden_dim=8, intermediate_dim=16)
    >>> tuple(block(keras.ops.ones((1, 3, 8))).shape)
    (1, 3, 8)
    """

    def call(self, x, padding_mask=None, cache=None, cache_update_index=None, training=None):
        length = ops.shape(x)[1]
        if cache is None:
            mask = causal_attention_mask(length, length)
            if padding_mask is not None:
                mask = ops.logical_and(mask, padding_attention_mask(padding_mask))
        else:
            # Keys are the whole static cache; positions past the current one are masked out.
            mask = causal_attention_mask(length, ops.shape(cache[0])[2], query_offset=cache_update_index)
        attended = self.self_attention(
            self.attention_layer_norm(x),
            attention_mask=mask,
            cache=cache,
            cache_update_index=cache_update_index,
            training=training,
        )
        if cache is not None:
            attended, cache = attended
        x = x + self._attention_branch(attended, training)
        x = x + self._feedforward(self.feedforward_layer_norm(x), training)
        if cache is not None:
            return x, cache
        if self.taps is not None:
            self.taps.hidden_states.append(x)
        return x
