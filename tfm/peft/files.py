"""Adapter files: only an adapter's weights (and its task head), in Hugging Face PEFT's layout.

A directory holds `adapter_config.json` and `adapter_model.safetensors`, as HF PEFT writes them. Two namings:
- `format="hf"` (LoRA on a BERT task): HF PEFT's own keys (`base_model.model.bert.encoder.layer.N.attention.
  self.query.lora_A.weight`, `(r, in)`; `lora_B` `(out, r)`; `base_model.model.classifier.*`) and config, so
  `peft.PeftModel.from_pretrained` loads it onto the transformers model of the same checkpoint, and back.
- `format="tfm"` (every method): tfm's keys (`layers.N.self_attention.qkv.peft.query.lora_a`, `head.logits/kernel`)
  and the `PeftConfig` under `"tfm"` in the config; HF PEFT cannot read these (it has no such methods on BERT).
`load_adapter` reads either. Every tensor is checked (present, right shape) before any is assigned.
"""

import json
import os
import re


from tfm.convert.hf_weights import Entry, export_entries, load_entries
from tfm.errors import InputError
from tfm.peft import core
from tfm.peft.sites import blocks, projection

CONFIG_FILE, WEIGHTS_FILE = "adapter_config.json", "adapter_model.safetensors"
_HF_TARGETS = {"query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
               "attention_output": "attention.output.dense", "intermediate": "intermediate.dense",
               "output": "output.dense"}
_HF_KEY = re.compile(r"^base_model\.model\.bert\.encoder\.layer\.(\d+)\.(.+)\.lora_([AB])\.weight$")
_HF_TASKS = {"TextClassifier": "SEQ_CLS", "TokenClassifier": "TOKEN_CLS"}


def _tfm_entries(task, name, config):
    """tfm-named entries of adapter `name`: `layers.N.<hook path>.<slice>.<variable>`, the prefix encoder, the
    AdaLoRA rank pattern (not its EMAs: they matter only while training, and checkpoints carry them), the head, and
    the backbone's LayerNorms / biases when `also_train` names them (`base.<variable path>`)."""
    entries = []
    encoder = getattr(task.backbone, f"peft_prefix_{name}", None)  # first: every layer's prefix view shares it
    entries += [Entry(f"prefix_encoder.{v.name}", v) for v in (encoder.weights if encoder is not None else ())]
    owners = {}
    for index, block in enumerate(blocks(task.backbone)):
        attention = block.self_attention
        owners.update({id(block): f"layers.{index}", id(attention): f"layers.{index}.self_attention"})
        for dense, path in ((attention.qkv_dense, "self_attention.qkv"), (attention.output_dense,
                            "self_attention.attention_output"), (block.intermediate_dense, "intermediate_dense"),
                            (block.output_dense, "output_dense")):
            owners[id(dense)] = f"layers.{index}.{path}"
    for owner, attribute, held in core.hook_points(task):
        if name not in held.names:
            continue
        update, key = held.get(name), f"{owners[id(owner)]}.{attribute}"
        parts = [(f"{key}.{n}", u) for n, u in update.by_name().items()] if hasattr(update, "by_name") \
            else [(key, update)]
        for prefix, layer in parts:
            entries += [Entry(f"{prefix}.{v.name}", v) for v in layer.weights]
    allocator = getattr(task, f"peft_allocator_{name}", None)
    if allocator is not None:
        entries += [Entry(f"rank_allocator.{v.name}", v) for v in allocator.weights
                    if not v.name.startswith("ema_")]
    if "head" in config.also_train:
        entries += [Entry(f"head.{v.path}", v) for v in core.head_variables(task)]
    entries += [Entry(f"base.{v.path}", v) for v in core.base_variables(task, config.also_train)]
    seen = set()
    entries = [e for e in entries if id(e.variable) not in seen and not seen.add(id(e.variable))]
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise RuntimeError(f"adapter {name!r}: duplicate file keys {sorted(n for n in names if names.count(n) > 1)}")
    return entries


