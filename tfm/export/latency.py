"""Request latency of an export: one text per call, timed end to end (strings in, numpy out)."""

import time

import numpy as np


def measure_latency(export_dir, texts, iterations=300, warmup=20, signature="serving_default"):
    """p50 / p99 / mean milliseconds of single-text calls to an export (SavedModel or TFLite).

    Each call feeds one text (cycling through `texts`) and waits for the outputs as NumPy, so the time
    covers tokenization, the model and the decoding in the graph, as a serving request would.

    Args:
        export_dir: directory written by `export_saved_model` (latest version) or `export_tflite`.
        texts: list of str.
        iterations: int, timed calls.
        warmup: int, untimed calls first (tracing, allocation).
        signature: str, SavedModel signature with a single `text` input.

    Returns:
        dict: `p50_ms`, `p99_ms`, `mean_ms`, `iterations`, `format` ("saved_model" or "tflite").
    """
    from tfm.export.predict import Predictor

    predictor = Predictor(export_dir)
    if predictor.tflite:
        runner = predictor.runner
        feeds = [np.array([t.encode("utf-8")], dtype=object) for t in texts]
        call = lambda feed: runner(text=feed)  # noqa: E731
    else:
        import tensorflow as tf

        function = predictor.model.signatures[signature]
        feeds = [tf.constant([t]) for t in texts]
        call = lambda feed: {k: v.numpy() for k, v in function(text=feed).items()}  # noqa: E731
    for i in range(warmup):
        call(feeds[i % len(feeds)])
    times = np.empty(iterations)
    for i in range(iterations):
        start = time.perf_counter()
        call(feeds[i % len(feeds)])
        times[i] = time.perf_counter() - start
    times *= 1000.0
    return {"p50_ms": float(np.percentile(times, 50)), "p99_ms": float(np.percentile(times, 99)),
            "mean_ms": float(times.mean()), "iterations": int(iterations),
            "format": "tflite" if predictor.tflite else "saved_model"}
