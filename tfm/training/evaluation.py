"""Scoring a task model on a labelled split: the report `tfm evaluate` prints and the Trainer logs.

Fine-tuning tasks are scored on whole examples with `tfm.metrics` (accuracy / F1 / MCC, seqeval-style
entity F1, SQuAD EM/F1), which the Trainer's per-batch sums cannot give; pretraining tasks report the
Trainer's token-weighted loss and accuracy (and perplexity).
"""

import json
import os
import re
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfm import metrics as tfm_metrics
from tfm.errors import InputError
from tfm.training import task_data

REPORT_FILENAME = "eval_report_{split}.json"
DEFAULT_SPLIT = "dev"  # the report name of the config's own data.eval


def predict_batches(model, dataset):
    """`(outputs, labels)` over a finite dataset of `(x, y[, w])`, concatenated on the batch axis."""
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


def task_report(model, cfg, tokenizer, data, label_names=None, batch_size=None):
    """Scores `model` on `data` (a `task_data.TaskData`) for `cfg.task.name`.

    Returns:
        (scalars, report): `scalars` a flat dict of floats for TensorBoard (accuracy, f1, ...);
        `report` the full JSON-able report (per-class / per-entity tables, and `text` for NER: the
        seqeval-layout table).
    """
    task, batch_size = cfg.task.name, batch_size or cfg.trainer.batch_size
    if task == "span_qa":
        features = task_data.squad_features(cfg, tokenizer, data.examples)
        outputs, _ = predict_batches(model, features.dataset(batch_size))
        answers = _span_answers(cfg, features, outputs)
        scores = tfm_metrics.squad_scores(answers, {e.id: [a[0] for a in e.answers] for e in data.examples})
        return scores, {**scores, "num_examples": len(data.examples), "predictions": answers}
    logits, labels = predict_batches(model, task_data.labelled_dataset(cfg, tokenizer, data, batch_size, False))
    if task == "token_classifier":
        true_tags, pred_tags = _decode_tags(logits, labels, label_names)
        scheme = cfg.task.tagging_scheme
        scores = tfm_metrics.entity_scores(true_tags, pred_tags, scheme=scheme)
        micro = scores["micro avg"]
        scalars = {"entity_f1": micro["f1"], "entity_precision": micro["precision"], "entity_recall": micro["recall"],
                   "token_accuracy": float(np.mean([t == p for ts, ps in zip(true_tags, pred_tags)
                                                    for t, p in zip(ts, ps)] or [0.0]))}
        text = tfm_metrics.entity_classification_report(true_tags, pred_tags, scheme=scheme)
        return scalars, {**scalars, "entities": scores, "num_examples": len(true_tags), "text": text}
    predicted = np.argmax(logits, axis=-1)
    names = label_names if task == "text_classifier" else None
    report = tfm_metrics.classification_report(labels.tolist(), predicted.tolist(), label_names=names)
    scalars = {"accuracy": report["accuracy"], "macro_f1": report["macro avg"]["f1"],
               "matthews_corrcoef": report["matthews_corrcoef"]}
    if task == "text_classifier" and len(label_names or ()) == 2:
        scalars["f1"] = tfm_metrics.f1_score(labels.tolist(), predicted.tolist(), pos_label=1)
    return scalars, {**scalars, "classes": report, "num_examples": int(len(labels)),
                     "text": format_classification_report(report)}


def _decode_tags(logits, labels, label_names):
    from tfm.tasks import decode_tags

    return decode_tags(logits, labels, label_names)


def _span_answers(cfg, features, outputs):
    from tfm.tasks import span_predictions

    return span_predictions(features, outputs["start_logits"], outputs["end_logits"],
                            max_answer_length=cfg.task.max_answer_length, allow_no_answer=cfg.task.version_2)


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


def report_split(data=None, split=None):
    """The name in `eval_report_<name>.json`: `split` if given, else "dev" for the config's `data.eval`, else
    the stems of the `data` files joined by "+" (`["x/test.tsv"]` -> "test"), so scoring other data never
    overwrites the dev report; a `data` file that is itself named dev.* gets its folder's name in front.

    Example:
        >>> report_split(["data/test.tsv", "tfds:glue/sst2:validation"])
        'test+glue_sst2_validation'
    """
    if split:
        return split
    if not data:
        return DEFAULT_SPLIT
    names = []
    for source in data:
        if str(source).startswith("tfds:"):
            names.append(str(source)[len("tfds:"):])
            continue
        path = Path(source)
        names.append(path.stem if path.stem != DEFAULT_SPLIT else f"{path.resolve().parent.name}_{path.stem}")
    return re.sub(r"[^\w.+-]+", "_", "+".join(names))


def evaluate_run(run_dir, split=None, data=None, write=True):
    """Scores a run dir's latest checkpoint on `data` (files) or its config's eval data.

    Args:
        run_dir: str, a `tfm train` output dir.
        split: optional str, the name used in the report file (`eval_report_<split>.json`); default
            from `report_split`: "dev" for the config's data.eval, else named after the `data` files.
        data: optional list of paths (or tfds sources) in the run config's `data.format`.
        write: bool, write the JSON report into the run dir.

    Returns:
        dict, the report (`scalars` merged in at top level; `text` the printable table).
    """
    from tfm.training.experiment import load_run

    run = load_run(run_dir)
    cfg = run.config
    sources = list(data) if data else cfg.data.eval
    split = report_split(data, split)
    if cfg.task.name in ("masked_lm", "causal_lm"):
        from tfm.training.experiment import lm_eval_metrics

        report = lm_eval_metrics(run, sources)
        report["text"] = "\n".join(f"{k:>12}: {v:.4f}" for k, v in report.items()) + "\n"
    else:
        from tfm.data import LabelVocabulary

        labels = LabelVocabulary(run.label_names) if run.label_names else None
        split_data = task_data.read_split(cfg, sources, "eval", labels=labels)
        _, report = task_report(run.task, cfg, run.tokenizer, split_data, run.label_names)
    report = {"run_dir": os.path.abspath(run_dir), "split": split, "data": sources,
              "checkpoint": run.checkpoint, **report}
    if write:
        path = os.path.join(run_dir, REPORT_FILENAME.format(split=split))
        with open(path, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2, ensure_ascii=False)
        report["path"] = path
    return report


def evaluate_command(args):
    """`tfm evaluate RUN_DIR [--data PATH ...] [--split NAME]` (the parser is declared in `tfm.cli`)."""
    report = evaluate_run(args.run_dir, split=args.split, data=args.data)
    print(report["text"], end="")
    print(f"report: {report['path']}")
