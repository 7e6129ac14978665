"""Multiple choice (SWAG, RACE, ARC style): score every (question, choice) pair, softmax over choices."""

import keras
from keras import ops

from tfm.tasks.task import Task


class _FoldChoices(keras.layers.Layer):
    """(B, C, T) -> (B * C, T): every choice becomes its own backbone sequence."""

    def call(self, x):
        return ops.reshape(x, (-1, ops.shape(x)[-1]))

    def compute_output_shape(self, input_shape):
        batch, choices, length = input_shape
        return (None if batch is None or choices is None else batch * choices, length)


@keras.saving.register_keras_serializable(package="tfm")
class MultipleChoice(Task):
    """Picks one of `num_choices` packed `[CLS] question [SEP] choice [SEP]` sequences.

    Each of `token_ids`, `segment_ids`, `padding_mask` is int32 `(B, num_choices, T)`. All choices run
    through the backbone as one `(B * num_choices, T)` batch; the pooled output of each goes through
    dropout and a bias-free dense(1) scorer, and the scores are reshaped to float32 logits `(B, num_choices)`.
    Labels are the index of the right choice `(B,)`.

    Args:
        backbone: a `tfm.models.BertBackbone` (anything with a `pooled_output`).
        num_choices: int, choices per question (fixed: it is part of the input shape).
        dropout: float, dropout on the pooled output.

    Example:
    >>> mc = MultipleChoice(tfm.models.BertBackbone.from_preset("bert_tiny", vocabulary_size=100), num_choices=4)
    >>> mc.output_shape
    (None, 4)
    """

    TASK_ARGS = ("num_choices", "dropout")

    def __init__(self, backbone, num_choices, dropout=0.1, **kwargs):
        inputs = {
            name: keras.Input(shape=(num_choices, None), dtype="int32", name=name)
            for name in ("token_ids", "segment_ids", "padding_mask")
        }
        fold = _FoldChoices(name="fold_choices")
        flat = {name: fold(tensor) for name, tensor in inputs.items()}  # (B * C, T)
        pooled = backbone(flat)["pooled_output"]  # (B * C, H)
        pooled = keras.layers.Dropout(dropout, dtype=backbone.dtype_policy, name="output_dropout")(pooled)
        # float32 scorer: logits stay float32 under mixed precision (see TextClassifier). No bias: one
        # bias shared by every choice cancels in the softmax over choices, so it could never learn.
        scores = keras.layers.Dense(
            1,
            use_bias=False,
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            dtype="float32",
            name="choice_score",
        )(pooled)  # (B * C, 1)
        logits = ops.reshape(scores, (-1, num_choices))  # (B, C)
        super().__init__(inputs=inputs, outputs=logits, **kwargs)
        self.backbone = backbone
        self.num_choices = num_choices
        self.dropout = dropout