def _hf_entries(task, name, config, with_head):
    """HF PEFT-named entries of a LoRA adapter on a BERT task (A and B transposed to PyTorch's `(out, in)`)."""
    if config.method != "lora" or not hasattr(task.backbone, "segment_embedding"):
        raise ValueError(f"format='hf' is HF PEFT's LoRA on BERT; adapter {name!r} is {config.method} on "
                         f"{type(task.backbone).__name__}: use format='tfm'")
    trained = sorted(set(config.also_train) - {"head"})
    if trained:
        raise ValueError(f"format='hf' carries LoRA and the classifier; adapter {name!r} also trains {trained} "
                         f"of the backbone: use format='tfm'")
    entries = []
    for index, block in enumerate(blocks(task.backbone)):
        for target in config.targets:
            update = projection(block, target)[0].peft.get(name).by_name()
            prefix = f"base_model.model.bert.encoder.layer.{index}.{_HF_TARGETS[target]}"
            entries += [Entry(f"{prefix}.lora_A.weight", update[target].lora_a, transpose=True),
                        Entry(f"{prefix}.lora_B.weight", update[target].lora_b, transpose=True)]
    if with_head:
        if type(task).__name__ not in _HF_TASKS:
            raise ValueError(f"format='hf' writes the head of {sorted(_HF_TASKS)} only, not {type(task).__name__}")
        logits = task.get_layer("logits")
        entries += [Entry("base_model.model.classifier.weight", logits.kernel, transpose=True),
                    Entry("base_model.model.classifier.bias", logits.bias)]
    return entries


def _hf_config(task, config):
    targets = [_HF_TARGETS[t].split(".")[-1] if t in ("query", "key", "value") else _HF_TARGETS[t]
               for t in config.targets]
    if "output" in config.targets:  # the suffix "output.dense" would also match attention.output.dense
        alternatives = "|".join(re.escape(_HF_TARGETS[t]) for t in config.targets)
        targets = rf".*\.encoder\.layer\.\d+\.({alternatives})"
    return {"peft_type": "LORA", "task_type": _HF_TASKS.get(type(task).__name__), "r": config.rank,
            "lora_alpha": config.alpha, "lora_dropout": config.dropout, "use_rslora": config.use_rslora,
            "target_modules": targets, "bias": "none", "fan_in_fan_out": False, "inference_mode": True,
            "init_lora_weights": True, "use_dora": False, "layers_to_transform": None,
            "modules_to_save": ["classifier"] if "head" in config.also_train else None,
            "base_model_name_or_path": None, "revision": None}


