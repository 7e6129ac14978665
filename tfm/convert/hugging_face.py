"""Hugging Face checkpoints in and out: BERT (backbone, MLM + NSP heads, sequence / token classification) and
GPT-2 (backbone, causal LM), numpy + safetensors only.

The tensor tables live in `hf_bert` / `hf_gpt2`; this module reads a checkpoint into them, checks everything
(missing tensors, shapes, leftovers, untied copies of tied weights) before a model is returned, and writes the
same tables back as `config.json` + `model.safetensors`, the files `transformers.AutoModel*` loads.
Google BERT and OpenAI GPT-2 checkpoints enter through `backbone_from_tensors` / `task_from_tensors` after
renaming to HF names.
"""

import numpy as np

from tfm.convert import hf_bert, hf_gpt2, hf_files
from tfm.convert.hf_weights import export_entries, load_entries
from tfm.errors import InputError

FAMILIES = {hf_bert.MODEL_TYPE: hf_bert, hf_gpt2.MODEL_TYPE: hf_gpt2}

# HF architecture -> (model_type, tfm task class name or None for a bare backbone)
ARCHITECTURES = {
    "BertModel": ("bert", None),
    "BertForPreTraining": ("bert", "MaskedLM"),
    "BertForMaskedLM": ("bert", "MaskedLM"),
    "BertForSequenceClassification": ("bert", "TextClassifier"),
    "BertForTokenClassification": ("bert", "TokenClassifier"),
    "GPT2Model": ("gpt2", None),
    "GPT2LMHeadModel": ("gpt2", "CausalLM"),
}


def _family(config, source):
    model_type = config.get("model_type")
    if model_type not in FAMILIES:
        raise InputError(f"{source}: model_type={model_type!r} is not supported; tfm reads {sorted(FAMILIES)}")
    return FAMILIES[model_type]


BACKBONE_CLASSES = {hf_bert.MODEL_TYPE: "BertBackbone", hf_gpt2.MODEL_TYPE: "GptBackbone"}


def find_class(base, name):
    """`base` or its subclass called `name`, else None. Classes are passed in, never imported: `tfm.models` and
    `tfm.tasks` call into `tfm.convert`, so `tfm.convert` imports neither (no import cycles)."""
    stack = [base]
    while stack:
        cls = stack.pop()
        if cls.__name__ == name:
            return cls
        stack.extend(cls.__subclasses__())
    return None


def _canonical(tensors, family):
    """Today's names, buffers dropped, the task prefix (`bert.` / `transformer.`) removed from backbone names."""
    out = {}
    for name, value in tensors.items():
        name = family.canonical_name(name)
        bare = name[len(family.PREFIX):] if name.startswith(family.PREFIX) else name
        if bare in getattr(family, "BUFFERS", ()) or (hasattr(family, "is_buffer") and family.is_buffer(bare)):
            continue
        out[name] = value
    prefixed = any(n.startswith(family.PREFIX) for n in out)
    return out, (family.PREFIX if prefixed else "")


class _Checkpoint:
    """A read checkpoint: config, canonical tensors, the backbone prefix, and which tensors were used."""

    def __init__(self, config, tensors, source):
        self.config, self.source = config, source
        self.family = _family(config, source)
        self.tensors, self.prefix = _canonical(tensors, self.family)
        self.used = set()

    def load(self, entries, optional=()):
        missing = load_entries(entries, self.tensors, self.source, optional)
        self.used.update(e.name for e in entries)
        return missing

    def has(self, names):
        return all(n in self.tensors for n in names)

    def check_leftovers(self, heads_allowed):
        """Tied copies must equal their source; tensors nobody reads are an error (e.g. more layers than config)."""
        for copy, original in self.family.tied_names(self.tensors, self.prefix).items():
            if copy in self.tensors and original in self.tensors:
                if not np.array_equal(self.tensors[copy], self.tensors[original]):
                    raise InputError(f"{self.source}: {copy!r} differs from {original!r}; tfm ties them (untied "
                                     f"output embeddings are not supported)")
                self.used.add(copy)
        left = sorted(n for n in set(self.tensors) - self.used if not n.startswith(heads_allowed))
        if left:
            raise InputError(f"{self.source}: tensors tfm does not know how to place: {left[:8]}"
                             f"{' ...' if len(left) > 8 else ''} (does config.json match the weights?)")


def read_checkpoint(directory):
    """`(config dict, tensors dict)` of a local Hugging Face model directory."""
    return hf_files.read_config(directory), hf_files.read_tensors(directory)


def source(directory):
    """How errors name the checkpoint: its directory."""
    return str(directory)


