"""Where PEFT methods attach: named hook points on tfm's own layers, each holding one update per adapter name.

A hook point is an attribute of a layer that its `call` consults (see `tfm.layers`): `Dense.peft` (an additive
low-rank update), `MultiHeadAttention.prefix`, a block's `attention_adapter` / `feedforward_adapter` / `prompt`.
Each holds an `AdapterSet`: the updates of every loaded adapter, one of them active. Attributes (not a dict) hold
the updates, because `tf.train.Checkpoint` follows attributes: the Trainer's checkpoints then carry them.
"""

import re

import keras

from tfm.peft.config import TARGETS

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def check_adapter_name(name):
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"adapter name {name!r} must start with a letter and hold only letters, digits and _")
    return name


@keras.saving.register_keras_serializable(package="tfm")
class AdapterSet(keras.layers.Layer):
    """The updates at one hook point, by adapter name; calling it calls the active one.

    Attributes:
        names: list of str, the adapters held, in the order added.
        active: str or None, the adapter the hook point uses (None: the hook point is off).
        merged: bool, the active update is folded into the base weights (LoRA, AdaLoRA), so it is not called.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.names = []
        self.active = None
        self.merged = False
        self.built = True

    def add(self, name, update):
        check_adapter_name(name)
        if name in self.names:
            raise ValueError(f"adapter {name!r} is already applied at {self.name}; delete it or use another name")
        attach(self, f"adapter_{name}", update)
        self.names.append(name)

    def get(self, name=None):
        return getattr(self, f"adapter_{name or self.active}")

    def call(self, *args, **kwargs):
        return self.get()(*args, **kwargs)


def attach(layer, attribute, value):
    """Sets a tracked attribute on a built (state-locked) Keras layer."""
    locked = layer._tracker.locked
    layer._tracker.unlock()
    setattr(layer, attribute, value)
    if locked:
        layer._tracker.lock()


def float_policy(layer):
    """`layer`'s dtype policy, or for an int8-quantized layer the float policy it computes in: adapters on a
    quantized base (QLoRA-style) are float layers."""
    policy = layer.dtype_policy
    if getattr(policy, "quantization_mode", None) is None:
        return policy
    compute, variable = policy.compute_dtype, policy.variable_dtype
    return keras.DTypePolicy(variable if compute == variable else f"mixed_{compute}")


def adapter_set(layer, attribute):
    """The `AdapterSet` at `layer.attribute`, created on first use."""
    current = getattr(layer, attribute, None)
    if current is None:
        current = AdapterSet(dtype=float_policy(layer), name=f"{attribute}_adapters")
        attach(layer, attribute, current)
    return current


def blocks(backbone):
    """The backbone's transformer blocks (BERT's and GPT's `transformer_layers`)."""
    layers = getattr(backbone, "transformer_layers", None)
    if not layers:
        raise ValueError(f"{type(backbone).__name__} has no transformer_layers: PEFT methods need a tfm backbone")
    return list(layers)


def projection(block, target):
    """`(dense_layer, column_start, column_end)` of a LoRA target in one block (the fused QKV kernel is sliced)."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; valid targets: {list(TARGETS)}")
    attention = block.self_attention
    if target in ("query", "key", "value"):
        width = attention.hidden_dim
        start = ("query", "key", "value").index(target) * width
        return attention.qkv_dense, start, start + width
    dense = {"attention_output": attention.output_dense, "intermediate": block.intermediate_dense,
             "output": block.output_dense}[target]
    return dense, 0, dense.units


def detach(layer, attribute):
    """Removes a tracked attribute (and its variables) from a built Keras layer."""
    locked = layer._tracker.locked
    layer._tracker.unlock()
    value = getattr(layer, attribute)
    delattr(layer, attribute)
    for collection in ("_layers",):
        held = getattr(layer, collection, None)
        if held is not None and value in held:
            held.remove(value)
    if locked:
        layer._tracker.lock()
