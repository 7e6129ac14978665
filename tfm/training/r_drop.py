"""R-Drop (Liang et al., 2021): two dropout passes over each batch, and their disagreement as a loss.

The objective is `0.5 * (CE(p1) + CE(p2)) + alpha * 0.5 * (KL(p1 || p2) + KL(p2 || p1))`, where `p1` and `p2` are
the model's predictions for the same examples under two dropout masks: the form of the authors' code
(dropreg/R-Drop: cross-entropy over both passes, the two KLs averaged), so `alpha = 0` is the plain cross-entropy.
Positions the label loss ignores (labels < 0, zero sample weight) add no KL either. One implementation serves both
training paths: `trainer.r_drop_alpha` in a config (the Trainer) and `Task.compile(r_drop_alpha=...)` (`model.fit`).
Each step costs a second forward and backward pass.

>>> import numpy as np
>>> a = np.log(np.array([[0.9, 0.1]], "float32"))
>>> b = np.log(np.array([[0.5, 0.5]], "float32"))
>>> round(float(symmetric_kl(a, b)[0]), 4)  # 0.5 * (0.3681 + 0.5108)
0.4394
"""

from keras import ops

from tfm.tasks.losses import label_weights


def symmetric_kl(logits_a, logits_b):
    """`0.5 * (KL(softmax(a) || softmax(b)) + KL(softmax(b) || softmax(a)))` over the last axis, in float32."""
    log_a = ops.log_softmax(ops.cast(logits_a, "float32"), axis=-1)
    log_b = ops.log_softmax(ops.cast(logits_b, "float32"), axis=-1)
    return 0.5 * ops.sum((ops.exp(log_a) - ops.exp(log_b)) * (log_a - log_b), axis=-1)


def check_task(model):
    """Raises ValueError naming why R-Drop's KL does not apply to `model`: it needs one tensor of class logits
    trained with `loss_sums`' cross-entropy (not a regression head, embeddings, several outputs or a CRF)."""
    reason = None
    if getattr(model, "regression", False):
        reason = "a regression head predicts values, not a distribution"
    elif not getattr(model, "OUTPUTS_LOGITS", True):
        reason = f"{type(model).__name__} outputs embeddings, not class logits"
    elif len(model.outputs) != 1:
        reason = f"{type(model).__name__} has {len(model.outputs)} outputs; R-Drop here reads one tensor of logits"
    elif getattr(model, "crf_layer", None) is not None:
        reason = "a CRF head's loss is the sentence likelihood, not a per-token distribution"
    if reason:
        raise ValueError(f"r_drop_alpha cannot be used with this task: {reason}. Set r_drop_alpha to 0.")


def _second_pass(model, x, logits, y, sample_weight):
    """The batch again under another dropout mask (the seed generator has moved on), and the symmetric KL to the
    first pass summed over the labelled positions, with those positions' weights."""
    second = model(x, training=True)
    weight = label_weights(y, sample_weight)
    return second, ops.sum(symmetric_kl(logits, second) * weight), weight


def r_drop_loss_sums(model, x, y, sample_weight=None, alpha=1.0):
    """`(loss sum, weight sum, first logits)` of one batch under R-Drop, as sums like `Task.loss_sums`.

    Args:
        model: a tfm task with `loss_sums` (class logits).
        x, y, sample_weight: the batch (labels < 0 are ignored).
        alpha: float >= 0, weight of the symmetric KL between the two passes.
    """
    logits = model(x, training=True)
    second, kl_sum, _ = _second_pass(model, x, logits, y, sample_weight)
    first_sum, weight_sum = model.loss_sums(y, logits, sample_weight)
    second_sum, _ = model.loss_sums(y, second, sample_weight)
    return 0.5 * (first_sum + second_sum) + float(alpha) * kl_sum, weight_sum, logits


def fit_loss(task, keras_loss, x, y, y_pred, sample_weight, alpha):
    """`model.fit`'s R-Drop loss: Keras' loss of each pass averaged, plus `alpha` times the KL summed over the
    labelled positions and divided by the batch's slots (Keras' `sum_over_batch_size`, scaled per replica as
    Keras scales its own loss)."""
    from keras.src.losses.loss import scale_loss_for_distribution

    second, kl_sum, weight = _second_pass(task, x, y_pred, y, sample_weight)
    second_loss = keras_loss(second)
    kl = scale_loss_for_distribution(kl_sum / ops.cast(ops.size(weight), "float32"))
    return 0.5 * (keras_loss(y_pred) + second_loss) + ops.cast(float(alpha) * kl, second_loss.dtype)
