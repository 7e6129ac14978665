"""LoRA (Hu et al. 2021): a trainable low-rank update `scale * dropout(x) @ A @ B` added to a frozen projection.

A is `(in, rank)`, initialised as HF PEFT's (Kaiming-uniform, bound `1/sqrt(in)`), B `(rank, out)` zeros, so the
model is unchanged at step 0. On tfm's fused QKV kernel each adapted slice (query, key, value) has its own pair,
as HF PEFT has on BERT's separate projections: the parameter counts and files match.
"""

import math

import keras
from keras import ops

from tfm.layers.dropout import HashDropout


@keras.saving.register_keras_serializable(package="tfm")
class LoraUpdate(keras.layers.Layer):
    """`scale * dropout(x) @ lora_a @ lora_b`, of shape `(..., output_dim)`.

    Args:
        input_dim: int, width of the projection's input.
        output_dim: int, width of the adapted output slice.
        rank: int, the rank r.
        scale: float, alpha / r (or alpha / sqrt(r) for rsLoRA).
        dropout: float, dropout on the input of the low-rank branch.

    Example:
    >>> update = LoraUpdate(8, 4, rank=2, scale=1.0)
    >>> update.build()
    >>> float(keras.ops.max(keras.ops.abs(update(keras.ops.ones((1, 8))))))  # B = 0: no change at step 0
    0.0
    """

    def __init__(self, input_dim, output_dim, rank, scale, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.input_dim, self.output_dim, self.rank = input_dim, output_dim, rank
        self.scale, self.dropout = scale, dropout

    def build(self, input_shape=None):
        bound = 1.0 / math.sqrt(self.input_dim)  # torch's kaiming_uniform_(a=sqrt(5)) on a (rank, in) weight
        self.lora_a = self.add_weight(name="lora_a", shape=(self.input_dim, self.rank),
                                      initializer=keras.initializers.RandomUniform(-bound, bound))
        self.lora_b = self.add_weight(name="lora_b", shape=(self.rank, self.output_dim), initializer="zeros")
        self.input_dropout = HashDropout(self.dropout, dtype=self.dtype_policy, name="lora_dropout")
        self.built = True

    def call(self, x, training=None):
        x = self.input_dropout(x, training=training)
        return ops.matmul(ops.matmul(x, self.lora_a), self.lora_b) * ops.cast(self.scale, x.dtype)

    def delta_kernel(self):
        """The update as a `(input_dim, output_dim)` kernel: what `merge` adds to the frozen one."""
        return ops.matmul(self.lora_a, self.lora_b) * self.scale

    def trainable_count(self):
        return self.rank * (self.input_dim + self.output_dim)


@keras.saving.register_keras_serializable(package="tfm")
class SlicedUpdate(keras.layers.Layer):
    """The low-rank updates of one projection's output slices (query/key/value of the fused QKV kernel, or the
    whole output of another projection), concatenated to the projection's full width with zeros elsewhere.

    Args:
        units: int, the projection's output width.
        slices: list of `(name, start, end)` column ranges, in order, not overlapping.
        make_update: callable `(name, width) -> layer`, the update of one slice.
    """

    def __init__(self, units, slices, make_update, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.slices = sorted(slices, key=lambda s: s[1])
        self.slice_names = [name for name, _, _ in self.slices]
        for name, start, end in self.slices:
            setattr(self, f"update_{name}", make_update(name, end - start))
        self.built = True

    def updates(self):
        return [(getattr(self, f"update_{name}"), start, end) for name, start, end in self.slices]

    def by_name(self):
        """Slice name (a LoRA target) -> its update layer."""
        return {name: getattr(self, f"update_{name}") for name in self.slice_names}

    def call(self, x, training=None):
        parts, position = [], 0
        lead = ops.shape(x)[:-1]
        for update, start, end in self.updates():
            if start > position:
                parts.append(ops.zeros(tuple(lead) + (start - position,), x.dtype))
            parts.append(ops.cast(update(x, training=training), x.dtype))
            position = end
        if position < self.units:
            parts.append(ops.zeros(tuple(lead) + (self.units - position,), x.dtype))
        return parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=-1)

    def delta_kernel(self, input_dim):
        """The full-width `(input_dim, units)` kernel update."""
        columns, position = [], 0
        for update, start, end in self.updates():
            if start > position:
                columns.append(ops.zeros((input_dim, start - position)))
            columns.append(ops.convert_to_tensor(update.delta_kernel()))
            position = end
        if position < self.units:
            columns.append(ops.zeros((input_dim, self.units - position)))
        return ops.concatenate(columns, axis=-1)
