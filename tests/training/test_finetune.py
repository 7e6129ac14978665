"""`tfm train` for the fine-tuning tasks: pretrain stage, init_checkpoint, evaluation report, errors."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import TEST_SEED
from tests.data_paths import shared_data
from tfm import metrics as tfm_metrics
from tfm.data import LabelVocabulary
from tfm.recipes import get_recipe
from tfm.training.config import ConfigError, from_dict, ExperimentConfig, TaskConfig
from tfm.training.evaluation import evaluate_run, task_report
from tfm.training.experiment import build_task, load_run, prepare_tokenizer, run_experiment

TOKENS = get_recipe("token_classifier")
TINY_MODEL = {"family": "bert", "preset": "bert_tiny", "num_layers": 1, "hidden_dim": 32, "num_heads": 2,
              "intermediate_dim": 64, "dropout": 0.0}


def _config(tmp_path, task, train, eval_, data=None, trainer=None, pretrain=None, model=None):
    cfg = {
        "output_dir": str(tmp_path / "run"),
        "task": task if isinstance(task, dict) else {"name": task},
        "model": {**TINY_MODEL, **(model or {})},
        "data": {"train": [str(p) for p in train], "eval": [str(p) for p in eval_], "sequence_length": 32,
                 "tokenizer": {"vocabulary_size": 1000}, **(data or {})},
        "trainer": {"steps": 40, "batch_size": 16, "learning_rate": 1e-3, "log_every": 20, "eval_every": 20,
                    "checkpoint_every": 20, "peak_flops": 1e11, "seed": TEST_SEED, **(trainer or {})},
    }
    if pretrain is not None:
        cfg["pretrain"] = pretrain
    return from_dict(ExperimentConfig, cfg)


def _sst2_slice(tmp_path, n_train=3000, n_dev=300):
    train, dev = shared_data("sst2", "train.tsv"), shared_data("sst2", "dev.tsv")
    paths = []
    for source, n, name in ((train, n_train, "train.tsv"), (dev, n_dev, "dev.tsv")):
        with open(source, encoding="utf-8") as f:
            lines = [next(f) for _ in range(n + 1)]
        (tmp_path / name).write_text("".join(lines), encoding="utf-8")
        paths.append(tmp_path / name)
    return paths


def _zh_ner_slice(tmp_path, n_train=1500, n_dev=300):
    """The first sentences of the Chinese NER set's train and dev files, written to tmp_path."""
    paths = []
    for name, n in (("train.txt", n_train), ("dev.txt", n_dev)):
        sentences = open(shared_data("zh_ner", name), encoding="utf-8").read().split("\n\n")[:n]
        (tmp_path / name).write_text("\n\n".join(sentences) + "\n", encoding="utf-8")
        paths.append(tmp_path / name)
    return paths


