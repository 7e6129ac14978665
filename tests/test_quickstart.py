"""The quickstart corpus: read from a vaderSentiment-shaped sdist built here (the real one comes from PyPI)."""

import io
import tarfile

import numpy as np

import pytest

from tfm.quickstart import CORPUS_FILES, EVAL_SENTENCES, INNER_ARCHIVE, sentences_from_sdist, write_corpus


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


def test_malformed_line_names_file_and_line(tmp_path):
    with pytest.raises(ValueError, match=r"tweets_GroundTruth.txt:2: expected 'id<TAB>rating<TAB>text'"):
        sentences_from_sdist(_sdist(tmp_path, bad_line="just text"))


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
