"""The config mechanism: strict YAML -> dataclasses, exact error messages, overrides, YAML round trip."""

import dataclasses
import os
import re
from typing import Literal, Optional

import pytest
import yaml

from tfm.training.config import (
    ConfigError,
    DataConfig,
    ExperimentConfig,
    ModelConfig,
    TaskConfig,
    TokenizerConfig,
    TrainerConfig,
    apply_overrides,
    from_dict,
    load_config,
    parse_override,
    save_config,
    to_dict,
)

TRAINER_KEYS = (
    "steps, batch_size, learning_rate, strategy, mixed_precision, checkpoint_every, log_every, eval_every, "
    "eval_steps, keep_checkpoints, warmup_steps, warmup_ratio, decay, end_learning_rate, weight_decay, layer_decay, "
    "learning_rate_multipliers, adam_beta_1, adam_beta_2, adam_epsilon, clip_norm, ema_momentum, r_drop_alpha, grad_accum_steps, jit_compile, seed, "
    "peak_flops, num_samples, skip_nonfinite_steps, max_skipped_steps"
)


@pytest.fixture(autouse=True)
def _reset_keras_state():
    """Configs are pure Python: skip the Keras session reset of tests/conftest.py (~0.2 s a test)."""
    yield


def _error(fn, *args):
    with pytest.raises(ConfigError) as info:
        fn(*args)
    return str(info.value)


