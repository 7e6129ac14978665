"""tools/int8_quality.py: the agreement of greedy continuations, on hand-counted tokens, and its docstring example."""

import doctest
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import int8_quality  # noqa: E402


def test_agreement_counts_tokens_prompts_and_first_differences():
    reference = [[5, 6, 7, 8], [1, 2, 3, 4], [9, 9, 9, 9]]
    tokens = [[5, 6, 7, 8],  # identical
              [1, 2, 0, 0],  # splits at new token 2
              [0, 9, 9, 9]]  # splits at once; later tokens equal again still count as identical tokens
    result = int8_quality.agreement(tokens, reference)
    assert result["greedy_tokens_identical"] == 9 / 12
    assert result["prompts_identical"] == 1 / 3
    assert result["first_difference"] == [2, 0]
    assert int8_quality.agreement(reference, reference) == {
        "greedy_tokens_identical": 1.0, "prompts_identical": 1.0, "first_difference": []}


def test_docstring_example_runs():
    result = doctest.testmod(int8_quality)
    assert result.attempted == 1 and result.failed == 0
