"""tfm against KerasHub in one run, on one machine: training tokens/s and MFU, generation tokens/s.

Each case builds both libraries' models from the same hyperparameters (random weights), feeds both the same
random batch, warms both up (XLA compilation), then times rounds that alternate the contenders, reversing the
order every round, so load from other processes hits both alike. Reported: the median rate of each side and
the median of the per-round tfm/KerasHub ratios.

Training on the tfm side is timed through both paths we ship: the `Trainer`'s XLA-compiled step (what
`tfm train` runs) and `model.fit(jit_compile=True)`; `tfm` is the faster of the two (by median), both are in
the JSON. KerasHub's `BertMaskedLM` / `GPT2CausalLM` train with `fit(jit_compile=True)` and the same AdamW.
With float32 runs, both libraries are also timed under `mixed_bfloat16` through `fit(jit_compile=False)` (see
`run_case`); `ratio` stays against KerasHub's float32 XLA fit, `ratio_vs_best_keras_hub` against its faster path.
MFU = tokens/s x analytical FLOPs per token (`tfm.training.flops`: 6N + attention, MLM head only at the
masked positions) / the peak of a large matmul measured in this process. Generation is greedy, 16-token
prompt, 64 new tokens; its limit at batch 1 is memory bandwidth (every weight read once per token), which is
measured here by batch-1 vector-matrix products over 512 MB of float32 weights (`measure_bandwidth`).

Example:
    tfm bench --cases train_bert_mini,generate_b1 --json bench.json
"""

import dataclasses
import json
import math
import os
import platform
import statistics
import sys
import time
import types

import numpy as np

from tfm.benchmark_report import format_markdown  # noqa: F401  (part of this module's API)
from tfm.benchmark_sides import fit_side, generate_sides, trainer_side


@dataclasses.dataclass(frozen=True)
class Case:
    """One comparison. `new_tokens > 0` makes it a generation case (`sequence_length` = prompt length).

    Args:
        name: str, the case name in the JSON and table.
        family: str, `"bert"` (masked LM) or `"gpt"` (causal LM); `preset`: the tfm size both sides use.
        batch_size, sequence_length: ints (`sequence_length` is the prompt length when generating).
        new_tokens: int, tokens generated per row (0 for training).
        steps, repeats: ints, training steps (or generate calls) per timed round, and timed rounds.
        weights: str, tfm's weights: `"float32"`, or a `tfm.compression` mode (KerasHub stays float32).
    """

    name: str
    family: str
    preset: str
    batch_size: int
    sequence_length: int
    new_tokens: int = 0
    steps: int = 1
    repeats: int = 3
    weights: str = "float32"

    @property
    def metric(self):
        return "generated tokens/s" if self.new_tokens else "train tokens/s"

    @property
    def predictions(self):
        """Masked positions per sequence for MLM: 15% of the tokens, rounded up (20 of 128, as in BERT)."""
        return max(1, math.ceil(0.15 * self.sequence_length))


CASES = {
    case.name: case
    for case in (
        Case("train_bert_mini", "bert", "bert_mini", batch_size=16, sequence_length=128, steps=8, repeats=5),
        Case("train_bert_base", "bert", "bert_base", batch_size=8, sequence_length=128, steps=2, repeats=3),
        Case("train_gpt2_small", "gpt", "gpt2_small", batch_size=2, sequence_length=256, steps=2, repeats=3),
        Case("generate_b1", "gpt", "gpt2_small", batch_size=1, sequence_length=16, new_tokens=64, repeats=5),
        Case("generate_b8", "gpt", "gpt2_small", batch_size=8, sequence_length=16, new_tokens=64, repeats=3),
        Case("generate_b1_int8", "gpt", "gpt2_small", batch_size=1, sequence_length=16, new_tokens=64, repeats=5,
             weights="int8_weight_only"),
        Case("generate_b8_int8", "gpt", "gpt2_small", batch_size=8, sequence_length=16, new_tokens=64, repeats=3,
             weights="int8_weight_only"),
        Case("generate_b1_w8a8", "gpt", "gpt2_small", batch_size=1, sequence_length=16, new_tokens=64, repeats=5,
             weights="int8"),
        Case("generate_b8_w8a8", "gpt", "gpt2_small", batch_size=8, sequence_length=16, new_tokens=64, repeats=3,
             weights="int8"),
    )
}

