"""Latency (p50 / p99) of one text per request through an exported TextClassifier.

Usage:
    python tools/export_latency.py [EXPORT_DIR ...] [--preset bert_tiny] [--sequence-length 128]
        [--iterations 300] [--warmup 20] [--tflite] [--data ../shared/data/sst2/dev.tsv]

With EXPORT_DIRs, times those exports. Without, builds a `--preset` TextClassifier (random weights: latency
does not depend on them) with a WordPiece vocabulary trained on the data file, exports it as a SavedModel
(and as TFLite with `--tflite`) into a temporary directory and times it. Requests are the data file's
sentences, one per call, cycled.
"""

import argparse
import csv
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2" / "dev.tsv"
FALLBACK_TEXTS = ["a gorgeous, witty, seductive movie .", "the plot is nothing but boilerplate clichés",
                  "an utterly charming and hilarious film that reminded me of why i love the movies"]


def read_texts(path, limit=200):
    """The last column of a TSV with a header (SST-2's sentences), or a few built-in texts if it is missing."""
    if not Path(path).exists():
        return FALLBACK_TEXTS
    with open(path, encoding="utf-8") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(rows)
        return [row[-1] for row, _ in zip(rows, range(limit))]


def build_exports(preset, sequence_length, texts, out_dir, tflite):
    """Export a fresh `preset` classifier (2 classes) for timing; returns the export directories."""
    import tfm
    from tfm.export import export_saved_model
    from tfm.export.tflite import export_tflite

    tokenizer = tfm.data.WordPieceTokenizer.train(texts * 5, vocabulary_size=2000)
    backbone = tfm.models.BertBackbone.from_preset(preset, vocabulary_size=tokenizer.vocabulary_size)
    task = tfm.tasks.TextClassifier(backbone, num_classes=2)
    dirs = [export_saved_model(task, tokenizer, Path(out_dir) / "saved_model", sequence_length).parent]
    if tflite:
        dirs.append(export_tflite(task, tokenizer, Path(out_dir) / "tflite", sequence_length).parent)
    return dirs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export_dirs", nargs="*")
    parser.add_argument("--preset", default="bert_tiny")
    parser.add_argument("--sequence-length", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--tflite", action="store_true", help="also export and time the TFLite model")
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    args = parser.parse_args()

    from tfm.export.latency import measure_latency

    texts = read_texts(args.data)
    with tempfile.TemporaryDirectory() as scratch:
        dirs = args.export_dirs or build_exports(args.preset, args.sequence_length, texts, scratch, args.tflite)
        for export_dir in dirs:
            result = measure_latency(export_dir, texts, args.iterations, args.warmup)
            print(f"{export_dir} ({result['format']}): batch 1, {result['iterations']} requests: "
                  f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, mean {result['mean_ms']:.2f} ms")


if __name__ == "__main__":
    main()
