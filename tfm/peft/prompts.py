"""Prompt tuning (Lester et al. 2021) and prefix tuning (Li & Liang 2021; P-tuning v2, Liu et al. 2022).

Prompt tuning prepends trainable virtual tokens to the encoder's input: tfm inserts them after the embedding
LayerNorm (they have no position, and the real tokens keep positions 0..T-1, as pretraining saw them); every block
lets every token attend to them, and the last block drops them, so the heads read the real tokens only.
Prefix tuning gives every attention layer trainable keys and values that every query also attends to, optionally
produced by a shared MLP from a small table (`prefix_projection`, the reparameterization of both papers).
Neither can leave the model unchanged at step 0: the virtual positions take softmax mass from the real ones.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tfm")
class PromptTokens(keras.layers.Layer):
    """Prepends `num_virtual_tokens` trainable vectors to a `(B, T, H)` sequence.

    Args:
        num_virtual_tokens: int, P.
        hidden_dim: int, H.
        initial: optional `(P, H)` array (vocabulary samples or a text's embeddings); default N(0, 1) as HF PEFT.
    """

    def __init__(self, num_virtual_tokens, hidden_dim, initial=None, **kwargs):
        super().__init__(**kwargs)
        self.num_virtual_tokens, self.hidden_dim, self.initial = num_virtual_tokens, hidden_dim, initial

    def build(self, input_shape=None):
        init = keras.initializers.RandomNormal(stddev=1.0)
        if self.initial is not None:
            init = keras.initializers.Constant(self.initial)
        self.embeddings = self.add_weight(name="embeddings", shape=(self.num_virtual_tokens, self.hidden_dim),
                                          initializer=init)
        self.initial = None  # only needed once
        self.built = True

    def call(self, x):
        prompts = ops.broadcast_to(ops.cast(self.embeddings, x.dtype)[None],
                                   (ops.shape(x)[0], self.num_virtual_tokens, self.hidden_dim))
        return ops.concatenate([prompts, x], axis=1)

    def trainable_count(self):
        return self.num_virtual_tokens * self.hidden_dim


@keras.saving.register_keras_serializable(package="tfm")
class PrefixEncoder(keras.layers.Layer):
    """Every layer's prefix keys and values, `(num_layers, 2, P, H)`: a trainable table, or (with
    `projection_dim`) a `(P, H)` table through `Dense(projection_dim, tanh) -> Dense(num_layers * 2 * H)`.

    Args:
        num_layers: int. num_virtual_tokens: int, P. hidden_dim: int, H.
        projection_dim: optional int, the reparameterization MLP's width (None: no MLP).
    """

    def __init__(self, num_layers, num_virtual_tokens, hidden_dim, projection_dim=None, **kwargs):
        super().__init__(**kwargs)
        self.num_layers, self.num_virtual_tokens = num_layers, num_virtual_tokens
        self.hidden_dim, self.projection_dim = hidden_dim, projection_dim

    def build(self, input_shape=None):
        p, h, layers = self.num_virtual_tokens, self.hidden_dim, self.num_layers
        normal = keras.initializers.RandomNormal(stddev=1.0)  # HF PEFT's nn.Embedding default
        if self.projection_dim is None:
            self.table = self.add_weight(name="table", shape=(p, layers * 2 * h), initializer=normal)
        else:
            self.table = self.add_weight(name="table", shape=(p, h), initializer=normal)
            self.hidden_kernel = self.add_weight(name="hidden_kernel", shape=(h, self.projection_dim),
                                                 initializer="glorot_uniform")
            self.hidden_bias = self.add_weight(name="hidden_bias", shape=(self.projection_dim,), initializer="zeros")
            self.output_kernel = self.add_weight(name="output_kernel", shape=(self.projection_dim, layers * 2 * h),
                                                 initializer="glorot_uniform")
            self.output_bias = self.add_weight(name="output_bias", shape=(layers * 2 * h,), initializer="zeros")
        self.built = True

    def call(self, _=None):
        table = ops.convert_to_tensor(self.table)
        if self.projection_dim is not None:
            table = ops.matmul(ops.tanh(ops.matmul(table, self.hidden_kernel) + self.hidden_bias),
                               self.output_kernel) + self.output_bias
        table = ops.reshape(table, (self.num_virtual_tokens, self.num_layers, 2, self.hidden_dim))
        return ops.transpose(table, (1, 2, 0, 3))  # (layers, 2, P, H)

    def trainable_count(self):
        p, h, layers = self.num_virtual_tokens, self.hidden_dim, self.num_layers
        if self.projection_dim is None:
            return p * layers * 2 * h
        return p * h + (h + 1) * self.projection_dim + (self.projection_dim + 1) * layers * 2 * h


@keras.saving.register_keras_serializable(package="tfm")
class PrefixKeyValues(keras.layers.Layer):
    """One attention layer's view of a shared `PrefixEncoder`: `(key, value)`, each `(B, heads, P, head_dim)`.

    Args:
        encoder: the `PrefixEncoder` (shared by every layer's `PrefixKeyValues`).
        layer_index: int, this attention layer's row of it.
        num_heads: int.
    """

    def __init__(self, encoder, layer_index, num_heads, **kwargs):
        super().__init__(**kwargs)
        self.encoder, self.layer_index, self.num_heads = encoder, layer_index, num_heads
        self.built = True

    def key_values(self, batch_size):
        kv = self.encoder.call()[self.layer_index]  # (2, P, H)
        p, h = self.encoder.num_virtual_tokens, self.encoder.hidden_dim
        kv = ops.transpose(ops.reshape(kv, (2, p, self.num_heads, h // self.num_heads)), (0, 2, 1, 3))
        kv = ops.broadcast_to(kv[:, None], (2, batch_size, self.num_heads, p, h // self.num_heads))
        return kv[0], kv[1]
