"""The quickstart corpus: read from a vaderSentiment-shaped sdist built here (the real one comes from PyPI);
`data.prepare` fetching it before training, a local sdist, and the one-line error without PyPI."""

import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import numpy as np

import pytest

from tfm import _pip as tfm_pip
from tfm.errors import InputError
from tfm.quickstart import (
    CORPUS_FILES,
    EVAL_SENTENCES,
    INNER_ARCHIVE,
    REPO,
    SDIST_ENV,
    VADER_SDIST,
    fetch_corpus,
    sentences_from_sdist,
    write_corpus,
)


def _tar_bytes(files):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _sdist(tmp_path, movie_lines=30, bad_line=None):
    inner = {}
    for name in CORPUS_FILES:
        n = movie_lines if name == CORPUS_FILES[0] else 3
        lines = [f"{i}\t{(-1) ** i * 1.5}\t{name[:5]} sentence {i} ." for i in range(n)]
        if bad_line and name == CORPUS_FILES[1]:
            lines.insert(1, bad_line)
        inner[f"hutto_ICWSM_2014/{name}"] = "\r\n".join(lines).encode("utf-8")
    path = tmp_path / "vaderSentiment-3.3.2.tar.gz"
    path.write_bytes(_tar_bytes({f"vaderSentiment-3.3.2/{INNER_ARCHIVE}": _tar_bytes(inner)}))
    return path


def test_sentences_and_held_out_split(tmp_path):
    corpus = sentences_from_sdist(_sdist(tmp_path))
    assert [len(corpus[n]) for n in CORPUS_FILES] == [30, 3, 3, 3]
    assert corpus[CORPUS_FILES[0]][2] == "movie sentence 2 ."  # CRLF and the id/rating columns are gone
    files = write_corpus(corpus, tmp_path / "out")
    # Every 10th movie sentence is held out (up to EVAL_SENTENCES): 0, 10, 20.
    assert files["eval"][1] == 3 and files["train"][1] == 39 - 3 and EVAL_SENTENCES == 1000
    eval_lines = (tmp_path / "out" / "eval.txt").read_text().splitlines()
    assert eval_lines == ["movie sentence 0 .", "movie sentence 10 .", "movie sentence 20 ."]
    assert not set(eval_lines) & set((tmp_path / "out" / "train.txt").read_text().splitlines())


def test_rated_sentences_keep_ids_and_ratings(tmp_path):
    from tfm.data.quickstart_corpus import rated_sentences_from_sdist

    corpus = rated_sentences_from_sdist(_sdist(tmp_path))
    assert corpus[CORPUS_FILES[1]] == [("0", 1.5, "tweet sentence 0 ."), ("1", -1.5, "tweet sentence 1 ."),
                                       ("2", 1.5, "tweet sentence 2 .")]


@pytest.mark.parametrize("bad_line", ["just text", "7\tvery good\tsome text"])
def test_malformed_line_names_file_and_line(tmp_path, bad_line):
    with pytest.raises(ValueError, match=r"tweets_GroundTruth.txt:2: expected 'id<TAB>rating<TAB>text'"):
        sentences_from_sdist(_sdist(tmp_path, bad_line=bad_line))


def test_unigram_baseline_by_hand(tmp_path):
    from tfm.data import WordPieceTokenizer
    from tfm.quickstart import unigram_baseline

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"]
    tokenizer = WordPieceTokenizer(vocab)
    (tmp_path / "train.txt").write_text("a a a b\n\na\n")
    (tmp_path / "eval.txt").write_text("a b\n")
    # Counts + 1: a 5, b 2, the 5 specials 1 each -> total 12; eval tokens a, b.
    result = unigram_baseline(tokenizer, tmp_path / "train.txt", tmp_path / "eval.txt")
    assert result["loss"] == pytest.approx(-(np.log(5 / 12) + np.log(2 / 12)) / 2)
    assert result["accuracy"] == 0.5


class _Stop(Exception):
    pass


