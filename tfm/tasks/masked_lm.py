"""Masked language modelling on a BERT backbone."""

import keras

from tfm.layers import MaskedLMHead
from tfm.tasks.task import Task


@keras.saving.register_keras_serializable(package="tfm")
class MaskedLM(Task):
    """Predicts the original tokens at `mask_positions` with a head tied to the token embedding.

    Inputs are the backbone's plus `mask_positions` `(B, P)`; the output is float32 logits
    `(B, P, vocabulary_size)`. Train on `(x, mask_ids, mask_weights)` as the MLM pipeline yields them.

    Args:
        backbone: a `tfm.models.BertBackbone`.
        activation: str, activation inside the head (`gelu`; `gelu` exact also in KerasHub's head).

    Example:
    >>> mlm = MaskedLM(tfm.models.BertBackbone.from_preset("bert_tiny", vocabulary_size=100))
    >>> mlm.output_shape
    (None, None, 100)
    """

    TASK_ARGS = ("activation",)

    def __init__(self, backbone, activation="gelu", **kwargs):
        head = MaskedLMHead(
            backbone.token_embedding,
            activation=activation,
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            dtype=backbone.dtype_policy,
            name="masked_lm_head",
        )
        inputs = dict(backbone.input)
        inputs["mask_positions"] = keras.Input(shape=(None,), dtype="int32", name="mask_positions")
        sequence = backbone({k: v for k, v in inputs.items() if k != "mask_positions"})["sequence_output"]
        logits = head(sequence, inputs["mask_positions"])
        super().__init__(inputs=inputs, outputs=logits, **kwargs)
        self.backbone = backbone
        self.masked_lm_head = head
        self.activation = activation