@pytest.mark.slow
def test_text_classifier_pretrain_then_finetune_learns_and_evaluate_reproduces(tmp_path, capsys):
    train, dev = _sst2_slice(tmp_path)
    cfg = _config(tmp_path, "text_classifier", [train], [dev], data={"format": "tsv"},
                  trainer={"steps": 300, "eval_every": 300, "checkpoint_every": 300, "batch_size": 32,
                           "learning_rate": 3e-3, "warmup_steps": 30},
                  pretrain={"trainer": {"steps": 20, "eval_every": 20, "checkpoint_every": 20, "warmup_steps": 0}})
    metrics, trainer = run_experiment(cfg, verbose=False)
    with capsys.disabled():
        print(f"SST-2 slice, tfm train (pretrain + fine-tune): {metrics}")
    run_dir = cfg.output_dir
    # The pretraining stage ran into run/pretrain, and the classifier started from its backbone and tokenizer.
    pre = load_run(os.path.join(run_dir, "pretrain"))
    assert pre.config.task.name == "masked_lm" and pre.checkpoint.endswith("ckpt-20")
    assert json.load(open(os.path.join(run_dir, "labels.json")))["label_names"] == ["0", "1"]
    assert open(os.path.join(run_dir, "tokenizer", "vocab.txt")).read() == open(
        os.path.join(run_dir, "pretrain", "tokenizer", "vocab.txt")).read()
    # Learns: well above chance (dev is ~51% positive) on held-aside dev sentences. Measured 0.693, and
    # 0.667 / 0.653 with TFM_TEST_SEED=1 / 2 (2-core AMD EPYC): the floor leaves 0.033 below the lowest.
    assert metrics["accuracy"] > 0.62, metrics
    # `tfm evaluate` reloads the checkpoint and reproduces the final in-training scores exactly.
    from tfm.cli import main

    assert main(["evaluate", run_dir, "--split", "dev"]) == 0
    printed = capsys.readouterr().out
    report = json.load(open(os.path.join(run_dir, "eval_report_dev.json")))
    assert report["num_examples"] == 300 and report["checkpoint"].endswith("ckpt-300")
    for key in ("accuracy", "macro_f1", "matthews_corrcoef", "f1"):
        assert report[key] == pytest.approx(metrics[key], abs=1e-6), key
    assert f"{report['accuracy']:.4f}" in printed and "weighted avg" in printed
    # ... and the report is what tfm.metrics gives on the model's own predictions.
    run = load_run(run_dir)
    data = get_recipe(cfg.task.name).read_split(cfg, cfg.data.eval, "eval")
    x_y = list(get_recipe(cfg.task.name).labelled_dataset(cfg, run.tokenizer, data, 64, False))
    y_true = np.concatenate([y.numpy() for _, y in x_y])
    y_pred = np.concatenate([np.argmax(run.task(x).numpy(), -1) for x, _ in x_y])
    assert report["accuracy"] == pytest.approx(tfm_metrics.accuracy(y_true, y_pred))
    assert report["matthews_corrcoef"] == pytest.approx(tfm_metrics.matthews_corrcoef(y_true, y_pred))
    # Running the same command again resumes both stages: nothing is retrained, the final scores come back.
    again, trainer2 = run_experiment(cfg, verbose=False)
    assert trainer2.restored_from.endswith("ckpt-300") and again.keys() == metrics.keys()
    for key in ("loss", "accuracy", "macro_f1", "matthews_corrcoef"):
        assert again[key] == pytest.approx(metrics[key], abs=1e-6), key


def test_init_checkpoint_takes_the_pretrained_backbone_and_tokenizer(tmp_path):
    train, dev = _sst2_slice(tmp_path, 200, 20)
    pre_cfg = _config(tmp_path, "masked_lm", [train], [dev], data={"format": "tsv"},
                      trainer={"steps": 3, "eval_every": 3, "checkpoint_every": 3})
    run_experiment(pre_cfg, verbose=False)
    cfg = _config(tmp_path / "ft", {"name": "text_classifier", "init_checkpoint": pre_cfg.output_dir}, [train], [dev],
                  data={"format": "tsv", "tokenizer": {"vocabulary_size": 50}})  # ignored: the checkpoint's tokenizer wins
    tokenizer = prepare_tokenizer(cfg)
    assert tokenizer.vocabulary == load_run(pre_cfg.output_dir).tokenizer.vocabulary
    model = build_task(cfg, tokenizer, ["0", "1"])
    pretrained = load_run(pre_cfg.output_dir).task.backbone
    assert len(model.backbone.weights) == len(pretrained.weights) == 19
    for ours, theirs in zip(model.backbone.weights, pretrained.weights):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    # A checkpoint path inside the run dir works too; a missing path names the key.
    ckpt = os.path.join(pre_cfg.output_dir, "checkpoints", "ckpt-3")
    cfg2 = _config(tmp_path / "ft2", {"name": "text_classifier", "init_checkpoint": ckpt}, [train], [dev],
                   data={"format": "tsv"}, model={"dropout": 0.3})  # this stage's dropout, pretrained weights
    backbone = build_task(cfg2, tokenizer, ["0", "1"]).backbone
    assert backbone.count_params() == pretrained.count_params() and (pretrained.dropout, backbone.dropout) == (0, 0.3)
    for ours, theirs in zip(backbone.weights, pretrained.weights):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    cfg3 = _config(tmp_path / "ft3", {"name": "text_classifier", "init_checkpoint": str(tmp_path / "nope")},
                   [train], [dev], data={"format": "tsv"})
    with pytest.raises(FileNotFoundError, match="task.init_checkpoint=.*nope"):
        prepare_tokenizer(cfg3)


