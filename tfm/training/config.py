"""Experiment configs: YAML -> typed dataclasses, strict checking, ``--set a.b=c`` overrides.

A YAML file mirrors :class:`ExperimentConfig`. An unknown key is an error naming it and the valid keys at its
level; a wrong type is an error naming the key, the expected type and the value. Only safe conversions:
int -> float, numeric string (PyYAML reads ``1e-3`` as one) -> float, integral number -> int; bools are
never numbers. :func:`save_config` writes the resolved config, :func:`load_config` reads it back equal.

>>> cfg = apply_overrides(ExperimentConfig(), ["trainer.learning_rate=3e-5", "task.name=text_classifier"])
>>> cfg.trainer.learning_rate, cfg.task.name
(3e-05, 'text_classifier')
"""

import dataclasses
import difflib
import functools
import math
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Literal, Optional

import yaml

CONFIG_FILENAME = "config.yaml"


class ConfigError(ValueError):
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
    {'type': 'wordpiece', 'vocab_size': 8000, 'lowercase': True, 'path': None}
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


def _set_path(cls, data, path, value, raw, where=""):
    """Sets ``data[path...] = value`` after checking each step of ``path`` against ``cls``."""
    key, rest = path[0], path[1:]
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

    Raises:
        ConfigError: naming the override and its key (an unknown one with the valid keys at its level).

    Example:
    >>> apply_overrides(ExperimentConfig(), ["trainer.steps=2000"]).trainer.steps
    2000
    """
    data = to_dict(cfg)
    for text in overrides:
        path, value = parse_override(text)
        try:
            _set_path(type(cfg), data, path, value, text.partition("=")[2])
            cfg = from_dict(type(cfg), data)
        except ConfigError as error:
            raise error.within(f"--set {text}") from None
        data = to_dict(cfg)
    return cfg


def load_config(path, overrides=()):
    """Reads a YAML experiment config (or a run dir's ``config.yaml``) and applies overrides.

    Args:
        path: str, a YAML file or a directory holding ``config.yaml``.
        overrides: iterable of ``"a.b=c"`` strings (see :func:`apply_overrides`).

    Raises:
        ConfigError: with the file name in front of the problem.

    Example:
    >>> cfg = load_config("configs/sst2.yaml", ["trainer.steps=2000"])   # doctest: +SKIP
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, CONFIG_FILENAME)
    try:
        with open(path, encoding="utf-8") as f:
            cfg = from_dict(ExperimentConfig, yaml.safe_load(f))
    except OSError as error:
        raise ConfigError("", f"cannot read config: {error.strerror or error}", path) from None
    except yaml.YAMLError as error:
        raise ConfigError("", f"invalid YAML: {error}", path) from None
    except ConfigError as error:
        raise error.within(path) from None
    return apply_overrides(cfg, overrides)


def save_config(cfg, path):
    """Writes ``cfg`` as YAML (atomically); :func:`load_config` reads it back to an equal config.

    Args:
        cfg: a config dataclass instance.
        path: str, a ``.yaml`` file or a run directory (then ``<dir>/config.yaml``).

    Returns:
        str, the file written.

    Example:
    >>> save_config(ExperimentConfig(output_dir="runs/x"), "runs/x")   # doctest: +SKIP
    'runs/x/config.yaml'
    """
    path = os.fspath(path)
    if os.path.isdir(path) or not path.endswith((".yaml", ".yml")):
        path = os.path.join(path, CONFIG_FILENAME)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=False, allow_unicode=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(f"# Resolved {type(cfg).__name__} (tfm.training.config.save_config)\n{text}")
    os.replace(tmp, path)
    return path


# The schema. Validation runs on construction; keys in messages are relative to the dataclass and get the
# section prefix from from_dict (e.g. "trainer.steps must be > 0, got 0").

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
    """Base of the schema dataclasses: checks field types, then ``_validate`` (cross-field values)."""

    def __post_init__(self):
        for name, tp in _field_types(type(self)).items():
            object.__setattr__(self, name, _coerce(tp, getattr(self, name), name))
        self._validate()


