"""Extractive question answering (SQuAD v1.1 / v2.0): start and end logits over the tokens."""

import keras
import numpy as np
from keras import ops

from tfm.tasks.span_search import question_spans, search_windows
from tfm.tasks.task import Task

_NEG = -1e9  # logit of padding positions: never a start or an end, ~0 probability in the loss


def best_spans(start_logits, end_logits, max_answer_length=30, allow_no_answer=False, context_mask=None,
               no_answer_threshold=0.0):
    """Highest-scoring span per example, score = start logit + end logit.

    Candidates satisfy `start <= end <= start + max_answer_length - 1` and, when `context_mask` is
    given, lie inside the context. With `allow_no_answer` (SQuAD v2) position 0 ([CLS]) is the
    no-answer: it is chosen when `null_score - best_span_score > no_answer_threshold`, where
    `null_score = start_logits[0] + end_logits[0]` (BERT's `null_score_diff_threshold` rule), and is
    then returned as `(0, 0, null_score)`; it is never a span candidate itself. The search is
    `tfm.tasks.span_search` (run eagerly here), the one the SpanQA export runs in its graph.

    Args:
        start_logits, end_logits: float arrays `(B, T)`.
        max_answer_length: int, longest span in tokens.
        allow_no_answer: bool, allow the [CLS] no-answer prediction.
        context_mask: optional bool/int array `(B, T)`, true at context tokens (e.g.
            `features.token_offsets[..., 0] >= 0` for `tfm.data.SquadFeatures`).
        no_answer_threshold: float, margin the null score must beat the best span by.

    Returns:
        (starts, ends, scores): int32, int32, float32 arrays `(B,)`. An example with no valid
        candidate (empty context) gets `(0, 0, null_score)`.

    Example:
    >>> s = np.array([[0.0, 1.0, 5.0, 0.0]]); e = np.array([[0.0, 0.0, 1.0, 4.0]])
    >>> best_spans(s, e, max_answer_length=2)
    (array([2], dtype=int32), array([3], dtype=int32), array([9.], dtype=float32))
    """
    start_logits = np.asarray(start_logits, np.float32)
    end_logits = np.asarray(end_logits, np.float32)
    batch = len(start_logits)
    allowed = np.ones(start_logits.shape, bool) if context_mask is None else np.asarray(context_mask).astype(bool)
    if allow_no_answer:
        allowed = allowed.copy()
        allowed[:, 0] = False
    starts, ends, scores = search_windows(start_logits, end_logits, allowed, max_answer_length)
    null = start_logits[:, 0] + end_logits[:, 0] if batch else np.zeros(0, np.float32)
    # Every row is its own question: the per-question rule is then the per-window no-answer rule.
    _, found, scores = question_spans(scores, null, np.arange(batch), batch, allow_no_answer, no_answer_threshold)
    found = found.numpy()
    return np.where(found, starts, 0).astype(np.int32), np.where(found, ends, 0).astype(np.int32), scores.numpy()


def span_predictions(features, start_logits, end_logits, max_answer_length=30, allow_no_answer=False,
                     no_answer_threshold=0.0):
    """Answer text per question id from the windows of `tfm.data.SquadFeatures`, for `squad_scores`.

    Each window proposes its best context span; a question takes the best-scoring one over its windows
    (the first window on ties). With `allow_no_answer` the question answers "" when its smallest window
    null score beats its best span by more than `no_answer_threshold`. Both steps are `tfm.tasks.span_search`,
    as in the SpanQA export.

    Args:
        features: `tfm.data.SquadFeatures`.
        start_logits, end_logits: float arrays `(windows, T)` (the SpanQA outputs).
        max_answer_length: int. allow_no_answer: bool. no_answer_threshold: float.

    Returns:
        dict question id -> answer text.
    """
    start_logits = np.asarray(start_logits, np.float32)
    end_logits = np.asarray(end_logits, np.float32)
    context = features.token_offsets[..., 0] >= 0
    starts, ends, scores = search_windows(start_logits, end_logits, context, max_answer_length)
    null = start_logits[:, 0] + end_logits[:, 0] if len(features) else np.zeros(0, np.float32)
    windows, found, _ = question_spans(scores, null, features.example_index, len(features.examples),
                                       allow_no_answer, no_answer_threshold)
    answers = {}
    for n, (window, ok) in enumerate(zip(windows.numpy().tolist(), found.numpy().tolist())):
        text = features.answer_text(window, starts[window], ends[window]) if ok else ""
        answers[features.examples[n].id] = text
    return answers


class _SpanLogits(keras.layers.Layer):
    """(B, T, 2) scores -> start and end logits (B, T), padding pushed to `_NEG`."""

    def call(self, scores, padding_mask):
        keep = ops.cast(padding_mask, "bool")
        start = ops.where(keep, scores[..., 0], _NEG)
        end = ops.where(keep, scores[..., 1], _NEG)
        return start, end

    def compute_output_shape(self, scores_shape, padding_mask_shape):
        return tuple(scores_shape[:2]), tuple(scores_shape[:2])


def _labels(y):
    """(start_positions, end_positions) from the pipeline's dict, output-named dict, or a pair."""
    if isinstance(y, dict):
        if "start_positions" in y:
            return y["start_positions"], y["end_positions"]
        return y["start_logits"], y["end_logits"]
    return y[0], y[1]


