"""Masked language modelling on a BERT backbone, optionally with BERT's next-sentence head."""

import keras
from keras import ops

from tfm.layers import MaskedLMHead
from tfm.tasks.task import Task

_OUTPUTS = ("mask_ids", "next_sentence_label")  # output names = the keys of mlm_dataset(next_sentence=True)'s y


def _parts(y):
    """(mask_ids, next_sentence_label) from the pipeline/output-named dict or a pair."""
    if isinstance(y, dict):
        return y["mask_ids"], y["next_sentence_label"]
    return y[0], y[1]


@keras.saving.register_keras_serializable(package="tfm")
class MaskedLM(Task):
    """Predicts the original tokens at `mask_positions` with a head tied to the token embedding.

    Inputs are the backbone's plus `mask_positions` `(B, P)`; the output is float32 logits
    `(B, P, vocabulary_size)`. Train on `(x, mask_ids, mask_weights)` as the MLM pipeline yields them.

    With `next_sentence=True` the output is a dict: `"mask_ids"` (those logits) and
    `"next_sentence_label"`, float32 `(B, 2)` logits of a dense(2) on the pooled output (label 1 = the
    second segment is a random text). It trains on `mlm_dataset(..., next_sentence=True)` batches; the
    loss is the MLM mean (over masked tokens) plus the NSP mean (over examples), as in Google's BERT.

    Args:
        backbone: a `tfm.models.BertBackbone`.
        activation: str, activation inside the head (`gelu`; `gelu` exact also in KerasHub's head).
        next_sentence: bool, add the next-sentence-prediction head.
        layer_norm_epsilon: float, of the head's LayerNorm (1e-5 as KerasHub; Hugging Face BERT's is 1e-12).

    Example:
    >>> mlm = MaskedLM(tfm.models.BertBackbone.from_preset("bert_tiny", vocabulary_size=100))
    >>> mlm.output_shape
    (None, None, 100)
    """

    TASK_ARGS = ("activation", "next_sentence", "layer_norm_epsilon")

    def __init__(self, backbone, activation="gelu", next_sentence=False, layer_norm_epsilon=1e-5, **kwargs):
        head = MaskedLMHead(
            backbone.token_embedding,
            activation=activation,
            layer_norm_epsilon=layer_norm_epsilon,
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            dtype=backbone.dtype_policy,
            name="masked_lm_head",
        )
        inputs = dict(backbone.input)
        inputs["mask_positions"] = keras.Input(shape=(None,), dtype="int32", name="mask_positions")
        features = backbone({k: v for k, v in inputs.items() if k != "mask_positions"})
        logits = head(features["sequence_output"], inputs["mask_positions"])
        outputs = logits
        if next_sentence:
            # float32 head (as TextClassifier's): the logits stay float32 under mixed precision.
            nsp = keras.layers.Dense(
                2,
                kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
                dtype="float32",
                name="next_sentence_head",
            )(features["pooled_output"])
            outputs = {"mask_ids": logits, "next_sentence_label": nsp}
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.backbone = backbone
        self.masked_lm_head = head
        self.activation = activation
        self.next_sentence = next_sentence
        self.layer_norm_epsilon = layer_norm_epsilon

    def compile(self, optimizer="auto", loss="auto", weighted_metrics="auto", **kwargs):
        """`Task.compile`; with `next_sentence`, `"auto"` = MLM mean over masked tokens + NSP mean over
        examples (each a cross-entropy divided by its weight sum, not by the slot count), reported as
        `mask_ids_accuracy` and `next_sentence_label_accuracy`."""
        if self.next_sentence:
            if loss == "auto":
                loss = {k: keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                                      reduction="mean_with_sample_weight")
                        for k in _OUTPUTS}
            if weighted_metrics == "auto":
                weighted_metrics = {k: [keras.metrics.SparseCategoricalAccuracy(name="accuracy")] for k in _OUTPUTS}
        super().compile(optimizer=optimizer, loss=loss, weighted_metrics=weighted_metrics, **kwargs)

    # Keras matches labels to outputs by key; a (mask_ids, next_sentence_label) pair is accepted too.
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return super().compute_loss(x, self._by_output(y), y_pred, self._by_output(sample_weight), training=training)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return super().compute_metrics(x, self._by_output(y), y_pred, sample_weight=self._by_output(sample_weight))

    def _by_output(self, y):
        if not self.next_sentence or y is None:
            return y
        return dict(zip(_OUTPUTS, _parts(y)))

    def _sums(self, y, y_pred, sample_weight):
        """Per-head `(loss sum, weight sum, weighted argmax hits)`."""
        weights = _parts(sample_weight) if sample_weight is not None else (None, None)
        sums = {}
        for name, label, weight in zip(_OUTPUTS, _parts(y), weights):
            # Task's (not self's) sums: self.loss_sums/metric_sums expect the dict.
            loss, total = Task.loss_sums(self, label, y_pred[name], weight)
            label = ops.cast(label, "int32")
            w = ops.cast(label >= 0, "float32") * (1.0 if weight is None else ops.cast(weight, "float32"))
            hits = ops.cast(ops.equal(ops.cast(ops.argmax(y_pred[name], axis=-1), "int32"), label), "float32")
            sums[name] = (loss, total, ops.sum(hits * w))
        return sums

    def loss_sums(self, y, y_pred, sample_weight=None):
        """`(sum of weighted losses, sum of weights)`; labels < 0 count as weight 0.

        With `next_sentence` the weight is the masked-token count and the NSP sum is scaled by this
        batch's (masked tokens / examples), so `sum / weight` = MLM mean + NSP mean for the batch. The
        Trainer's single global denominator keeps the MLM mean exact over replicas and micro-batches;
        the NSP term becomes their mean weighted by masked-token share (equal when batches are alike).

        Args:
            y: int `(B, P)` mask ids, or with `next_sentence` `{"mask_ids", "next_sentence_label" (B,)}`.
            y_pred: the model's output.
            sample_weight: optional float weights of the same structure as `y`.
        """
        if not self.next_sentence:
            return super().loss_sums(y, y_pred, sample_weight)
        sums = self._sums(y, y_pred, sample_weight)
        mlm_loss, mlm_weight, _ = sums["mask_ids"]
        nsp_loss, nsp_weight, _ = sums["next_sentence_label"]
        scale = ops.divide_no_nan(mlm_weight, nsp_weight)
        return mlm_loss + nsp_loss * scale, mlm_weight

    def metric_sums(self, y, y_pred, sample_weight=None):
        """Evaluation sums; with `next_sentence` separate loss/weight/correct sums for each head."""
        if not self.next_sentence:
            return super().metric_sums(y, y_pred, sample_weight)
        sums = self._sums(y, y_pred, sample_weight)
        out = {}
        for prefix, name in (("", "mask_ids"), ("next_sentence_", "next_sentence_label")):
            out.update(zip((prefix + "loss", prefix + "weight", prefix + "correct"), sums[name]))
        return out

    def metrics_from_sums(self, sums):
        """`loss` and `accuracy`; with `next_sentence`, `loss` = MLM mean + NSP mean (each exact over the
        global batch), `accuracy` (MLM), `next_sentence_accuracy`, and both losses on their own."""
        if not self.next_sentence:
            return super().metrics_from_sums(sums)
        mlm = super().metrics_from_sums(sums)
        nsp = super().metrics_from_sums({k[len("next_sentence_"):]: sums[k] for k in
                                         ("next_sentence_loss", "next_sentence_weight", "next_sentence_correct")})
        return {"loss": mlm["loss"] + nsp["loss"], "accuracy": mlm["accuracy"],
                "next_sentence_accuracy": nsp["accuracy"], "mlm_loss": mlm["loss"], "next_sentence_loss": nsp["loss"]}
