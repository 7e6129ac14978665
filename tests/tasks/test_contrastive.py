"""The in-batch contrastive loss against sentence-transformers' MultipleNegativesRankingLoss (PyTorch), with
gradients; padding examples; pair reading and batching; a short contrastive fit that ranks pairs.

References: tests/tasks/references/contrastive.json, written by tools/make_contrastive_references.py
(sentence-transformers 6.3.0, torch 2.13.0+cpu) from seeded embeddings this test rebuilds.
(Across replicas: tests/training/test_distributed.py and tests/tasks/test_fit_mirrored.py train the embedder.)
"""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import TINY_BERT
from tfm.data import WordPieceTokenizer, contrastive_dataset, read_text_pairs
from tfm.errors import InputError
from tfm.models import BertBackbone
from tfm.tasks import TextEmbedder
from tfm.training.task_data import static_batches
from tfm.tasks.contrastive import MultipleNegativesRankingLoss, contrastive_losses, in_batch_accuracy

REFERENCES = os.path.join(os.path.dirname(__file__), "references", "contrastive.json")


def _reference():
    with open(REFERENCES) as f:
        return json.load(f)


def _case_embeddings(ref, columns):
    """The tool's stacked `(columns * B, H)` embeddings (seeded) as the task's `(B, columns, H)` layout."""
    rng = np.random.default_rng(ref["seed"] + columns)
    stacked = rng.normal(size=(columns * ref["batch"], ref["dim"])).astype("float32")
    return stacked, stacked.reshape(columns, ref["batch"], ref["dim"]).transpose(1, 0, 2)


@pytest.mark.parametrize("case", ["pairs", "hard_negatives", "symmetric", "scale_5"])
def test_loss_and_gradients_match_sentence_transformers(case):
    ref = _reference()
    expected = ref["cases"][case]
    stacked, layout = _case_embeddings(ref, expected["columns"])
    kwargs = expected["kwargs"]
    symmetric = "doc_to_query" in kwargs.get("directions", ())
    variable = tf.Variable(layout)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(contrastive_losses(variable, kwargs["scale"], symmetric))
    grad = tape.gradient(loss, variable).numpy()
    assert float(loss) == pytest.approx(expected["loss"], abs=1e-5)
    reference_grad = np.array(expected["grad"], "float32").reshape(stacked.shape)
    reference_grad = reference_grad.reshape(expected["columns"], ref["batch"], ref["dim"]).transpose(1, 0, 2)
    np.testing.assert_allclose(grad, reference_grad, atol=2e-6, rtol=0)
    # The Keras loss (what compile(loss="contrastive") uses) gives the same mean.
    keras_loss = MultipleNegativesRankingLoss(kwargs["scale"], symmetric)(np.zeros(ref["batch"]), layout)
    assert float(keras_loss) == pytest.approx(expected["loss"], abs=1e-5)


def test_zero_weight_examples_leave_every_softmax():
    ref = _reference()
    _, layout = _case_embeddings(ref, 3)
    copies = np.concatenate([layout, layout[:2]])  # two padding copies, as static_batches makes them
    weight = np.array([1.0] * len(layout) + [0.0, 0.0], "float32")
    for symmetric in (False, True):
        alone = contrastive_losses(layout, 20.0, symmetric).numpy()
        padded = contrastive_losses(copies, 20.0, symmetric, weight).numpy()
        np.testing.assert_allclose(padded[: len(layout)], alone, atol=1e-5)
    # By hand: anchor 0 of [[a0, p0], [a1, p1]] with cos(a0, p0) = 1, cos(a0, p1) = 0 at scale 1.
    pairs = np.array([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]], "float32")
    losses = contrastive_losses(pairs, scale=1.0).numpy()
    np.testing.assert_allclose(losses, [np.log(1 + np.exp(-1.0))] * 2, rtol=1e-6)
    np.testing.assert_array_equal(in_batch_accuracy(pairs).numpy(), [1.0, 1.0])
    swapped = pairs[:, ::-1][[1, 0]]  # the anchors' positives exchanged: each anchor's best is the other's
    np.testing.assert_array_equal(in_batch_accuracy(np.stack([pairs[:, 0], swapped[:, 0]], 1)).numpy(), [0.0, 0.0])


def _tokenizer():
    words = ["hola", "adios", "gato", "perro", "casa", "hello", "bye", "cat", "dog", "house", "el", "the"]
    return WordPieceTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + words)


