"""Applying, switching, merging and counting PEFT methods on a built tfm task model.

One call, `apply(task, method=..., ...)` or `apply(task, PeftConfig(...))`, attaches a method's updates to the
task's backbone under an adapter name and freezes everything else except what `also_train` names (the task head
by default). The adapters applied are recorded in `task.peft_adapters` (name -> config dict), which the task's
Keras config carries, so `.keras` files and run dirs rebuild them.
"""

import dataclasses

import keras
import numpy as np

from tfm.peft.adapters import BottleneckAdapter
from tfm.peft.config import PeftConfig
from tfm.peft.lora import LoraUpdate, SlicedUpdate
from tfm.peft.prompts import PrefixEncoder, PrefixKeyValues, PromptTokens
from tfm.peft.sites import adapter_set, attach, blocks, check_adapter_name, detach, float_policy, projection


def as_config(config=None, **kwargs):
    """A validated `PeftConfig` from a PeftConfig, a dict (a config file's `peft:` section) or keywords."""
    from tfm.training.config_core import from_dict

    if isinstance(config, PeftConfig):
        if kwargs:
            raise ValueError(f"give either a PeftConfig or keywords, not both ({sorted(kwargs)})")
        return config
    return from_dict(PeftConfig, {**(config or {}), **kwargs}, where="peft")


def apply(task, config=None, name="default", tokenizer=None, activate=True, **kwargs):
    """Attaches a PEFT method to `task`'s backbone as adapter `name`, makes it active and freezes the rest.

    Args:
        task: a built `tfm.tasks` model (its `backbone` a tfm BERT or GPT backbone).
        config: a `PeftConfig` or a dict of its keys; or give the keys as keyword arguments.
        name: str, the adapter's name (HF PEFT's default is "default").
        tokenizer: the task's tokenizer; needed only for `prompt_init="text"`.
        activate: bool, make it the active adapter (and set the trainable variables for it).

    Returns:
        `task`, changed in place.

    Example:
    >>> clf = tfm.tasks.TextClassifier(tfm.models.BertBackbone.from_preset("bert_tiny", vocabulary_size=100), 2)
    >>> _ = tfm.peft.apply(clf, method="lora", rank=4, alpha=8, targets=["query", "value"])
    >>> tfm.peft.parameter_counts(clf)["peft"]  # 2 layers x 2 slices x 4 x (128 + 128)
    4096
    """
    config = as_config(config, **kwargs)
    check_adapter_name(name)
    adapters = dict(getattr(task, "peft_adapters", None) or {})
    if name in adapters:
        raise ValueError(f"adapter {name!r} is already applied to {task.name}; choose another name")
    _BUILDERS[config.method](task, config, name, tokenizer)
    adapters[name] = dataclasses.asdict(config)
    object.__setattr__(task, "peft_adapters", adapters)  # plain data, outside Keras' state tracking
    if activate or len(adapters) == 1:
        set_adapter(task, name)
    return task


def _lora(task, config, name, tokenizer):
    scale = config.scale()
    updates = []
    for index, block in enumerate(blocks(task.backbone)):
        by_dense = {}
        for target in config.targets:
            dense, start, end = projection(block, target)
            by_dense.setdefault(id(dense), (dense, []))[1].append((target, start, end))
        for dense, slices in by_dense.values():
            input_dim = dense.kernel.shape[0]

            def make(target, width, input_dim=input_dim):
                if config.method == "adalora":
                    from tfm.peft.adalora import AdaLoraUpdate

                    update = AdaLoraUpdate(input_dim, width, config.rank, config.alpha, config.dropout,
                                           dtype=float_policy(dense), name=f"adalora_{target}")
                else:
                    update = LoraUpdate(input_dim, width, config.rank, scale, config.dropout,
                                        dtype=float_policy(dense), name=f"lora_{target}")
                update.build()
                updates.append((f"layer_{index}/{target}", update))
                return update

            adapter_set(dense, "peft").add(name, SlicedUpdate(dense.units, slices, make, dtype=float_policy(dense),
                                                               name=f"{name}_update"))
    if config.method == "adalora":
        from tfm.peft.adalora import RankAllocator

        allocator = RankAllocator(updates, config, dtype="float32", name=f"{name}_rank_allocator")
        attach(task, f"peft_allocator_{name}", allocator)