TaskName = Literal["masked_lm", "causal_lm", "text_classifier", "token_classifier", "span_qa", "multiple_choice"]


@dataclass
class TaskConfig(_Config):
    """What is trained: the task head and its options."""

    name: TaskName = "masked_lm"
    num_classes: int = 2
    num_labels: Optional[int] = None
    label_names: Optional[list[str]] = None
    init_checkpoint: Optional[str] = None  # a run dir, a checkpoint path or a KerasHub preset dir
    max_predictions: int = 20
    mask_rate: float = 0.15
    whole_word_masking: bool = False
    tagging_scheme: Literal["IOB2", "IOBES"] = "IOB2"

    def _validate(self):
        _check(self, "num_classes max_predictions", *_POSITIVE)
        _check(self, "num_labels", *_POSITIVE, optional=True)
        _check(self, "mask_rate", lambda v: 0.0 < v < 1.0, "in (0, 1)")
        names = self.label_names
        if names is not None:
            _require(len(set(names)) == len(names) > 0, "label_names", f"must be unique and non-empty, got {names!r}")
            classes = self.num_classes if self.name == "text_classifier" else None
            for other, n in (("num_labels", self.num_labels), ("num_classes", classes)):
                _require(n is None or n == len(names), "label_names", f"has {len(names)} names but {other} is {n}")


@dataclass
class ModelConfig(_Config):
    """The backbone: a preset and/or KerasHub-named hyperparameters (set ones override the preset)."""

    preset: Optional[str] = None
    family: Literal["bert", "gpt"] = "bert"
    vocabulary_size: Optional[int] = None
    num_layers: Optional[int] = None
    num_heads: Optional[int] = None
    hidden_dim: Optional[int] = None
    intermediate_dim: Optional[int] = None
    dropout: Optional[float] = None
    max_sequence_length: Optional[int] = None
    num_segments: Optional[int] = None

    def _validate(self):
        _check(self, "vocabulary_size num_layers num_heads hidden_dim intermediate_dim max_sequence_length "
               "num_segments", *_POSITIVE, optional=True)
        _check(self, "dropout", *_FRACTION, optional=True)
        if self.hidden_dim is not None and self.num_heads is not None:
            _require(self.hidden_dim % self.num_heads == 0, "hidden_dim",
                     f"({self.hidden_dim}) must be divisible by num_heads ({self.num_heads})")

    def backbone_kwargs(self):
        """The hyperparameters that are set, as constructor keyword arguments.

        Example:
        >>> ModelConfig(num_layers=2, hidden_dim=64).backbone_kwargs()
        {'num_layers': 2, 'hidden_dim': 64}
        """
        names = [f.name for f in dataclasses.fields(self) if f.name not in ("preset", "family")]
        return {k: getattr(self, k) for k in names if getattr(self, k) is not None}


@dataclass
class TokenizerConfig(_Config):
    """Tokenizer type; a vocab/model at ``path`` or one trained to ``vocab_size`` into the run dir."""

    type: Literal["wordpiece", "sentencepiece", "gpt2_bpe"] = "wordpiece"
    vocab_size: int = 8000
    lowercase: bool = True
    path: Optional[str] = None

    def _validate(self):
        _check(self, "vocab_size", *_POSITIVE)


@dataclass
class DataConfig(_Config):
    """Where examples come from (files or ``"tfds:name"``) and how they are read and packed."""

    train: list[str] = field(default_factory=list)
    eval: list[str] = field(default_factory=list)
    format: Literal["text", "jsonl", "tsv", "csv", "conll", "squad", "tfds"] = "text"
    text_column: str = "text"
    text_pair_column: Optional[str] = None
    label_column: str = "label"
    header: bool = True
    sequence_length: int = 128
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    shuffle_buffer: int = 10000
    max_eval_examples: Optional[int] = None

    def _validate(self):
        _check(self, "sequence_length", *_POSITIVE)
        _check(self, "max_eval_examples", *_POSITIVE, optional=True)
        _check(self, "shuffle_buffer", *_NON_NEGATIVE)
        for section in ("train", "eval"):
            for i, source in enumerate(getattr(self, section)):
                _require(source.strip() not in ("", "tfds:"), f"{section}[{i}]",
                         f"must name a file or 'tfds:NAME', got {source!r}")


