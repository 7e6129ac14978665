"""A text-classifier run exported as SavedModels in float32, int8 (W8A8 dynamic) and int8 weight-only: dev accuracy
of each export, its variables' size, and batch-1 latency (p50 / p99 over 200 single-text calls, tokenizer in the
graph), all measured on the exports as a server loads them.

    python tools/int8_serving.py RUN_DIR --data ../shared/data/sst2/dev.tsv --out /tmp/int8_serving

The data file is `label<TAB>text` with a header (SST-2's layout); labels are the run's label names.
"""

import argparse
import json
import sys
from pathlib import Path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--data", required=True, help="label<TAB>text file with a header")
    parser.add_argument("--out", required=True, help="directory for the three exports and results.json")
    parser.add_argument("--iterations", type=int, default=200)
    args = parser.parse_args(argv)
    import numpy as np
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (the exports' tokenizer ops)

    from tfm.benchmark import machine
    from tfm.export.commands import export_run
    from tfm.export.latency import measure_latency

    lines = Path(args.data).read_text(encoding="utf-8").splitlines()[1:]
    rows = [line.split("\t", 1) for line in lines if line.strip()]
    results = {"machine": machine(), "run_dir": args.run_dir, "data": args.data, "exports": {}}
    for mode in (None, "int8", "int8_weight_only"):
        name = mode or "float32"
        path = export_run(args.run_dir, Path(args.out) / name, quantize=mode)
        serve = tf.saved_model.load(str(path)).signatures["serving_default"]
        names = []
        for start in range(0, len(rows), 64):
            batch = [text for _, text in rows[start:start + 64]]
            names += [n.decode() for n in serve(text=tf.constant(batch))["label_name"].numpy()]
        accuracy = float(np.mean([n == label for n, (label, _) in zip(names, rows)]))
        latency = measure_latency(path, [text for _, text in rows[:100]], iterations=args.iterations, warmup=20)
        size = sum(f.stat().st_size for f in (path / "variables").iterdir())
        results["exports"][name] = {"accuracy": accuracy, "variables_mb": size / 2**20, **latency}
        print(name, json.dumps(results["exports"][name]), flush=True)
    Path(args.out, "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