def test_init_checkpoint_from_a_run_of_the_same_task_carries_its_head_over(tmp_path, capsys):
    # configs/zh_ner_pretrained.yaml starts from a tagger trained on silver labels: its BiLSTM, dense layer and CRF
    # come along when the labels and the head's shapes are the same, else only the backbone does.
    train, dev = _zh_ner_slice(tmp_path, 60, 10)
    task = {"name": "token_classifier", "lstm_units": 8, "crf": True}
    data = {"format": "conll", "tokenizer": {"vocabulary_size": 1000}}
    first = _config(tmp_path / "silver", task, [train], [dev], data=data,
                    trainer={"steps": 3, "eval_every": 3, "checkpoint_every": 3, "jit_compile": False})
    run_experiment(first, verbose=False)
    source = load_run(first.output_dir)
    assert source.label_names == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    cfg = _config(tmp_path / "gold", {**task, "init_checkpoint": first.output_dir}, [train], [dev], data=data,
                  model={"dropout": 0.2})
    tokenizer = prepare_tokenizer(cfg)
    capsys.readouterr()
    model = build_task(cfg, tokenizer, source.label_names)
    head = source.task.count_params() - source.task.backbone.count_params()
    assert f"backbone and token_classifier head ({head:,} weights) carried over" in capsys.readouterr().out
    assert head > 2 * 4 * 8 * (32 + 8) and model.backbone.dropout == 0.2  # the BiLSTM alone has 2,624
    assert len(model.weights) == len(source.task.weights) == 19 + 6 + 2 + 3  # backbone, BiLSTM, dense, CRF
    for ours, theirs in zip(model.weights, source.task.weights):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    for ours, theirs in zip(model.crf_scores(), source.task.crf_scores()):  # the learned transitions included
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    # Other labels, or another head layout: the backbone only, and a line says why.
    other = build_task(cfg, tokenizer, source.label_names[:5])
    assert "backbone only (its labels ['O', 'B-LOC'" in capsys.readouterr().out
    assert np.asarray(other.crf_scores()[0]).shape == (5, 5)
    wider = _config(tmp_path / "wider", {**task, "lstm_units": 16, "init_checkpoint": first.output_dir}, [train],
                    [dev], data=data)
    model = build_task(wider, tokenizer, source.label_names)
    assert "backbone only (its head has other shapes)" in capsys.readouterr().out
    for ours, theirs in zip(model.backbone.weights, source.task.backbone.weights):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    assert not np.array_equal(np.asarray(model.crf_scores()[0]), np.asarray(source.task.crf_scores()[0]))


