"""Output heads shared by the tasks."""

import keras
from keras import ops

from tfm.layers.activations import get_activation


@keras.saving.register_keras_serializable(package="tfm")
class MaskedLMHead(keras.layers.Layer):
    """BERT masked-LM head tied to the token embedding, evaluated only at the masked positions.

    Gathers `mask_positions` from the sequence, applies dense + activation + LayerNorm, then projects
    with the transposed token embedding plus an output bias. Logits are float32 for a stable loss.

    Args:
        token_embedding: the backbone's `TokenEmbedding` (weights are shared, not copied).
        activation: str, intermediate activation.
        layer_norm_epsilon: float.
        kernel_initializer: initializer for the dense kernel.

    Example:
    >>> emb = tfm.layers.TokenEmbedding(10, 8)
    >>> head = MaskedLMHead(emb)
    >>> tuple(head(keras.ops.ones((2, 5, 8)), keras.ops.zeros((2, 3), "int32")).shape)
    (2, 3, 10)
    """

    def __init__(self, token_embedding, activation="gelu", layer_norm_epsilon=1e-5, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.token_embedding = token_embedding
        self.activation = activation
        self.layer_norm_epsilon = layer_norm_epsilon
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self._activation_fn = get_activation(activation)

    def build(self, inputs_shape, mask_positions_shape=None):
        hidden_dim = self.token_embedding.hidden_dim
        self.dense = keras.layers.Dense(
            hidden_dim, kernel_initializer=self.kernel_initializer, dtype=self.dtype_policy, name="dense"
        )
        self.dense.build((None, None, hidden_dim))
        self.layer_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name="layer_norm"
        )
        self.layer_norm.build((None, None, hidden_dim))
        self.output_bias = self.add_weight(
            name="output_bias", shape=(self.token_embedding.vocabulary_size,), initializer="zeros"
        )
        self.built = True

    def call(self, inputs, mask_positions):
        x = ops.take_along_axis(inputs, ops.expand_dims(ops.cast(mask_positions, "int32"), -1), axis=1)
        x = self.layer_norm(self._activation_fn(self.dense(x)))
        logits = self.token_embedding(x, reverse=True) + ops.cast(self.output_bias, self.compute_dtype)
        return ops.cast(logits, "float32")

    def compute_output_shape(self, inputs_shape, mask_positions_shape):
        return tuple(mask_positions_shape) + (self.token_embedding.vocabulary_size,)

    def compute_output_spec(self, inputs, mask_positions):
        shape = tuple(mask_positions.shape) + (self.token_embedding.vocabulary_size,)
        return keras.KerasTensor(shape, dtype="float32")

    def get_config(self):
        # The tied embedding is passed in by the owning task, not serialized here.
        config = super().get_config()
        config.update(
            {
                "activation": self.activation,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            }
        )
        return config
