import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import TINY_BERT
from tfm.models import BertBackbone
from tfm.tasks import TokenClassifier, decode_tags
from tfm.tasks.tagging import allowed_transitions, viterbi_decode

BIO = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
IOBES = ["O", "B-X", "I-X", "E-X", "S-X"]


def _brute_force(scores, length, transitions, start, end):
    best = None
    for path in itertools.product(range(scores.shape[-1]), repeat=length):
        value = start[path[0]] + end[path[-1]] + sum(scores[t, path[t]] for t in range(length))
        value += sum(transitions[path[t - 1], path[t]] for t in range(1, length))
        best = max(best or (value, path), (value, path))
    return list(best[1])


@pytest.mark.parametrize("names", [BIO, IOBES])
def test_viterbi_equals_exhaustive_search_with_padding(names):
    rules = allowed_transitions(names)
    scores = np.random.default_rng(0).normal(size=(6, 5, len(names))).astype("float32")
    lengths = np.array([5, 1, 3, 4, 2, 0])
    decoded = viterbi_decode(scores, lengths, *rules).numpy()
    for row, length in enumerate(lengths):
        expected = _brute_force(scores[row], length, *rules) if length else []
        assert decoded[row, :length].tolist() == expected
        assert (decoded[row, length:] == 0).all()  # padding gets tag 0


def test_transition_rules_of_both_schemes():
    transitions, start, end = allowed_transitions(BIO)
    allowed = transitions == 0
    # I-PER only after B-PER / I-PER; everything else may follow anything; no start inside a chunk.
    assert allowed[:, 2].tolist() == [False, True, True, False, False]
    assert allowed[:, 4].tolist() == [False, False, False, True, True]
    assert allowed[:, [0, 1, 3]].all() and (start == 0).tolist() == [True, True, False, True, False]
    assert (end == 0).all()
    transitions, start, end = allowed_transitions(IOBES)
    allowed = transitions == 0
    # After B-X / I-X only I-X or E-X; E-X / I-X need an open chunk; a sentence can't end inside one.
    assert allowed[1].tolist() == [False, False, True, True, False]
    assert allowed[:, 3].tolist() == [False, True, True, False, False]
    assert allowed[3].tolist() == [True, True, False, False, True]
    assert (end == 0).tolist() == [True, False, False, True, True]
    with pytest.raises(ValueError, match=r"\['NN'\] are not O or B-/I-/E-/S-"):
        allowed_transitions(["O", "NN"])


def test_decode_tags_repairs_broken_chunks_and_keeps_pos_tags_argmax():
    # Argmax says "O I-PER I-PER O" (a chunk without its B-): the best valid sequence is B-PER I-PER.
    probs = np.array([[[0.9, 0.05, 0.05, 0, 0], [0.5, 0.1, 0.4, 0, 0], [0.1, 0.1, 0.8, 0, 0],
                       [0.9, 0.05, 0.05, 0, 0]]]) + 1e-6
    labels = np.array([[0, 1, 2, 0]])
    _, raw = decode_tags(np.log(probs), labels, BIO, constrained=False)
    _, fixed = decode_tags(np.log(probs), labels, BIO)
    assert raw == [["O", "O", "I-PER", "O"]] and fixed == [["O", "B-PER", "I-PER", "O"]]
    pos = ["NN", "VB", "DT"]
    logits = np.log(np.array([[[0.2, 0.7, 0.1], [0.6, 0.3, 0.1]]]))
    assert decode_tags(logits, np.array([[0, 1]]), pos)[1] == [["VB", "NN"]]
    with pytest.raises(ValueError):
        decode_tags(logits, np.array([[0, 1]]), pos, constrained=True)


def test_decode_tags_reads_word_starts_only():
    # Non-first pieces (-100) are skipped before decoding, so an I- after a skipped piece still continues.
    logits = np.log(np.array([[[0.1, 0.8, 0.1, 0, 0], [0.1, 0.1, 0.1, 0.6, 0.1], [0.2, 0.1, 0.7, 0, 0]]]) + 1e-6)
    true, pred = decode_tags(logits, np.array([[1, -100, 2]]), BIO)
    assert true == [["B-PER", "I-PER"]] and pred == [["B-PER", "I-PER"]]


def test_bilstm_head_params_mask_and_save_load(tmp_path):
    backbone = BertBackbone(**TINY_BERT)
    model = TokenClassifier(backbone, num_labels=5, lstm_units=6)
    lstm = 4 * (6 * (8 + 6) + 6)  # four gates: input and recurrent kernels plus bias, per direction
    assert model.count_params() == backbone.count_params() + 2 * lstm + (2 * 6) * 5 + 5
    rng = np.random.default_rng(0)
    x = {"token_ids": rng.integers(5, 30, (2, 10)).astype("int32"), "segment_ids": np.zeros((2, 10), "int32"),
         "padding_mask": np.ones((2, 10), "int32")}
    x["padding_mask"][1, 6:] = 0
    logits = model(x).numpy()
    # The backward LSTM starts at each row's last real token: changing padding ids changes nothing there.
    other = dict(x, token_ids=x["token_ids"].copy())
    other["token_ids"][1, 6:] = 7
    np.testing.assert_allclose(model(other).numpy()[1, :6], logits[1, :6], atol=1e-6)
    model.save(tmp_path / "ner.keras")
    restored = keras.saving.load_model(tmp_path / "ner.keras")
    assert restored.lstm_units == 6
    np.testing.assert_allclose(restored(x).numpy(), logits, atol=1e-6)
    # The Trainer's path: an XLA-compiled gradient step runs the masked BiLSTM.
    step = tf.function(lambda: tf.gradients(tf.reduce_sum(model(x, training=True)), model.trainable_variables),
                       jit_compile=True)
    grads = step()
    assert all(g is not None for g in grads[-5:]) and np.isfinite(grads[-1].numpy()).all()


def test_viterbi_in_a_graph_with_unknown_shapes_and_empty_batches():
    rules = allowed_transitions(BIO)
    decode = tf.function(lambda s, n: viterbi_decode(s, n, *rules),
                         input_signature=[tf.TensorSpec([None, None, 5]), tf.TensorSpec([None], tf.int32)])
    assert decode(tf.zeros([0, 0, 5]), tf.zeros([0], tf.int32)).shape == (0, 0)
    assert decode(tf.zeros([2, 0, 5]), tf.zeros([2], tf.int32)).shape == (2, 0)
    scores = np.log(np.array([[[0.1, 0.2, 0.7, 0, 0]]]) + 1e-9).astype("float32")  # argmax I-PER alone
    assert decode(scores, tf.constant([1])).numpy().tolist() == [[1]]