def test_init_checkpoint_from_a_keras_hub_preset_dir(tmp_path):
    import keras_hub

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "movie", "was", "good", "bad", "##s"]
    backbone = keras_hub.models.BertBackbone(vocabulary_size=len(vocab), num_layers=1, num_heads=2, hidden_dim=16,
                                             intermediate_dim=32, max_sequence_length=32)
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=vocab, lowercase=True)
    preset = str(tmp_path / "preset")
    backbone.save_to_preset(preset)
    tokenizer.save_to_preset(preset)
    train, dev = tmp_path / "t.tsv", tmp_path / "d.tsv"
    train.write_text("label\tsentence\n1\tthe movie was good\n0\tthe movie was bad\n")
    dev.write_text("label\tsentence\n1\tgood movies\n")
    cfg = _config(tmp_path, {"name": "text_classifier", "init_checkpoint": preset}, [train], [dev],
                  data={"format": "tsv", "sequence_length": 8}, trainer={"steps": 2, "batch_size": 2})
    tok = prepare_tokenizer(cfg)
    assert tok.vocabulary == vocab
    assert tok.tokenize(tf.constant(["The movies"])).to_list() == [[5, 6, 10]]
    model = build_task(cfg, tok, ["0", "1"])
    ids = np.array([[2, 5, 6, 7, 8, 3, 0, 0]], "int32")
    x = {"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": (ids > 0).astype("int32")}
    ours = model.backbone(x)["sequence_output"].numpy()
    theirs = backbone(x)["sequence_output"].numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


QA = [
    ("Alice founded Acme in Paris in 1990.", [("Who founded Acme?", "Alice"), ("Where was Acme founded?", "Paris"),
                                               ("When was Acme founded?", "1990")]),
    ("Bob plays the violin every Sunday in Berlin.", [("What does Bob play?", "the violin"),
                                                      ("Where does Bob play?", "Berlin")]),
]


def _squad_file(path):
    paragraphs = [{"context": c, "qas": [{"id": f"q{i}-{j}", "question": q,
                                          "answers": [{"text": a, "answer_start": c.index(a)}]}
                                         for j, (q, a) in enumerate(qas)]} for i, (c, qas) in enumerate(QA)]
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}))
    return path


@pytest.mark.slow
def test_span_qa_through_tfm_train_answers_its_questions(tmp_path):
    squad = _squad_file(tmp_path / "qa.json")
    cfg = _config(tmp_path, {"name": "span_qa", "doc_stride": 8, "max_query_length": 8}, [squad], [squad],
                  data={"format": "squad", "sequence_length": 24, "tokenizer": {"vocabulary_size": 200}},
                  model={"num_layers": 2},
                  trainer={"steps": 250, "batch_size": 5, "learning_rate": 3e-3, "eval_every": 250,
                           "checkpoint_every": 250, "weight_decay": 0.0})
    metrics, _ = run_experiment(cfg, verbose=False)
    assert metrics["exact_match"] == 100.0 and metrics["f1"] == 100.0, metrics
    report = evaluate_run(cfg.output_dir)
    assert report["predictions"] == {f"q{i}-{j}": a for i, (_, qas) in enumerate(QA) for j, (_, a) in enumerate(qas)}


def test_token_classifier_report_scores_known_predictions(tmp_path):
    # A stand-in model tags each word by a fixed table, so the report's numbers are known by hand: it finds EU
    # (ORG) and Peter Blackburn (PER) and misses German (MISC).
    train = tmp_path / "train.txt"
    train.write_text("EU B-ORG\nrejects O\nGerman B-MISC\ncall O\n\nPeter B-PER\nBlackburn I-PER\n\n")
    cfg = _config(tmp_path, "token_classifier", [train], [train], data={"format": "conll", "sequence_length": 32})
    tokenizer = prepare_tokenizer(cfg)
    data = get_recipe(cfg.task.name).read_split(cfg, cfg.data.train, "train")
    names = list(data.result.labels.names)
    assert names == ["O", "B-MISC", "B-ORG", "B-PER", "I-PER"]
    predicted = {"EU": "B-ORG", "Peter": "B-PER", "Blackburn": "I-PER"}  # every other word: O
    table = np.zeros(tokenizer.vocabulary_size, "int32")
    for word, tag in predicted.items():
        table[tokenizer.tokenize(tf.constant([word])).flat_values.numpy()] = names.index(tag)
    model = lambda x, training=False: 10.0 * tf.one_hot(tf.gather(table, x["token_ids"]), len(names))  # noqa
    scalars, report = task_report(model, cfg, tokenizer, data, names)
    assert scalars == pytest.approx({"entity_precision": 1.0, "entity_recall": 2 / 3, "entity_f1": 0.8,
                                     "token_accuracy": 5 / 6})
    entities = report["entities"]
    assert {k: (v["precision"], v["recall"], v["support"]) for k, v in entities.items() if "avg" not in k} == {
        "MISC": (0.0, 0.0, 1), "ORG": (1.0, 1.0, 1), "PER": (1.0, 1.0, 1)}
    rows = {line.split()[0]: line.split()[1:] for line in report["text"].splitlines()[2:] if line.strip()}
    assert report["num_examples"] == 2 and rows["MISC"] == ["0.0000", "0.0000", "0.0000", "1"]
    assert rows["micro"] == ["avg", "1.0000", "0.6667", "0.8000", "3"]


