"""The `distill:` section of a config: which teacher run, the losses and how the student starts.

Names follow Keras' `keras.distillation` where it has one (`temperature`, `student_loss_weight`: the weight of the
label loss, the distillation losses get `1 - student_loss_weight`).

>>> DistillConfig(teacher="runs/sst2_minilm", student_layers=[0, 2, 4]).layer_map(6)
[[0, 0], [1, 2], [2, 4]]
"""

from dataclasses import dataclass
from typing import Literal, Optional

from tfm.training.config_core import _NON_NEGATIVE, _POSITIVE, _Config, _check, _require

# Tasks whose outputs are class logits scored against integer labels: what soft targets distil.
TASKS = ("text_classifier", "token_classifier", "multiple_choice", "masked_lm", "causal_lm")


def uniform_layer_map(teacher_layers, student_layers):
    """TinyBERT's uniform map: student layer i <- teacher layer (i + 1) * Lt / Ls - 1 (0-based pairs)."""
    return [[i, (i + 1) * teacher_layers // student_layers - 1] for i in range(student_layers)]


@dataclass
class DistillConfig(_Config):
    """Knowledge distillation from a trained teacher run into the task this config trains (the student).

    The student reads the teacher's tokenizer (unless the config names one with the same vocabulary). Its loss is
    `student_loss_weight * label loss + (1 - student_loss_weight) * (T^2 KL(teacher || student) at temperature T
    + hidden_state_weight * hidden-state MSE + attention_weight * attention KL)`.
    """

    teacher: str = ""  # a `tfm train` run dir (relative to where `tfm train` starts, as output_dir)
    temperature: float = 2.0
    student_loss_weight: float = 0.5
    # The student: the teacher's architecture with only these teacher layers (0-based), initialized from them and
    # from the teacher's embeddings and head (DistilBERT's recipe). None: the student is `model:` (fresh, or
    # `task.init_checkpoint`).
    student_layers: Optional[list[int]] = None
    # A narrower fresh student (`model:`) can start from the teacher's token embeddings projected onto their top
    # principal directions ("teacher_pca"): pretrained word vectors for a student too small to share the teacher's.
    student_embeddings: Literal["random", "teacher_pca"] = "random"
    # Hidden-state MSE between mapped layers ([student layer, teacher layer] pairs, 0-based; default: the
    # student_layers, or uniform as TinyBERT, student layer i <- teacher layer (i + 1) * Lt / Ls - 1).
    hidden_state_weight: float = 0.0
    hidden_state_layers: Optional[list[list[int]]] = None
    # MiniLM's last-layer self-attention distribution KL (same number of heads in both).
    attention_weight: float = 0.0
    # Compute the teacher's logits once over the training set (looked up by token ids while training) instead of
    # running the teacher in every step. Only for the logits loss: hidden states and attentions need the teacher.
    teacher_cache: bool = False
    # Augmentation for the student (Tang et al. 2019, "Distilling task-specific knowledge from BERT into simple
    # neural networks"): this fraction of the training examples has each real token replaced by [MASK] with
    # probability `augment_mask_rate`; the teacher's soft targets on the masked text are what the student learns
    # there (needs the live teacher: no teacher_cache).
    augment_fraction: float = 0.0
    augment_mask_rate: float = 0.15

    def _validate(self):
        _require(bool(self.teacher), "teacher", "must name the teacher's run dir")
        _check(self, "temperature", *_POSITIVE)
        _require(0.0 <= self.student_loss_weight <= 1.0, "student_loss_weight",
                 f"must be in [0, 1], got {self.student_loss_weight}")
        _check(self, "hidden_state_weight attention_weight", *_NON_NEGATIVE)
        if self.student_layers is not None:
            _require(len(self.student_layers) > 0 and all(i >= 0 for i in self.student_layers)
                     and list(self.student_layers) == sorted(set(self.student_layers)), "student_layers",
                     f"must be increasing teacher layer numbers (from 0), got {self.student_layers!r}")
        _require(self.student_embeddings == "random" or self.student_layers is None, "student_embeddings",
                 "applies to a fresh student (without student_layers, which copies the teacher's embeddings)")
        for pair in self.hidden_state_layers or ():
            _require(len(pair) == 2 and min(pair) >= 0, "hidden_state_layers",
                     f"must hold [student layer, teacher layer] pairs, got {pair!r}")
        _require(0.0 <= self.augment_fraction <= 1.0, "augment_fraction", f"must be in [0, 1], got {self.augment_fraction}")
        _require(0.0 < self.augment_mask_rate <= 1.0, "augment_mask_rate",
                 f"must be in (0, 1], got {self.augment_mask_rate}")
        _require(not (self.teacher_cache and self.augment_fraction), "teacher_cache",
                 "holds the teacher's logits on the unaugmented examples: augment_fraction needs the live teacher "
                 "(set teacher_cache: false)")
        _require(not (self.teacher_cache and (self.hidden_state_weight or self.attention_weight)), "teacher_cache",
                 "caches the teacher's logits only: hidden_state_weight and attention_weight need the teacher in "
                 "every step (set teacher_cache: false)")

    def layer_map(self, teacher_layers, student_layers=None):
        """`[student layer, teacher layer]` pairs of the hidden-state loss."""
        if self.hidden_state_layers:
            return [list(pair) for pair in self.hidden_state_layers]
        if self.student_layers is not None:
            return [[i, t] for i, t in enumerate(self.student_layers)]
        return uniform_layer_map(teacher_layers, student_layers)
