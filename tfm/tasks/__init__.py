"""Task models: a backbone plus a head, trainable with `model.fit` and `tfm train`."""

from tfm.tasks.causal_lm import CausalLM
from tfm.tasks.masked_lm import MaskedLM
from tfm.tasks.task import Task

__all__ = ["CausalLM", "MaskedLM", "Task"]

from tfm.tasks.multiple_choice import MultipleChoice  # noqa: E402
from tfm.tasks.span_qa import SpanQA, best_spans, span_predictions  # noqa: E402
from tfm.tasks.text_classifier import TextClassifier  # noqa: E402
from tfm.tasks.token_classifier import TokenClassifier, decode_tags  # noqa: E402

__all__ += ["MultipleChoice", "SpanQA", "TextClassifier", "TokenClassifier", "best_spans", "decode_tags",
            "span_predictions"]