# `--tiny`: the same code paths on toy shapes (tests, smoke runs); numbers are meaningless.
TINY_MODEL = {"vocabulary_size": 512, "num_layers": 2, "num_heads": 2, "hidden_dim": 32, "intermediate_dim": 64,
              "max_sequence_length": 64}


def tiny_case(case):
    """`case` shrunk to toy sizes: batch 2, at most 16 tokens (+8 generated), one step per round."""
    return dataclasses.replace(case, batch_size=2, sequence_length=min(case.sequence_length, 16),
                               new_tokens=min(case.new_tokens, 8), steps=1, repeats=1)


def model_config(case, tiny=False):
    """The KerasHub-vocabulary hyperparameters both sides are built from (tfm preset, optionally tiny)."""
    from tfm.models import BERT_PRESETS, GPT_PRESETS

    config = dict((BERT_PRESETS if case.family == "bert" else GPT_PRESETS)[case.preset])
    if tiny:
        config.update(TINY_MODEL)
    if case.new_tokens:
        config["dropout"] = 0.0  # inference
    return config


def flops_per_token(case, config):
    """Analytical training FLOPs per token for `case` (see `tfm.training.flops.training_flops_per_token`)."""
    from tfm.training.flops import training_flops_per_token

    share = case.predictions / case.sequence_length if case.family == "bert" else 1.0
    # Only the shape attributes the formula reads, so no weights need to be built.
    shape = types.SimpleNamespace(**{k: config[k] for k in ("vocabulary_size", "num_layers", "hidden_dim",
                                                             "intermediate_dim")})
    return training_flops_per_token(shape, case.sequence_length, predictions_per_token=share)


# ------------------------------------------------------------------------------------------------ models, data
def build_models(case, config):
    """`(tfm task, KerasHub task)` with random weights and identical hyperparameters (global dtype policy); tfm's
    weights in `case.weights` (KerasHub's stay float32)."""
    import keras_hub

    from tfm.models import BertBackbone, GptBackbone
    from tfm.tasks import CausalLM, MaskedLM

    if case.family == "bert":
        # KerasHub's BERT uses tanh-approximate GELU in its blocks; match it so both do the same work.
        ours = MaskedLM(BertBackbone(**config, activation="gelu_approximate"))
        theirs = keras_hub.models.BertMaskedLM(keras_hub.models.BertBackbone(**config), preprocessor=None)
    else:
        ours = CausalLM(GptBackbone(**config))
        theirs = keras_hub.models.GPT2CausalLM(keras_hub.models.GPT2Backbone(**config), preprocessor=None)
    if case.weights != "float32":
        from tfm.compression import quantize

        quantize(ours, case.weights)
    return ours, theirs


def training_batch(case, config, seed=0):
    """One random `(x, y, sample_weight)` batch in the layout both libraries' tasks take."""
    rng = np.random.default_rng(seed)
    b, t, vocab = case.batch_size, case.sequence_length, config["vocabulary_size"]
    token_ids = rng.integers(0, vocab, (b, t)).astype("int32")
    padding_mask = np.ones((b, t), "int32")
    if case.family == "bert":
        p = case.predictions
        positions = np.sort([rng.choice(t, p, replace=False) for _ in range(b)], axis=1).astype("int32")
        x = {"token_ids": token_ids, "segment_ids": np.zeros((b, t), "int32"), "padding_mask": padding_mask,
             "mask_positions": positions}
        return x, rng.integers(0, vocab, (b, p)).astype("int32"), np.ones((b, p), "float32")
    x = {"token_ids": token_ids, "padding_mask": padding_mask}
    return x, np.roll(token_ids, -1, axis=1), padding_mask.astype("float32")


