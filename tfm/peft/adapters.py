"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2021): `h + up(act(down(h)))` on a sublayer's output.

Houlsby puts one after the attention and one after the feed-forward sublayer of every block, Pfeiffer only the
second; both sit before the sublayer's residual add and LayerNorm (`tfm.layers` hook points). The up-projection
starts at zero, so an adapted model equals its base at step 0; the down-projection starts small and random.
"""

import keras
from keras import ops

from tfm.layers.activations import get_activation
from tfm.layers.dropout import HashDropout


@keras.saving.register_keras_serializable(package="tfm")
class BottleneckAdapter(keras.layers.Layer):
    """`h + up(dropout(activation(down(h))))` with a `bottleneck_dim`-wide middle.

    Args:
        hidden_dim: int, the model width.
        bottleneck_dim: int, the adapter's inner width.
        activation: str, a `tfm.layers.get_activation` name.
        dropout: float, dropout inside the adapter.

    Example:
    >>> adapter = BottleneckAdapter(8, 2)
    >>> adapter.build()
    >>> h = keras.ops.ones((1, 3, 8))
    >>> float(keras.ops.max(keras.ops.abs(adapter(h) - h)))  # identity at step 0
    0.0
    """

    def __init__(self, hidden_dim, bottleneck_dim, activation="relu", dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim, self.bottleneck_dim = hidden_dim, bottleneck_dim
        self.activation, self.dropout = activation, dropout
        self._activation_fn = get_activation(activation)

    def build(self, input_shape=None):
        self.down_kernel = self.add_weight(name="down_kernel", shape=(self.hidden_dim, self.bottleneck_dim),
                                           initializer=keras.initializers.RandomNormal(stddev=0.01))
        self.down_bias = self.add_weight(name="down_bias", shape=(self.bottleneck_dim,), initializer="zeros")
        self.up_kernel = self.add_weight(name="up_kernel", shape=(self.bottleneck_dim, self.hidden_dim),
                                         initializer="zeros")
        self.up_bias = self.add_weight(name="up_bias", shape=(self.hidden_dim,), initializer="zeros")
        self.inner_dropout = HashDropout(self.dropout, dtype=self.dtype_policy, name="adapter_dropout")
        self.built = True

    def call(self, h, training=None):
        inner = self._activation_fn(ops.matmul(h, self.down_kernel) + self.down_bias)
        inner = self.inner_dropout(inner, training=training)
        return h + ops.matmul(inner, self.up_kernel) + self.up_bias

    def trainable_count(self):
        return 2 * self.hidden_dim * self.bottleneck_dim + self.bottleneck_dim + self.hidden_dim
