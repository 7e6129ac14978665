import numpy as np
import pytest

from tests.helpers import randomize_weights
from tfm.models import GptBackbone
from tfm.tasks import CausalLM
from tfm.tasks.generation import BeamSampler, GreedySampler, RandomSampler, TopKSampler, TopPSampler, get_sampler

VOCAB, NEW = 64, 8
TINY = {"vocabulary_size": VOCAB, "num_layers": 2, "num_heads": 2, "hidden_dim": 16, "intermediate_dim": 32,
        "max_sequence_length": 32}


@pytest.fixture(scope="module")
def lm():
    model = CausalLM(GptBackbone(**TINY, dropout=0.0))
    randomize_weights(model, seed=7)
    return model


@pytest.fixture(scope="module")
def prompts():
    return np.random.default_rng(0).integers(0, VOCAB, (2, 5)).astype("int32")


def full_logits(lm, ids):
    return np.asarray(lm({"token_ids": ids, "padding_mask": np.ones_like(ids)}))  # (B, T, V)


def naive_greedy(lm, ids, steps):
    """Reference: re-run the whole forward pass each step and take the argmax."""
    for _ in range(steps):
        next_ids = full_logits(lm, ids)[:, -1].argmax(-1).astype("int32")
        ids = np.concatenate([ids, next_ids[:, None]], axis=1)
    return ids


def total_log_prob(lm, ids, prompt_length):
    logits = full_logits(lm, ids)[:, :-1].astype("float64")
    logits -= logits.max(-1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))  # (B, T - 1, V)
    picked = np.take_along_axis(log_probs, ids[:, 1:, None], axis=-1)[..., 0]  # (B, T - 1)
    return picked[:, prompt_length - 1 :].sum(-1)


def test_greedy_equals_naive_full_forward_loop(lm, prompts):
    out = lm.generate(prompts, max_new_tokens=NEW)
    expected = naive_greedy(lm, prompts, NEW)
    assert out["token_ids"].dtype == np.int32 and out["token_ids"].shape == (2, 5 + NEW)
    np.testing.assert_array_equal(out["token_ids"], expected)
    np.testing.assert_array_equal(out["padding_mask"], np.ones((2, 5 + NEW), "int32"))
    assert len(set(expected[:, 5:].ravel())) > 2  # the random model gives non-trivial continuations


def test_batched_prompts_of_different_lengths_match_each_alone(lm):
    rows = [[3, 9, 27, 17, 51, 25], [5, 1, 44], [60, 2, 8, 13]]
    batched = lm.generate(rows, max_new_tokens=NEW)
    assert batched["token_ids"].shape == (3, 6 + NEW)
    for i, row in enumerate(rows):
        n = len(row) + NEW  # each row gets exactly NEW tokens after its own prompt
        alone = naive_greedy(lm, np.array([row], "int32"), NEW)
        np.testing.assert_array_equal(batched["token_ids"][i, :n], alone[0])
        np.testing.assert_array_equal(batched["padding_mask"][i], [1] * n + [0] * (6 + NEW - n))
        np.testing.assert_array_equal(batched["token_ids"][i, n:], 0)


def test_beam_search_batched_prompts_match_each_alone(lm):
    rows = [[3, 9, 27, 17, 51, 25], [5, 1, 44]]
    batched = lm.generate(rows, max_new_tokens=NEW, sampler=BeamSampler(num_beams=3))
    for i, row in enumerate(rows):
        alone = lm.generate([row], max_new_tokens=NEW, sampler=BeamSampler(num_beams=3))
        np.testing.assert_array_equal(batched["token_ids"][i, : len(row) + NEW], alone["token_ids"][0])
    np.testing.assert_array_equal(batched["padding_mask"][1], [1] * (3 + NEW) + [0] * 3)


def test_top_k_1_and_tiny_top_p_equal_greedy(lm, prompts):
    greedy = lm.generate(prompts, max_new_tokens=NEW)["token_ids"]
    top_k = lm.generate(prompts, max_new_tokens=NEW, sampler="top_k", top_k=1, temperature=5.0, seed=1)
    top_p = lm.generate(prompts, max_new_tokens=NEW, sampler=TopPSampler(p=1e-6, temperature=5.0), seed=2)
    np.testing.assert_array_equal(top_k["token_ids"], greedy)
    np.testing.assert_array_equal(top_p["token_ids"], greedy)


