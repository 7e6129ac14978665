"""Where a training step (or a decode step) spends its time, op type by op type (issue 20: profile before optimizing).

Builds a `tfm bench` training case (random weights, one repeated batch), warms the Trainer step up, traces a few
steps with TensorFlow's profiler and sums the host op events of the trace by op type. A generation case
(`generate_b8_int8`, ...) traces whole greedy `generate` calls instead, on the loop outside XLA (`--path
outside`, an int8 weight-only model's) or the compiled one (`--path xla`), and reports per generated position.
Prints the top rows, each with its share of all op time and a class: `matmul` (MatMul / BatchMatMul / Einsum /
fused matmuls) or what else it is (elementwise, normalization, softmax, casts, the optimizer update, data
movement).

    python tools/profile_step.py --case train_bert_base --precision bf16 --steps 3
    python tools/profile_step.py --case train_bert_base --path fit --precision float32 --xla   # fit, XLA: one op
    python tools/profile_step.py --case generate_b8_int8 --path outside --precision float32 --steps 1

Under XLA a step is one compiled cluster, so the op-level view is only meaningful without XLA (which is also
what `trainer.mixed_precision: auto` runs in bf16). Times are op wall times on their threads: with 2 cores,
ops that overlap add up to more than the step.
"""

import argparse
import collections
import glob
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CLASSES = {  # besides "matmul": every op type with MatMul or Einsum in its name
    "softmax": ("Softmax", "_MklSoftmax", "LogSoftmax", "SoftmaxCrossEntropyWithLogits",
                "SparseSoftmaxCrossEntropyWithLogits"),
    "normalization": ("FusedBatchNormV3", "_MklLayerNorm", "Rsqrt", "Mean", "SquaredDifference"),
    "cast": ("Cast",),
    "dropout / random": ("StatelessRandomUniformFullIntV2", "StatelessRandomUniformV2", "StatelessRandomGetKeyCounter",
                         "RandomUniform", "GreaterEqual"),
    "optimizer": ("ResourceApplyAdam", "ResourceApplyAdamWithAmsgrad", "AssignSubVariableOp", "AssignVariableOp",
                  "AssignAddVariableOp", "ReadVariableOp", "ResourceScatterAdd"),
    "data movement": ("Transpose", "_MklTranspose", "Reshape", "ConcatV2", "Pack", "GatherV2", "ResourceGather",
                      "StridedSlice", "Slice", "Split", "SplitV", "Tile", "BroadcastTo", "UnsortedSegmentSum",
                      "Identity", "Fill", "Select", "SelectV2", "OnesLike", "ZerosLike", "TensorScatterUpdate",
                      "ScatterNd"),
}


def op_class(op_type):
    if "MatMul" in op_type or "Einsum" in op_type:
        return "matmul"
    for name, types in CLASSES.items():
        if op_type in types:
            return name
    return "elementwise / other"


