"""tfm's own TensorFlow ops, compiled from the C++ next to this file on first use and cached.

Today one op: `int8_matmul(x, w, scale)`, `(x @ w) / scale` for float32 `x`, an int8 `w` and a per-column
`scale`, streamed straight from int8 bytes; with `quantize_x=True` it is Keras' W8A8 dynamic product (rows of `x`
to int8, exact int32 byte dot products). Batch-1 decoding reads every weight once per token, and neither XLA's nor
oneDNN's int8 or bf16 products read those bytes faster than float32 on CPU (the probes are in
`tools/int8_probe.py`), so the int8 decode step (both modes) runs outside XLA with this op.

The library is built with the machine's `g++` and TensorFlow's own compile and link flags (the loops with
`-march=native`) into `~/.cache/tfm/kernels/<key>/`, the key covering the sources, the TensorFlow version and the
CPU's flags. Without a compiler, or with `TFM_KERNELS=0`, `load()` returns None and callers use their portable
TensorFlow path; the reason is kept in `unavailable_reason()`. SavedModel exports never contain the op
(`portable()`).
"""

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

_SOURCES = ("int8_matmul_loops.cc", "int8_dynamic_loops.cc", "int8_matmul_op.cc", "int8_matmul.h")
_LOOP_FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fassociative-math", "-fno-signed-zeros",
               "-fno-trapping-math"]
MAX_W8A8_DEPTH = 65536  # the op's int32 lanes sum at most this many products (w + 128) * x (kMaxDynamicK)
_lock = threading.Lock()
_state = {}
_local = threading.local()


def _cpu_flags():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def _cache_dir(tf):
    digest = hashlib.sha256()
    here = Path(__file__).parent
    for name in _SOURCES:
        digest.update((here / name).read_bytes())
    for part in (tf.__version__, sys.version, " ".join(_LOOP_FLAGS), _cpu_flags()):
        digest.update(part.encode())
    root = Path(os.environ.get("TFM_CACHE") or Path.home() / ".cache" / "tfm")
    return root / "kernels" / digest.hexdigest()[:16]


def _build(tf, target):
    compiler = shutil.which(os.environ.get("CXX", "g++"))
    if compiler is None:
        raise RuntimeError("no C++ compiler (g++) on PATH")
    here = Path(__file__).parent
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as work:
        loops, dynamic = Path(work, "loops.o"), Path(work, "dynamic.o")
        op, library = Path(work, "op.o"), Path(work, target.name)
        steps = [
            [compiler, "-c", "-fPIC", *_LOOP_FLAGS, str(here / "int8_matmul_loops.cc"), "-o", str(loops)],
            [compiler, "-c", "-fPIC", *_LOOP_FLAGS, str(here / "int8_dynamic_loops.cc"), "-o", str(dynamic)],
            [compiler, "-c", "-fPIC", "-O2", "-w", *tf.sysconfig.get_compile_flags(), str(here / "int8_matmul_op.cc"),
             "-o", str(op)],
            [compiler, "-shared", str(loops), str(dynamic), str(op), "-o", str(library),
             *tf.sysconfig.get_link_flags()],
        ]
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True)
            if done.returncode:
                raise RuntimeError(f"{' '.join(step[:3])} ... failed:\n{done.stderr[-2000:]}")
        os.replace(library, target)  # atomic: a concurrent build by another process is never seen half-written


def load():
    """The compiled op module (`tf.load_op_library`), building it on first use; None when it cannot be built."""
    with _lock:
        if "module" not in _state:
            _state["module"], _state["reason"] = None, None
            import tensorflow as tf

            if os.environ.get("TFM_KERNELS", "1") == "0":
                _state["reason"] = "disabled by TFM_KERNELS=0"
                return None
            try:
                target = _cache_dir(tf) / "tfm_kernels.so"
                if not target.exists():
                    _build(tf, target)
                _state["module"] = tf.load_op_library(str(target))
                _register_gradient(tf)
            except Exception as error:  # a missing compiler, a failed build or load: the portable path is used
                _state["reason"] = str(error)
                import warnings

                warnings.warn(f"tfm.kernels: the int8 op is unavailable, TensorFlow's own ops are used instead "
                              f"(slower int8 weight-only decoding): {str(error)[:500]}", stacklevel=3)
        return _state["module"]


def _register_gradient(tf):
    """d(x) of `int8_matmul` through the dequantized kernel (int8 weights and scales get none)."""

    @tf.RegisterGradient("TfmInt8MatMul")
    def _gradient(op, upstream):
        _, w, scale = op.inputs
        scaled = upstream / scale  # (..., N)
        float_w = tf.cast(w, upstream.dtype)
        if op.get_attr("transpose_w"):  # w (N, K)
            return tf.tensordot(scaled, float_w, 1), None, None
        return tf.tensordot(scaled, tf.transpose(float_w), 1), None, None


@contextlib.contextmanager
def portable():
    """Inside, `active()` is None: graphs traced here use only TensorFlow's own ops. SavedModel exports trace
    under it, so they load without tfm (a custom op would need this library at load time)."""
    previous = getattr(_local, "portable", False)
    _local.portable = True
    try:
        yield
    finally:
        _local.portable = previous


def active():
    """The op module when code may use it here (built, and not inside `portable()`), else None."""
    return None if getattr(_local, "portable", False) else load()


def byte_dot_products():
    """Whether the op's W8A8 loops multiply bytes in vectors here (AVX512-VNNI). Elsewhere they are plain loops,
    correct but no faster than TensorFlow's own int8 product, so W8A8 layers keep TensorFlow's path."""
    if "byte_dot" not in _state:
        _state["byte_dot"] = {"avx512_vnni", "avx512bw"} <= set(_cpu_flags().split())
    return _state["byte_dot"] and active() is not None


def unavailable_reason():
    """Why `load()` returned None (None when it has not been called or succeeded)."""
    return _state.get("reason")


def _not_converted(function):
    """Keeps AutoGraph out of this function (and of `load()` and the compiler it runs) when a traced caller uses it."""
    import tensorflow as tf

    return tf.autograph.experimental.do_not_convert(function)


@_not_converted
def int8_matmul(x, w, scale, transpose_w=False, quantize_x=False, epsilon=1e-7):
    """`(x @ w) / scale` with `x` float32 `(..., K)`, `w` int8 `(K, N)` (or `(N, K)` with `transpose_w`) and
    `scale` float32 `(N,)` (Keras' convention: the quantized kernel is `w_float * scale`); `(..., N)` float32.

    With `quantize_x` (W8A8 dynamic, Keras' `int8` mode) each row of `x` is first quantized as
    `keras.quantizers.abs_max_quantize(x, axis=-1, epsilon=epsilon)` does, the products are summed exactly in int32
    and divided by both scales: Keras' `Dense` int8 call, with AVX512-VNNI byte dot products where the CPU has them.

    Example:
    >>> import numpy as np
    >>> y = int8_matmul(np.ones((1, 2), "float32"), np.array([[1, 2], [3, 4]], "int8"), np.array([2.0, 4.0], "float32"))
    >>> y.numpy().tolist()
    [[2.0, 1.5]]
    """
    import tensorflow as tf

    module = active()
    if module is None:
        raise RuntimeError(f"tfm's int8 kernel is unavailable: {unavailable_reason()}")
    return module.tfm_int8_mat_mul(x, w, scale, transpose_w=transpose_w, quantize_x=quantize_x, epsilon=epsilon)