def test_top_k_samples_lie_in_reference_top_k(lm, prompts):
    sampler = TopKSampler(k=3, temperature=10.0)
    for seed in range(3):
        ids = lm.generate(prompts, max_new_tokens=NEW, sampler=sampler, seed=seed)["token_ids"]
        logits = full_logits(lm, ids)  # position t - 1 scores token t
        top3 = np.argsort(-logits, axis=-1)[..., :3]
        for t in range(5, 5 + NEW):
            assert all(ids[b, t] in top3[b, t - 1] for b in range(2))
    assert not np.array_equal(ids, naive_greedy(lm, prompts, NEW))  # it really samples


def test_same_seed_same_output_different_seed_different(lm, prompts):
    sampler = RandomSampler(temperature=20.0)
    a = lm.generate(prompts, max_new_tokens=NEW, sampler=sampler, seed=11)["token_ids"]
    b = lm.generate(prompts, max_new_tokens=NEW, sampler=sampler, seed=11)["token_ids"]
    c = lm.generate(prompts, max_new_tokens=NEW, sampler=sampler, seed=12)["token_ids"]
    np.testing.assert_array_equal(a, b)
    assert (a[:, 5:] != c[:, 5:]).sum() >= 4
    np.testing.assert_array_equal(a[:, :5], prompts)


def test_beam_search(lm, prompts):
    greedy = lm.generate(prompts, max_new_tokens=NEW)["token_ids"]
    one = lm.generate(prompts, max_new_tokens=NEW, sampler="beam", num_beams=1)["token_ids"]
    np.testing.assert_array_equal(one, greedy)
    four = lm.generate(prompts, max_new_tokens=NEW, sampler="beam", num_beams=4)["token_ids"]
    beam_scores, greedy_scores = total_log_prob(lm, four, 5), total_log_prob(lm, greedy, 5)
    assert np.all(beam_scores >= greedy_scores - 1e-4)
    assert np.any(beam_scores > greedy_scores + 1e-3)  # beam search finds something better here


def test_stop_tokens_end_each_row(lm, prompts):
    free = lm.generate(prompts, max_new_tokens=NEW)["token_ids"]
    stop = int(free[0, 5 + 2])  # row 0's third new token
    out = lm.generate(prompts, max_new_tokens=NEW, stop_token_ids=[stop, VOCAB + 5], pad_token_id=-1)
    for b in range(2):
        new = list(free[b, 5:])
        n = new.index(stop) + 1 if stop in new else NEW  # up to and including the stop token
        np.testing.assert_array_equal(out["token_ids"][b, : 5 + n], free[b, : 5 + n])
        np.testing.assert_array_equal(out["token_ids"][b, 5 + n :], -1)
        np.testing.assert_array_equal(out["padding_mask"][b], [1] * (5 + n) + [0] * (NEW - n))
    assert out["padding_mask"][0].sum() <= 5 + 3


def test_compiled_once_for_repeated_calls(lm):
    rng = np.random.default_rng(3)
    for seed in range(3):  # new prompts, prompt lengths and seeds: same shapes, no retrace
        ids = rng.integers(0, VOCAB, (2, 4)).astype("int32")
        mask = np.array([[1, 1, 1, 1], [1] * (seed + 1) + [0] * (3 - seed)], "int32")
        lm.generate(ids, max_new_tokens=5, padding_mask=mask, sampler="top_k", top_k=4, seed=seed)
    fn = lm.generate_function(5, TopKSampler(k=4))  # the function generate() used
    assert fn is lm.generate_function(5, get_sampler("top_k", top_k=4), stop_token_ids=())
    assert fn.experimental_get_tracing_count() == 1


def test_sampler_resolution_and_input_validation(lm):
    assert repr(get_sampler("top_k", top_k=10, temperature=0.8)) == "TopKSampler(k=10, temperature=0.8)"
    assert get_sampler("top_p", top_p=0.5, top_k=20).get_config() == {"p": 0.5, "k": 20, "temperature": 1.0}
    assert get_sampler("beam", num_beams=4).num_beams == 4
    assert isinstance(get_sampler(), GreedySampler)
    with pytest.raises(ValueError, match="does not use"):
        get_sampler("greedy", top_k=3)
    with pytest.raises(ValueError, match="sampler object"):
        get_sampler(TopKSampler(), temperature=2.0)
    with pytest.raises(ValueError, match="Unknown sampler"):
        get_sampler("nucleus")
    with pytest.raises(ValueError, match="right-padded"):
        lm.generate(np.ones((1, 3), "int32"), 2, padding_mask=np.array([[0, 1, 1]]))
    with pytest.raises(ValueError, match="max_sequence_length"):
        lm.generate(np.ones((1, 30), "int32"), 5)
