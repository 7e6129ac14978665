"""Scoring helpers the fine-tuning recipes share: batched predictions and classification reports."""

import numpy as np

from tfm.errors import InputError


def predict_batches(model, dataset):
    """`(outputs, labels)` over a finite dataset of `(x, y[, w])`, concatenated on the batch axis."""
    import tensorflow as tf

    forward = tf.function(lambda x: model(x, training=False), jit_compile=False, reduce_retracing=True)
    outputs, labels = [], []
    for batch in dataset:
        outputs.append(tf.nest.map_structure(lambda t: t.numpy(), forward(batch[0])))
        labels.append(tf.nest.map_structure(lambda t: t.numpy(), batch[1]))
    if not outputs:
        raise InputError("the evaluation data is empty")

    def stack(*parts):
        if parts[0].ndim >= 2 and len({p.shape[1] for p in parts}) > 1:  # ragged sequence lengths: pad
            width = max(p.shape[1] for p in parts)
            parts = [np.pad(p, [(0, 0), (0, width - p.shape[1])] + [(0, 0)] * (p.ndim - 2), constant_values=-100)
                     for p in parts]
        return np.concatenate(parts)

    return tf.nest.map_structure(stack, *outputs), tf.nest.map_structure(stack, *labels)


def classification_scores(logits, labels, label_names=None, binary_f1=False):
    """`(scalars, report)` of argmax predictions: accuracy, macro F1, MCC (and positive-class F1)."""
    from tfm import metrics as tfm_metrics

    predicted = np.argmax(logits, axis=-1)
    report = tfm_metrics.classification_report(labels.tolist(), predicted.tolist(), label_names=label_names)
    scalars = {"accuracy": report["accuracy"], "macro_f1": report["macro avg"]["f1"],
               "matthews_corrcoef": report["matthews_corrcoef"]}
    if binary_f1:
        scalars["f1"] = tfm_metrics.f1_score(labels.tolist(), predicted.tolist(), pos_label=1)
    return scalars, {**scalars, "classes": report, "num_examples": int(len(labels)),
                     "text": format_classification_report(report)}


def format_classification_report(report, digits=4):
    """sklearn's text layout of a `tfm.metrics.classification_report` dict."""
    rows = [k for k, v in report.items() if isinstance(v, dict) and k not in ("macro avg", "weighted avg")]
    width = max([len(str(r)) for r in rows] + [len("weighted avg")])
    head = f"{'':>{width}} {'precision':>9} {'recall':>9} {'f1-score':>9} {'support':>9}\n\n"
    line = lambda name, s: (f"{str(name):>{width}} {s['precision']:>9.{digits}f} {s['recall']:>9.{digits}f} "  # noqa
                            f"{s['f1']:>9.{digits}f} {s['support']:>9}\n")
    body = "".join(line(r, report[r]) for r in rows)
    total = report["macro avg"]["support"]
    acc = f"{'accuracy':>{width}} {'':>9} {'':>9} {report['accuracy']:>9.{digits}f} {total:>9}\n"
    return head + body + "\n" + acc + line("macro avg", report["macro avg"]) + line("weighted avg", report["weighted avg"])