@keras.saving.register_keras_serializable(package="tfm")
class SpanQA(Task):
    """Answer-span extraction: dense(2) over the sequence output -> `{"start_logits", "end_logits"}` `(B, T)`.

    Logits are float32 and padding positions are `-1e9`. The loss is the mean of the start and end
    cross-entropies. It trains directly on `tfm.data.SquadFeatures.dataset()` batches, whose labels
    are `{"start_positions", "end_positions"}` (position 0 = [CLS] = no answer in this window).
    Decode with `best_spans` / `span_predictions`.

    Args:
        backbone: a `tfm.models.BertBackbone` (anything with a `sequence_output`).

    Example:
    >>> qa = SpanQA(tfm.models.BertBackbone.from_preset("bert_tiny", vocabulary_size=100))
    >>> qa.output_shape
    [(None, None), (None, None)]
    """

    TASK_ARGS = ()
    _output_names = ("start_logits", "end_logits")
    best_spans = staticmethod(best_spans)
    span_predictions = staticmethod(span_predictions)

    def __init__(self, backbone, **kwargs):
        inputs = dict(backbone.input)
        sequence = backbone(inputs)["sequence_output"]
        # float32 head (as in TextClassifier) so the -1e9 padding logit is representable.
        scores = keras.layers.Dense(
            2,
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            dtype="float32",
            name="span_logits",
        )(sequence)  # (B, T, 2)
        start, end = _SpanLogits(dtype="float32", name="split_span_logits")(scores, inputs["padding_mask"])
        super().__init__(inputs=inputs, outputs={"start_logits": start, "end_logits": end}, **kwargs)
        self.backbone = backbone

    def compile(self, optimizer="auto", loss="auto", weighted_metrics="auto", **kwargs):
        """`Task.compile` with `"auto"` = half the start plus half the end cross-entropy, and the
        accuracy of each (reported as `start_logits_accuracy`, `end_logits_accuracy`)."""
        if loss == "auto":
            loss = {k: keras.losses.SparseCategoricalCrossentropy(from_logits=True) for k in self._output_names}
            kwargs.setdefault("loss_weights", {k: 0.5 for k in self._output_names})
        if weighted_metrics == "auto":
            accuracy = keras.metrics.SparseCategoricalAccuracy
            weighted_metrics = {k: [accuracy(name="accuracy")] for k in self._output_names}
        super().compile(optimizer=optimizer, loss=loss, weighted_metrics=weighted_metrics, **kwargs)

    # Keras matches labels to outputs by key; the SQuAD pipeline names them *_positions.
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return super().compute_loss(x, self._by_output(y), y_pred, sample_weight, training=training)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return super().compute_metrics(x, self._by_output(y), y_pred, sample_weight=sample_weight)

    def _by_output(self, y):
        if y is None:
            return y
        start, end = _labels(y)
        return {"start_logits": start, "end_logits": end}

    def _example_terms(self, y, y_pred, sample_weight):
        start, end = (ops.cast(t, "int32") for t in _labels(y))
        weight = ops.cast((start >= 0) & (end >= 0), "float32")
        if sample_weight is not None:
            weight = weight * ops.cast(sample_weight, "float32")
        ce = keras.losses.sparse_categorical_crossentropy
        losses = 0.5 * (ce(ops.maximum(start, 0), ops.cast(y_pred["start_logits"], "float32"), from_logits=True)
                        + ce(ops.maximum(end, 0), ops.cast(y_pred["end_logits"], "float32"), from_logits=True))
        return losses, weight, start, end

    def loss_sums(self, y, y_pred, sample_weight=None):
        """`(sum of weighted per-example losses, sum of weights)`, loss = (CE(start) + CE(end)) / 2.

        Args:
            y: `{"start_positions", "end_positions"}` (or output-named dict, or a pair) int `(B,)`;
                negative positions are ignored.
            y_pred: the model's output dict.
            sample_weight: optional float `(B,)`.
        """
        losses, weight, _, _ = self._example_terms(y, y_pred, sample_weight)
        return ops.sum(losses * weight), ops.sum(weight)

    def metric_sums(self, y, y_pred, sample_weight=None):
        """Sums of `loss`, `weight`, and weighted hits of the argmax start, end and both (`span`)."""
        losses, weight, start, end = self._example_terms(y, y_pred, sample_weight)
        hit_start = ops.equal(ops.cast(ops.argmax(y_pred["start_logits"], axis=-1), "int32"), start)
        hit_end = ops.equal(ops.cast(ops.argmax(y_pred["end_logits"], axis=-1), "int32"), end)
        hits = lambda h: ops.sum(ops.cast(h, "float32") * weight)  # noqa: E731
        return {"loss": ops.sum(losses * weight), "weight": ops.sum(weight), "start_correct": hits(hit_start),
                "end_correct": hits(hit_end), "span_correct": hits(hit_start & hit_end)}

    def metrics_from_sums(self, sums):
        """Mean `loss` and `start_accuracy`, `end_accuracy`, `span_accuracy` (argmax start and end both right)."""
        weight = max(float(sums["weight"]), 1e-12)
        return {"loss": float(sums["loss"]) / weight, "start_accuracy": float(sums["start_correct"]) / weight,
                "end_accuracy": float(sums["end_correct"]) / weight,
                "span_accuracy": float(sums["span_correct"]) / weight}
