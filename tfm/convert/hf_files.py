"""Hugging Face checkpoint files: `config.json` plus `model.safetensors` (or shards), read and written with numpy.

No torch: safetensors' numpy API reads and writes the same files `transformers` does. A repository that ships
only a pickled `pytorch_model.bin` (or only TF/Flax weights) gets an error saying how to make a safetensors file.
"""

import json
import os
from pathlib import Path

import numpy as np

from tfm.errors import InputError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
_OTHER_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack")


def read_config(directory):
    """`config.json` of a Hugging Face model directory, as a dict (InputError naming the file when unreadable)."""
    path = Path(directory) / CONFIG_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such file (a Hugging Face model directory has a config.json)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: not valid JSON ({error})") from None


def read_tensors(directory):
    """All tensors of `model.safetensors` or of the shards listed in `model.safetensors.index.json`.

    Returns:
        dict name -> numpy array (float32 / int as stored; bfloat16 and float16 are widened to float32).
    """
    from safetensors.numpy import load_file

    directory = Path(directory)
    if (directory / WEIGHTS_FILE).is_file():
        files = [directory / WEIGHTS_FILE]
    elif (directory / INDEX_FILE).is_file():
        index = json.loads((directory / INDEX_FILE).read_text(encoding="utf-8"))
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise InputError(f"{directory / INDEX_FILE}: no 'weight_map' object naming each tensor's shard")
        files = [directory / name for name in sorted(set(weight_map.values()))]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise InputError(f"{directory / INDEX_FILE} lists shards that are missing: {missing}")
    else:
        present = [name for name in _OTHER_WEIGHTS if (directory / name).is_file()]
        if present:
            raise InputError(
                f"{directory} has only {present[0]}, which tfm does not read (it is read with PyTorch/TF, and a "
                f"pickled .bin can run code). Convert it once where transformers is installed: "
                f"`python -c \"from transformers import AutoModel as M; M.from_pretrained('{directory}')"
                f".save_pretrained('{directory}', safe_serialization=True)\"` (writes {WEIGHTS_FILE}), or download "
                f"the repository's {WEIGHTS_FILE} if it has one")
        raise InputError(f"{directory}: no {WEIGHTS_FILE} or {INDEX_FILE} (is it a Hugging Face model directory?)")
    tensors = {}
    for path in files:
        try:
            loaded = _load_file_widened(path, load_file)
        except Exception as error:  # safetensors raises its own error types for truncated/corrupt files
            raise InputError(f"{path}: unreadable safetensors file ({str(error).splitlines()[0][:200]})") from None
        tensors.update(loaded)
    return tensors


def _load_file_widened(path, load_file):
    try:
        loaded = load_file(str(path))
    except Exception:  # bfloat16 has no numpy dtype: read the raw bits and widen (or fail on a corrupt file)
        return _load_bfloat16(path)
    return {k: (v.astype(np.float32) if v.dtype == np.float16 else v) for k, v in loaded.items()}


def _load_bfloat16(path):
    from safetensors import safe_open

    out = {}
    with safe_open(str(path), framework="numpy") as f:
        header_names = list(f.keys())
    raw = Path(path).read_bytes()
    header_size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + header_size])
    base = 8 + header_size
    for name in header_names:
        info = header[name]
        start, end = info["data_offsets"]
        buffer = raw[base + start:base + end]
        if info["dtype"] == "BF16":
            bits = np.frombuffer(buffer, dtype=np.uint16).astype(np.uint32) << 16
            out[name] = bits.view(np.float32).reshape(info["shape"])
        else:
            dtype = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32, "U8": np.uint8,
                     "BOOL": np.bool_, "F64": np.float64}[info["dtype"]]
            out[name] = np.frombuffer(buffer, dtype=dtype).reshape(info["shape"]).astype(
                np.float32 if dtype == np.float16 else dtype)
    return out


def write_checkpoint(directory, config, tensors):
    """Writes `config.json` and `model.safetensors` (metadata format "pt", as transformers writes it).

    Written to temporary names first and renamed, so an interrupted export leaves no half-written model.
    """
    from safetensors.numpy import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp_weights = directory / f".{WEIGHTS_FILE}.tmp{os.getpid()}"
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp_weights), metadata={"format": "pt"})
    tmp_config = directory / f".{CONFIG_FILE}.tmp{os.getpid()}"
    tmp_config.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp_weights, directory / WEIGHTS_FILE)
    os.replace(tmp_config, directory / CONFIG_FILE)
    return directory
