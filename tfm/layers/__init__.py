"""Keras 3 layers of the zoo: attention, embeddings, transformer blocks, heads."""

from tfm.layers.activations import get_activation
from tfm.layers.crf import CRF
from tfm.layers.attention import MultiHeadAttention, causal_attention_mask, padding_attention_mask
from tfm.layers.dropout import HashDropout
from tfm.layers.embeddings import PositionEmbedding, TokenEmbedding
from tfm.layers.heads import MaskedLMHead
from tfm.layers.transformer import TransformerDecoderBlock, TransformerEncoderBlock

__all__ = [
    "CRF",
    "HashDropout",
    "MaskedLMHead",
    "MultiHeadAttention",
    "PositionEmbedding",
    "TokenEmbedding",
    "TransformerDecoderBlock",
    "TransformerEncoderBlock",
    "causal_attention_mask",
    "get_activation",
    "padding_attention_mask",
]
