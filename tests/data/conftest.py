"""Shared fixtures: text that ships in tests/text (always there), slices of real SST-2 (skip when absent),
and a WordPiece vocabulary trained once per session on the shipped text."""

from pathlib import Path

import pytest

from tests.data_paths import shared_data

TEXT = Path(__file__).resolve().parents[1] / "text"


def shipped_lines(name):
    """Lines of `tests/text/NAME` (written by tests/text/make_text.py)."""
    return (TEXT / name).read_text(encoding="utf-8").splitlines()


def _sst2_sentences(name, limit=None):
    lines = shared_data("sst2", name).read_text(encoding="utf-8").splitlines()[1:]
    sentences = [line.split("\t", 1)[1] for line in lines]
    return sentences[:limit] if limit else sentences


@pytest.fixture(scope="session")
def english_train():
    """First 600 shipped English sentences: the training text."""
    return shipped_lines("english.txt")[:600]


@pytest.fixture(scope="session")
def english_dev():
    """The other 200 shipped English sentences: held-out text."""
    return shipped_lines("english.txt")[600:]


@pytest.fixture(scope="session")
def chinese_text():
    return shipped_lines("chinese.txt")


@pytest.fixture(scope="session")
def sst2_train_slice():
    """First 4,000 SST-2 training sentences (real data: tests using it skip on a fresh clone)."""
    return _sst2_sentences("train.tsv", 4000)


@pytest.fixture(scope="session")
def sst2_dev():
    return _sst2_sentences("dev.tsv")


@pytest.fixture(scope="session")
def wordpiece(english_train):
    """A 190-token WordPiece vocabulary of the shipped English text (subwords for its rarer words)."""
    from tfm.data import WordPieceTokenizer

    return WordPieceTokenizer.train(english_train, vocab_size=190)