def test_bad_task_data_is_named(tmp_path):
    train = tmp_path / "train.txt"
    train.write_text("EU B-ORG\n\n")
    with pytest.raises(ValueError, match="data.format='text' cannot feed task.name='token_classifier'"):
        TOKENS.read_split(_config(tmp_path, "token_classifier", [train], []), [str(train)], "train")
    with pytest.raises(ValueError, match="data.eval is empty"):
        TOKENS.read_split(_config(tmp_path, "token_classifier", [train], [], data={"format": "conll"}), [], "eval")
    bad = tmp_path / "dev.txt"
    bad.write_text("EU B-XYZ\n\n")
    cfg = _config(tmp_path, "token_classifier", [train], [bad], data={"format": "conll"})
    with pytest.raises(ValueError, match=f"{bad}:1"):
        run_experiment(cfg, verbose=False)  # a tag outside the training label set


def test_pretrain_section_is_checked_and_derived():
    with pytest.raises(ConfigError, match="pretrain.trainer.stepz is not a valid key"):
        ExperimentConfig(task=TaskConfig(name="text_classifier"), pretrain={"trainer": {"stepz": 3}})
    with pytest.raises(ConfigError, match="pretrain.model.family must be 'bert'"):
        ExperimentConfig(task=TaskConfig(name="text_classifier"), pretrain={"model": {"family": "gpt"}})


@pytest.mark.slow
def test_multiple_choice_through_tfm_train_learns_a_toy(tmp_path):
    # Which choice is an animal? One animal among two things, at a random position. A model that reads the
    # choices against the right labels reaches 1.0 (measured loss 0.006-0.008 after 100 steps on 3 seeds); one
    # fed misaligned labels or choices stays at chance, 1/3. (An earlier toy that had to match the context's
    # animal reached 0.52-0.80 in 400 steps depending on the CPU and seed: too narrow a gap to test on.)
    rng = np.random.default_rng(0)
    animals = ["cat", "dog", "fox", "owl", "bee", "elk", "yak", "ant", "bat", "cow"]
    things = ["cup", "pen", "rock", "box", "hat", "key", "map", "car", "bell", "lamp"]

    def records(n):
        out = []
        for _ in range(n):
            choices = list(rng.choice(things, 2, replace=False))
            label = int(rng.integers(3))
            choices.insert(label, rng.choice(animals))
            out.append(json.dumps({"context": "which of these is an animal", "choices": [f"a {c}" for c in choices],
                                   "label": label}))
        return "\n".join(out) + "\n"

    (tmp_path / "train.jsonl").write_text(records(300))
    (tmp_path / "dev.jsonl").write_text(records(60))
    cfg = _config(tmp_path, "multiple_choice", [tmp_path / "train.jsonl"], [tmp_path / "dev.jsonl"],
                  data={"format": "jsonl", "sequence_length": 12, "tokenizer": {"vocabulary_size": 100}},
                  trainer={"steps": 120, "eval_every": 120, "checkpoint_every": 120, "learning_rate": 3e-3,
                           "weight_decay": 0.0})
    metrics, trainer = run_experiment(cfg, verbose=False)
    print(f"multiple-choice tfm train toy: {metrics}")
    assert json.load(open(os.path.join(cfg.output_dir, "labels.json")))["num_choices"] == 3
    assert trainer.model.num_choices == 3
    assert metrics["accuracy"] >= 0.95 and metrics["loss"] < 0.1, metrics  # 57 of the 60 held-out questions
    assert evaluate_run(cfg.output_dir)["accuracy"] == pytest.approx(metrics["accuracy"])