def _write(tmp_path, text, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_schema_keys_and_defaults():
    d = to_dict(ExperimentConfig())
    assert list(d) == ["output_dir", "task", "model", "data", "trainer", "pretrain", "peft", "distill"]
    assert d["output_dir"] == "runs/default"
    assert d["task"] == {
        "name": "masked_lm", "num_classes": 2, "num_labels": None, "label_names": None, "init_checkpoint": None,
        "max_predictions": None, "mask_rate": 0.15, "whole_word_masking": False, "word_boundaries": "pieces", "tagging_scheme": "IOB2",
        "pooling": "pooler", "normalize": True, "scale": 20.0, "symmetric": False, "lstm_units": None, "crf": False, "crf_learning_rate_multiplier": 1.0, "next_sentence": False, "num_choices": None, "doc_stride": 128, "max_query_length": 64,
        "max_answer_length": 30, "allow_no_answer": False,
    }
    assert d["model"] == {
        "preset": None, "family": "bert", "vocabulary_size": None, "num_layers": None, "num_heads": None,
        "hidden_dim": None, "intermediate_dim": None, "dropout": None, "max_sequence_length": None,
        "num_segments": None,
    }
    assert d["data"] == {
        "train": [], "eval": [], "format": "text", "text_column": "text", "text_pair_column": None,
        "negative_column": None, "label_column": "label", "header": True, "sequence_length": 128,
        "tokenizer": {"type": "wordpiece", "vocabulary_size": 8000, "lowercase": True, "path": None,
                      "max_unique_chars": None},
        "shuffle_buffer": 10000, "length_buckets": None, "max_eval_examples": None, "prepare": None, "prepare_include": [], "prepare_exclude": [],
    }
    assert ", ".join(d["trainer"]) == TRAINER_KEYS
    assert d["trainer"] == {
        "steps": 1000, "batch_size": 32, "learning_rate": 1e-4, "strategy": "auto", "mixed_precision": "auto",
        "checkpoint_every": 500, "log_every": 50, "eval_every": 500, "eval_steps": None, "keep_checkpoints": 3,
        "warmup_steps": 0, "warmup_ratio": 0.0, "decay": "linear", "end_learning_rate": 0.0,
        "weight_decay": 0.01, "layer_decay": None, "learning_rate_multipliers": {}, "adam_beta_1": 0.9, "adam_beta_2": 0.999, "adam_epsilon": 1e-6, "clip_norm": 1.0,
        "ema_momentum": None, "r_drop_alpha": 0.0, "grad_accum_steps": 1, "jit_compile": "auto", "seed": 0, "peak_flops": None, "num_samples": 2,
        "skip_nonfinite_steps": False, "max_skipped_steps": 10,
    }
    # Every section default is its own object (no shared mutable defaults).
    assert ExperimentConfig().data.train is not ExperimentConfig().data.train


def test_from_dict_nested_and_safe_conversions():
    cfg = from_dict(ExperimentConfig, {
        "output_dir": "runs/sst2",
        "task": {"name": "text_classifier", "num_classes": 2, "label_names": ["neg", "pos"]},
        "model": {"preset": "bert_tiny", "dropout": 0},  # int -> float
        "data": {"train": ["a.tsv", "tfds:glue/sst2"], "format": "tsv", "tokenizer": {"type": "sentencepiece"}},
        "trainer": {"learning_rate": "1e-3", "steps": "1e4", "clip_norm": None, "peak_flops": 312},
    })
    assert cfg.task == TaskConfig(name="text_classifier", label_names=["neg", "pos"])
    assert cfg.model.dropout == 0.0 and type(cfg.model.dropout) is float
    assert cfg.data.train == ["a.tsv", "tfds:glue/sst2"]
    assert cfg.data.tokenizer == TokenizerConfig(type="sentencepiece")  # other keys keep their defaults
    # PyYAML reads 1e-3 and 1e4 as strings; numeric strings become float, and int when integral.
    assert cfg.trainer.learning_rate == 0.001 and type(cfg.trainer.learning_rate) is float
    assert cfg.trainer.steps == 10000 and type(cfg.trainer.steps) is int
    assert cfg.trainer.clip_norm is None
    assert cfg.trainer.peak_flops == 312.0 and type(cfg.trainer.peak_flops) is float
    # An empty section (all keys commented out in YAML) means all defaults.
    assert from_dict(ExperimentConfig, {"trainer": None}) == ExperimentConfig()


@pytest.mark.parametrize("data, message", [
    ({"trainer": {"stepz": 3}},
     f"trainer.stepz is not a valid key (did you mean 'steps'?); valid keys in trainer: {TRAINER_KEYS}"),
    ({"bogus": 1}, "bogus is not a valid key; valid keys at the top level: output_dir, task, model, data, trainer, pretrain, peft, distill"),
    ({"data": {"tokenizer": {"vocab": 10}}},
     "data.tokenizer.vocab is not a valid key; "
     "valid keys in data.tokenizer: type, vocabulary_size, lowercase, path, max_unique_chars"),
])
def test_unknown_key_names_key_and_valid_keys(data, message):
    assert _error(from_dict, ExperimentConfig, data) == message


@pytest.mark.parametrize("data, message", [
    ({"trainer": {"steps": "abc"}}, "trainer.steps must be int, got 'abc' (str)"),
    ({"trainer": {"steps": 2.5}}, "trainer.steps must be int, got 2.5 (float)"),
    ({"trainer": {"steps": True}}, "trainer.steps must be int, got True (bool)"),
    ({"trainer": {"learning_rate": True}}, "trainer.learning_rate must be float, got True (bool)"),
    ({"trainer": {"jit_compile": 1}}, "trainer.jit_compile must be bool or one of ['auto'], got 1 (int)"),
    ({"trainer": {"jit_compile": "true"}}, "trainer.jit_compile must be bool or one of ['auto'], got 'true' (str)"),
    ({"trainer": {"clip_norm": "x"}}, "trainer.clip_norm must be float or null, got 'x' (str)"),
    ({"trainer": {"strategy": "gpu"}},
     "trainer.strategy must be one of ['auto', 'default', 'mirrored', 'multi_worker', 'tpu'], got 'gpu'"),
    ({"task": {"tagging_scheme": "BIO"}}, "task.tagging_scheme must be one of ['IOB2', 'IOBES'], got 'BIO'"),
    ({"task": {"label_names": ["neg", 1]}}, "task.label_names[1] must be str, got 1 (int)"),
    ({"task": {"label_names": "neg"}}, "task.label_names must be list[str] or null, got 'neg' (str)"),
    ({"data": {"train": "a.txt"}}, "data.train must be list[str], got 'a.txt' (str)"),
    ({"output_dir": 2024}, "output_dir must be str, got 2024 (int)"),
    ({"trainer": 5}, "trainer must be a mapping (TrainerConfig), got 5 (int)"),
])
def test_wrong_type_names_key_type_and_value(data, message):
    assert _error(from_dict, ExperimentConfig, data) == message


@pytest.mark.parametrize("data, message", [
    ({"trainer": {"steps": 0}}, "trainer.steps must be > 0, got 0"),
    ({"trainer": {"batch_size": -1}}, "trainer.batch_size must be > 0, got -1"),
    ({"trainer": {"eval_steps": 0}}, "trainer.eval_steps must be > 0, got 0"),
    ({"trainer": {"adam_beta_2": 1.0}}, "trainer.adam_beta_2 must be in [0, 1), got 1.0"),
    ({"trainer": {"weight_decay": -0.1}}, "trainer.weight_decay must be >= 0, got -0.1"),
    ({"trainer": {"steps": 10, "warmup_steps": 20}}, "trainer.warmup_steps (20) must be <= steps (10)"),
    ({"trainer": {"warmup_steps": 10, "warmup_ratio": 0.1}},
     "trainer.warmup_ratio (0.1) and warmup_steps (10) are both set; set one of them"),
    ({"trainer": {"learning_rate": 1e-4, "end_learning_rate": 1e-3}},
     "trainer.end_learning_rate (0.001) must be <= learning_rate (0.0001)"),
    ({"task": {"mask_rate": 0}}, "task.mask_rate must be in (0, 1), got 0.0"),
    ({"task": {"name": "text_classifier", "num_classes": 3, "label_names": ["a", "b"]}},
     "task.label_names has 2 names but num_classes is 3"),
    ({"task": {"num_labels": 3, "label_names": ["O", "B-PER"]}}, "task.label_names has 2 names but num_labels is 3"),
    ({"task": {"label_names": ["O", "O"]}}, "task.label_names must be unique and non-empty, got ['O', 'O']"),
    ({"model": {"hidden_dim": 30, "num_heads": 4}}, "model.hidden_dim (30) must be divisible by num_heads (4)"),
    ({"model": {"num_layers": 0}}, "model.num_layers must be > 0, got 0"),
    ({"data": {"train": ["a.txt", ""]}}, "data.train[1] must name a file or 'tfds:NAME', got ''"),
    ({"data": {"tokenizer": {"vocabulary_size": 0}}}, "data.tokenizer.vocabulary_size must be > 0, got 0"),
    ({"task": {"name": "causal_lm"}}, "model.family must be 'gpt' for task.name='causal_lm', got 'bert'"),
    ({"model": {"max_sequence_length": 64}}, "data.sequence_length (128) must be <= model.max_sequence_length (64)"),
])
def test_value_validation_names_the_key(data, message):
    assert _error(from_dict, ExperimentConfig, data) == message


def test_direct_construction_is_checked_too():
    assert _error(TrainerConfig, 0) == "steps must be > 0, got 0"
    assert _error(lambda: DataConfig(header="yes")) == "header must be bool, got 'yes' (str)"
    assert TrainerConfig(learning_rate=1).learning_rate == 1.0
    assert _error(from_dict, TrainerConfig, {"steps": 0}, "trainer") == "trainer.steps must be > 0, got 0"


def test_generic_from_dict_dicts_required_and_optional_sections():
    @dataclasses.dataclass
    class Inner:
        size: int = 1

    @dataclasses.dataclass
    class Outer:
        name: str
        weights: dict[str, float] = dataclasses.field(default_factory=dict)
        inner: Optional[Inner] = None
        mode: Literal["a", "b"] = "a"

    out = from_dict(Outer, {"name": "x", "weights": {"w": 1}, "inner": {"size": 3}})
    assert out == Outer(name="x", weights={"w": 1.0}, inner=Inner(size=3))
    assert type(out.weights["w"]) is float
    assert _error(from_dict, Outer, {}) == "name is required"
    assert _error(from_dict, Outer, {"name": "x", "weights": {"w": "heavy"}}) == (
        "weights.w must be float, got 'heavy' (str)")
    assert _error(from_dict, Outer, {"name": "x", "inner": {"sise": 3}}) == (
        "inner.sise is not a valid key (did you mean 'size'?); valid keys in inner: size")
    assert _error(from_dict, Outer, {"name": "x", "mode": "c"}) == "mode must be one of ['a', 'b'], got 'c'"
    assert apply_overrides(out, ["weights.v=2", "inner.size=5"]) == Outer(
        name="x", weights={"w": 1.0, "v": 2.0}, inner=Inner(size=5))


@pytest.mark.parametrize("text, path, value", [
    ("trainer.steps=2000", ["trainer", "steps"], 2000),
    ("trainer.learning_rate=3e-5", ["trainer", "learning_rate"], "3e-5"),  # YAML 1.1: a string
    ("trainer.learning_rate=0.5", ["trainer", "learning_rate"], 0.5),
    ("trainer.jit_compile=false", ["trainer", "jit_compile"], False),
    ("trainer.eval_steps=null", ["trainer", "eval_steps"], None),
    ("trainer.eval_steps=", ["trainer", "eval_steps"], None),
    ("data.train=[a.txt, 'b c.txt']", ["data", "train"], ["a.txt", "b c.txt"]),
    ("output_dir=runs/a=b", ["output_dir"], "runs/a=b"),  # only the first '=' splits
])
def test_parse_override(text, path, value):
    assert parse_override(text) == (path, value)


def test_apply_overrides_types_and_values():
    base = ExperimentConfig()
    cfg = apply_overrides(base, [
        "trainer.steps=2000", "trainer.learning_rate=3e-5", "trainer.jit_compile=false", "trainer.clip_norm=null",
        "data.train=[a.txt, b.txt]", "model.dropout=0", "output_dir=2024", "data.text_column=yes",
        "data.tokenizer={type: sentencepiece, vocabulary_size: 500}", "task.num_classes=3",
    ])
    assert cfg.trainer.steps == 2000
    assert cfg.trainer.learning_rate == 3e-5 and type(cfg.trainer.learning_rate) is float
    assert cfg.trainer.jit_compile is False and cfg.trainer.clip_norm is None
    assert cfg.data.train == ["a.txt", "b.txt"]
    assert cfg.model.dropout == 0.0 and type(cfg.model.dropout) is float
    # str fields keep the text even when YAML would read a number or a bool
    assert cfg.output_dir == "2024" and cfg.data.text_column == "yes"
    # a whole section merges into the current one
    assert cfg.data.tokenizer == TokenizerConfig(type="sentencepiece", vocabulary_size=500, lowercase=True)
    assert cfg.task.num_classes == 3
    assert base == ExperimentConfig()  # the input is not modified
    # later overrides win
    assert apply_overrides(base, ["trainer.steps=5", "trainer.steps=7"]).trainer.steps == 7


@pytest.mark.parametrize("override, message", [
    ("trainer.stepz=5",
     f"--set trainer.stepz=5: trainer.stepz is not a valid key (did you mean 'steps'?); "
     f"valid keys in trainer: {TRAINER_KEYS}"),
    ("trainr.steps=5",
     "--set trainr.steps=5: trainr is not a valid key (did you mean 'trainer'?); "
     "valid keys at the top level: output_dir, task, model, data, trainer, pretrain, peft, distill"),
    ("trainer.steps.max=5", "--set trainer.steps.max=5: trainer.steps.max is not a valid key: trainer.steps is int"),
    ("trainer.jit_compile=1",
     "--set trainer.jit_compile=1: trainer.jit_compile must be bool or one of ['auto'], got 1 (int)"),
    ("trainer.steps=0", "--set trainer.steps=0: trainer.steps must be > 0, got 0"),
    ("trainer.steps=lots", "--set trainer.steps=lots: trainer.steps must be int, got 'lots' (str)"),
    ("trainer.strategy=gpu",
     "--set trainer.strategy=gpu: trainer.strategy must be one of "
     "['auto', 'default', 'mirrored', 'multi_worker', 'tpu'], got 'gpu'"),
    ("trainer.steps", "override 'trainer.steps' must look like KEY=VALUE, e.g. trainer.steps=2000"),
    ("=5", "override '=5' must look like KEY=VALUE, e.g. trainer.steps=2000"),
    ("trainer..steps=5", "override 'trainer..steps=5' must look like KEY=VALUE, e.g. trainer.steps=2000"),
])
def test_override_errors(override, message):
    assert _error(apply_overrides, ExperimentConfig(), [override]) == message


def test_yaml_round_trip_is_exact(tmp_path):
    cfg = apply_overrides(ExperimentConfig(), [
        "output_dir=2024", "task.name=token_classifier", "task.label_names=[O, B-PER, I-PER, 'null', 'yes']",
        "task.tagging_scheme=IOBES", "data.format=conll", f"data.train=[{tmp_path}/train.conll]",
        "data.text_column=true", "trainer.learning_rate=3e-5", "trainer.adam_epsilon=1e-8", "trainer.warmup_ratio=0.1",
        "trainer.peak_flops=9.89e14", "model.dropout=0.1", "model.hidden_dim=64", "model.num_heads=4",
        f"data.tokenizer.path={tmp_path}/vocab/ünïcode.txt",
        "pretrain={trainer: {steps: 30}, data: {sequence_length: 64}}",
    ])
    written = save_config(cfg, str(tmp_path / "run"))
    assert written == str(tmp_path / "run" / "config.yaml")
    text = open(written).read()
    assert text.startswith("# Resolved ExperimentConfig (tfm.training.config.save_config)\n")
    assert list(yaml.safe_load(text)) == ["output_dir", "task", "model", "data", "trainer", "pretrain", "peft", "distill"]
    loaded = load_config(written)
    assert loaded == cfg
    assert to_dict(loaded) == to_dict(cfg)
    assert loaded.output_dir == "2024" and loaded.task.label_names[3:] == ["null", "yes"]
    assert loaded.data.text_column == "true"
    assert loaded.trainer.adam_epsilon == 1e-8 and loaded.trainer.peak_flops == 9.89e14
    assert load_config(str(tmp_path / "run")) == cfg  # a run dir reads its config.yaml
    # an explicit .yaml path is written as given; no temporary files are left behind
    assert save_config(ExperimentConfig(), str(tmp_path / "x.yaml")) == str(tmp_path / "x.yaml")
    assert sorted(os.listdir(tmp_path)) == ["run", "x.yaml"] and os.listdir(tmp_path / "run") == ["config.yaml"]


def test_paths_are_relative_to_the_config_file(tmp_path, monkeypatch):
    """Data paths in a YAML file resolve against its directory (any working directory); output_dir, --set
    values, tfds and hf:// names are left alone; a saved config stores paths relative to itself."""
    (tmp_path / "configs").mkdir()
    path = _write(tmp_path / "configs", "output_dir: runs/x\ntask: {name: text_classifier, init_checkpoint: hf://a/b}\n"
                  "data: {train: [../data/train.tsv, 'tfds:glue/sst2'], eval: [dev.tsv], tokenizer: {path: /abs/vocab}}\n"
                  "pretrain: {data: {train: [more.txt]}}\n", "c.yaml")
    monkeypatch.chdir("/")
    cfg = load_config(path, ["data.eval=[other.tsv]"])
    assert cfg.data.train == [str(tmp_path / "data" / "train.tsv"), "tfds:glue/sst2"]
    assert cfg.data.eval == ["other.tsv"] and cfg.output_dir == "runs/x"  # relative to where tfm runs
    assert cfg.task.init_checkpoint == "hf://a/b" and cfg.data.tokenizer.path == "/abs/vocab"
    assert cfg.pretrain["data"]["train"] == [str(tmp_path / "configs" / "more.txt")]
    run = tmp_path / "runs" / "x"
    saved = yaml.safe_load(open(save_config(load_config(path), str(run))).read())
    assert saved["data"]["train"] == ["../../data/train.tsv", "tfds:glue/sst2"]
    assert saved["data"]["eval"] == ["../../configs/dev.tsv"]
    monkeypatch.chdir(tmp_path / "configs")
    assert load_config(str(run)) == load_config(path)  # the run dir's copy reads the same from anywhere


def test_load_config_with_overrides(tmp_path):
    path = _write(tmp_path, "output_dir: runs/sst2\ntask:\n  name: text_classifier\ntrainer:\n  steps: 100\n"
                            "  learning_rate: 2e-5\n")
    cfg = load_config(path, ["trainer.steps=2000"])
    assert (cfg.output_dir, cfg.task.name, cfg.trainer.steps, cfg.trainer.learning_rate) == (
        "runs/sst2", "text_classifier", 2000, 2e-5)
    assert load_config(_write(tmp_path, "", "empty.yaml")) == ExperimentConfig()
    assert _error(load_config, path, ["trainer.batch=4"]).startswith(
        "--set trainer.batch=4: trainer.batch is not a valid key (did you mean 'batch_size'?)")


def test_load_config_errors_name_the_file(tmp_path):
    path = _write(tmp_path, "trainer:\n  batch_sise: 3\n")
    assert _error(load_config, path) == (
        f"{path}: trainer.batch_sise is not a valid key (did you mean 'batch_size'?); "
        f"valid keys in trainer: {TRAINER_KEYS}")
    path = _write(tmp_path, "trainer:\n  steps: 0\n", "zero.yaml")
    assert _error(load_config, path) == f"{path}: trainer.steps must be > 0, got 0"
    path = _write(tmp_path, "- 1\n- 2\n", "list.yaml")
    assert _error(load_config, path) == f"{path}: must be a mapping (ExperimentConfig), got [1, 2] (list)"
    path = _write(tmp_path, "trainer:\n  steps: [1\n", "broken.yaml")
    assert re.match(rf"{re.escape(path)}: invalid YAML: while parsing a flow sequence", _error(load_config, path))
    missing = str(tmp_path / "missing.yaml")
    assert _error(load_config, missing) == f"{missing}: cannot read config: No such file or directory"
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, "task:\n  mask_rate: 2\n", "rate.yaml"))
    assert (info.value.key, info.value.problem) == ("task.mask_rate", "must be in (0, 1), got 2.0")
    assert isinstance(info.value, ValueError)


