"""The CRF against brute force: partition function, sequence scores, marginals (the gradient of log Z) and the
best path, all by enumerating every tag sequence of small cases; then the CRF in TokenClassifier."""

import itertools
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import TINY_BERT
from tfm.layers.crf import CRF, compact_labelled, crf_log_norm, crf_sequence_score
from tfm.models import BertBackbone
from tfm.tasks import TokenClassifier, decode_tags
from tfm.tasks.tagging import allowed_transitions, viterbi_decode

BIO = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def _path_score(emissions, path, transitions, start, end):
    score = start[path[0]] + end[path[-1]] + sum(emissions[t, y] for t, y in enumerate(path))
    return score + sum(transitions[a, b] for a, b in zip(path, path[1:]))


def _brute(emissions, length, transitions, start, end):
    """(log Z, best path, marginals (length, K)) of one row by enumerating all K**length paths."""
    k = emissions.shape[1]
    paths = list(itertools.product(range(k), repeat=length))
    scores = np.array([_path_score(emissions, p, transitions, start, end) for p in paths], "float64")
    log_z = np.logaddexp.reduce(scores)
    marginals = np.zeros((length, k))
    for p, s in zip(paths, scores):
        marginals[np.arange(length), p] += np.exp(s - log_z)
    return log_z, list(paths[int(scores.argmax())]), marginals


@pytest.fixture
def case():
    rng = np.random.default_rng(0)
    k, t = 3, 5
    return (rng.normal(0, 1.5, (4, t, k)).astype("float32"), np.array([5, 3, 1, 0]),
            rng.integers(0, k, (4, t)), rng.normal(0, 1, (k, k)).astype("float32"),
            rng.normal(0, 1, k).astype("float32"), rng.normal(0, 1, k).astype("float32"))


def test_log_norm_scores_and_best_paths_equal_brute_force(case):
    emissions, lengths, tags, transitions, start, end = case
    log_z = crf_log_norm(emissions, lengths, transitions, start, end).numpy()
    scores = crf_sequence_score(emissions, tags, lengths, transitions, start, end).numpy()
    best = viterbi_decode(emissions, lengths, transitions, start, end).numpy()
    for row, n in enumerate(lengths):
        if n == 0:
            assert log_z[row] == 0.0 and scores[row] == 0.0 and (best[row] == 0).all()
            continue
        want_z, want_path, _ = _brute(emissions[row], n, transitions, start, end)
        assert log_z[row] == pytest.approx(want_z, abs=1e-4)
        assert scores[row] == pytest.approx(_path_score(emissions[row], tags[row, :n], transitions, start, end), abs=1e-4)
        assert best[row, :n].tolist() == want_path and (best[row, n:] == 0).all()


def test_gradient_of_log_norm_is_the_brute_force_marginals_under_xla(case):
    emissions, lengths, _, transitions, start, end = case

    @tf.function(jit_compile=True)
    def grad(e):
        with tf.GradientTape() as tape:
            tape.watch(e)
            total = tf.reduce_sum(crf_log_norm(e, lengths, transitions, start, end))
        return tape.gradient(total, e)

    marginals = grad(tf.constant(emissions)).numpy()
    for row, n in enumerate(lengths):
        want = _brute(emissions[row], n, transitions, start, end)[2] if n else np.zeros((0, 3))
        np.testing.assert_allclose(marginals[row, :n], want, atol=1e-5)
        assert (marginals[row, n:] == 0).all()  # padding gets no gradient


def test_negative_log_likelihood_is_minus_the_log_probability_of_the_path(case):
    emissions, lengths, tags, transitions, start, end = case
    crf = CRF(3)
    crf.set_weights([transitions, start, end])
    nll = crf.negative_log_likelihood(emissions, tags, lengths).numpy()
    for row, n in enumerate(lengths[:3]):
        log_z = _brute(emissions[row], n, transitions, start, end)[0]
        want = log_z - _path_score(emissions[row], tags[row, :n], transitions, start, end)
        assert nll[row] == pytest.approx(want, abs=1e-4) and nll[row] > 0


