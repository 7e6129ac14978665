"""The config mechanism: strict dict -> dataclass conversion, type coercion and ``--set a.b=c`` overrides.

The schema itself (ExperimentConfig and its sections) lives in :mod:`tfm.training.config`, which re-exports
everything here; import from there.
"""

import dataclasses
import difflib
import functools
import math
import types
import typing
import warnings
from typing import Literal

import yaml

from tfm.errors import InputError


class ConfigError(InputError):
    """A config problem: ``key`` (dotted path, "" for none), ``problem``, ``context`` (file or override)."""

    def __init__(self, key, problem, context=""):
        self.key, self.problem, self.context = key, problem, context
        message = f"{key} {problem}" if key else problem
        super().__init__(f"{context}: {message}" if context else message)

    def under(self, prefix):
        return ConfigError(_join(prefix, self.key), self.problem, self.context)

    def within(self, context):
        return ConfigError(self.key, self.problem, context)


def _join(prefix, key):
    return f"{prefix}.{key}" if prefix and key else prefix or key


@functools.cache
def _field_types(cls):
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _type_name(tp):
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return f"a mapping ({tp.__name__})"
    if origin is Literal:
        return f"one of {list(args)}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in args)
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
    return getattr(tp, "__name__", str(tp))


def _wrong(key, tp, value):
    return ConfigError(key, f"must be {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def _coerce(tp, value, key):
    """Checks ``value`` against type ``tp`` and returns it converted; raises ConfigError naming ``key``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is typing.Any:
        return value
    if dataclasses.is_dataclass(tp):  # a section; null/empty means all defaults
        return value if isinstance(value, tp) else from_dict(tp, value, where=key)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:  # an Optional section left out stays None (not all defaults)
            return None
        for arg in args:  # NoneType accepts None only
            try:
                return _coerce(arg, value, key)
            except ConfigError as error:
                if error.key != key:  # a problem deeper inside (a list item, a section's key): keep it
                    raise
        raise _wrong(key, tp, value)
    if origin is Literal:
        if value in args and type(value) in {type(a) for a in args}:
            return value
        raise ConfigError(key, f"must be one of {list(args)}, got {value!r}")
    if origin in (list, dict) and not isinstance(value, (list, tuple) if origin is list else dict):
        raise _wrong(key, tp, value)
    if origin is list:
        return [_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        return {_coerce(args[0], k, key): _coerce(args[1], v, _join(key, str(k))) for k, v in value.items()}
    try:  # ints, floats and numeric strings are numbers; bools are not
        number = None if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        number = None
    if tp is float and number is not None:
        return number
    if tp is int and number is not None and math.isfinite(number) and number.is_integer():
        return value if isinstance(value, int) else int(number)
    if tp not in (int, float) and isinstance(value, tp):  # bool and str: the exact type only
        return value
    raise _wrong(key, tp, value)


def _unknown_key(cls, key, where):
    valid = [f.name for f in dataclasses.fields(cls)]
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    level = f"in {where}" if where else "at the top level"
    return ConfigError(_join(where, key), f"is not a valid key{hint}; valid keys {level}: {', '.join(valid)}")


def from_dict(cls, data, where=""):
    """Builds dataclass ``cls`` from a (YAML-loaded) dict, strictly.

    Nested dataclasses, ``Optional``, ``list[...]``, ``dict[str, ...]`` and ``Literal`` are checked
    recursively; missing keys take the dataclass defaults.

    Args:
        cls: a dataclass type, e.g. :class:`ExperimentConfig`.
        data: dict (or None for all defaults).
        where: str, dotted path of ``data`` inside a bigger config, used in error messages.

    Raises:
        ConfigError: naming the dotted key of an unknown key, a missing required key, a wrongly typed
            value or a value that fails validation.

    Example:
    >>> from_dict(TrainerConfig, {"steps": 10, "learning_rate": "1e-3"}).learning_rate
    0.001
    """
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise _wrong(where, cls, data)
    for old in [k for k in data if k in getattr(cls, "RENAMED_KEYS", {})]:  # an older config: the new name
        new = _renamed(cls, old, where)
        if new in data:
            raise ConfigError(_join(where, old), f"is the old name of {_join(where, new)}; give only the new one")
        data = {(new if k == old else k): v for k, v in data.items()}
    hints = _field_types(cls)
    unknown = [k for k in data if k not in hints]
    if unknown:
        raise _unknown_key(cls, unknown[0], where)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _coerce(hints[f.name], data[f.name], _join(where, f.name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(_join(where, f.name), "is required")
    try:
        return cls(**kwargs)
    except ConfigError as error:
        raise error.under(where) from None


def to_dict(cfg):
    """The config as plain dicts/lists/scalars in field order (what :func:`save_config` writes).

    Example:
    >>> to_dict(TokenizerConfig())
    {'type': 'wordpiece', 'vocabulary_size': 8000, 'lowercase': True, 'path': None, 'max_unique_chars': None}
    """
    return dataclasses.asdict(cfg)


def parse_override(text):
    """Splits ``"a.b=c"`` into ``(["a", "b"], value)`` with the value read as a YAML scalar or flow list.

    Example:
    >>> parse_override("data.train=[a.txt, b.txt]")
    (['data', 'train'], ['a.txt', 'b.txt'])
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError("", f"override {text!r} must look like KEY=VALUE, e.g. trainer.steps=2000")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        raise ConfigError(key, f"override value {raw!r} is not valid YAML: {error}") from None
    return key.split("."), value


def _options(tp):
    """``X | Y | None`` -> (X, Y, NoneType); any other type -> (tp,)."""
    return typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)