def op_times(logdir):
    """Sum of durations (ms) of the host trace's TF op events, by op type; and the event count."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    totals, counts, scopes = collections.Counter(), collections.Counter(), collections.Counter()
    for path in glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True):
        space = xplane_pb2.XSpace()
        with open(path, "rb") as f:
            space.ParseFromString(f.read())
        for plane in space.planes:
            if not plane.name.startswith("/host:CPU"):
                continue
            names = {k: m.name for k, m in plane.event_metadata.items()}
            for line in plane.lines:
                for event in line.events:
                    name = names.get(event.metadata_id, "")
                    if ":" not in name:  # TF ops are "op_name:OpType"; the rest are runtime scopes
                        continue
                    op_type = name.rsplit(":", 1)[1].strip()
                    if "::" in name or op_type.startswith("__"):  # executor scopes, the function call itself
                        continue
                    totals[op_type] += event.duration_ps / 1e9
                    counts[op_type] += 1
                    scopes[scope_of(name.rsplit(":", 1)[0])] += event.duration_ps / 1e9
    return totals, counts, scopes


def scope_of(op_name):
    """A readable owner for an op: the optimizer update, or a layer kind, forward or backward."""
    parts = [p for p in op_name.split("/") if p and not p.startswith("StatefulPartitionedCall")]
    if any("adam" in p.lower() or "optimizer" in p.lower() for p in parts):
        return "optimizer update"
    gradient = any(p.startswith("gradient") for p in parts)
    kinds = ("transformer_layer", "token_embedding", "position_embedding", "embeddings_layer_norm",
             "embeddings_dropout", "masked_lm_head", "lm_head", "pooled_dense", "SparseSoftmaxCrossEntropy")
    layer = next((k for p in parts for k in kinds if p.startswith(k)), "other (loss, casts, gradient sums)")
    return f"{'backward: ' if gradient else ''}{layer}"


def generate_side(model, case, config, path):
    """A side whose `run(n)` makes `n` greedy `generate` calls of `case` on one path of the model's function."""
    import numpy as np
    import tensorflow as tf

    from tfm.benchmark_sides import Side

    function = model.generate_function(case.new_tokens)
    loop = getattr(function, "outside_xla" if path == "outside" else "compiled", function)
    if path == "outside" and loop is function:
        raise SystemExit(f"{case.name}: this model has no loop outside XLA (int8 weight-only and tfm's op only)")
    prompt = np.random.default_rng(0).integers(0, config["vocabulary_size"], (case.batch_size, case.sequence_length))
    args = (tf.constant(prompt, tf.int32), tf.ones(prompt.shape, tf.int32), tf.constant([0, 0], tf.int64))

    def run(n):
        start = time.perf_counter()
        for _ in range(n):
            loop(*args)["token_ids"].numpy()
        return time.perf_counter() - start

    return Side(f"generate_{path}", run)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="train_bert_base")
    parser.add_argument("--precision", choices=["float32", "bf16"], default="bf16")
    parser.add_argument("--path", choices=["trainer", "fit", "outside", "xla"], default=None,
                        help="training: trainer (default) or fit; generation: outside (default) or xla")
    parser.add_argument("--xla", action="store_true", help="XLA-compile the step (one cluster op)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--tiny", action="store_true", help="toy sizes (tests)")
    args = parser.parse_args(argv)

    import keras
    import tensorflow as tf

    from tfm.benchmark import CASES, build_models, model_config, tiny_case, training_batch
    from tfm.benchmark_sides import fit_side, trainer_side

    case = tiny_case(CASES[args.case]) if args.tiny else CASES[args.case]
    policy = "mixed_bfloat16" if args.precision == "bf16" else "float32"
    keras.config.set_dtype_policy(policy)
    keras.utils.set_random_seed(0)
    config = model_config(case, tiny=args.tiny)
    ours, _ = build_models(case, config)
    if case.new_tokens:
        args.path = args.path or "outside"
        side, cleanup = generate_side(ours, case, config, args.path), (lambda: None)
    else:
        args.path = args.path or "trainer"
        batch = training_batch(case, config)
        if args.path == "trainer":
            side, cleanup = trainer_side("trainer", ours, batch, case, policy, jit_compile=args.xla)
        else:
            side, cleanup = fit_side("fit", ours, batch, jit_compile=args.xla), (lambda: None)
    side.run(2)  # trace and warm up
    seconds = side.run(args.steps) / args.steps  # untraced step time
    logdir = tempfile.mkdtemp(prefix="tfm_profile_")
    tf.profiler.experimental.start(logdir)
    start = time.perf_counter()
    side.run(args.steps)
    traced = (time.perf_counter() - start) / args.steps
    tf.profiler.experimental.stop()
    cleanup()
    totals, counts, scopes = op_times(logdir)
    if case.new_tokens:  # per generated position: a call's op time over its new tokens
        seconds, traced = seconds / case.new_tokens, traced / case.new_tokens
        totals = collections.Counter({k: v / case.new_tokens for k, v in totals.items()})
        counts = collections.Counter({k: v / case.new_tokens for k, v in counts.items()})
        scopes = collections.Counter({k: v / case.new_tokens for k, v in scopes.items()})
    total = sum(totals.values())
    by_class = collections.Counter()
    for op_type, ms in totals.items():
        by_class[op_class(op_type)] += ms
    print(f"{args.case}, {args.path}, {args.precision}, XLA {'on' if args.xla or args.path == 'xla' else 'off'}: "
          f"{seconds * 1e3:.0f} ms/step untraced, {traced * 1e3:.0f} ms traced; op time {total / args.steps:.0f} "
          f"ms/step summed over threads ({len(totals)} op types)")
    print("\n| op type | class | ms/step | share | calls/step |\n|---|---|---:|---:|---:|")
    for op_type, ms in totals.most_common(args.top):
        print(f"| {op_type} | {op_class(op_type)} | {ms / args.steps:.1f} | {ms / total:.1%} | "
              f"{counts[op_type] / args.steps:.3g} |")
    print("\n| class | ms/step | share |\n|---|---:|---:|")
    for name, ms in by_class.most_common():
        print(f"| {name} | {ms / args.steps:.1f} | {ms / total:.1%} |")
    print("\n| scope | ms/step | share |\n|---|---:|---:|")
    for name, ms in scopes.most_common(args.top):
        print(f"| {name} | {ms / args.steps:.1f} | {ms / total:.1%} |")


if __name__ == "__main__":
    main()