def _adapters(task, config, name, tokenizer):
    for block in blocks(task.backbone):
        places = ("feedforward_adapter",) if config.method == "pfeiffer" else ("attention_adapter",
                                                                              "feedforward_adapter")
        for place in places:
            adapter = BottleneckAdapter(block.hidden_dim, config.bottleneck_dim, config.adapter_activation,
                                        config.dropout, dtype=block.dtype_policy, name=f"{name}_{place}")
            adapter.build()
            adapter_set(block, place).add(name, adapter)


def _prompt(task, config, name, tokenizer):
    layers = blocks(task.backbone)
    if type(layers[0]).__name__ != "TransformerEncoderBlock":
        raise ValueError("prompt tuning is implemented for encoders (BERT) only; for GPT use prefix tuning, "
                         "which works with generation")
    prompt = PromptTokens(config.num_virtual_tokens, layers[0].hidden_dim, _prompt_init(task, config, tokenizer),
                          dtype=layers[0].dtype_policy, name=f"{name}_prompt")
    prompt.build()
    adapter_set(layers[0], "prompt").add(name, prompt)


def _prompt_init(task, config, tokenizer):
    """`(P, H)` initial prompts: None (random), or embedded vocabulary samples or text tokens as the first block
    sees real tokens, `LayerNorm(token + segment 0)` (prompts have no position)."""
    if config.prompt_init == "random":
        return None
    backbone, p = task.backbone, config.num_virtual_tokens
    if config.prompt_init == "vocabulary":
        ids = np.random.default_rng(0).integers(0, backbone.vocabulary_size, p)
    else:
        if tokenizer is None:
            raise ValueError("prompt_init='text' needs the task's tokenizer: apply(..., tokenizer=tokenizer)")
        ids = np.asarray(tokenizer.tokenize(config.prompt_init_text)).reshape(-1)
        if not len(ids):
            raise ValueError(f"prompt_init_text={config.prompt_init_text!r} has no tokens")
        ids = np.resize(ids, p)  # repeated (or cut) to P tokens, as HF PEFT does
    x = backbone.token_embedding(ids[None].astype("int32"))
    x = x + backbone.segment_embedding(np.zeros((1, p), "int32"))
    norm = backbone.get_layer("embeddings_layer_norm")
    return keras.ops.convert_to_numpy(norm(x))[0]


def _prefix(task, config, name, tokenizer):
    layers = blocks(task.backbone)
    encoder = PrefixEncoder(len(layers), config.num_virtual_tokens, layers[0].hidden_dim,
                            config.prefix_hidden_dim if config.prefix_projection else None,
                            dtype=layers[0].dtype_policy, name=f"{name}_prefix_encoder")
    encoder.build()
    attach(task.backbone, f"peft_prefix_{name}", encoder)
    for i, block in enumerate(layers):
        adapter_set(block.self_attention, "prefix").add(
            name, PrefixKeyValues(encoder, i, block.num_heads, dtype=block.dtype_policy, name=f"{name}_prefix_{i}"))


_BUILDERS = {"lora": _lora, "adalora": _lora, "houlsby": _adapters, "pfeiffer": _adapters, "prompt": _prompt,
             "prefix": _prefix}


# ------------------------------------------------------------------------------------------- the adapters held
def hook_points(task):
    """Every `(owner_layer, attribute, AdapterSet)` of the task's backbone that holds an adapter."""
    found = []
    for block in blocks(task.backbone):
        owners = [(block, ("attention_adapter", "feedforward_adapter", "prompt")),
                  (block.self_attention, ("prefix",))]
        owners += [(dense, ("peft",)) for dense in (block.self_attention.qkv_dense, block.self_attention.output_dense,
                                                    block.intermediate_dense, block.output_dense)]
        for owner, attributes in owners:
            for attribute in attributes:
                held = getattr(owner, attribute, None)
                if held is not None:
                    found.append((owner, attribute, held))
    return found


