"""The `peft:` section of a config, and the keyword arguments of `tfm.peft.apply`: one dataclass for every method.

Names follow Hugging Face PEFT where it has one (`alpha` is its `lora_alpha`, `targets` its `target_modules`,
`use_rslora`, `tinit`, `tfinal`, `delta_t` its `deltaT`, `beta1`, `beta2`, `orth_reg_weight`, `total_step`,
`num_virtual_tokens`, `prefix_projection`); `rank` is LoRA's `r` and AdaLoRA's initial rank `init_r`.

>>> PeftConfig(method="lora", rank=8, alpha=16, targets=["query", "value"]).scale()
2.0
"""

from dataclasses import dataclass, field
from typing import Literal, Optional

from tfm.training.config_core import _FRACTION, _NON_NEGATIVE, _POSITIVE, _Config, _check, _require

METHODS = ("lora", "adalora", "houlsby", "pfeiffer", "prompt", "prefix")
# The projections of a transformer block that LoRA / AdaLoRA can adapt (HF BERT's module names for them:
# query, key, value, attention.output.dense, intermediate.dense, output.dense).
TARGETS = ("query", "key", "value", "attention_output", "intermediate", "output")
ALSO_TRAIN = ("head", "layer_norm", "bias")


@dataclass
class PeftConfig(_Config):
    """One parameter-efficient method and its hyperparameters (only the method's own keys are read)."""

    method: Literal["lora", "adalora", "houlsby", "pfeiffer", "prompt", "prefix"] = "lora"
    # LoRA / AdaLoRA
    targets: list[str] = field(default_factory=lambda: ["query", "value"])
    rank: int = 8
    alpha: float = 8.0
    dropout: float = 0.0  # on the low-rank branch's input (LoRA, AdaLoRA) or inside the adapter
    use_rslora: bool = False  # scale alpha / sqrt(rank) (rsLoRA) instead of alpha / rank
    # AdaLoRA (Zhang et al. 2023): the budget falls from `rank` to `target_rank` per matrix on average
    target_rank: int = 4
    tinit: int = 0  # steps before pruning starts
    tfinal: int = 0  # last steps with the final rank pattern fixed
    delta_t: int = 1  # steps between rank re-allocations
    beta1: float = 0.85  # EMA of the sensitivity
    beta2: float = 0.85  # EMA of its uncertainty
    orth_reg_weight: float = 0.5
    total_step: Optional[int] = None  # default: trainer.steps
    # Adapters (Houlsby: after attention and feed-forward; Pfeiffer: after the feed-forward only)
    bottleneck_dim: int = 64
    adapter_activation: str = "relu"
    # Prompt tuning (Lester et al. 2021) and prefix tuning (Li & Liang 2021; P-tuning v2)
    num_virtual_tokens: int = 20
    prompt_init: Literal["random", "vocabulary", "text"] = "random"
    prompt_init_text: Optional[str] = None
    prefix_projection: bool = False  # reparameterize prefixes through an MLP (trained, then kept)
    prefix_hidden_dim: int = 512
    # What else trains besides the method's own weights: the task head (default), LayerNorms, biases
    also_train: list[str] = field(default_factory=lambda: ["head"])

    def _validate(self):
        _check(self, "rank target_rank delta_t bottleneck_dim num_virtual_tokens prefix_hidden_dim", *_POSITIVE)
        _check(self, "total_step", *_POSITIVE, optional=True)
        _check(self, "tinit tfinal", *_NON_NEGATIVE)
        _check(self, "alpha", *_POSITIVE)
        _check(self, "dropout beta1 beta2", *_FRACTION)
        _check(self, "orth_reg_weight", *_NON_NEGATIVE)
        for name in self.targets:
            _require(name in TARGETS, "targets", f"has {name!r}; valid targets: {list(TARGETS)}")
        _require(len(set(self.targets)) == len(self.targets) > 0, "targets", f"must be unique and non-empty, "
                                                                           f"got {self.targets!r}")
        for name in self.also_train:
            _require(name in ALSO_TRAIN, "also_train", f"has {name!r}; valid: {list(ALSO_TRAIN)}")
        if self.method == "adalora":
            _require(self.target_rank <= self.rank, "target_rank", f"({self.target_rank}) must be <= rank "
                                                                   f"({self.rank}), the initial rank")
        if self.prompt_init == "text":
            _require(bool(self.prompt_init_text), "prompt_init_text", "is required when prompt_init is 'text'")

    def scale(self):
        """LoRA's output scale: `alpha / rank`, or `alpha / sqrt(rank)` with `use_rslora`."""
        return self.alpha / (self.rank ** 0.5 if self.use_rslora else self.rank)
