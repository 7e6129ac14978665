"""Token (tied, reversible) and learned position embeddings."""

import keras
import tensorflow as tf
from keras import ops


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

    def call(self, inputs, reverse=False):
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
