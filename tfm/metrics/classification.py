"""Classification scores (accuracy, F1, Matthews correlation) in plain NumPy, matching scikit-learn.

Labels may be ints or strings; the label set is the sorted union of ``y_true`` and ``y_pred``. Ratios
whose denominator is zero are 0.0 (scikit-learn's ``zero_division="warn"`` value, without the warning).
"""

import numpy as np

_AVERAGES = ("binary", "macro", "micro")


def _as_arrays(y_true, y_pred):
    y_true, y_pred = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in length: {y_true.shape[0]} vs {y_pred.shape[0]}")
    if y_true.size == 0:
        raise ValueError("y_true and y_pred are empty")
    return y_true, y_pred


def _ratio(num, den):
    return float(num) / float(den) if den else 0.0


def confusion_matrix(y_true, y_pred, labels=None):
    """Counts ``C[i, j]`` = examples of true label ``labels[i]`` predicted as ``labels[j]``.

    Args:
        y_true: sequence of labels.
        y_pred: sequence of labels, same length.
        labels: optional list fixing the rows/columns; default: sorted union of both.

    Returns:
        (C, labels): int64 array (n, n) and the label list.

    Example:
    >>> confusion_matrix([0, 1, 1], [0, 1, 0])[0].tolist()
    [[1, 0], [1, 1]]
    """
    y_true, y_pred = _as_arrays(y_true, y_pred)
    labels = sorted(set(y_true.tolist()) | set(y_pred.tolist())) if labels is None else list(labels)
    index = {label: i for i, label in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, p in zip(y_true.tolist(), y_pred.tolist()):
        if t in index and p in index:
            matrix[index[t], index[p]] += 1
    return matrix, labels


def accuracy(y_true, y_pred):
    """Fraction of examples whose prediction equals the label.

    Args:
        y_true: sequence of labels.
        y_pred: sequence of labels, same length.

    Example:
    >>> accuracy([0, 1, 2, 2], [0, 1, 1, 2])
    0.75
    """
    y_true, y_pred = _as_arrays(y_true, y_pred)
    return float(np.mean(y_true == y_pred))


def precision_recall_f1(y_true, y_pred, labels=None):
    """Per-label precision, recall, F1 and support.

    Args:
        y_true: sequence of labels.
        y_pred: sequence of labels, same length.
        labels: optional label list; default: sorted union of both.

    Returns:
        dict label -> ``{"precision", "recall", "f1", "support"}``.

    Example:
    >>> precision_recall_f1([0, 1, 1], [1, 1, 1])[1]
    {'precision': 0.6666666666666666, 'recall': 1.0, 'f1': 0.8, 'support': 2}
    """
    matrix, labels = confusion_matrix(y_true, y_pred, labels)
    out = {}
    for i, label in enumerate(labels):
        tp, n_pred, n_true = matrix[i, i], matrix[:, i].sum(), matrix[i, :].sum()
        p, r = _ratio(tp, n_pred), _ratio(tp, n_true)
        out[label] = {"precision": p, "recall": r, "f1": _ratio(2 * p * r, p + r), "support": int(n_true)}
    return out


def f1_score(y_true, y_pred, average="binary", pos_label=1):
    """F1 score, as ``sklearn.metrics.f1_score``.

    Args:
        y_true: sequence of labels.
        y_pred: sequence of labels, same length.
        average: str; ``"binary"`` scores ``pos_label`` only (needs at most two labels), ``"macro"`` is the
            unweighted mean of per-label F1, ``"micro"`` pools counts (equals accuracy for single-label data).
        pos_label: the positive label for ``average="binary"``.

    Example:
    >>> f1_score([0, 1, 1, 0], [0, 1, 0, 1])
    0.5
    """
    if average not in _AVERAGES:
        raise ValueError(f"average must be one of {list(_AVERAGES)}, got {average!r}")
    scores = precision_recall_f1(y_true, y_pred)
    if average == "binary":
        if len(scores) > 2:
            raise ValueError(
                f"average='binary' needs at most 2 labels, found {len(scores)}: {list(scores)}; "
                "use average='macro' or 'micro'"
            )
        if pos_label not in scores:
            if len(scores) == 2:
                raise ValueError(f"pos_label={pos_label!r} is not a valid label: {list(scores)}")
            return 0.0
        return scores[pos_label]["f1"]
    if average == "macro":
        return float(np.mean([s["f1"] for s in scores.values()]))
    matrix, _ = confusion_matrix(y_true, y_pred)
    tp, total = np.trace(matrix), matrix.sum()  # micro: pooled precision == pooled recall == tp / total
    return _ratio(tp, total)


def matthews_corrcoef(y_true, y_pred):
    """Matthews correlation coefficient, multi-class (Gorodkin's R_K), as scikit-learn computes it.

    With confusion matrix ``C``, ``c = trace(C)``, ``s = C.sum()``, ``t = row sums`` (true counts) and
    ``p = column sums`` (predicted counts)::

        MCC = (c*s - t.p) / sqrt((s^2 - p.p) * (s^2 - t.t))

    and 0.0 when the denominator is zero. For two labels this is the usual
    ``(TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN))``.

    Args:
        y_true: sequence of labels.
        y_pred: sequence of labels, same length.

    Example:
    >>> matthews_corrcoef([0, 0, 1, 1], [0, 0, 1, 1])
    1.0
    """
    matrix, _ = confusion_matrix(y_true, y_pred)
    matrix = matrix.astype(np.float64)
    t, p = matrix.sum(axis=1), matrix.sum(axis=0)
    c, s = np.trace(matrix), matrix.sum()
    denominator = np.sqrt((s * s - p @ p) * (s * s - t @ t))
    return float((c * s - t @ p) / denominator) if denominator else 0.0


def classification_report(y_true, y_pred, label_names=None):
    """Scores of a classifier as a dict, like ``sklearn.metrics.classification_report(output_dict=True)``.

    Args:
        y_true: sequence of labels.
        y_pred: sequence of labels, same length.
        label_names: optional dict or list mapping label -> display name (a list is indexed by label).

    Returns:
        dict: one entry per label (``precision``, ``recall``, ``f1``, ``support``), ``"accuracy"``,
        ``"macro avg"`` and ``"weighted avg"`` (the last two include ``support`` = number of examples),
        and ``"matthews_corrcoef"``.

    Example:
    >>> r = classification_report([0, 1, 1, 0], [0, 1, 0, 0], label_names=["neg", "pos"])
    >>> r["accuracy"], r["pos"]["recall"]
    (0.75, 0.5)
    """
    scores = precision_recall_f1(y_true, y_pred)
    total = sum(s["support"] for s in scores.values())
    names = {label: label for label in scores}
    if label_names is not None:
        names = {label: label_names[label] for label in scores}
    report = {names[label]: s for label, s in scores.items()}
    keys = ("precision", "recall", "f1")
    report["accuracy"] = accuracy(y_true, y_pred)
    report["macro avg"] = {k: float(np.mean([s[k] for s in scores.values()])) for k in keys}
    report["macro avg"]["support"] = total
    weights = [s["support"] for s in scores.values()]
    report["weighted avg"] = {
        k: float(np.average([s[k] for s in scores.values()], weights=weights)) if total else 0.0 for k in keys
    }
    report["weighted avg"]["support"] = total
    report["matthews_corrcoef"] = matthews_corrcoef(y_true, y_pred)
    return report