def test_read_text_pairs_and_contrastive_batches(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("id\tes\ten\tneg\n1\thola\thello\tbye\n2\tel gato\tthe cat\tthe dog\n3\tcasa\t\thouse\n"
                    "4\tperro\tdog\tcat\n", encoding="utf-8")
    pairs = read_text_pairs(str(path), "es", "en", "neg")
    assert (pairs.num_examples, pairs.skipped) == (3, {"empty_text": 1})
    tok = _tokenizer()
    x, y = next(iter(contrastive_dataset(pairs, tok, sequence_length=8, batch_size=3, length_buckets=[4, 6])))
    assert x["token_ids"].shape == (3, 3, 4)  # 3 examples x (anchor, positive, negative), cut to bucket 4
    assert x["token_ids"].numpy()[1].tolist() == [[2, 14, 6, 3], [2, 15, 11, 3], [2, 15, 12, 3]]
    assert x["padding_mask"].numpy()[0].tolist() == [[1, 1, 1, 0]] * 3 and y.numpy().tolist() == [0, 0, 0]
    # Evaluation batches: a short last batch is filled with weight-0 copies.
    batches = list(static_batches(contrastive_dataset(pairs, tok, 8, batch_size=2), 2))
    assert [b[0]["token_ids"].shape[0] for b in batches] == [2, 2]
    assert batches[1][2].numpy().tolist() == [1.0, 0.0]
    with pytest.raises(InputError, match=r"pairs\.tsv:2: missing column\(s\) \['nope'\]"):
        read_text_pairs(str(path), "es", "nope")


def test_several_anchor_columns_give_one_pair_each(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("id\tes\tfr\ten\n1\thola\tsalut\thello\n2\tgato\t\tcat\n3\tcasa\tmaison\t\n",
                    encoding="utf-8")
    pairs = read_text_pairs(str(path), ["es", "fr"], "en")
    rows = [(r["text"].decode(), r["text_pair"].decode()) for r in pairs.dataset.as_numpy_iterator()]
    # Row 2's empty French anchor drops only its own pair; row 3 has no positive, so both of its pairs go.
    # Column by column: unshuffled batches do not pair "hello" with itself as an in-batch negative.
    assert rows == [("hola", "hello"), ("gato", "cat"), ("salut", "hello")]
    assert (pairs.num_examples, pairs.skipped) == (3, {"empty_text": 3})
    with pytest.raises(InputError, match=r"pairs\.tsv:2: missing column\(s\) \['de'\]"):
        read_text_pairs(str(path), ["es", "de"], "en")


def test_task_embeds_pair_layout_and_fit_learns_to_rank_pairs():
    keras.utils.set_random_seed(3)
    tok = _tokenizer()
    es, en = ["hola", "adios", "gato", "perro", "casa"], ["hello", "bye", "cat", "dog", "house"]
    model = TextEmbedder(BertBackbone(**{**TINY_BERT, "vocabulary_size": tok.vocabulary_size, "dropout": 0.0}),
                         tokenizer=tok, sequence_length=8)
    pairs = tf.data.Dataset.from_tensor_slices({"text": es, "text_pair": en})
    x, y = next(iter(contrastive_dataset(pairs, tok, 8, batch_size=5)))
    stacked = model(x).numpy()
    assert stacked.shape == (5, 2, TINY_BERT["hidden_dim"])
    np.testing.assert_allclose(stacked[:, 0], model.embed(es), atol=1e-6)  # each text embedded on its own
    loss, weight = model.loss_sums(y, model(x))
    assert float(weight) == 5.0
    np.testing.assert_allclose(float(loss) / 5, float(np.mean(contrastive_losses(model(x)))), rtol=1e-6)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="contrastive")
    history = model.fit(pairs.repeat().apply(lambda d: contrastive_dataset(d, tok, 8, batch_size=5)),
                        steps_per_epoch=40, epochs=1, verbose=0).history
    # 5 pairs: chance level is log(5) = 1.61; the pairs share no token, so the model has to learn the mapping.
    # Measured (Intel Xeon, oneDNN off, one core; seeds 3-5): mean loss over the 40 steps 0.12-0.22, final loss
    # 2e-5 to 7e-5, every pair ranked first: the bounds below leave orders of magnitude.
    assert history["loss"][0] < 1.7 and float(np.mean(contrastive_losses(model(x)))) < 0.5
    ranks = np.argmax(model.embed(es) @ model.embed(en).T, axis=1)
    assert ranks.tolist() == [0, 1, 2, 3, 4]
