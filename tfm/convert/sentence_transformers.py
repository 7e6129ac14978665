"""sentence-transformers directories: a HF model plus `modules.json` (the pipeline), `1_Pooling/config.json`
(the pooling mode), an optional `Normalize` module and `sentence_bert_config.json` (`max_seq_length`).

They load as a `TextEmbedder` with the same pooling, normalization and truncation length. Pipelines with
modules tfm does not have (e.g. a `Dense` projection) are refused by name rather than embedded differently.
"""

import json
from pathlib import Path

from tfm.convert import hugging_face
from tfm.errors import InputError

_TRANSFORMER = "sentence_transformers.models.Transformer"
_POOLING = "sentence_transformers.models.Pooling"
_NORMALIZE = "sentence_transformers.models.Normalize"
_POOLING_MODES = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max"}


def _read_json(path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: not valid JSON ({error})") from None


def read_pipeline(directory):
    """`{"model_dir", "pooling", "normalize", "max_seq_length"}` of a sentence-transformers directory."""
    directory = Path(directory)
    modules = _read_json(directory / "modules.json")
    if not isinstance(modules, list):
        raise InputError(f"{directory / 'modules.json'}: expected a list of modules")
    spec = {"model_dir": None, "pooling": None, "normalize": False, "max_seq_length": None}
    for module in sorted(modules, key=lambda m: m.get("idx", 0)):
        kind, path = module.get("type"), directory / module.get("path", "")
        if kind == _TRANSFORMER:
            spec["model_dir"] = path
        elif kind == _POOLING:
            config = _read_json(path / "config.json")
            chosen = [mode for key, mode in _POOLING_MODES.items() if config.get(key)]
            others = [k for k, v in config.items() if k.startswith("pooling_mode") and v and k not in _POOLING_MODES]
            if len(chosen) != 1 or others:
                raise InputError(f"{path / 'config.json'}: pooling {chosen + others} is not supported; tfm pools "
                                 f"with exactly one of {sorted(_POOLING_MODES)}")
            spec["pooling"] = chosen[0]
        elif kind == _NORMALIZE:
            spec["normalize"] = True
        else:
            raise InputError(f"{directory / 'modules.json'}: module type {kind!r} is not supported (tfm reads "
                             f"Transformer, Pooling and Normalize)")
    if spec["model_dir"] is None or spec["pooling"] is None:
        raise InputError(f"{directory / 'modules.json'}: needs a Transformer and a Pooling module")
    bert_config = spec["model_dir"] / "sentence_bert_config.json"
    if bert_config.is_file():
        spec["max_seq_length"] = _read_json(bert_config).get("max_seq_length")
    return spec


def load_backbone(directory, cls):
    return hugging_face.load_backbone(read_pipeline(directory)["model_dir"], cls)


def load_task(directory, task_cls, backbone_cls, **task_args):
    """A `TextEmbedder` (for `task_cls` TextEmbedder or the `Task` base) or `task_cls` with a new head on the
    encoder, from a sentence-transformers directory."""
    spec = read_pipeline(directory)
    embedder = hugging_face.find_class(task_cls, "TextEmbedder")
    if embedder is None:
        return hugging_face.load_task(spec["model_dir"], task_cls, backbone_cls, **task_args)
    TextEmbedder = embedder
    task_args.setdefault("pooling", spec["pooling"])
    task_args.setdefault("normalize", spec["normalize"])
    if spec["max_seq_length"]:
        task_args.setdefault("sequence_length", spec["max_seq_length"])
    return TextEmbedder(load_backbone(directory, backbone_cls), **task_args)
