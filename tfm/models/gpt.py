"""GPT: a causal pre-LN transformer decoder (GPT-2, Radford et al. 2019; GPT-3 sizes, Brown et al. 2020)."""

import keras
from keras import ops

from tfm.layers import PositionEmbedding, TokenEmbedding, TransformerDecoderBlock
from tfm.layers.dropout import HashDropout
from tfm.models.backbone import Backbone

# (num_layers, num_heads, hidden_dim, max_sequence_length)
_GPT_SIZES = {
    "gpt2_small": (12, 12, 768, 1024),
    "gpt2_medium": (24, 16, 1024, 1024),
    "gpt2_large": (36, 20, 1280, 1024),
    "gpt2_xl": (48, 25, 1600, 1024),
    # GPT-3 table 2.1 shapes with dense attention (the paper alternates dense and banded sparse layers).
    # gpt3_xl: the paper lists 24 heads of 128 for width 2048, which do not multiply out; 16 x 128 is used.
    "gpt3_small": (12, 12, 768, 2048),
    "gpt3_medium": (24, 16, 1024, 2048),
    "gpt3_large": (24, 16, 1536, 2048),
    "gpt3_xl": (24, 16, 2048, 2048),
    "gpt3_2.7b": (32, 32, 2560, 2048),
}
GPT_PRESETS = {
    name: {
        "vocabulary_size": 50257,
        "num_layers": layers,
        "num_heads": heads,
        "hidden_dim": hidden,
        "intermediate_dim": 4 * hidden,
        "dropout": 0.1,
        "max_sequence_length": max_length,
    }
    for name, (layers, heads, hidden, max_length) in _GPT_SIZES.items()
}


@keras.saving.register_keras_serializable(package="tfm")
class GptBackbone(Backbone):
    """GPT decoder: `{token_ids, padding_mask}` -> `sequence_output` (final-LayerNorm hidden states).

    `call_with_cache` runs the same weights one chunk at a time over a static KV cache from
    `init_cache`, for decoding loops that compile with XLA.

    Args:
        vocabulary_size: int, tokens in the vocabulary.
        num_layers: int, decoder blocks.
        num_heads: int, attention heads per block.
        hidden_dim: int, model width.
        intermediate_dim: int, feed-forward width.
        dropout: float, dropout rate everywhere.
        max_sequence_length: int, learned positions (and the longest cache).
        dtype: dtype policy name or object (e.g. `"mixed_bfloat16"`).

    Example:
    >>> model = GptBackbone.from_preset("gpt2_small", num_layers=2, vocabulary_size=100)
    >>> model({"token_ids": np.ones((1, 8), "int32"), "padding_mask": np.ones((1, 8), "int32")}).shape
    TensorShape([1, 8, 768])
    """

    HYPERPARAMETERS = (
        "vocabulary_size",
        "num_layers",
        "num_heads",
        "hidden_dim",
        "intermediate_dim",
        "dropout",
        "max_sequence_length",
    )
    PRESETS = GPT_PRESETS
    KERAS_HUB_CLASS = "GPT2Backbone"

    def __init__(
        self,
        vocabulary_size,
        num_layers,
        num_heads,
        hidden_dim,
        intermediate_dim,
        dropout=0.1,
        max_sequence_length=1024,
        dtype=None,
        **kwargs,
    ):
        init = keras.initializers.RandomNormal(stddev=0.02)
        token_embedding = TokenEmbedding(
            vocabulary_size, hidden_dim, embeddings_initializer=init, dtype=dtype, name="token_embedding"
        )
        position_embedding = PositionEmbedding(
            max_sequence_length, hidden_dim, embeddings_initializer=init, dtype=dtype, name="position_embedding"
        )
        embeddings_dropout = HashDropout(dropout, dtype=dtype, name="embeddings_dropout")
        blocks = [
            TransformerDecoderBlock(
                num_heads,
                hidden_dim,
                intermediate_dim,
                dropout=dropout,
                activation="gelu_approximate",
                layer_norm_epsilon=1e-5,
                kernel_initializer=init,
                dtype=dtype,
                name=f"transformer_layer_{i}",
            )
            for i in range(num_layers)
        ]
        layer_norm = keras.layers.LayerNormalization(epsilon=1e-5, dtype=dtype, name="layer_norm")

        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        padding_mask = keras.Input(shape=(None,), dtype="int32", name="padding_mask")
        tokens = token_embedding(token_ids)
        x = keras.layers.Add(dtype=dtype, name="embeddings_add")([tokens, position_embedding(tokens)])
        x = embeddings_dropout(x)
        for block in blocks:
            x = block(x, padding_mask=padding_mask)
        x = layer_norm(x)
        super().__init__(
            inputs={"token_ids": token_ids, "padding_mask": padding_mask}, outputs=x, dtype=dtype, **kwargs
        )
        self.vocabulary_size = vocabulary_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.dropout = dropout
        self.max_sequence_length = max_sequence_length
        self.token_embedding = token_embedding
        self.position_embedding = position_embedding
        self.embeddings_dropout = embeddings_dropout
        self.transformer_layers = blocks
        self.layer_norm = layer_norm

    def init_cache(self, batch_size, max_length=None):
        """Zero KV cache: a tuple over layers of `(key, value)`, each `(B, num_heads, max_length, head_dim)`.

        Args:
            batch_size: int or scalar tensor.
            max_length: int, cache length (defaults to `max_sequence_length`).
        """
        max_length = max_length or self.max_sequence_length
        head_dim = self.hidden_dim // self.num_heads
        shape = (batch_size, self.num_heads, max_length, head_dim)
        return tuple(
            (ops.zeros(shape, self.compute_dtype), ops.zeros(shape, self.compute_dtype)) for _ in range(self.num_layers)
        )

    def call_with_cache(self, token_ids, cache, cache_update_index):
        """Forward pass of `token_ids` written at `cache_update_index`; returns `(hidden, new_cache)`.

        Args:
            token_ids: int tensor `(B, T)`, the tokens at positions `cache_update_index .. + T`.
            cache: the tuple from `init_cache` (or a previous call).
            cache_update_index: int or scalar int tensor.
        """
        tokens = self.token_embedding(token_ids)
        x = tokens + self.position_embedding(tokens, start_index=cache_update_index)
        new_cache = []
        for block, layer_cache in zip(self.transformer_layers, cache):
            x, layer_cache = block(x, cache=layer_cache, cache_update_index=cache_update_index)
            new_cache.append(layer_cache)
        return self.layer_norm(x), tuple(new_cache)
