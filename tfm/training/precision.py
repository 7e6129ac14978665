"""`trainer.mixed_precision: auto` and `trainer.jit_compile: auto`: bf16 where the CPU has bf16 matrix units.

On CPUs with AMX-BF16 (Intel Sapphire Rapids and later) or AVX512-BF16 (Intel Cooper Lake, AMD Zen 4 and later),
TensorFlow's oneDNN kernels can run bfloat16 matmuls faster than float32 (1.85x on a 2-core AMD EPYC); XLA's CPU
backend does not use those units, so a bf16 step there runs without XLA. The flag alone is not enough: a
2-core Intel Xeon with AVX512-BF16 but no AMX measured bf16 matmuls at 0.64x float32, so `auto` also measures.
Everywhere else (older CPUs, GPUs, TPUs) `auto` keeps the float32 XLA step.

Workers of a multi-worker run each resolve on their own machine and then agree: bf16 only if every one would.

`TFM_BF16_UNITS=0` (or `1`) overrides the detection: the test suite sets 0 so that every CPU runs the same
float32 numerics.
"""

import functools
import os

BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo names, best first
ENV = "TFM_BF16_UNITS"


def bf16_flags(cpuinfo):
    """The bf16 matrix-unit flags in `/proc/cpuinfo` text, best first.

    Example:
    >>> bf16_flags("flags : fpu sse avx512f avx512_bf16 avx512_vnni")
    ['avx512_bf16']
    """
    flags = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags.update(value.split())
    return [flag for flag in BF16_FLAGS if flag in flags]


def bf16_units(cpuinfo=None):
    """The bf16 matrix-unit flags this CPU reports (`[]` without any), `TFM_BF16_UNITS` first.

    Args:
        cpuinfo: optional `/proc/cpuinfo` text (read from the machine when None).
    """
    forced = os.environ.get(ENV, "").strip()
    if forced:
        if forced not in ("0", "1"):
            raise ValueError(f"{ENV} must be 0 or 1, got {forced!r}")
        return [f"{ENV}=1"] if forced == "1" else []
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read()
        except OSError:  # not Linux: no detection, float32
            return []
    return bf16_flags(cpuinfo)


def _accelerated(strategy):
    import tensorflow as tf

    if strategy is not None and type(strategy).__name__.startswith("TPU"):
        return True
    return bool(tf.config.list_logical_devices("GPU"))


def _workers(strategy):
    """How many worker processes train together (1 unless multi-worker)."""
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return 1
    return strategy.num_replicas_in_sync // len(strategy.extended.worker_devices)


def _every_worker(strategy, use):
    """Whether every worker's own `auto` choice is bf16. Each resolves on its own CPU (flags and a timed matmul
    that can land either side of `MIN_SPEEDUP`); workers of one model must share a policy, so bf16 only where all
    would take it. A collective: every worker calls it at the same point."""
    import tensorflow as tf

    votes = strategy.run(lambda: tf.constant(1.0 if use else 0.0))
    total = strategy.reduce(tf.distribute.ReduceOp.SUM, votes, axis=None)
    return round(float(total)) == strategy.num_replicas_in_sync


MIN_SPEEDUP = 1.25  # bf16 only pays where its matmul is clearly faster than float32's


@functools.lru_cache(maxsize=None)
def bf16_speedup():
    """Measured bf16 / float32 FLOP/s of a 2048 x 2048 matmul on this machine (about a second, once a process)."""
    from tfm.training.flops import measure_peak_flops

    return measure_peak_flops(dtype="bfloat16") / measure_peak_flops(dtype="float32")


def resolve(mixed_precision, jit_compile, strategy=None, cpuinfo=None, speedup=None):
    """`(mixed_precision, jit_compile, reason)` with every `auto` replaced by what this machine gets.

    `auto` precision is mixed_bfloat16 where the CPU reports bf16 units *and* a bf16 matmul measures at least
    `MIN_SPEEDUP` times float32's (`speedup`, measured when None; `TFM_BF16_UNITS=1` skips the measurement).

    Example:
    >>> resolve("auto", "auto", cpuinfo="flags : avx2")[:2]
    ('float32', True)
    """
    accelerated = _accelerated(strategy)
    reason = None
    if mixed_precision == "auto":
        units = [] if accelerated else bf16_units(cpuinfo)
        forced = units == [f"{ENV}=1"]
        if units and not forced and speedup is None:
            speedup = bf16_speedup()
        use = bool(units) and (forced or speedup >= MIN_SPEEDUP)
        if not units:
            why = "an accelerator" if accelerated else "no CPU bf16 matrix units"
        else:
            why = f"CPU bf16 units: {', '.join(units)}" + ("" if forced else f"; bf16 matmul {speedup:.2f}x float32")
        workers = _workers(strategy)
        if workers > 1:
            agreed = _every_worker(strategy, use)
            if use and not agreed:
                why += f"; bf16 not on every one of the {workers} workers"
            use = agreed
        mixed_precision = "mixed_bfloat16" if use else "float32"
        reason = f"trainer.mixed_precision=auto: {mixed_precision} ({why})"
    if jit_compile == "auto":
        # XLA everywhere but bf16 on a CPU, where oneDNN's bf16 matmuls beat XLA's.
        jit_compile = not (mixed_precision == "mixed_bfloat16" and not accelerated)
    return mixed_precision, jit_compile, reason
