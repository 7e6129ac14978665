"""BERT: a bidirectional post-LN transformer encoder (Devlin et al., 2019) and its size presets."""

import keras

from tfm.layers import PositionEmbedding, TokenEmbedding, TransformerEncoderBlock
from tfm.layers.dropout import HashDropout
from tfm.models.backbone import Backbone

# Turc et al. 2019 ("Well-Read Students Learn Better") for tiny..medium; Devlin et al. 2019 for base/large.
_BERT_SIZES = {
    "bert_tiny": (2, 2, 128),
    "bert_mini": (4, 4, 256),
    "bert_small": (4, 8, 512),
    "bert_medium": (8, 8, 512),
    "bert_base": (12, 12, 768),
    "bert_large": (24, 16, 1024),
}
BERT_PRESETS = {
    name: {
        "vocabulary_size": 30522,
        "num_layers": layers,
        "num_heads": heads,
        "hidden_dim": hidden,
        "intermediate_dim": 4 * hidden,
        "dropout": 0.1,
        "max_sequence_length": 512,
        "num_segments": 2,
    }
    for name, (layers, heads, hidden) in _BERT_SIZES.items()
}


@keras.saving.register_keras_serializable(package="tfm")
class BertBackbone(Backbone):
    """BERT encoder: `{token_ids, segment_ids, padding_mask}` -> `{sequence_output, pooled_output}`.

    Args:
        vocabulary_size: int, tokens in the vocabulary.
        num_layers: int, encoder blocks.
        num_heads: int, attention heads per block.
        hidden_dim: int, model width.
        intermediate_dim: int, feed-forward width.
        dropout: float, dropout rate everywhere.
        max_sequence_length: int, learned positions.
        num_segments: int, segment (token type) ids.
        activation: str, `gelu` (exact, as Google BERT) or `gelu_approximate` (as KerasHub).
        dtype: dtype policy name or object (e.g. `"mixed_bfloat16"`).

    Example:
    >>> model = BertBackbone.from_preset("bert_tiny", vocabulary_size=100)
    >>> out = model({"token_ids": np.ones((1, 8), "int32"), "segment_ids": np.zeros((1, 8), "int32"),
    ...              "padding_mask": np.ones((1, 8), "int32")})
    >>> out["pooled_output"].shape
    TensorShape([1, 128])
    """

    HYPERPARAMETERS = (
        "vocabulary_size",
        "num_layers",
        "num_heads",
        "hidden_dim",
        "intermediate_dim",
        "dropout",
        "max_sequence_length",
        "num_segments",
        "activation",
    )
    PRESETS = BERT_PRESETS
    KERAS_HUB_CLASS = "BertBackbone"

    def __init__(
        self,
        vocabulary_size,
        num_layers,
        num_heads,
        hidden_dim,
        intermediate_dim,
        dropout=0.1,
        max_sequence_length=512,
        num_segments=2,
        activation="gelu",
        dtype=None,
        **kwargs,
    ):
        init = keras.initializers.TruncatedNormal(stddev=0.02)
        token_embedding = TokenEmbedding(
            vocabulary_size, hidden_dim, embeddings_initializer=init, dtype=dtype, name="token_embedding"
        )
        position_embedding = PositionEmbedding(
            max_sequence_length, hidden_dim, embeddings_initializer=init, dtype=dtype, name="position_embedding"
        )
        segment_embedding = keras.layers.Embedding(
            num_segments, hidden_dim, embeddings_initializer=init, dtype=dtype, name="segment_embedding"
        )
        embeddings_layer_norm = keras.layers.LayerNormalization(
            epsilon=1e-12, dtype=dtype, name="embeddings_layer_norm"
        )
        embeddings_dropout = HashDropout(dropout, dtype=dtype, name="embeddings_dropout")
        blocks = [
            TransformerEncoderBlock(
                num_heads,
                hidden_dim,
                intermediate_dim,
                dropout=dropout,
                activation=activation,
                layer_norm_epsilon=1e-12,
                kernel_initializer=init,
                dtype=dtype,
                name=f"transformer_layer_{i}",
            )
            for i in range(num_layers)
        ]
        pooled_dense = keras.layers.Dense(
            hidden_dim, activation="tanh", kernel_initializer=init, dtype=dtype, name="pooled_dense"
        )

        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        segment_ids = keras.Input(shape=(None,), dtype="int32", name="segment_ids")
        padding_mask = keras.Input(shape=(None,), dtype="int32", name="padding_mask")
        tokens = token_embedding(token_ids)
        x = keras.layers.Add(dtype=dtype, name="embeddings_add")(
            [tokens, position_embedding(tokens), segment_embedding(segment_ids)]
        )
        x = embeddings_dropout(embeddings_layer_norm(x))
        for block in blocks:
            x = block(x, padding_mask=padding_mask)
        pooled = pooled_dense(x[:, 0, :])  # the [CLS] position
        super().__init__(
            inputs={"token_ids": token_ids, "segment_ids": segment_ids, "padding_mask": padding_mask},
            outputs={"sequence_output": x, "pooled_output": pooled},
            dtype=dtype,
            **kwargs,
        )
        self.vocabulary_size = vocabulary_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.dropout = dropout
        self.max_sequence_length = max_sequence_length
        self.num_segments = num_segments
        self.activation = activation
        self.token_embedding = token_embedding
        self.position_embedding = position_embedding
        self.segment_embedding = segment_embedding
        self.transformer_layers = blocks
        self.pooled_dense = pooled_dense