def adapter_layers(task, name):
    """The layers of adapter `name`: its updates at every hook point, its prefix encoder, its rank allocator."""
    layers = [held.get(name) for _, _, held in hook_points(task) if name in held.names]
    for owner, attribute in ((task.backbone, f"peft_prefix_{name}"), (task, f"peft_allocator_{name}")):
        if getattr(owner, attribute, None) is not None:
            layers.append(getattr(owner, attribute))
    return layers


def adapter_variables(task, name, trainable_only=False):
    """The variables of adapter `name`, without duplicates (a prefix encoder is shared by every layer)."""
    seen, out = set(), []
    for layer in adapter_layers(task, name):
        for v in layer.trainable_weights if trainable_only else layer.weights:
            if id(v) not in seen:
                seen.add(id(v))
                out.append(v)
    return out


def head_variables(task):
    """The task's own variables: everything outside its backbone (and outside every adapter)."""
    inside = {id(v) for v in task.backbone.weights}
    for name in getattr(task, "peft_adapters", None) or {}:
        inside |= {id(v) for v in adapter_variables(task, name)}
    return [v for v in task.weights if id(v) not in inside]


def base_variables(task, also_train):
    """The backbone's variables that `also_train` names: every LayerNorm's gamma and beta ("layer_norm"), every
    bias and beta ("bias"); adapters' own variables excluded."""
    own = set()
    for name in getattr(task, "peft_adapters", None) or {}:
        own |= {id(v) for v in adapter_variables(task, name)}
    keep = set()
    if "layer_norm" in also_train:
        for layer in task.backbone._flatten_layers():
            if isinstance(layer, keras.layers.LayerNormalization):
                keep |= {id(v) for v in layer.weights}
    if "bias" in also_train:
        keep |= {id(v) for v in task.backbone.weights if v.name in ("bias", "beta")}
    return [v for v in task.backbone.weights if id(v) in keep and id(v) not in own]


def active_adapter(task):
    return getattr(task, "peft_active", None)


def active_config(task):
    """The active adapter's `PeftConfig`, or None."""
    name = active_adapter(task)
    return None if name is None else as_config(task.peft_adapters[name])


def owned_base_variables(task):
    """The backbone variables that some applied adapter trains (the union of their `also_train`)."""
    adapters = getattr(task, "peft_adapters", None) or {}
    return base_variables(task, {key for config in adapters.values() for key in config["also_train"]})


def set_adapter(task, name):
    """Makes adapter `name` active (None: the bare base model), swapping in its own values, and sets what trains.

    What an adapter trains besides its own weights belongs to it (HF PEFT's `modules_to_save`): the task head and,
    when `also_train` names them, the backbone's LayerNorms or biases. Switching keeps each adapter's values of
    these and restores them when it is active again; a new adapter starts from the bare model's.
    """
    adapters = getattr(task, "peft_adapters", None) or {}
    if name is not None and name not in adapters:
        raise ValueError(f"no adapter {name!r} on {task.name}; applied: {sorted(adapters)}")
    previous = active_adapter(task)
    own_values = dict(getattr(task, "peft_own_values", None) or {})
    if previous != name:  # (the bare model's values are kept under None)
        swapped = head_variables(task) + owned_base_variables(task)
        own_values[previous] = {v.path: v.numpy() for v in swapped}
        bare = own_values.setdefault(None, {})
        unknown = getattr(task, "peft_unknown_bare", frozenset())
        for path, value in own_values[previous].items():
            if path not in unknown:  # swapped for the first time (a new adapter trains it): no adapter changed it
                bare.setdefault(path, value)
        values = {**bare, **own_values.get(name, {})}
        missing = [v.path for v in swapped if v.path not in values]
        if missing:
            raise ValueError(f"the bare model's values of {missing[0]} and {len(missing) - 1} more are unknown: "
                             f"they were restored from a checkpoint that holds only what adapter {previous!r} "
                             f"trained (also_train); rebuild the base from its pretrained weights to use "
                             f"{'the bare model' if name is None else f'adapter {name!r}'}")
        for v in swapped:
            v.assign(values[v.path])
    for _, _, held in hook_points(task):
        if held.merged:
            raise ValueError(f"unmerge adapter {held.active!r} before switching adapters")
        held.active = name if name in held.names else None
    prompt_length = 0
    if name is not None and adapters[name]["method"] == "prompt":
        prompt_length = adapters[name]["num_virtual_tokens"]
    layers = blocks(task.backbone)
    for block in layers:
        block.prompt_length = prompt_length
        block.drop_prompt = False
    layers[-1].drop_prompt = bool(prompt_length)
    object.__setattr__(task, "peft_own_values", own_values)
    object.__setattr__(task, "peft_active", name)
    set_trainable(task)
    task.reset_compiled_functions()  # the active adapter / merged state is read when a step is traced
    return task


