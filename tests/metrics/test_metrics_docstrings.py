"""The docstring examples of tfm.metrics are runnable and right."""

import doctest

import pytest

from tfm.metrics import classification, sequence_labeling, squad


@pytest.mark.parametrize("module", [classification, sequence_labeling, squad], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
