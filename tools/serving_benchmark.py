"""Text-classifier runs as served: each run exported in the chosen formats (SavedModel float32 / int8 W8A8 dynamic /
int8 weight-only / bfloat16, TFLite float32 / dynamic-range int8), then dev accuracy of each export, its size, the parameters
of the run's model and batch-1 latency (p50 / p99 over single-text calls, tokenizer in the graph), all measured on
the exports as a server loads them. For the int8 table and the distillation table of the README.

    python tools/serving_benchmark.py RUN_DIR [RUN_DIR ...] --data ../shared/data/sst2/dev.tsv --out /tmp/serving \
        [--formats float32,int8,int8_weight_only,tflite,tflite_int8]

The data file is `label<TAB>text` with a header (SST-2's layout); labels are the run's label names.
"""

import argparse
import json
import sys
from pathlib import Path

FORMATS = {  # name -> (export format, quantize)
    "float32": ("saved_model", None), "int8": ("saved_model", "int8"),
    "int8_weight_only": ("saved_model", "int8_weight_only"), "bfloat16": ("saved_model", "bfloat16"),
    "tflite": ("tflite", None),
    "tflite_int8": ("tflite", "int8"),
}


def export_size(path):
    """Bytes of the weights as shipped: a SavedModel's variables, or the whole .tflite file."""
    path = Path(path)
    if path.suffix == ".tflite":
        return path.stat().st_size
    return sum(f.stat().st_size for f in (path / "variables").iterdir())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+")
    parser.add_argument("--data", required=True, help="label<TAB>text file with a header")
    parser.add_argument("--out", required=True, help="directory for the exports and results.json")
    parser.add_argument("--formats", default="float32,int8,int8_weight_only",
                        help=f"comma-separated, of {', '.join(FORMATS)}")
    parser.add_argument("--iterations", type=int, default=200)
    args = parser.parse_args(argv)
    formats = args.formats.split(",")
    unknown = set(formats) - set(FORMATS)
    if unknown:
        parser.error(f"unknown formats {sorted(unknown)}; choose from {', '.join(FORMATS)}")
    import numpy as np

    from tfm.benchmark import machine
    from tfm.export.commands import export_run
    from tfm.export.latency import measure_latency
    from tfm.export.predict import Predictor
    from tfm.training.experiment import load_run

    lines = Path(args.data).read_text(encoding="utf-8").splitlines()[1:]
    rows = [line.split("\t", 1) for line in lines if line.strip()]
    results = {"machine": machine(), "data": args.data, "runs": {}}
    for run_dir in args.run_dirs:
        run = Path(run_dir).name
        parameters = int(load_run(run_dir).task.count_params())
        results["runs"][run] = {"run_dir": run_dir, "parameters": parameters, "exports": {}}
        for name in formats:
            export_format, quantize = FORMATS[name]
            path = export_run(run_dir, Path(args.out) / run / name, format=export_format, quantize=quantize)
            export_dir = path.parent if export_format == "tflite" else path
            predictions = Predictor(export_dir).predict([text for _, text in rows])
            accuracy = float(np.mean([p["label_name"] == label for p, (label, _) in zip(predictions, rows)]))
            latency = measure_latency(export_dir, [text for _, text in rows[:100]], iterations=args.iterations,
                                      warmup=20)
            entry = {"accuracy": accuracy, "size_mb": export_size(path) / 2**20, **latency}
            results["runs"][run]["exports"][name] = entry
            print(run, name, parameters, json.dumps(entry), flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