def forget_bare_values(task):
    """After a PEFT run's checkpoint is restored into a model built without its pretrained weights (`load_run`):
    the checkpoint holds the backbone variables that `also_train` names only with the adapter's trained values,
    so the bare model's are unknown, and asking for them raises instead of silently using the build's."""
    unknown = frozenset(v.path for v in owned_base_variables(task))
    for path in unknown:
        (getattr(task, "peft_own_values", None) or {}).get(None, {}).pop(path, None)
    object.__setattr__(task, "peft_unknown_bare", unknown)


# What each adapter owns besides its own layers (the values `set_adapter` swaps), in `.keras` / `.weights.h5`
# files: entries `STORED_PREFIX|<adapter name, empty for the bare model>|<variable path, "/" as "|">`.
STORED_PREFIX = "peft_own_values"


def stored_values(task):
    """`{entry name: array}` of every adapter's and the bare model's swapped values, for `Task.save_own_variables`
    (the active adapter's are in the variables themselves)."""
    own = getattr(task, "peft_own_values", None) or {}
    return {f"{STORED_PREFIX}|{name or ''}|{path.replace('/', '|')}": value
            for name, values in own.items() if name != active_adapter(task) for path, value in values.items()}


def restore_stored_values(task, entries):
    """Inverse of `stored_values`, called by `Task.load_own_variables` after `from_config` rebuilt the adapters."""
    variables = {v.path: v for v in task.weights}
    own = {}
    for key, value in entries.items():
        _, name, path = key.split("|", 2)
        path = path.replace("|", "/")
        if path not in variables or tuple(variables[path].shape) != tuple(np.shape(value)):
            raise ValueError(f"saved PEFT entry {key!r} of shape {tuple(np.shape(value))} fits no variable of "
                             f"{task.name}")
        own.setdefault(name or None, {})[path] = np.asarray(value)
    object.__setattr__(task, "peft_own_values", own)


def set_trainable(task):
    """Freezes every variable except the active adapter's and what its `also_train` names."""
    config, name = active_config(task), active_adapter(task)
    if config is None:
        for v in task.weights:
            v.trainable = "int" not in str(v.dtype)  # int8 weights of a quantized model never train
        for adapter in getattr(task, "peft_adapters", None) or {}:
            for v in adapter_variables(task, adapter):
                v.trainable = False
        return
    keep = {id(v) for v in adapter_variables(task, name) if not _is_state(v)}
    if "head" in config.also_train:
        keep |= {id(v) for v in head_variables(task)}
    keep |= {id(v) for v in base_variables(task, config.also_train)}
    for v in task.weights:
        v.trainable = id(v) in keep