def test_compact_labelled_moves_word_starts_to_the_front_in_order():
    emissions = np.arange(12, dtype="float32").reshape(1, 6, 2)
    labels = np.array([[-100, 3, -100, 1, 2, -100]])
    moved, tags, lengths = compact_labelled(emissions, labels)
    assert lengths.numpy().tolist() == [3] and tags.numpy()[0, :3].tolist() == [3, 1, 2]
    np.testing.assert_array_equal(moved.numpy()[0, :3], emissions[0, [1, 3, 4]])


def test_crf_learns_a_transition_only_pattern():
    # Emissions carry no information; the tag after B-PER is always I-PER, after I-PER always O, after O always
    # B-PER. Only the transitions can learn it, and Viterbi then decodes the pattern exactly.
    crf = CRF(3)
    tags = np.array([[0, 1, 2, 0, 1, 2, 0, 1], [1, 2, 0, 1, 2, 0, 1, 2]] * 4)
    emissions = tf.zeros((8, 8, 3))
    optimizer = keras.optimizers.Adam(0.1)
    for _ in range(60):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(crf.negative_log_likelihood(emissions, tags, np.full(8, 8)))
        optimizer.apply_gradients(zip(tape.gradient(loss, crf.trainable_variables), crf.trainable_variables))
    # From 8 log 3 = 8.8 nats (uniform) towards log 2 = 0.69: only the first tag stays uncertain (0.75 measured).
    assert float(loss) < np.log(2) + 0.2
    decoded = viterbi_decode(emissions[:1], [8], *crf.scores()).numpy()[0].tolist()
    assert decoded in ([0, 1, 2, 0, 1, 2, 0, 1], [1, 2, 0, 1, 2, 0, 1, 2])


def _tiny_tagger():
    backbone = BertBackbone(**TINY_BERT)
    return backbone, TokenClassifier(backbone, num_labels=5, crf=True)


def test_tagger_with_crf_counts_weights_and_its_loss_is_the_word_level_nll(tmp_path):
    backbone, model = _tiny_tagger()
    assert model.count_params() == backbone.count_params() + 8 * 5 + 5 + 5 * 5 + 2 * 5
    rng = np.random.default_rng(1)
    model.crf_layer.set_weights([rng.normal(0, 1, w.shape).astype("float32") for w in model.crf_layer.get_weights()])
    x = {"token_ids": rng.integers(5, 30, (2, 7)).astype("int32"), "segment_ids": np.zeros((2, 7), "int32"),
         "padding_mask": np.ones((2, 7), "int32")}
    labels = np.array([[-100, 1, 2, -100, 0, -100, -100], [-100, 0, -100, -100, -100, -100, -100]])
    emissions = model(x).numpy()
    total, words = model.loss_sums(labels, emissions, (labels >= 0).astype("float32"))
    trans, start, end = model.crf_scores()
    want = 0.0
    for row, positions in enumerate([[1, 2, 4], [1]]):
        word = emissions[row, positions]
        want += _brute(word, len(positions), trans, start, end)[0] - _path_score(word, labels[row, positions],
                                                                                  trans, start, end)
    assert float(words) == 4 and float(total) == pytest.approx(want, abs=1e-4)
    model.compile(jit_compile=False)
    loss = model.compute_loss(x, labels, model(x), (labels >= 0).astype("float32"))
    assert float(loss) == pytest.approx(want / 4, abs=1e-5)
    # Saved and restored with its transitions; decode_tags uses them with the BIO rules.
    model.save(tmp_path / "crf.keras")
    restored = keras.saving.load_model(tmp_path / "crf.keras")
    assert restored.crf and all(np.array_equal(a, b) for a, b in zip(restored.crf_scores(), model.crf_scores()))
    np.testing.assert_allclose(restored(x).numpy(), emissions, atol=1e-6)


