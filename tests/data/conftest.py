"""Shared fixtures: slices of real SST-2 text and a WordPiece vocabulary trained once per session."""

import pytest

from tests.data_paths import shared_data


def _sst2_sentences(name, limit=None):
    lines = shared_data("sst2", name).read_text(encoding="utf-8").splitlines()[1:]
    sentences = [line.split("\t", 1)[1] for line in lines]
    return sentences[:limit] if limit else sentences


@pytest.fixture(scope="session")
def sst2_train_slice():
    """First 4,000 SST-2 training sentences (enough text for a 2k vocabulary, fast to train on)."""
    return _sst2_sentences("train.tsv", 4000)


@pytest.fixture(scope="session")
def sst2_dev():
    return _sst2_sentences("dev.tsv")


@pytest.fixture(scope="session")
def wordpiece(sst2_train_slice):
    from tfm.data import WordPieceTokenizer

    return WordPieceTokenizer.train(sst2_train_slice, vocab_size=2000)