def _fake_pip(sdist, calls):
    """A `subprocess.run` standing in for `pip download`: copies `sdist` into the `-d` directory."""

    def run(command, **kwargs):
        calls.append(command)
        assert command[1:4] == ["-m", "pip", "download"] and VADER_SDIST in command
        shutil.copy(sdist, Path(command[command.index("-d") + 1]) / sdist.name)
        return subprocess.CompletedProcess(command, 0, "", "")

    return run


@pytest.mark.parametrize("config", ["gpt_tiny_clm.yaml", "bert_tiny_mlm.yaml"])
def test_train_config_prepares_the_quickstart_corpus_first(tmp_path, monkeypatch, config):
    from tfm.training import experiment
    from tfm.training.config import load_config

    sdist = _sdist(tmp_path)
    calls = []
    monkeypatch.delenv(SDIST_ENV, raising=False)
    monkeypatch.setattr(tfm_pip.subprocess, "run", _fake_pip(sdist, calls))

    def stop(*args, **kwargs):  # the step after preparing the data: stop there, before any model is built
        raise _Stop(sorted(p.name for p in (tmp_path / "runs" / "quickstart_corpus").iterdir()))

    monkeypatch.setattr(experiment, "create_strategy", stop)
    corpus = tmp_path / "runs" / "quickstart_corpus"
    assert load_config(REPO / "configs" / config).data.train == [str(REPO / "runs" / "quickstart_corpus" / "train.txt")]
    cfg = load_config(REPO / "configs" / config, [f"output_dir={tmp_path / 'run'}", f"data.train=[{corpus}/train.txt]",
                                                  f"data.eval=[{corpus}/eval.txt]"])
    assert cfg.data.prepare == "quickstart_corpus"
    with pytest.raises(_Stop) as stopped:
        experiment.run_experiment(cfg)
    assert stopped.value.args[0] == ["eval.txt", "train.txt"] and len(calls) == 1
    assert len((corpus / "train.txt").read_text().splitlines()) == 36
    assert (corpus / "eval.txt").read_text().splitlines()[1] == "movie sentence 10 ."
    with pytest.raises(_Stop):
        experiment.run_experiment(cfg)  # present now: no second download
    assert len(calls) == 1


def test_local_sdist_from_the_environment_replaces_the_download(tmp_path, monkeypatch):
    monkeypatch.setattr(tfm_pip.subprocess, "run", lambda *a, **k: pytest.fail("pip must not run"))
    monkeypatch.setenv(SDIST_ENV, str(_sdist(tmp_path)))
    files = fetch_corpus(tmp_path / "corpus")
    assert (files["train"][1], files["eval"][1]) == (36, 3)
    monkeypatch.setenv(SDIST_ENV, str(tmp_path / "nope.tar.gz"))
    with pytest.raises(InputError, match=f"{SDIST_ENV}={tmp_path / 'nope.tar.gz'}: no such file"):
        fetch_corpus(tmp_path / "other")
    (tmp_path / "junk.tar.gz").write_text("not a tarball")
    monkeypatch.setenv(SDIST_ENV, str(tmp_path / "junk.tar.gz"))
    with pytest.raises(InputError, match="junk.tar.gz: cannot read the vaderSentiment sdist"):
        fetch_corpus(tmp_path / "other")


def test_quickstart_without_pypi_exits_2_with_one_actionable_line(tmp_path, monkeypatch, capsys):
    from tfm.cli import main

    # The real `pip download`, told to use no index: it fails at once, as with no network.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.delenv(SDIST_ENV, raising=False)
    corpus = tmp_path / "runs" / "quickstart_corpus"
    assert main(["quickstart", "--set", f"output_dir={tmp_path / 'run'}", "--set", f"data.train=[{corpus}/train.txt]",
                 "--set", f"data.eval=[{corpus}/eval.txt]"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"tfm quickstart: error: 'pip download {VADER_SDIST}' failed (ERROR: No matching "
                          f"distribution found for {VADER_SDIST}); check that this machine reaches PyPI")
    assert err.rstrip().endswith(f"set {SDIST_ENV}=/path/to/it")
    assert not (tmp_path / "runs" / "quickstart_corpus" / "train.txt").exists()
