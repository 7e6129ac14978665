"""The package as a user installs it from a wheel: built from a copy of the sources, installed (not
editable) into a fresh virtual environment, it holds every module and runs `tfm` outside the source tree."""

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(args, **kwargs):
    result = subprocess.run(args, capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_and_runs(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "tfm", source / "tfm", ignore=shutil.ignore_patterns("__pycache__"))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"),
          str(source)])
    (wheel,) = (tmp_path / "dist").glob("tfm-*.whl")
    modules = {n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".py")}
    expected = {p.relative_to(REPO).as_posix() for p in (REPO / "tfm").rglob("*.py")}
    assert modules == expected  # every package of the source tree, tfm/training and tfm/recipes included
    sources = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("tfm/kernels/") and not n.endswith(".py")}
    assert sources == {p.relative_to(REPO).as_posix() for p in (REPO / "tfm" / "kernels").glob("*.[ch]*")}

    env = tmp_path / "env"
    venv.create(env, with_pip=False)
    python = env / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)])
    # The dependencies (TensorFlow & co.) come from this test's environment as a plain path entry, which
    # does not load its editable tfm: `import tfm` can only find the wheel's copy.
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip())
    (site / "outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    env_vars = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KERAS_BACKEND")}
    where = _run([str(python), "-c", "import tfm.training, tfm.recipes; print(tfm.__file__)"], cwd=cwd, env=env_vars)
    assert Path(where.strip()).is_relative_to(site)
    assert "usage: tfm" in _run([str(env / "bin" / "tfm"), "--help"], cwd=cwd, env=env_vars)
    names = _run([str(python), "-c", "from tfm.training import Trainer, run_experiment, load_config, ExperimentConfig;"
                  "from tfm.recipes import all_recipes; print(Trainer.__module__, [r.name for r in all_recipes()])"],
                 cwd=cwd, env=env_vars)
    assert names.split()[0] == "tfm.training.trainer"
    assert "'text_classifier'" in names and "'causal_lm'" in names