def _is_state(variable):
    """AdaLoRA's bookkeeping (EMAs, rank pattern): variables of the adapter that never train."""
    return variable.path.split("/")[-1].startswith(("ema_", "rank_pattern", "budget"))


def parameter_counts(task):
    """`{"trainable", "total", "peft", "trainable_percent"}`: counted over variables, as HF PEFT's
    `print_trainable_parameters` (total includes every adapter's parameters but not AdaLoRA's bookkeeping;
    `peft` is the active adapter's own)."""
    count = lambda vs: int(sum(np.prod(v.shape) for v in vs))  # noqa: E731
    name = active_adapter(task)
    peft = count(v for v in adapter_variables(task, name) if not _is_state(v)) if name else 0
    trainable, total = count(task.trainable_weights), count(v for v in task.weights if not _is_state(v))
    return {"trainable": trainable, "total": total, "peft": peft, "trainable_percent": 100.0 * trainable / total}


# ------------------------------------------------------------------------------------------ merge and unmerge
def merge(task):
    """Folds the active LoRA / AdaLoRA update into the frozen kernels (outputs unchanged, no extra matmuls)."""
    _fold(task, +1.0)


def unmerge(task):
    """Subtracts a merged update back out of the kernels, so adapters can be switched or trained again."""
    _fold(task, -1.0)


def _fold(task, sign):
    config = active_config(task)
    if config is None or config.method not in ("lora", "adalora"):
        raise ValueError(f"merge/unmerge needs an active LoRA or AdaLoRA adapter, the active one is "
                         f"{active_adapter(task)!r} ({config.method if config else 'none'})")
    if getattr(task, "quantization", None):
        raise ValueError(f"cannot merge into {task.quantization} kernels: merge the adapter into the float model, "
                         "then quantize it")
    for dense, attribute, held in hook_points(task):
        if attribute != "peft" or held.active is None:
            continue
        if held.merged == (sign > 0):
            raise ValueError(f"adapter {held.active!r} is already {'merged' if sign > 0 else 'unmerged'}")
        delta = held.get().delta_kernel(dense.kernel.shape[0])
        dense.kernel.assign(dense.kernel + sign * keras.ops.cast(delta, dense.kernel.dtype))
        held.merged = sign > 0
    task.reset_compiled_functions()  # the active adapter / merged state is read when a step is traced


# ------------------------------------------------------------------------------- hooks of the training step
def allocator(task):
    """The active adapter's AdaLoRA `RankAllocator`, or None."""
    name = active_adapter(task)
    return None if name is None else getattr(task, f"peft_allocator_{name}", None)


def regularization_loss(task):
    """The active method's extra loss term (AdaLoRA's weighted orthogonality penalty), or None."""
    found = allocator(task)
    return None if found is None else found.regularization()


def after_step(task, grads, variables, step):
    """Runs in the training step after the optimizer update (AdaLoRA's importance EMAs and rank allocation)."""
    found = allocator(task)
    if found is not None:
        found.update(step, {id(v): g for g, v in zip(grads, variables) if g is not None})


def step_summaries(task):
    """Scalars to log at each logging step (AdaLoRA: `budget` and every matrix's current rank)."""
    found = allocator(task)
    return {} if found is None else found.summaries()


def remove_adapter(task, name, activate=None):
    """Deletes adapter `name` (its updates, prefix encoder, rank allocator and stored values) and activates
    `activate` (None: the bare base model)."""
    if active_adapter(task) == name:
        set_adapter(task, None)
    for _, _, held in hook_points(task):
        if name in held.names:
            detach(held, f"adapter_{name}")
            held.names.remove(name)
    for owner, attribute in ((task.backbone, f"peft_prefix_{name}"), (task, f"peft_allocator_{name}")):
        if getattr(owner, attribute, None) is not None:
            detach(owner, attribute)
    adapters = dict(task.peft_adapters)
    adapters.pop(name, None)
    object.__setattr__(task, "peft_adapters", adapters)
    getattr(task, "peft_own_values", {}).pop(name, None)
    set_adapter(task, activate)