def _renamed(cls, key, where):
    """The current name of ``key`` in ``cls`` (its ``RENAMED_KEYS``), with a deprecation warning; else ``key``."""
    new = getattr(cls, "RENAMED_KEYS", {}).get(key)
    if new is None:
        return key
    warnings.warn(f"config key {_join(where, key)} is deprecated: it is now {_join(where, new)}", FutureWarning,
                  stacklevel=4)
    return new


def _set_path(cls, data, path, value, raw, where=""):
    """Sets ``data[path...] = value`` after checking each step of ``path`` against ``cls``."""
    key, rest = _renamed(cls, path[0], where), path[1:]
    hints = _field_types(cls)
    if key not in hints:
        raise _unknown_key(cls, key, where)
    tp, here = hints[key], _join(where, key)
    section = next((a for a in _options(tp) if dataclasses.is_dataclass(a)), None)  # X or Optional[X]
    if rest:
        if section is not None:
            data[key] = data[key] or {}
            return _set_path(section, data[key], rest, value, raw, here)
        if typing.get_origin(tp) is dict:  # a.b.c=v on a dict[str, ...] field sets its key "c"
            data[key] = {**(data[key] or {}), ".".join(rest): value}
            return
        raise ConfigError(_join(here, ".".join(rest)), f"is not a valid key: {here} is {_type_name(tp)}")
    if section is not None and isinstance(value, dict):  # a whole section: merge into the current one
        data[key] = {**(data[key] or {}), **value}
    elif str in _options(tp) and isinstance(value, (bool, int, float)):
        data[key] = raw.strip()  # e.g. output_dir=2024 or text_column=yes stay text
    else:
        data[key] = value


def apply_overrides(cfg, overrides):
    """Returns a copy of ``cfg`` with ``"a.b=c"`` overrides applied, type-checked and validated.

    Values are read as YAML (``2000``, ``3e-5``, ``true``, ``null``, ``[a, b]``, ``{k: v}``); an empty value
    is null. A value for a str field keeps its text (``output_dir=2024`` is ``"2024"``).

    Args:
        cfg: a config dataclass instance, e.g. an :class:`ExperimentConfig`.
        overrides: iterable of str like ``"trainer.steps=2000"``.

    The config is checked once all overrides are in, so overrides that only make sense together (a new
    ``data.train`` and ``data.eval``) can be given one after the other.

    Raises:
        ConfigError: naming the override and its key (an unknown one with the valid keys at its level).

    Example:
    >>> apply_overrides(ExperimentConfig(), ["trainer.steps=2000"]).trainer.steps
    2000
    """
    data, keys = to_dict(cfg), []
    for text in overrides:
        path, value = parse_override(text)
        keys.append((".".join(path) if isinstance(path, (list, tuple)) else str(path), text))
        try:
            _set_path(type(cfg), data, path, value, text.partition("=")[2])
        except ConfigError as error:
            raise error.within(f"--set {text}") from None
    if not keys:
        return cfg
    try:
        return from_dict(type(cfg), data)
    except ConfigError as error:
        # Name the last override of the failing key (or of a section holding it), else the last override.
        culprit = next((text for key, text in reversed(keys)
                        if error.key == key or error.key.startswith(key + ".") or key.startswith(error.key + ".")),
                       keys[-1][1])
        raise error.within(f"--set {culprit}") from None



# Validation helpers for the schema. Validation runs on construction; keys in messages are relative to the
# dataclass and get the section prefix from from_dict (e.g. "trainer.steps must be > 0, got 0").

_POSITIVE = (lambda v: v > 0, "> 0")
_NON_NEGATIVE = (lambda v: v >= 0, ">= 0")
_FRACTION = (lambda v: 0.0 <= v < 1.0, "in [0, 1)")


def _require(condition, key, problem):
    if not condition:
        raise ConfigError(key, problem)


def _check(cfg, names, ok, rule, optional=False):
    """Raises ``"<name> must be <rule>, got <value>"`` for the first of ``names`` failing ``ok``."""
    for name in names.split():
        value = getattr(cfg, name)
        if not (value is None and optional):
            _require(value is not None and ok(value), name, f"must be {rule}, got {value!r}")


class _Config:
    """Base of the schema dataclasses: checks field types, then ``_validate`` (cross-field values).

    ``RENAMED_KEYS`` maps a section's old key names to the new ones: configs (and run dirs) that use an
    old name still load, with a FutureWarning naming the new key.
    """

    RENAMED_KEYS = {}

    def __post_init__(self):
        for name, tp in _field_types(type(self)).items():
            object.__setattr__(self, name, _coerce(tp, getattr(self, name), name))
        self._validate()