def _build_backbone(checkpoint, cls):
    family = checkpoint.family
    name = BACKBONE_CLASSES[checkpoint.config["model_type"]]
    expected = find_class(cls, name)
    if expected is None:
        raise InputError(f"{checkpoint.source} holds a {checkpoint.config.get('model_type')} model, which loads as a "
                         f"{name}, not a {cls.__name__}")
    backbone = expected(**family.backbone_kwargs(checkpoint.config, checkpoint.source))
    optional = hf_bert.pooler_names(checkpoint.prefix) if family is hf_bert else ()
    missing = checkpoint.load(family.backbone_entries(backbone, checkpoint.prefix), optional=optional)
    if missing:
        import warnings

        warnings.warn(f"{checkpoint.source}: no pooler weights (HF drops them from MLM and token-classification "
                      f"models); pooled_output uses a newly initialized pooler", stacklevel=3)
    return backbone


def backbone_from_tensors(config, tensors, source, cls):
    """A tfm backbone (of class `cls`, or of its subclass the checkpoint names) from a HF config dict and HF-named
    tensors (any head tensors are ignored)."""
    checkpoint = _Checkpoint(config, tensors, source)
    backbone = _build_backbone(checkpoint, cls)
    checkpoint.check_leftovers(heads_allowed=("cls.", "classifier.", "lm_head."))
    return backbone


def load_backbone(directory, cls):
    """The backbone of a local Hugging Face model directory (`BertModel`, `GPT2Model` or any of their task models)."""
    config, tensors = read_checkpoint(directory)
    return backbone_from_tensors(config, tensors, str(directory), cls)


def _head(task_name):
    """(HF architecture for export, head entries, the head's tensor prefixes, task-args-from-config)."""
    def labels(config):
        id2label = config.get("id2label")
        return len(id2label) if id2label else config.get("num_labels", 2)

    return {
        "MaskedLM": (None, hf_bert.masked_lm_entries, ("cls.",), lambda c: {}),
        "TextClassifier": ("BertForSequenceClassification", hf_bert.classifier_entries, ("classifier.",),
                           lambda c: {"num_classes": labels(c)}),
        "TokenClassifier": ("BertForTokenClassification", hf_bert.classifier_entries, ("classifier.",),
                            lambda c: {"num_labels": labels(c)}),
        "CausalLM": ("GPT2LMHeadModel", lambda task: [], ("lm_head.",), lambda c: {}),
    }[task_name]


def task_from_tensors(config, tensors, source, task_cls, backbone_cls, **task_args):
    """A tfm task model from a HF config and tensors: the checkpoint's own head when it has one for this task.

    Args:
        task_cls: tfm task class; the `Task` base class means the task of `config["architectures"][0]`.
        backbone_cls: the `Backbone` base class (or the family's class).
        **task_args: task constructor arguments (e.g. `num_classes`); defaults come from the config.
    """
    checkpoint = _Checkpoint(config, tensors, source)
    architecture = (config.get("architectures") or [None])[0]
    if task_cls.__name__ == "Task":
        task_name = ARCHITECTURES.get(architecture, (None, None))[1]
        if task_name is None:
            raise InputError(f"{source}: architectures={config.get('architectures')} names no tfm task; pass the "
                             f"task class, e.g. TextClassifier.from_preset(DIR, num_classes=2)")
        task_cls = find_class(task_cls, task_name)
    name = task_cls.__name__
    if name not in ("MaskedLM", "TextClassifier", "TokenClassifier", "CausalLM"):
        backbone = _build_backbone(checkpoint, backbone_cls)
        checkpoint.check_leftovers(heads_allowed=("cls.", "classifier.", "lm_head."))
        return task_cls(backbone, **task_args)  # a task HF has no head for: new head on the pretrained backbone
    _, entries_of, head_prefixes, args_from_config = _head(name)
    backbone = _build_backbone(checkpoint, backbone_cls)
    if name == "MaskedLM":
        task_args.setdefault("next_sentence", checkpoint.has(["cls.seq_relationship.weight"]))
        task_args.setdefault("activation", backbone.activation)
        task_args.setdefault("layer_norm_epsilon", hf_bert.LAYER_NORM_EPSILON)
    head_in_file = any(n.startswith(head_prefixes) for n in checkpoint.tensors if n not in ("lm_head.weight",))
    if head_in_file:
        for key, value in args_from_config(config).items():
            task_args.setdefault(key, value)
    task = task_cls(backbone, **task_args)
    if head_in_file:
        checkpoint.load(entries_of(task))
    elif name != "CausalLM":
        import warnings

        warnings.warn(f"{source}: no {name} head in the checkpoint; the head is newly initialized", stacklevel=2)
    checkpoint.check_leftovers(heads_allowed=() if head_in_file else ("cls.", "classifier.", "lm_head."))
    return task