def test_helpers_for_the_library():
    assert ModelConfig(preset="bert_tiny", num_layers=2, dropout=0.0).backbone_kwargs() == {
        "num_layers": 2, "dropout": 0.0}
    assert TrainerConfig(steps=1000, warmup_ratio=0.1).resolved_warmup_steps() == 100
    assert TrainerConfig(steps=1000, warmup_steps=30).resolved_warmup_steps() == 30
    assert TrainerConfig().resolved_warmup_steps() == 0


def test_docstring_examples():
    import doctest

    from tfm.training import config, config_core

    result = doctest.testmod(config)
    core = doctest.testmod(config_core, extraglobs=vars(config))  # its examples use the schema classes
    assert result.attempted + core.attempted >= 8 and result.failed == core.failed == 0


def test_old_key_names_still_load_with_a_deprecation_naming_the_new_key(tmp_path):
    """Run dirs written before the renames keep working: vocab_size, version_2, tokenizer type gpt2_bpe."""
    path = _write(tmp_path, "task:\n  name: span_qa\n  version_2: true\n"
                            "data:\n  format: squad\n  tokenizer: {type: gpt2_bpe, vocab_size: 300}\n")
    with pytest.warns(FutureWarning) as caught:
        cfg = load_config(path)
    assert (cfg.task.allow_no_answer, cfg.data.tokenizer.vocabulary_size, cfg.data.tokenizer.type) == (True, 300, "bpe")
    assert sorted(str(w.message) for w in caught) == [
        "config key data.tokenizer.vocab_size is deprecated: it is now data.tokenizer.vocabulary_size",
        "config key task.version_2 is deprecated: it is now task.allow_no_answer",
        "data.tokenizer.type=gpt2_bpe is deprecated: it is now bpe"]
    with pytest.warns(FutureWarning, match="data.tokenizer.vocab_size is deprecated"):
        assert apply_overrides(cfg, ["data.tokenizer.vocab_size=500"]).data.tokenizer.vocabulary_size == 500
    both = _write(tmp_path, "data:\n  tokenizer: {vocab_size: 300, vocabulary_size: 400}\n", "both.yaml")
    with pytest.warns(FutureWarning):
        assert _error(load_config, both) == (f"{both}: data.tokenizer.vocab_size is the old name of "
                                             f"data.tokenizer.vocabulary_size; give only the new one")