def test_crf_keeps_the_padding_mask_of_its_emissions():
    emissions = keras.layers.Masking(mask_value=0.0)(np.array([[[1.0, 2.0], [0.0, 0.0]]], "float32"))
    crf = CRF(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Keras warns when a layer that drops masks is handed one
        out = crf(emissions)
    np.testing.assert_array_equal(crf.compute_mask(emissions, emissions._keras_mask).numpy(), [[True, False]])
    assert out.dtype == tf.float32 and out._keras_mask.numpy().tolist() == [[True, False]]


def test_decode_tags_adds_learned_transitions_to_the_scheme_rules():
    # Emissions favour B-PER B-PER; a learned B-PER -> I-PER bonus turns it into one two-word entity.
    emissions = np.log(np.array([[[0.1, 0.8, 0.05, 0.05, 0.0], [0.2, 0.5, 0.3, 0.0, 0.0]]]) + 1e-6)
    labels = np.array([[1, 2]])
    transitions = np.zeros((5, 5), "float32")
    assert decode_tags(emissions, labels, BIO)[1] == [["B-PER", "B-PER"]]
    transitions[1, 2] = 2.0
    crf = (transitions, np.zeros(5, "float32"), np.zeros(5, "float32"))
    assert decode_tags(emissions, labels, BIO, crf=crf)[1] == [["B-PER", "I-PER"]]
    # A learned score never lifts a transition the scheme forbids (O -> I-PER).
    transitions[0, 2] = 50.0
    emissions2 = np.log(np.array([[[0.9, 0.05, 0.05, 0.0, 0.0], [0.1, 0.1, 0.8, 0.0, 0.0]]]) + 1e-6)
    rules = allowed_transitions(BIO)
    assert rules[0][0, 2] < -1e3
    assert decode_tags(emissions2, labels, BIO, crf=crf)[1][0] != ["O", "I-PER"]
    assert decode_tags(emissions2, labels, BIO, constrained=False, crf=crf)[1] == [["O", "I-PER"]]


def test_learning_rate_multiplier_scales_the_scores_and_adamw_leaves_them_undecayed():
    crf = CRF(3, learning_rate_multiplier=100.0)
    crf.set_weights([np.full((3, 3), 0.01, "float32"), np.zeros(3, "float32"), np.zeros(3, "float32")])
    np.testing.assert_allclose(crf.scores()[0].numpy(), np.ones((3, 3)), rtol=1e-6)
    restored = CRF.from_config(crf.get_config())
    assert restored.learning_rate_multiplier == 100.0
    from tfm.training.config import TrainerConfig
    from tfm.training.optimizer import create_optimizer

    kernel = keras.Variable(np.ones((2, 2), "float32"), name="kernel")
    variables = [*crf.trainable_variables, kernel]
    optimizer = create_optimizer(TrainerConfig(weight_decay=0.1, warmup_steps=0, learning_rate=1e-3, steps=10))
    # Zero gradients: Adam moves nothing, so only weight decay acts, on the kernel and not on the CRF.
    optimizer.apply_gradients(zip([tf.zeros_like(v) for v in variables], variables))
    np.testing.assert_allclose(crf.scores()[0].numpy(), np.ones((3, 3)), rtol=1e-6)
    assert kernel.numpy()[0, 0] == pytest.approx(1 - 1e-3 * 0.1, rel=1e-6)
    # Unit gradients: Adam's first step is the learning rate in the variable, 100x that in the scores.
    optimizer = create_optimizer(TrainerConfig(weight_decay=0.1, warmup_steps=0, learning_rate=1e-3, steps=10))
    optimizer.apply_gradients(zip([tf.ones_like(v) for v in variables], variables))
    np.testing.assert_allclose(crf.scores()[0].numpy(), np.ones((3, 3)) - 100 * 1e-3, rtol=1e-4)
