"""Multi-head self-attention with one fused QKV projection, attention masks and a static KV cache."""

import math

import keras
from keras import ops

from tfm.layers.dense import Dense, compiling_with_xla
from tfm.layers.dropout import HashDropout


def padding_attention_mask(padding_mask):
    """Boolean mask `(B, 1, T)` letting every query attend to the non-padding keys.

    Args:
        padding_mask: int or bool tensor `(B, T)`, true/1 for real tokens.
    """
    return ops.expand_dims(ops.cast(padding_mask, "bool"), axis=1)


def causal_attention_mask(query_length, key_length, query_offset=0):
    """Boolean mask `(1, Tq, Tk)`: query i (at absolute position i + offset) sees keys <= its position.

    Args:
        query_length: int or scalar tensor, number of queries.
        key_length: int or scalar tensor, number of keys.
        query_offset: int or scalar tensor, absolute position of the first query (the cache index).
    """
    query_positions = ops.arange(query_length, dtype="int32") + ops.cast(query_offset, "int32")
    key_positions = ops.arange(key_length, dtype="int32")
    mask = ops.expand_dims(query_positions, 1) >= ops.expand_dims(key_positions, 0)
    return ops.expand_dims(mask, 0)


@keras.saving.register_keras_serializable(package="tfm")
class MultiHeadAttention(keras.layers.Layer):
    """Self-attention: one `(H, 3H)` QKV matmul, softmax in float32, optional in-place KV cache.

    The cache is a `(key, value)` pair, each `(B, num_heads, max_length, head_dim)`. New keys and
    values are written at `cache_update_index` with a dynamic-update-slice, which XLA performs in
    place, so a whole decode loop compiles into one `while_loop` without copying the cache.

    Args:
        num_heads: int, number of attention heads; must divide `hidden_dim`.
        hidden_dim: int, model width.
        dropout: float, dropout rate on the attention probabilities.
        kernel_initializer: initializer for the projection kernels.

    Example:
    >>> layer = MultiHeadAttention(num_heads=2, hidden_dim=8)
    >>> tuple(layer(keras.ops.ones((1, 3, 8))).shape)
    (1, 3, 8)
    """

    prefix = None  # `tfm.peft` prefix tuning: trainable keys and values every query also attends to
    taps = None  # `tfm.compression.distillation.Taps` while a distillation step records this layer

    def __init__(self, num_heads, hidden_dim, dropout=0.0, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        if hidden_dim % num_heads:
            raise ValueError(f"hidden_dim={hidden_dim} must be divisible by num_heads={num_heads}.")
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.dropout = dropout
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.head_dim = hidden_dim // num_heads

    def build(self, input_shape):
        self.qkv_dense = Dense(
            3 * self.hidden_dim,
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
            name="qkv",
        )
        self.qkv_dense.build(input_shape)
        self.output_dense = Dense(
            self.hidden_dim,
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
            name="attention_output",
        )
        self.output_dense.build((None, None, self.hidden_dim))
        self.probs_dropout = HashDropout(self.dropout, dtype=self.dtype_policy, name="probs_dropout")
        self.built = True

    def _split_heads(self, x, batch_size, length):
        x = ops.reshape(x, (batch_size, length, self.num_heads, self.head_dim))
        return ops.transpose(x, (0, 2, 1, 3))  # (B, heads, T, dh)

    def call(self, x, attention_mask=None, cache=None, cache_update_index=None, training=None):
        batch_size, length = ops.shape(x)[0], ops.shape(x)[1]
        qkv = self.qkv_dense(x)  # (B, T, 3H)
        query, key, value = ops.split(qkv, 3, axis=-1)
        query = self._split_heads(query, batch_size, length)
        key = self._split_heads(key, batch_size, length)
        value = self._split_heads(value, batch_size, length)
        if cache is not None:
            key_cache, value_cache = cache
            start = [0, 0, cache_update_index, 0]
            key = _cache_update(key_cache, start, ops.cast(key, key_cache.dtype))
            value = _cache_update(value_cache, start, ops.cast(value, value_cache.dtype))
            cache = (key, value)
        if self.prefix is not None and self.prefix.active is not None:
            # Prefix keys/values sit before the sequence's (and its cache's); every query may attend to them.
            key_prefix, value_prefix = self.prefix.get().key_values(batch_size)  # (B, heads, P, dh) each
            key = ops.concatenate([ops.cast(key_prefix, key.dtype), key], axis=2)
            value = ops.concatenate([ops.cast(value_prefix, value.dtype), value], axis=2)
            if attention_mask is not None:
                mask_shape = ops.shape(attention_mask)
                visible = ops.ones((mask_shape[0], mask_shape[1], ops.shape(key_prefix)[2]), "bool")
                attention_mask = ops.concatenate([visible, ops.cast(attention_mask, "bool")], axis=-1)

        query = query * ops.cast(1.0 / math.sqrt(self.head_dim), query.dtype)
        # einsum contracts head_dim directly: no transposed copy of the (possibly cached) keys.
        one_query_outside_xla = cache is not None and x.shape[1] == 1 and _outside_xla_graph()
        if one_query_outside_xla:  # see _outside_xla_graph
            scores = ops.expand_dims(ops.sum(query * key, axis=-1), 2)  # (B, heads, 1, Tk)
        else:
            scores = ops.einsum("bhqd,bhkd->bhqk", query, key)  # (B, heads, Tq, Tk)
        scores = ops.cast(scores, "float32")
        if attention_mask is not None:
            mask = ops.expand_dims(ops.cast(attention_mask, "float32"), 1)  # (B, 1, Tq, Tk)
            scores = scores + (1.0 - mask) * -1e9
        probs = ops.softmax(scores, axis=-1)
        if self.taps is not None:  # `tfm.compression` distillation reads the attention distributions
            self.taps.attention_probs.append(probs)
        probs = self.probs_dropout(ops.cast(probs, self.compute_dtype), training=training)
        if one_query_outside_xla:
            context = ops.sum(ops.transpose(probs, (0, 1, 3, 2)) * value, axis=2, keepdims=True)  # (B, heads, 1, dh)
        else:
            context = ops.matmul(probs, value)  # (B, heads, Tq, dh)
        context = ops.reshape(ops.transpose(context, (0, 2, 1, 3)), (batch_size, length, self.hidden_dim))
        output = self.output_dense(context)
        if cache is not None:
            return output, cache
        return output

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.hidden_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "hidden_dim": self.hidden_dim,
                "dropout": self.dropout,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            }
        )
        return config


def _outside_xla_graph():
    """True while tracing a graph that does not compile with XLA, such as the int8 weight-only decode loop. With a
    KV cache there, one query's products with the cache run as multiply-and-sum and the cache write as TensorFlow's
    strided-slice update: TensorFlow's oneDNN rewrite of those tiny batched matmuls and XLA's DynamicUpdateSlice,
    compiled on demand per call, cost more than the work (2-core AMD EPYC, GPT-2 small, batch 8, under the
    profiler: 16 and 9 ms of a 56 ms step)."""
    import tensorflow as tf

    return not tf.executing_eagerly() and not compiling_with_xla()


def _cache_update(cache, start, update):
    """`ops.slice_update(cache, start, update)`; outside XLA graphs TensorFlow's own strided-slice update."""
    import tensorflow as tf

    if not _outside_xla_graph():
        return ops.slice_update(cache, start, update)
    begin = tf.stack([tf.cast(i, tf.int32) for i in start])
    end = begin + tf.shape(update)
    return tf.raw_ops.TensorStridedSliceUpdate(input=cache, begin=begin, end=end, strides=tf.ones_like(begin),
                                               value=update)