def alternate(sides, steps, repeats, warmup=1):
    """Per side, the list of per-round rates (tokens/s); rounds alternate the sides, order reversed each round."""
    for side in sides:
        for _ in range(warmup):
            side.run(1)
    rates = {side.name: [] for side in sides}
    for round_index in range(repeats):
        for side in sides if round_index % 2 == 0 else sides[::-1]:
            seconds = side.run(steps)
            rates[side.name].append(side.tokens_per_step * steps / seconds)
    return rates


# ------------------------------------------------------------------------------------------------ measurements
def measure_bandwidth(megabytes=512, passes=4, repeats=5, width=4096):
    """Read bandwidth in bytes/s as a decode step achieves it: batch-1 vector-matrix products through float32
    weights, the way `tfm.layers.Dense` runs them under XLA (the same dot, barrier and threading).

    The weights are `megabytes` of [width, width] matrices (far larger than any cache), chained as layers are;
    one call reads all of them `passes` times, so dispatch overhead is amortized; the best of `repeats` calls
    counts. (The earlier probe, an XLA `reduce_sum` over one buffer, read 12.0-12.8 GB/s where these products
    read 20.0 GB/s on a 2-core Intel Xeon, and decoding was reported at up to 129% of it.)
    """
    import tensorflow as tf

    from tfm.layers.dense import fusion_barrier

    count = max(1, megabytes * 2**20 // (4 * width * width))
    weights = [tf.Variable(tf.random.normal((width, width), stddev=width**-0.5)) for _ in range(count)]
    x = tf.random.normal((1, width))

    @tf.function(jit_compile=True)
    def read_all(h):
        for _ in range(passes):
            for w in weights:
                h = fusion_barrier(tf.matmul(h, w))
        return tf.reduce_sum(h)

    best = float("inf")
    for _ in range(repeats + 1):  # the first call compiles
        start = time.perf_counter()
        read_all(x).numpy()
        best = min(best, time.perf_counter() - start)
    return passes * count * width * width * 4 / best


def decode_bytes_per_step(model):
    """Bytes one decode step must read at least: every weight once, except the position table (one row)."""
    import tensorflow as tf

    position = id(model.backbone.position_embedding.embeddings)
    return sum(int(np.prod(w.shape)) * tf.as_dtype(w.dtype).size for w in model.weights if id(w) != position)


def machine():
    """A short description of this machine (CPU model and cores; the GPU when TensorFlow sees one)."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return f"{len(gpus)} GPU ({tf.config.experimental.get_device_details(gpus[0]).get('device_name', 'GPU')})"
    model = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    return f"{os.cpu_count()}-core {model} CPU"


# ------------------------------------------------------------------------------------------------ cases
def run_case(case, tiny=False, dtype="float32", warmup=1, log=print, bf16_fit=False):
    """Runs one case; returns its result dict (`name, metric, tfm, keras_hub, ratio` plus details).

    With `bf16_fit`, training cases also time both libraries under `mixed_bfloat16` through
    `fit(jit_compile=False)` (`tfm_fit_bf16`, `keras_hub_bf16`): on CPUs with bf16 matmul units (AVX512-BF16,
    AMX) TF's oneDNN kernels run bf16 matmuls about twice as fast as float32, while XLA's CPU backend does
    not. `ratio` stays against KerasHub's float32 XLA fit; `ratio_vs_best_keras_hub` is against its faster path.
    """
    import gc

    import keras

    keras.config.set_dtype_policy(dtype)
    keras.utils.set_random_seed(0)
    config = model_config(case, tiny)
    ours, theirs = build_models(case, config)
    cleanup = []
    if case.new_tokens:
        rng = np.random.default_rng(0)
        prompt = rng.integers(0, config["vocabulary_size"], (case.batch_size, case.sequence_length)).astype("int32")
        sides = generate_sides(ours, theirs, prompt, case.new_tokens)
    else:
        batch = training_batch(case, config)
        trainer, remove_run_dir = trainer_side("tfm_trainer", ours, batch, case, dtype)
        cleanup.append(remove_run_dir)
        sides = [trainer, fit_side("tfm_fit", ours, batch), fit_side("keras_hub", theirs, batch)]
        if bf16_fit:
            keras.config.set_dtype_policy("mixed_bfloat16")
            keras.utils.set_random_seed(0)
            ours16, theirs16 = build_models(case, config)
            # The Trainer as `trainer.mixed_precision: auto` runs it on such a CPU: bf16 without XLA.
            trainer16, remove_run_dir16 = trainer_side("tfm_trainer_bf16", ours16, batch, case, "mixed_bfloat16",
                                                       jit_compile=False)
            cleanup.append(remove_run_dir16)
            keras.config.set_dtype_policy(dtype)
            sides += [trainer16, fit_side("tfm_fit_bf16", ours16, batch, jit_compile=False),
                      fit_side("keras_hub_bf16", theirs16, batch, jit_compile=False)]
    log(f"{case.name}: warming up, then {case.repeats} rounds of {case.steps} step(s) per side", file=sys.stderr)
    result = summarize(case, alternate(sides, case.steps, case.repeats, warmup=warmup), sides)
    if len(set(result["tokens_per_step"].values())) != 1:  # the sides did not do the same work
        raise RuntimeError(f"{case.name}: tokens per step differ between sides: {result['tokens_per_step']}")
    if case.new_tokens:
        result.update(weight_bytes=decode_bytes_per_step(ours), weights=case.weights)
    else:
        result["flops_per_token"] = flops_per_token(case, config)
    for fn in cleanup:
        fn()
    del ours, theirs, sides
    keras.backend.clear_session()
    gc.collect()
    return result


def add_limits(result, peak_flops=None, bandwidth=None):
    """Adds MFU (training) or the bandwidth bound (generation: all weights read once per step) to `result`."""
    if "flops_per_token" in result and peak_flops:
        fpt = result["flops_per_token"]
        # A bf16 path is measured against the bf16 matmul peak, a float32 one against the float32 peak.
        tfm_peak = result.get("peak_flops_bfloat16") if result.get("tfm_path", "").endswith("_bf16") else None
        result.update(peak_flops=peak_flops, mfu_tfm=result["tfm"] * fpt / (tfm_peak or peak_flops),
                      mfu_keras_hub=result["keras_hub"] * fpt / peak_flops)
    if "weight_bytes" in result and bandwidth:
        bound = bandwidth * result["batch_size"] / result["weight_bytes"]
        result.update(bandwidth=bandwidth, bandwidth_bound=bound, tfm_fraction_of_bound=result["tfm"] / bound)
    return result


def summarize(case, rates, sides):
    """Medians per side and the median per-round ratio; for training, `tfm` is the faster tfm path."""
    medians = {name: statistics.median(values) for name, values in rates.items()}
    tfm_paths = [name for name in rates if name.startswith("tfm")]
    best = max(tfm_paths, key=medians.get)

    def ratio(theirs):
        return statistics.median(ours / other for ours, other in zip(rates[best], rates[theirs]))

    result = {"name": case.name, "metric": case.metric, "tfm": medians[best], "keras_hub": medians["keras_hub"],
              "ratio": ratio("keras_hub"), "batch_size": case.batch_size, "sequence_length": case.sequence_length}
    if case.new_tokens:
        result["new_tokens"] = case.new_tokens
    else:  # every path's median, which tfm path was faster, and the ratio against KerasHub's faster path
        their_best = max((n for n in rates if n.startswith("keras_hub")), key=medians.get)
        result.update({"tfm_path": best, **{name: medians[name] for name in rates if name != "keras_hub"},
                       "keras_hub_path": their_best, "ratio_vs_best_keras_hub": ratio(their_best)})
    result["tokens_per_step"] = {side.name: side.tokens_per_step for side in sides}
    result["output_shape"] = {side.name: side.output_shape for side in sides}
    result["rounds"] = rates
    return result


def run_benchmark(names=None, tiny=False, dtype="float32", repeats=None, steps=None, warmup=1, log=print,
                  bf16_fit=False):
    """Runs the named cases (all by default); returns the list of result dicts.

    Args:
        names: optional list of case names from `CASES`.
        tiny: bool, toy model sizes (a smoke test of the code paths; the numbers mean nothing).
        dtype: str, Keras dtype policy for both sides (`float32`, or `mixed_bfloat16` on accelerators).
        repeats: optional int, timed rounds per case (default: the case's).
        steps: optional int, steps per round (default: the case's).
        warmup: int, untimed calls per side before timing (the first one compiles).
        log: print-like callable for progress lines.
        bf16_fit: bool, also time both libraries' `mixed_bfloat16` fits without XLA (see `run_case`).
    """
    names = list(CASES) if names is None else list(names)
    unknown = [n for n in names if n not in CASES]
    if unknown:
        raise ValueError(f"Unknown case(s) {unknown}; valid cases: {list(CASES)}.")
    cases = [tiny_case(CASES[n]) if tiny else CASES[n] for n in names]
    cases = [dataclasses.replace(c, repeats=repeats or c.repeats, steps=steps or c.steps) for c in cases]
    from tfm.training.flops import measure_peak_flops

    # Peak and bandwidth are re-measured before each case and the best is kept: other processes on a shared
    # machine only ever make a measurement slower.
    peak_dtype = {"float32": "float32", "mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}[dtype]
    peak = peak_bf16 = bandwidth = 0.0
    where = machine()
    results = []
    for case in cases:
        if case.new_tokens:
            bandwidth = max(bandwidth, measure_bandwidth())
        else:
            peak = max(peak, measure_peak_flops(dtype=peak_dtype))
            if bf16_fit:
                peak_bf16 = max(peak_bf16, measure_peak_flops(dtype="bfloat16"))
        result = run_case(case, tiny=tiny, dtype=dtype, warmup=warmup, log=log, bf16_fit=bf16_fit)
        result.update(dtype=dtype, machine=where)
        if bf16_fit and not case.new_tokens:
            result["peak_flops_bfloat16"] = peak_bf16
        results.append(result)
    return [add_limits(r, peak or None, bandwidth or None) for r in results]


# ------------------------------------------------------------------------------------------------ command line
def add_commands(subparsers):
    """Registers `tfm bench`."""
    _add_arguments(subparsers.add_parser("bench", help="Benchmark tfm against KerasHub (training, generation).",
                                         description=__doc__.split("\n\n")[0]))


def _add_arguments(parser):
    parser.add_argument("--cases", type=_case_names, help=f"comma-separated subset of {','.join(CASES)}")
    parser.add_argument("--json", metavar="PATH", help="also write the JSON results here")
    parser.add_argument("--repeats", type=int, help="timed rounds per case (default per case)")
    parser.add_argument("--steps", type=int, help="steps (or generate calls) per round (default per case)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls per side first (compiles)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "mixed_bfloat16", "mixed_float16"])
    parser.add_argument("--tiny", action="store_true", help="toy model sizes: checks the code paths quickly")
    parser.add_argument("--no-bf16-fit", dest="bf16_fit", action="store_false",
                        help="skip the mixed_bfloat16 non-XLA fits of both libraries (on by default with float32)")
    parser.set_defaults(func=_bench)


def _case_names(text):
    import argparse

    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in CASES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown case(s) {unknown or [text]}; valid: {','.join(CASES)}")
    return names


def _bench(args):
    results = run_benchmark(args.cases, tiny=args.tiny, dtype=args.dtype, repeats=args.repeats, steps=args.steps,
                            warmup=args.warmup, log=lambda *parts, **kw: print(*parts, **kw, flush=True),
                            bf16_fit=args.bf16_fit and args.dtype == "float32")
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    print()
    print(format_markdown(results))
    return 0


def main(argv=None):
    """`python tools/benchmark.py ...`: the same as `tfm bench ...`."""
    import argparse

    parser = argparse.ArgumentParser(prog="tools/benchmark.py", description=__doc__.split("\n\n")[0])
    _add_arguments(parser)
    return _bench(parser.parse_args(argv))
