"""One table per architecture maps Hugging Face tensor names to tfm variables; import and export both read it.

An `Entry` ties one HF tensor to a tfm variable, or to a column slice of one (tfm's fused `(H, 3H)` QKV kernel
holds HF's separate query / key / value), transposed where PyTorch's `Linear` stores `(out, in)`. Import checks
every tensor (present, right shape) before assigning any, so a bad checkpoint leaves the model untouched.
"""

import dataclasses

import numpy as np

from tfm.errors import InputError


@dataclasses.dataclass(frozen=True)
class Entry:
    """HF tensor `name` <-> `variable` (or its last-axis `columns` slice), `transpose`d for `(out, in)` layouts."""

    name: str
    variable: object
    columns: tuple = None  # (start, stop) on the variable's last axis
    transpose: bool = False

    @property
    def shape(self):
        """The HF tensor's shape."""
        shape = list(self.variable.shape)
        if self.columns:
            shape[-1] = self.columns[1] - self.columns[0]
        return tuple(reversed(shape)) if self.transpose else tuple(shape)


def linear(name, layer, columns=None):
    """Entries of a PyTorch `nn.Linear` (`weight (out, in)`, `bias`) for a Keras Dense `layer`."""
    bias_columns = columns
    return [Entry(f"{name}.weight", layer.kernel, columns, transpose=True),
            Entry(f"{name}.bias", layer.bias, bias_columns)]


def conv1d(name, layer):
    """Entries of GPT-2's `Conv1D` (`weight (in, out)`, as Keras stores it)."""
    return [Entry(f"{name}.weight", layer.kernel), Entry(f"{name}.bias", layer.bias)]


def layer_norm(name, layer):
    return [Entry(f"{name}.weight", layer.gamma), Entry(f"{name}.bias", layer.beta)]


def fused_qkv(names, layer, transpose):
    """Entries of separate query/key/value projections (`names`) for tfm's fused `qkv` Dense `layer`."""
    width = layer.kernel.shape[-1] // 3
    entries = []
    for i, name in enumerate(names):
        columns = (i * width, (i + 1) * width)
        entries += [Entry(f"{name}.weight", layer.kernel, columns, transpose=transpose),
                    Entry(f"{name}.bias", layer.bias, columns)]
    return entries


def load_entries(entries, tensors, source, optional=()):
    """Assigns every entry's tensor from `tensors` (name -> array) after checking them all.

    Args:
        entries: list of Entry.
        tensors: dict of HF name -> numpy array.
        source: str naming the checkpoint in errors.
        optional: HF names that may be missing (their variables keep their values).

    Returns:
        list of the optional names that were missing.

    Raises:
        InputError: a required tensor is missing, or a tensor's shape is not the expected one (names both).
    """
    new_values, missing_optional = {}, []
    for entry in entries:
        if entry.name not in tensors:
            if entry.name in optional:
                missing_optional.append(entry.name)
                continue
            raise InputError(f"{source}: tensor {entry.name!r} is missing (expected shape {list(entry.shape)})")
        value = np.asarray(tensors[entry.name])
        if tuple(value.shape) != entry.shape:
            raise InputError(f"{source}: tensor {entry.name!r} has shape {list(value.shape)}, expected "
                             f"{list(entry.shape)}")
        if entry.transpose:
            value = value.T
        key = id(entry.variable)
        if entry.columns:
            if key not in new_values:  # one copy of the fused variable, filled slice by slice
                new_values[key] = (entry.variable, np.array(entry.variable.numpy()))
            new_values[key][1][..., entry.columns[0]:entry.columns[1]] = value
        else:
            new_values[key] = (entry.variable, value)
    for variable, value in new_values.values():  # only now: nothing is half-loaded on error
        variable.assign(value.astype(variable.dtype))
    return missing_optional


def export_entries(entries):
    """HF name -> float32 numpy array for every entry (the inverse of `load_entries`)."""
    out = {}
    for entry in entries:
        value = np.asarray(entry.variable.numpy(), dtype=np.float32)
        if entry.columns:
            value = value[..., entry.columns[0]:entry.columns[1]]
        out[entry.name] = np.array(value.T if entry.transpose else value, order="C")  # (0-d stays 0-d)
    return out
