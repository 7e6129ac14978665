"""Batch-1 (or batch-M) vector-matrix products over GPT-2 small's weight shapes: which low-precision path reads
its weights faster than float32 on this CPU. Each candidate runs all 49 products of one decode step (12 blocks
of QKV, attention output, feed-forward in and out, plus the 50,257-row LM head) in one `tf.function`, with and
without XLA; the table gives the best of 9 calls and the effective weight-read rate.

    python tools/int8_probe.py [--rows 1] [--json out.json]

Candidates: float32; bfloat16 weights (`[in, out]` and transposed `[out, in]`); int8 weights dequantized into the
dot (`x @ cast(w) * s`); int8 activations and weights (`tf.matmul(..., output_type=int32)`, both layouts:
oneDNN outside XLA, XLA's integer dot inside); and tfm's own op (`tfm.kernels`, outside XLA only), weight-only
(`tfm_op`) and W8A8 (`tfm_op_w8a8`: rows of x to int8, byte dot products).
"""

import argparse
import json
import sys
import time

import numpy as np
import tensorflow as tf

SHAPES = [(768, 2304), (768, 768), (768, 3072), (3072, 768)] * 12 + [(768, 50257)]


def _quantize_rows(x):
    scale = 127.0 / tf.maximum(tf.reduce_max(tf.abs(x), axis=-1, keepdims=True), 1e-7)
    return tf.cast(tf.round(x * scale), tf.int8), scale


def candidates(rows):
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal(s).astype("float32") * 0.02 for s in SHAPES]
    scales = [127.0 / np.abs(w).max(axis=0) for w in weights]
    int8 = [np.round(w * s).astype("int8") for w, s in zip(weights, scales)]
    inputs = {d: tf.constant(rng.standard_normal((rows, d)).astype("float32")) for d in (768, 3072)}
    v = lambda arrays: [tf.Variable(a) for a in arrays]  # noqa: E731
    f32, i8, i8t = v(weights), v(int8), v([np.ascontiguousarray(a.T) for a in int8])
    bf16, bf16t = v([tf.cast(w, tf.bfloat16) for w in weights]), v([tf.cast(w.T, tf.bfloat16) for w in weights])
    sc = v([s.astype("float32") for s in scales])

    def product(name, k, x):
        if name == "float32":
            return tf.matmul(x, f32[k])
        if name == "bf16":
            return tf.cast(tf.matmul(tf.cast(x, tf.bfloat16), bf16[k]), tf.float32)
        if name == "bf16_transposed":
            return tf.cast(tf.matmul(tf.cast(x, tf.bfloat16), bf16t[k], transpose_b=True), tf.float32)
        if name == "int8_dequantize":
            return tf.matmul(x, tf.cast(i8[k], tf.float32)) / sc[k]
        if name.startswith("w8a8"):
            xq, xs = _quantize_rows(x)
            w, transposed = (i8t[k], True) if name.endswith("transposed") else (i8[k], False)
            return tf.cast(tf.matmul(xq, w, transpose_b=transposed, output_type=tf.int32), tf.float32) / (xs * sc[k])
        if name.startswith("tfm_op"):
            from tfm import kernels

            return kernels.int8_matmul(x, i8[k], sc[k], quantize_x=name == "tfm_op_w8a8")
        raise ValueError(name)

    names = ["float32", "bf16", "bf16_transposed", "int8_dequantize", "w8a8", "w8a8_transposed", "tfm_op",
             "tfm_op_w8a8"]
    bytes_per = {"float32": 4, "bf16": 2, "bf16_transposed": 2}
    for name in names:
        def step(name=name):
            return tf.add_n([tf.reduce_sum(product(name, k, inputs[d])) for k, (d, _) in enumerate(SHAPES)])

        for jit in (False, True):
            if name.startswith("tfm_op") and jit:
                continue  # a TensorFlow custom op has no XLA kernel
            yield name, jit, tf.function(step, jit_compile=jit), bytes_per.get(name, 1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1, help="rows of x (the decode batch)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    from tfm.benchmark import machine

    params = sum(a * b for a, b in SHAPES)
    results = []
    print(f"{machine()}, {args.rows} row(s), {params / 1e6:.1f} M weights per step\n")
    print("| candidate | XLA | best ms | weight read GB/s |\n|---|---|---:|---:|")
    for name, jit, fn, size in candidates(args.rows):
        fn(), fn()
        times = []
        for _ in range(9):
            start = time.perf_counter()
            fn().numpy()
            times.append(time.perf_counter() - start)
        best = min(times)
        results.append({"candidate": name, "xla": jit, "best_ms": best * 1e3, "gb_per_s": params * size / best / 1e9})
        print(f"| {name} | {'yes' if jit else 'no'} | {best * 1e3:.2f} | {params * size / best / 1e9:.1f} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "rows": args.rows, "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
