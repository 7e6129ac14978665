"""Sentence (or sentence-pair) classification and regression on a BERT backbone's pooled output."""

import keras
from keras import ops

from tfm.tasks.task import Task


@keras.saving.register_keras_serializable(package="tfm")
class TextClassifier(Task):
    """Classifies one text or a packed pair: pooled [CLS] output -> dropout -> dense, float32 outputs.

    Pairs need nothing special: `tfm.data.classification_dataset` packs them as two segments. With
    `regression=True` the head predicts `num_classes` real values (1 for STS-B-style scores) and the
    loss is the mean squared error; otherwise it predicts `num_classes` logits trained with
    sparse cross-entropy.

    Args:
        backbone: a `tfm.models.BertBackbone` (anything with a `pooled_output`).
        num_classes: int, classes (or regression targets when `regression=True`).
        dropout: float, dropout on the pooled output.
        regression: bool, predict real values with an MSE loss instead of class logits.
        pooling: `"pooler"` (BERT's pooled [CLS] output, as HF `BertForSequenceClassification`) or `"mean"` (the
            masked mean of the final hidden states: for encoders trained for mean-pooled sentence embeddings, such
            as sentence-transformers models, whose [CLS] pooler was never trained).

    Example:
    >>> clf = TextClassifier(tfm.models.BertBackbone.from_preset("bert_tiny", vocabulary_size=100), num_classes=3)
    >>> clf.output_shape
    (None, 3)
    """

    TASK_ARGS = ("num_classes", "dropout", "regression", "pooling")
    POOLINGS = ("pooler", "mean")

    def __init__(self, backbone, num_classes, dropout=0.1, regression=False, pooling="pooler", **kwargs):
        if pooling not in self.POOLINGS:
            raise ValueError(f"pooling={pooling!r} is not supported; use one of {self.POOLINGS}")
        inputs = dict(backbone.input)
        features = backbone(inputs)
        if pooling == "mean":
            from tfm.tasks.text_embedder import EmbeddingPooling

            pooled = EmbeddingPooling("mean", normalize=False, name="mean_pooling")(
                features["sequence_output"], inputs["padding_mask"])
        else:
            pooled = features["pooled_output"]
        pooled = keras.layers.Dropout(dropout, dtype=backbone.dtype_policy, name="output_dropout")(pooled)
        # A float32 head: logits (and regression values) stay float32 under mixed precision, which
        # keeps the softmax / squared error numerically safe; the head is too small to matter for speed.
        outputs = keras.layers.Dense(
            num_classes,
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            dtype="float32",
            name="logits",
        )(pooled)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.backbone = backbone
        self.num_classes = num_classes
        self.dropout = dropout
        self.regression = regression
        self.pooling = pooling

    def compile(self, optimizer="auto", loss="auto", weighted_metrics="auto", **kwargs):
        """`Task.compile`; in regression mode `"auto"` means MSE loss and mean-absolute-error metric."""
        if self.regression:
            if loss == "auto":
                loss = keras.losses.MeanSquaredError()
            if weighted_metrics == "auto":
                weighted_metrics = [keras.metrics.MeanAbsoluteError(name="mae")]
        super().compile(optimizer=optimizer, loss=loss, weighted_metrics=weighted_metrics, **kwargs)

    def _regression_terms(self, y, y_pred, sample_weight):
        """Per-example squared error (mean over the targets), weights, and float targets `(B, K)`."""
        y_pred = ops.cast(y_pred, "float32")
        y = ops.reshape(ops.cast(y, "float32"), ops.shape(y_pred))  # (B,) labels -> (B, 1)
        weight = ops.ones(ops.shape(y_pred)[:1], "float32")
        if sample_weight is not None:
            weight = weight * ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
        return ops.mean(ops.square(y_pred - y), axis=-1), weight, y, y_pred

    def loss_sums(self, y, y_pred, sample_weight=None):
        """`(sum of weighted losses, sum of weights)`: cross-entropy (labels < 0 ignored) or squared error.

        Args:
            y: int labels `(B,)`, or float targets `(B,)` / `(B, num_classes)` in regression mode.
            y_pred: float32 `(B, num_classes)`.
            sample_weight: optional float `(B,)`.
        """
        if not self.regression:
            return super().loss_sums(y, y_pred, sample_weight)
        losses, weight, _, _ = self._regression_terms(y, y_pred, sample_weight)
        return ops.sum(losses * weight), ops.sum(weight)

    def metric_sums(self, y, y_pred, sample_weight=None):
        """Evaluation sums; in regression mode the moments that give MSE, MAE and Pearson's r exactly."""
        if not self.regression:
            return super().metric_sums(y, y_pred, sample_weight)
        losses, weight, y, y_pred = self._regression_terms(y, y_pred, sample_weight)
        w = ops.expand_dims(weight, -1)
        # Pearson's r needs only these weighted moments, so it reduces exactly across replicas.
        return {
            "loss": ops.sum(losses * weight),
            "weight": ops.sum(weight),
            "abs_error": ops.sum(ops.mean(ops.abs(y_pred - y), axis=-1) * weight),
            "count": ops.sum(w * ops.ones_like(y)),
            "y": ops.sum(w * y),
            "p": ops.sum(w * y_pred),
            "yy": ops.sum(w * y * y),
            "pp": ops.sum(w * y_pred * y_pred),
            "yp": ops.sum(w * y * y_pred),
        }

    def metrics_from_sums(self, sums):
        """`loss` and `accuracy`; in regression mode `loss` (MSE), `mae` and `pearson`."""
        if not self.regression:
            return super().metrics_from_sums(sums)
        s = {k: float(v) for k, v in sums.items()}
        weight, n = max(s["weight"], 1e-12), max(s["count"], 1e-12)
        cov = s["yp"] / n - s["y"] * s["p"] / n**2
        var_y, var_p = s["yy"] / n - (s["y"] / n) ** 2, s["pp"] / n - (s["p"] / n) ** 2
        pearson = cov / (var_y * var_p) ** 0.5 if var_y > 0 and var_p > 0 else 0.0
        return {"loss": s["loss"] / weight, "mae": s["abs_error"] / weight, "pearson": pearson}
