"""tfm's int8 loops compiled for several x86-64 levels, each checked against plain reference sums.

The op is built with `-march=native`, so the tests through TensorFlow only reach the paths of the machine they run
on (AVX512-VNNI here). A user's CPU may take another: plain loops (baseline x86-64), AVX2 tiles (x86-64-v3),
AVX-512 without VNNI (x86-64-v4: W8A8 on the plain loops). `int8_loops_check.cc` runs every W8A8 and weight-only
loop on ten shapes (one row and many, columns and K past whole tiles) and compares W8A8 products and the row
quantization exactly with integer sums and Keras' rounding, and weight-only products with a double sum.
"""

import shutil
import subprocess
from pathlib import Path

import pytest

from tfm import kernels

HERE = Path(__file__).parent
SOURCES = Path(kernels.__file__).parent
# The instruction-set flags each level needs from /proc/cpuinfo to run here.
LEVELS = {"x86-64": (), "x86-64-v3": ("avx2", "fma", "bmi2"), "x86-64-v4": ("avx512f", "avx512bw", "avx512vl"),
          "native": ()}


def _cpu_flags():
    try:
        return set(kernels._cpu_flags().split())
    except Exception:
        return set()


@pytest.mark.parametrize("level", list(LEVELS))
def test_int8_loops_equal_reference_sums_at_each_x86_level(level, tmp_path):
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("no g++: tfm.kernels is unavailable too, and callers use TensorFlow's ops")
    if not set(LEVELS[level]) <= _cpu_flags():
        pytest.skip(f"this CPU cannot run {level} code")
    flags = [f if not f.startswith("-march=") else f"-march={level}" for f in kernels._LOOP_FLAGS]
    objects = []
    for name in ("int8_matmul_loops.cc", "int8_dynamic_loops.cc"):
        objects.append(tmp_path / f"{name}.o")
        subprocess.run([compiler, "-c", *flags, str(SOURCES / name), "-o", str(objects[-1])], check=True)
    check = tmp_path / "check"
    # The reference sums must not be contracted into fused multiply-adds, which round once instead of twice.
    subprocess.run([compiler, "-O1", "-ffp-contract=off", f"-I{SOURCES}", str(HERE / "int8_loops_check.cc"),
                    *map(str, objects), "-o", str(check)], check=True)
    done = subprocess.run([str(check)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "checked 40 cases, 0 failures"
