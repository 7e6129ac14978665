"""Task models: a backbone plus a head, trainable with `model.fit` and `tfm train`."""

from tfm.tasks.causal_lm import CausalLM
from tfm.tasks.masked_lm import MaskedLM
from tfm.tasks.task import Task

__all__ = ["CausalLM", "MaskedLM", "Task"]