@pytest.mark.slow
def test_zh_ner_slice_with_bilstm_crf_head_learns_the_scheme_and_decodes_well_formed_chunks(tmp_path):
    # The configs/zh_ner_pretrained.yaml recipe on a slice, through `tfm train`: a BiLSTM under a CRF, TF kernels
    # (no XLA), the sequence loss over word starts; then `tfm evaluate`, which decodes with the learned transitions.
    # (The CRF's forward algorithm under XLA is tested against brute force in tests/layers/test_crf.py.)
    paths = _zh_ner_slice(tmp_path)
    cfg = _config(tmp_path, {"name": "token_classifier", "lstm_units": 32, "crf": True,
                             "crf_learning_rate_multiplier": 100.0},
                  paths[:1], paths[1:], data={"format": "conll", "sequence_length": 64, "length_buckets": [32],
                                              "tokenizer": {"vocabulary_size": 3000}},
                  trainer={"steps": 300, "batch_size": 32, "learning_rate": 3e-3, "warmup_steps": 30,
                           "eval_every": 300, "checkpoint_every": 300, "jit_compile": False},
                  model={"hidden_dim": 64, "intermediate_dim": 128})
    metrics, _ = run_experiment(cfg, verbose=False)
    print(f"zh NER slice, BiLSTM + CRF: entity F1 {metrics['entity_f1']:.4f}")
    run = load_run(cfg.output_dir)
    assert run.task.lstm_units == 32 and run.task.get_layer("lstm").forward_layer.units == 32
    names = run.label_names
    transitions, start, _ = run.task.crf_scores()
    o = names.index("O")
    for kind in ("PER", "ORG", "LOC"):
        b, i = names.index(f"B-{kind}"), names.index(f"I-{kind}")
        # Gold data never has O -> I-X or a sentence opening with I-X: those scores only go down (the model's
        # expected count minus a gold count of 0), and B-X -> I-X, which the data is full of, stays above them.
        assert transitions[o, i] < -1.0 and start[i] < -1.0, (kind, transitions[o, i], start[i])
        assert transitions[b, i] > transitions[o, i] + 2.0, (kind, transitions[b, i], transitions[o, i])
    assert evaluate_run(cfg.output_dir)["entity_f1"] == pytest.approx(metrics["entity_f1"])
    # Measured (2-core AMD EPYC, one thread as in the suite), TFM_TEST_SEED 1234 / 1 / 2: entity F1 0.502 / 0.523 /
    # 0.509 (all-O scores 0); the floor leaves 0.10 below the lowest for other kernels and rounding.
    assert metrics["entity_f1"] > 0.40, metrics
    # The decoder never emits a chunk without its B- tag, which per-token argmax does.
    data = get_recipe(cfg.task.name).read_split(cfg, cfg.data.eval, "dev", LabelVocabulary(names))
    batches = list(get_recipe(cfg.task.name).labelled_dataset(cfg, run.tokenizer, data, 64, False))
    logits = np.concatenate([run.task(x).numpy() for x, _, _ in batches])
    labels = np.concatenate([y.numpy() for _, y, _ in batches])
    from tfm.tasks import decode_tags

    _, pred = decode_tags(logits, labels, names, crf=run.task.crf_scores())
    broken = [(a, b) for row in pred for a, b in zip(["O"] + row, row) if b.startswith("I-") and a[2:] != b[2:]]
    assert not broken
