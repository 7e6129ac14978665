"""Shared fixtures: text that ships in tests/text (always there), slices of real SST-2 (skip when absent),
and a WordPiece vocabulary trained once per session on the shipped text."""

from pathlib import Path

import pytest

from tests.helpers import shared_sentences

TEXT = Path(__file__).resolve().parents[1] / "text"


def shipped_lines(name):
    """Lines of `tests/text/NAME` (written by tests/text/make_text.py)."""
    return (TEXT / name).read_text(encoding="utf-8").splitlines()


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
    return shared_sentences("sst2", count=4000)


@pytest.fixture(scope="session")
def sst2_dev():
    return shared_sentences("sst2", "dev")


@pytest.fixture(scope="session")
def wordpiece(english_train):
    """A 190-token WordPiece vocabulary of the shipped English text (subwords for its rarer words)."""
    from tfm.data import WordPieceTokenizer

    return WordPieceTokenizer.train(english_train, vocabulary_size=190)
