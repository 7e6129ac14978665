"""Copies the small artifacts of a finished run into `results/NAME/`, so a README claim can be checked.

Usage:
    python tools/record_result.py RUN_DIR [--name NAME] [--claim accuracy] [--note "hardware, wall time"]

Copies the resolved `config.yaml`, `metrics.json`, `run_info.json` and any `eval_report_*.json` (never the
checkpoints, tokenizer or events), and writes `source.json` with the run dir, the note, the date and the
`--claim`ed metrics (the numbers the README quotes; tests/test_results.py checks the README against them).
`tfm train results/NAME/config.yaml --output-dir DIR` reruns the same experiment.
"""

import argparse
import datetime
import json
import shutil
from pathlib import Path

ARTIFACTS = ("config.yaml", "metrics.json", "run_info.json")
MAX_BYTES = 64 * 1024  # results/ holds small JSON and YAML only


def record_result(run_dir, name=None, results_dir="results", note="", claims=()):
    """Copies a run dir's config, metrics and reports into `results_dir/name`; returns that folder.

    Args:
        run_dir: str, a finished `tfm train` output dir (it must hold `config.yaml` and `metrics.json`).
        name: str, the result's folder name; default the run dir's base name.
        results_dir: str, where results live (the repository's `results/`).
        note: str, free text kept in `source.json` (hardware, wall time, load).
        claims: keys of `metrics.json` whose values the README quotes.
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
    args = parser.parse_args(argv)
    print(f"recorded in {record_result(args.run_dir, args.name, args.results, args.note, args.claim)}")


if __name__ == "__main__":
    main()