def save_adapter(task, directory, name=None, format="tfm"):
    """Writes adapter `name` (default: the active one) and what else it trains (the task head; LayerNorms, biases).

    Args:
        task: a task model with the adapter applied.
        directory: str, created if missing.
        name: str, the adapter; default the active one.
        format: `"tfm"` (any method) or `"hf"` (LoRA on BERT, readable by HF PEFT).

    Returns:
        The directory. Its `adapter_model.safetensors` is the adapter's whole file size.
    """
    from safetensors.numpy import save_file

    name = name or core.active_adapter(task)
    adapters = getattr(task, "peft_adapters", None) or {}
    if name not in adapters:
        raise ValueError(f"no adapter {name!r} on {task.name}; applied: {sorted(adapters)}")
    if name != core.active_adapter(task):
        raise ValueError(f"save the active adapter: call tfm.peft.set_adapter(task, {name!r}) first (its head "
                         f"values are in the model only while it is active)")
    config = core.as_config(adapters[name])
    if format == "hf":
        entries, meta = _hf_entries(task, name, config, "head" in config.also_train), _hf_config(task, config)
    elif format == "tfm":
        entries = _tfm_entries(task, name, config)
        meta = {"peft_type": config.method.upper(), "tfm": adapters[name], "task": type(task).__name__,
                "adapter_name": name}
    else:
        raise ValueError(f"format={format!r}: use 'tfm' or 'hf'")
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{WEIGHTS_FILE}.tmp{os.getpid()}")
    save_file(export_entries(entries), tmp, metadata={"format": "pt"})
    os.replace(tmp, os.path.join(directory, WEIGHTS_FILE))
    with open(os.path.join(directory, CONFIG_FILE), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
    return directory


def load_adapter(task, directory, name="default", activate=True):
    """Applies the adapter in `directory` (tfm or HF PEFT LoRA files) to `task` as `name` and loads its weights.

    Raises:
        InputError: naming the file and key: an unreadable file, a method or option tfm cannot load, a tensor
            missing, left over or of the wrong shape. Nothing is applied or assigned then.
    """
    from safetensors.numpy import load_file

    config_path, weights_path = os.path.join(directory, CONFIG_FILE), os.path.join(directory, WEIGHTS_FILE)
    for path in (config_path, weights_path):
        if not os.path.isfile(path):
            raise InputError(f"{path}: no such file (an adapter directory has {CONFIG_FILE} and {WEIGHTS_FILE})")
    try:
        with open(config_path, encoding="utf-8") as f:
            meta = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{config_path}: not valid JSON ({error})") from None
    tensors = load_file(weights_path)
    is_hf = "tfm" not in meta
    config = _config_from_hf(meta, tensors, task, config_path) if is_hf else core.as_config(meta["tfm"])
    previous = core.active_adapter(task)
    core.apply(task, config, name=name, activate=True)
    try:
        entries = _hf_entries(task, name, config, "head" in config.also_train) if is_hf else \
            _tfm_entries(task, name, config)
        expected = {e.name for e in entries}
        extra = sorted(k for k in tensors if k not in expected)
        if extra:
            raise InputError(f"{weights_path}: tensor {extra[0]!r} is not part of a {config.method} adapter on "
                             f"this model ({len(extra)} unexpected in all)")
        load_entries(entries, tensors, weights_path)
    except Exception:
        core.remove_adapter(task, name, previous)
        raise
    if not activate:
        core.set_adapter(task, previous)
    return task


def _config_from_hf(meta, tensors, task, path):
    """A LoRA `PeftConfig` from HF PEFT's adapter_config.json; the targets are read off the tensor names."""
    if meta.get("peft_type") != "LORA":
        raise InputError(f"{path}: peft_type {meta.get('peft_type')!r}; tfm reads HF PEFT's LORA adapters "
                         f"(its own files hold the other methods)")
    for key, supported in (("fan_in_fan_out", False), ("use_dora", False), ("bias", "none")):
        if meta.get(key, supported) != supported:
            raise InputError(f"{path}: {key}={meta[key]!r} is not supported (only {supported!r})")
    for key in ("layers_to_transform", "rank_pattern", "alpha_pattern"):
        if meta.get(key):
            raise InputError(f"{path}: {key}={meta[key]!r} is not supported: tfm adapts every layer alike")
    targets, layers = {}, set()
    hf_to_target = {v: k for k, v in _HF_TARGETS.items()}
    for key in tensors:
        match = _HF_KEY.match(key)
        if match and match.group(2) in hf_to_target:
            layers.add(int(match.group(1)))
            targets[hf_to_target[match.group(2)]] = True
        elif not key.startswith("base_model.model.classifier."):
            raise InputError(f"{path.replace(CONFIG_FILE, WEIGHTS_FILE)}: tensor {key!r} is not a LoRA factor of "
                             f"a BERT projection tfm adapts, nor the classifier")
    if layers != set(range(len(blocks(task.backbone)))):
        raise InputError(f"{path}: LoRA factors for layers {sorted(layers)}, but the model has "
                         f"{len(blocks(task.backbone))} layers (tfm adapts every layer alike)")
    head = any(k.startswith("base_model.model.classifier.") for k in tensors)
    order = [t for t in _HF_TARGETS if t in targets]
    return core.as_config(method="lora", rank=int(meta["r"]), alpha=float(meta["lora_alpha"]),
                          dropout=float(meta.get("lora_dropout", 0.0)), use_rslora=bool(meta.get("use_rslora")),
                          targets=order, also_train=["head"] if head else [])
