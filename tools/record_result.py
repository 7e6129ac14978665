"""Copies the small artifacts of a finished run into `results/NAME/`, so a README claim can be checked.

Usage:
    python tools/record_result.py RUN_DIR [--name NAME] [--claim accuracy] [--note "hardware, wall time"]

Copies the resolved `config.yaml` (its data paths rewritten relative to `results/NAME/`, as `save_config`
writes them), `metrics.json`, `run_info.json` and any `eval_report_*.json` (never the checkpoints, tokenizer
or events), and writes `source.json` with the run dir, the note, the date and the `--claim`ed metrics (the
numbers the README quotes; tests/test_results.py checks the README against them).
`tfm train results/NAME/config.yaml --set output_dir=DIR` reruns the same experiment.
A run written before configs resolved paths against their own file kept them relative to the directory
`tfm train` ran in: pass that directory as `--started-in`.
"""

import argparse
import datetime
import json
import shutil
from pathlib import Path

ARTIFACTS = ("config.yaml", "metrics.json", "run_info.json")
MAX_BYTES = 64 * 1024  # results/ holds small JSON and YAML only


def _copy_config(run, target, started_in=None):
    """The run's config.yaml into `target`, data paths made relative to `target` (see `save_config`)."""
    import yaml

    from tfm.training.config import _map_paths, from_dict, ExperimentConfig, load_config, save_config

    if started_in is None:
        cfg = load_config(run)
    else:  # an older run dir: relative paths are relative to where it was started
        raw = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
        cfg = from_dict(ExperimentConfig, _map_paths(raw, lambda p: str(Path(started_in, p).resolve())))
    save_config(cfg, str(target / "config.yaml"))


def record_result(run_dir, name=None, results_dir="results", note="", claims=(), started_in=None):
    """Copies a run dir's config, metrics and reports into `results_dir/name`; returns that folder.

    Args:
        run_dir: str, a finished `tfm train` output dir (it must hold `config.yaml` and `metrics.json`).
        name: str, the result's folder name; default the run dir's base name.
        results_dir: str, where results live (the repository's `results/`).
        note: str, free text kept in `source.json` (hardware, wall time, load).
        claims: keys of `metrics.json` whose values the README quotes.
        started_in: str, for a run written by an older tfm: the directory its relative paths are relative to.
    """
    run = Path(run_dir)
    for required in ("config.yaml", "metrics.json"):
        if not (run / required).is_file():
            raise FileNotFoundError(f"{run}: no {required} (is it a finished tfm train run dir?)")
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    missing = [k for k in claims if k not in metrics]
    if missing:
        raise KeyError(f"{run / 'metrics.json'} has no {missing}; it has {sorted(metrics)}")
    target = Path(results_dir) / (name or run.resolve().name)
    target.mkdir(parents=True, exist_ok=True)
    files = [run / a for a in ARTIFACTS if (run / a).is_file()] + sorted(run.glob("eval_report_*.json"))
    for path in files:
        if path.stat().st_size > MAX_BYTES:
            raise ValueError(f"{path} is {path.stat().st_size} bytes; results/ keeps files under {MAX_BYTES}")
        if path.name == "config.yaml":
            _copy_config(run, target, started_in)
        else:
            shutil.copyfile(path, target / path.name)
    source = {"run_dir": str(run), "note": note, "recorded": datetime.date.today().isoformat(),
              "files": [p.name for p in files], "claims": {k: metrics[k] for k in claims}}
    (target / "source.json").write_text(json.dumps(source, indent=2) + "\n", encoding="utf-8")
    return target


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--name")
    parser.add_argument("--results", default=str(Path(__file__).resolve().parents[1] / "results"))
    parser.add_argument("--note", default="")
    parser.add_argument("--claim", action="append", default=[], help="a metrics.json key the README quotes")
    parser.add_argument("--started-in", help="where an older run's relative paths are relative to")
    args = parser.parse_args(argv)
    target = record_result(args.run_dir, args.name, args.results, args.note, args.claim, args.started_in)
    print(f"recorded in {target}")


if __name__ == "__main__":
    main()
