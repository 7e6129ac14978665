"""Backbones (BERT encoder, GPT decoder) with named size presets."""

from tfm.models.backbone import Backbone
from tfm.models.bert import BERT_PRESETS, BertBackbone
from tfm.models.gpt import GPT_PRESETS, GptBackbone

__all__ = ["BERT_PRESETS", "Backbone", "BertBackbone", "GPT_PRESETS", "GptBackbone"]
