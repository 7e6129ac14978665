"""`tfm evaluate`: scoring a run dir on a split, and the report file it writes.

How a task is scored is its recipe's (`tfm.recipes`): fine-tuning tasks on whole examples with
`tfm.metrics` (accuracy / F1 / MCC, seqeval-style entity F1, SQuAD EM/F1), which the Trainer's per-batch
sums cannot give; pretraining tasks by the Trainer's token-weighted loss and accuracy (and perplexity).
"""

import json
import os
import re
from pathlib import Path

from tfm.recipes import get_recipe
from tfm.recipes.scoring import format_classification_report, predict_batches  # noqa: F401  (public here too)
from tfm.training.run_dir import load_run

REPORT_FILENAME = "eval_report_{split}.json"
DEFAULT_SPLIT = "dev"  # the report name of the config's own data.eval


def task_report(model, cfg, tokenizer, data, label_names=None, batch_size=None):
    """Scores `model` on `data` (a `task_data.TaskData`) with the recipe of `cfg.task.name`.

    Returns:
        (scalars, report): `scalars` a flat dict of floats for TensorBoard (accuracy, f1, ...);
        `report` the full JSON-able report (per-class / per-entity tables, and `text` for NER: the
        seqeval-layout table).
    """
    return get_recipe(cfg.task.name).score(model, cfg, tokenizer, data, label_names, batch_size)


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
    run = load_run(run_dir)
    sources = list(data) if data else run.config.data.eval
    split = report_split(data, split)
    report = get_recipe(run.config.task.name).evaluate(run, sources)
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