def load_task(directory, task_cls, backbone_cls, **task_args):
    """A task model from a local Hugging Face model directory (see `task_from_tensors`)."""
    config, tensors = read_checkpoint(directory)
    return task_from_tensors(config, tensors, str(directory), task_cls, backbone_cls, **task_args)


def label_names(directory):
    """The `id2label` names of a HF classification checkpoint, in id order (None when it has none)."""
    id2label = hf_files.read_config(directory).get("id2label")
    return [id2label[str(i)] for i in range(len(id2label))] if id2label else None


def export_to_hf(model, directory, tokenizer=None, label_names=None):
    """Writes `model` (a tfm backbone or task) as a Hugging Face model directory `transformers` loads.

    Args:
        model: BertBackbone / GptBackbone, or MaskedLM, TextClassifier, TokenClassifier, CausalLM on them.
        directory: output path (created).
        tokenizer: optional tfm tokenizer; its files are written beside the weights.
        label_names: optional class / tag names for the classifiers' `id2label`.

    Returns:
        pathlib.Path of the directory.

    Example:
    >>> import os, tempfile
    >>> backbone = tfm.models.BertBackbone.from_preset("bert_tiny", vocabulary_size=100)
    >>> path = tfm.convert.export_to_hf(backbone, tempfile.mkdtemp())
    >>> sorted(os.listdir(path))
    ['config.json', 'model.safetensors']
    >>> tfm.models.BertBackbone.from_preset(str(path)).count_params() == backbone.count_params()
    True
    """
    backbone = model.backbone if hasattr(model, "backbone") else model
    family = hf_bert if type(backbone).__name__ == "BertBackbone" else hf_gpt2
    config = family.hf_config(backbone)
    task_name = None if model is backbone else type(model).__name__
    if task_name is None:
        architecture, prefix, head_entries, with_pooler = ("BertModel" if family is hf_bert else "GPT2Model"), "", [], True
    else:
        if task_name not in ("MaskedLM", "TextClassifier", "TokenClassifier", "CausalLM"):
            raise InputError(f"export_to_hf: {task_name} has no Hugging Face counterpart; export its backbone")
        if task_name == "TextClassifier" and model.pooling != "pooler":
            raise InputError("export_to_hf: a TextClassifier with pooling='mean' has no Hugging Face counterpart "
                             "(BertForSequenceClassification reads the [CLS] pooler)")
        if task_name == "TokenClassifier" and getattr(model, "lstm_units", None):
            raise InputError("export_to_hf: a TokenClassifier with an LSTM layer has no Hugging Face counterpart")
        if task_name == "TokenClassifier" and getattr(model, "crf", False):
            raise InputError("export_to_hf: a TokenClassifier with a CRF has no Hugging Face counterpart "
                             "(BertForTokenClassification is a softmax tagger)")
        architecture, entries_of, _, _ = _head(task_name)
        if task_name == "MaskedLM":
            architecture = "BertForPreTraining" if model.next_sentence else "BertForMaskedLM"
        prefix, head_entries = family.PREFIX, entries_of(model)
        with_pooler = architecture in ("BertForPreTraining", "BertForSequenceClassification")
    entries = family.backbone_entries(backbone, prefix)
    if family is hf_bert and not with_pooler:
        pooler = set(hf_bert.pooler_names(prefix))
        entries = [e for e in entries if e.name not in pooler]
    tensors = export_entries(entries + head_entries)
    config["architectures"] = [architecture]
    num_labels = {"TextClassifier": "num_classes", "TokenClassifier": "num_labels"}.get(task_name)
    if num_labels:
        count = getattr(model, num_labels)
        names = list(label_names) if label_names else [f"LABEL_{i}" for i in range(count)]
        if len(names) != count:
            raise InputError(f"export_to_hf: {len(names)} label names for a head of {count} outputs")
        config["id2label"] = {str(i): n for i, n in enumerate(names)}
        config["label2id"] = {n: i for i, n in enumerate(names)}
    if tokenizer is not None:
        if tokenizer.vocabulary_size != backbone.vocabulary_size:
            raise InputError(f"export_to_hf: the tokenizer has {tokenizer.vocabulary_size} tokens but the embedding "
                             f"matrix {backbone.vocabulary_size} rows")
        if family is hf_gpt2 and tokenizer.eos_id is not None:
            config["bos_token_id"] = config["eos_token_id"] = tokenizer.eos_id
        if family is hf_bert and tokenizer.pad_id is not None:
            config["pad_token_id"] = tokenizer.pad_id
    directory = hf_files.write_checkpoint(directory, config, tensors)
    if tokenizer is not None:
        from tfm.data.hf_tokenizers import save_hf_tokenizer

        save_hf_tokenizer(tokenizer, directory, model_max_length=backbone.max_sequence_length)
    return directory
