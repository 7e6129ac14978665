"""The shared decoders on their own: the sampling rule with static and tensor settings, its distribution, the
span search against a brute-force search (their docstring examples run in tests/test_doctests.py)."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from tfm.tasks import span_search
from tfm.tasks.samplers import sample_tokens

V = 40
# (temperature, top_k, top_p): greedy, temperature, top-k, top-p, top-k + top-p, k >= V.
SETTINGS = [(0.0, 0, 1.0), (0.8, 0, 1.0), (1.5, 5, 1.0), (1.0, 0, 0.7), (1.2, 8, 0.6), (1.0, 50, 1.0)]


def _logits(seed, batch=6):
    return np.random.default_rng(seed).normal(0.0, 2.0, (batch, V)).astype("float32")


def test_static_and_tensor_settings_draw_the_same_tokens():
    """Compiled as in the decode loop, Python settings (`generate`) and scalar tensors (the export) draw alike."""
    @tf.function(jit_compile=True)
    def served(logits, temperature, top_k, top_p, seed):
        return sample_tokens(logits, temperature, top_k, top_p, seed)

    for temperature, top_k, top_p in SETTINGS:
        compiled = tf.function(lambda logits, seed: sample_tokens(logits, temperature, top_k, top_p, seed),
                               jit_compile=True)
        draws = []
        for seed in range(8):
            logits, step_seed = _logits(seed), tf.constant([seed, 3], tf.int64)
            static = compiled(logits, step_seed).numpy()
            tensor = served(logits, tf.constant(temperature), tf.constant(top_k), tf.constant(top_p), step_seed)
            np.testing.assert_array_equal(static, tensor.numpy(), err_msg=str((temperature, top_k, top_p, seed)))
            draws.append(static)
        greedy = [_logits(seed).argmax(-1) for seed in range(8)]
        assert (np.array(draws) != np.array(greedy)).any() == (temperature > 0)


def test_draws_follow_the_filtered_softmax():
    """Frequencies over 4,000 draws match softmax(logits / t) restricted to the top-k, then to the nucleus."""
    logits = np.log(np.array([[0.05, 0.4, 0.1, 0.25, 0.2]], "float32"))
    draws = 4000

    def frequencies(temperature, top_k, top_p):
        rows = np.repeat(logits, draws, axis=0)  # every row gets its own noise
        tokens = sample_tokens(rows, temperature, top_k, top_p, tf.constant([5, 0], tf.int64)).numpy()
        return np.bincount(tokens, minlength=5) / draws

    def expected(temperature, keep):
        p = np.exp(logits[0] / temperature) * keep
        return p / p.sum()

    # temperature 2: flatter; top_k=3 keeps tokens 1, 3, 4; top_p=0.6 keeps 1, 3 (0.4 < 0.6 <= 0.65).
    cases = {(2.0, 0, 1.0): [1, 1, 1, 1, 1], (1.0, 3, 1.0): [0, 1, 0, 1, 1], (1.0, 0, 0.6): [0, 1, 0, 1, 0],
             (1.0, 3, 0.7): [0, 1, 0, 1, 0]}  # within the top 3 (mass 0.85): 0.4 / 0.85 < 0.7 <= 0.65 / 0.85
    for (temperature, top_k, top_p), keep in cases.items():
        got = frequencies(temperature, top_k, top_p)
        np.testing.assert_allclose(got, expected(temperature, np.array(keep)), atol=0.03)
        assert (got[np.array(keep) == 0] == 0).all()
    np.testing.assert_array_equal(sample_tokens(logits, 0.0, 0, 1.0, [0, 0]).numpy(), [1])


def _brute_force_spans(start, end, allowed, max_length):
    """Best (start, end, score) per row over all pairs, first maximum in (start, end) order."""
    results = []
    for s_row, e_row, ok in zip(start, end, allowed):
        best = (0, 0, -np.inf)
        for i, j in itertools.product(range(len(s_row)), repeat=2):
            if ok[i] and ok[j] and i <= j < i + max_length and s_row[i] + e_row[j] > best[2]:
                best = (i, j, s_row[i] + e_row[j])
        results.append(best)
    return results


@pytest.mark.parametrize("max_length", [1, 3, 30])
def test_window_spans_equal_brute_force(max_length):
    rng = np.random.default_rng(max_length)
    start = rng.integers(0, 3, (50, 9)).astype("float32")  # small integers: many ties
    end = rng.integers(0, 3, (50, 9)).astype("float32")
    allowed = rng.random((50, 9)) < 0.5
    starts, ends, scores = span_search.search_windows(start, end, allowed, max_length, chunk=16)
    assert list(zip(starts.tolist(), ends.tolist(), scores.tolist())) == _brute_force_spans(start, end, allowed,
                                                                                            max_length)


def test_question_spans_pick_the_first_best_window_and_apply_the_null_rule():
    # Question 0: windows 0-2, best score 5 in windows 1 and 2 -> window 1. Question 1: window 3 has no
    # candidate (-inf) -> no answer, score = its null score. Question 2: null 9 - best 4 = 5 > threshold 3.
    scores = np.array([2.0, 5.0, 5.0, -np.inf, 4.0], "float32")
    null = np.array([1.0, 7.0, 3.0, 2.5, 9.0], "float32")
    window, found, score = span_search.question_spans(scores, null, [0, 0, 0, 1, 2], 3)
    assert (window.numpy().tolist(), found.numpy().tolist(), score.numpy().tolist()) == (
        [1, 0, 4], [True, False, True], [5.0, 2.5, 4.0])
    # SQuAD v2: question 0's smallest null (1) does not beat 5; question 2's does by 5 > 3, not by > 6.
    window, found, score = span_search.question_spans(scores, null, [0, 0, 0, 1, 2], 3, True, 3.0)
    assert (found.numpy().tolist(), score.numpy().tolist()) == ([True, False, False], [5.0, 2.5, 9.0])
    _, found, _ = span_search.question_spans(scores, null, [0, 0, 0, 1, 2], 3, True, 6.0)
    assert found.numpy().tolist() == [True, False, True]