@dataclass
class TrainerConfig(_Config):
    """The custom training loop: length, batch, optimizer, schedule, distribution and logging cadence."""

    steps: int = 1000
    batch_size: int = 32
    learning_rate: float = 1e-4
    strategy: Literal["auto", "default", "mirrored", "multi_worker", "tpu"] = "auto"
    mixed_precision: Literal["float32", "mixed_bfloat16", "mixed_float16"] = "float32"
    checkpoint_every: int = 500
    log_every: int = 50
    eval_every: int = 500
    eval_steps: Optional[int] = None
    keep_checkpoints: int = 3
    warmup_steps: int = 0
    warmup_ratio: float = 0.0
    decay: Literal["linear", "cosine", "polynomial", "constant"] = "linear"
    end_learning_rate: float = 0.0
    weight_decay: float = 0.01
    adam_beta_1: float = 0.9
    adam_beta_2: float = 0.999
    adam_epsilon: float = 1e-6
    clip_norm: Optional[float] = 1.0
    grad_accum_steps: int = 1
    jit_compile: bool = True
    seed: int = 0
    peak_flops: Optional[float] = None  # per-chip peak FLOP/s, for MFU in the logs
    num_samples: int = 2  # generated samples logged at each eval (causal LM)

    def _validate(self):
        _check(self, "steps batch_size learning_rate checkpoint_every log_every eval_every keep_checkpoints "
               "grad_accum_steps adam_epsilon", *_POSITIVE)
        _check(self, "eval_steps clip_norm peak_flops", *_POSITIVE, optional=True)
        _check(self, "warmup_steps end_learning_rate weight_decay num_samples seed", *_NON_NEGATIVE)
        _check(self, "warmup_ratio adam_beta_1 adam_beta_2", *_FRACTION)
        _require(self.warmup_steps <= self.steps, "warmup_steps",
                 f"({self.warmup_steps}) must be <= steps ({self.steps})")
        _require(not (self.warmup_steps and self.warmup_ratio), "warmup_ratio",
                 f"({self.warmup_ratio}) and warmup_steps ({self.warmup_steps}) are both set; set one of them")
        _require(self.end_learning_rate <= self.learning_rate, "end_learning_rate",
                 f"({self.end_learning_rate}) must be <= learning_rate ({self.learning_rate})")

    def resolved_warmup_steps(self):
        """``warmup_steps``, or ``round(warmup_ratio * steps)`` when the ratio is used.

        Example:
        >>> TrainerConfig(steps=1000, warmup_ratio=0.1).resolved_warmup_steps()
        100
        """
        return self.warmup_steps or int(round(self.warmup_ratio * self.steps))


_FAMILY_OF_TASK = {"masked_lm": "bert", "causal_lm": "gpt"}


@dataclass
class ExperimentConfig(_Config):
    """One experiment: a run dir plus task, model, data and trainer sections."""

    output_dir: str = "runs/default"
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def _validate(self):
        _require(self.output_dir.strip() != "", "output_dir", "must not be empty")
        family = _FAMILY_OF_TASK.get(self.task.name)
        if family is not None:
            _require(self.model.family == family, "model.family",
                     f"must be {family!r} for task.name={self.task.name!r}, got {self.model.family!r}")
        max_len = self.model.max_sequence_length
        if max_len is not None:
            _require(self.data.sequence_length <= max_len, "data.sequence_length",
                     f"({self.data.sequence_length}) must be <= model.max_sequence_length ({max_len})")
