"""Token (tied, reversible) and learned position embeddings."""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tfm.layers.dense import int8_kernel_usable

_ROWS_QUANTIZER = keras.quantizers.AbsMaxQuantizer(axis=-1)  # what the W8A8 LM head below quantizes rows with


def int8_rows(values, axis):
    """`(q int8, scale float32)` with `q = round(values * scale)` and `scale = 127 / max|values|` reduced over
    `axis` (Keras' symmetric abs-max convention: `values ~ q / scale`)."""
    values = np.asarray(values, "float32")
    scale = (127.0 / np.maximum(np.max(np.abs(values), axis=axis), 1e-12)).astype("float32")
    return np.clip(np.round(values * np.expand_dims(scale, axis)), -127, 127).astype("int8"), scale


@keras.saving.register_keras_serializable(package="tfm")
class TokenEmbedding(keras.layers.Layer):
    """Token embedding whose matrix also projects hidden states back to vocabulary logits.

    `call(ids)` looks tokens up; `call(hidden, reverse=True)` returns `hidden @ embeddings^T`, which is
    how the MLM and causal-LM heads tie their output projection to the input embedding.

    Args:
        vocabulary_size: int, number of tokens.
        hidden_dim: int, embedding width.
        embeddings_initializer: initializer for the `(vocabulary_size, hidden_dim)` matrix.

    Example:
    >>> emb = TokenEmbedding(vocabulary_size=10, hidden_dim=4)
    >>> tuple(emb(keras.ops.zeros((2, 3), "int32")).shape)
    (2, 3, 4)
    """

    quantized = None  # "int8" (W8A8) / "int8_weight_only" once `quantize` made `embeddings` int8 rows

    def __init__(self, vocabulary_size, hidden_dim, embeddings_initializer="uniform", **kwargs):
        super().__init__(**kwargs)
        self.vocabulary_size = vocabulary_size
        self.hidden_dim = hidden_dim
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.vocabulary_size, self.hidden_dim),
            initializer=self.embeddings_initializer,
        )
        self.built = True

    def quantize(self, mode=None, type_check=True, config=None):
        """int8 rows with one scale per token (Keras' signature; wrapped by Keras, which unlocks the tracker).
        With `config.activation_quantizer` None the reverse projection is weight-only, else W8A8 dynamic."""
        if mode != "int8":
            raise ValueError(f"TokenEmbedding quantizes to int8 only; got mode={mode!r}")
        q, scale = int8_rows(self.embeddings.numpy(), axis=1)
        del self.embeddings
        self.embeddings = self.add_weight(name="embeddings", shape=q.shape, initializer="zeros", dtype="int8",
                                          trainable=False)
        self.embeddings_scale = self.add_weight(name="embeddings_scale", shape=scale.shape, initializer="ones",
                                                trainable=False)
        self.embeddings.assign(q)
        self.embeddings_scale.assign(scale)
        weight_only = config is not None and getattr(config, "activation_quantizer", None) is None
        self.quantized = "int8_weight_only" if weight_only else "int8"

    def _quantized_call(self, inputs, reverse):
        if not reverse:
            ids = ops.cast(inputs, "int32")
            rows = ops.cast(ops.take(self.embeddings, ids, axis=0), self.compute_dtype)
            return rows / ops.expand_dims(ops.cast(ops.take(self.embeddings_scale, ids, axis=0), rows.dtype), -1)
        if int8_kernel_usable(inputs, _ROWS_QUANTIZER if self.quantized == "int8" else None):
            from tfm import kernels  # W8A8 as below: Keras' abs-max rows, reproduced exactly by the op

            return kernels.int8_matmul(inputs, self.embeddings, self.embeddings_scale, transpose_w=True,
                                       quantize_x=self.quantized == "int8", epsilon=_ROWS_QUANTIZER.epsilon)
        flat = tf.reshape(inputs, [-1, self.hidden_dim])
        scale = tf.cast(self.embeddings_scale, flat.dtype)
        if self.quantized == "int8":  # W8A8: each row of hidden states to int8 (Keras' abs-max), int32 accumulation
            flat_q, flat_scale = _ROWS_QUANTIZER(flat)
            product = tf.matmul(flat_q, self.embeddings, transpose_b=True, output_type=tf.int32)
            logits = tf.cast(product, flat.dtype) / (flat_scale * scale[None, :])
        else:
            logits = tf.matmul(flat, tf.cast(self.embeddings, flat.dtype), transpose_b=True) / scale[None, :]
        return tf.reshape(logits, tf.concat([tf.shape(inputs)[:-1], [self.vocabulary_size]], 0))

    def call(self, inputs, reverse=False):
        if self.quantized:
            return self._quantized_call(inputs, reverse)
        if reverse:
            # `x @ E^T` as one 2-D matmul with transpose_b: its kernel gradient is then `g^T x`, written
            # straight in the (vocab, hidden) layout, instead of `x^T g` (hidden, vocab) plus a transpose,
            # which on CPU ran at about half the speed of the other two vocabulary-sized matmuls.
            kernel = ops.cast(self.embeddings, self.compute_dtype)
            flat = tf.reshape(inputs, [-1, self.hidden_dim])
            logits = tf.matmul(flat, kernel, transpose_b=True)
            return tf.reshape(logits, tf.concat([tf.shape(inputs)[:-1], [self.vocabulary_size]], 0))
        ids = ops.cast(inputs, "int32")
        return ops.cast(ops.take(self.embeddings, ids, axis=0), self.compute_dtype)

    def compute_output_spec(self, inputs, reverse=False):
        if reverse:
            return keras.KerasTensor(tuple(inputs.shape[:-1]) + (self.vocabulary_size,), dtype=self.compute_dtype)
        return keras.KerasTensor(tuple(inputs.shape) + (self.hidden_dim,), dtype=self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_size": self.vocabulary_size,
                "hidden_dim": self.hidden_dim,
                "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer),
            }
        )
        return config


@keras.saving.register_keras_serializable(package="tfm")
class PositionEmbedding(keras.layers.Layer):
    """Learned absolute position embedding; `start_index` offsets positions for cached decoding.

    Args:
        max_sequence_length: int, number of positions.
        hidden_dim: int, embedding width.
        embeddings_initializer: initializer for the `(max_sequence_length, hidden_dim)` matrix.

    Example:
    >>> pos = PositionEmbedding(max_sequence_length=16, hidden_dim=4)
    >>> tuple(pos(keras.ops.zeros((2, 3, 4))).shape)
    (2, 3, 4)
    """

    def __init__(self, max_sequence_length, hidden_dim, embeddings_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.max_sequence_length = max_sequence_length
        self.hidden_dim = hidden_dim
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.max_sequence_length, self.hidden_dim),
            initializer=self.embeddings_initializer,
        )
        self.built = True

    def call(self, inputs, start_index=0):
        # inputs: (B, T, H) embedded tokens; only their shape is used.
        batch_size, length = ops.shape(inputs)[0], ops.shape(inputs)[1]
        positions = ops.slice(ops.cast(self.embeddings, self.compute_dtype), (start_index, 0), (length, self.hidden_dim))
        return ops.broadcast_to(ops.expand_dims(positions, 0), (batch_size, length, self.hidden_dim))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "max_sequence_length": self.max_sequence_length,
                "hidden_dim": self.hidden_dim,
                "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer),
            }
        )
        return config
