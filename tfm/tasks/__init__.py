"""Task models: a backbone plus a head, trainable with `model.fit` and `tfm train`."""

from tfm.tasks.causal_lm import CausalLM
from tfm.tasks.generation import BeamSampler, GreedySampler, RandomSampler, TopKSampler, TopPSampler
from tfm.tasks.masked_lm import MaskedLM
from tfm.tasks.multiple_choice import MultipleChoice
from tfm.tasks.span_qa import SpanQA, best_spans, span_predictions
from tfm.tasks.task import Task
from tfm.tasks.text_classifier import TextClassifier
from tfm.tasks.text_embedder import TextEmbedder
from tfm.tasks.token_classifier import TokenClassifier, decode_tags

__all__ = [
    "BeamSampler", "CausalLM", "GreedySampler", "MaskedLM", "MultipleChoice", "RandomSampler", "SpanQA", "Task",
    "TextClassifier", "TextEmbedder", "TokenClassifier", "TopKSampler", "TopPSampler", "best_spans", "decode_tags",
    "span_predictions",
]
