"""tfds names through `tfds.testing.mock_data` (offline: random text with the real structure)."""

import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tfm.data import (
    SquadExample,
    WordPieceTokenizer,
    classification_dataset,
    load_tfds,
    multiple_choice_dataset,
    token_classification_dataset,
)

TOKENIZER_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("abcdefghij")


@pytest.mark.parametrize("name, split, labels", [
    ("glue/sst2", "train", ["negative", "positive"]),
    ("imdb_reviews", "test", ["neg", "pos"]),
])
def test_classification_sets(name, split, labels):
    with tfds.testing.mock_data(num_examples=6):
        result = load_tfds(name, split)
    assert result.num_examples == 6 and result.labels.names == labels
    assert result.dataset.element_spec == {"text": tf.TensorSpec([], tf.string), "label": tf.TensorSpec([], tf.int32)}
    x, y = next(iter(classification_dataset(result, WordPieceTokenizer(TOKENIZER_VOCAB), 16, 6)))
    assert x["token_ids"].shape == (6, 16) and y.shape == (6,) and set(y.numpy().tolist()) <= {0, 1}


def test_conll2003():
    with tfds.testing.mock_data(num_examples=4):
        result = load_tfds("conll2003", "train")
    assert result.num_examples == 4
    assert result.labels.names == ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
    assert {k: (v.shape.as_list(), v.dtype) for k, v in result.dataset.element_spec.items()} == {
        "tokens": ([None], tf.string), "tags": ([None], tf.int32)}
    tokenizer = WordPieceTokenizer(TOKENIZER_VOCAB)
    # mock_data draws tokens and tags with independent random lengths: the pipeline says so ...
    with pytest.raises(tf.errors.InvalidArgumentError, match="tokens and tags differ in length"):
        next(iter(token_classification_dataset(result, tokenizer, 32, 4)))
    # ... and runs once they are made consistent, as in the real set.
    def trim(x):
        n = tf.minimum(tf.shape(x["tokens"])[0], tf.shape(x["tags"])[0])
        return {"tokens": x["tokens"][:n], "tags": x["tags"][:n]}

    x, y, w = next(iter(token_classification_dataset(result.dataset.map(trim), tokenizer, 32, 4)))
    assert y.shape == (4, 32) and w.shape == (4, 32) and int(w.numpy().sum()) > 0


@pytest.mark.parametrize("name, split", [("squad", "train"), ("squad/v2.0", "validation")])
def test_squad(name, split):
    with tfds.testing.mock_data(num_examples=3):
        examples = load_tfds(name, split)
    assert len(examples) == 3 and all(isinstance(e, SquadExample) for e in examples)
    assert all(isinstance(e.context, str) and isinstance(e.question, str) for e in examples)
    assert all(e.is_impossible == (e.answers == []) for e in examples)


def test_wikipedia_and_unknown_names():
    with tfds.testing.mock_data(num_examples=2):
        result = load_tfds("wikipedia/20230601.en", "train")
    assert result.num_examples == 2 and result.labels is None
    assert result.dataset.element_spec == tf.TensorSpec([], tf.string)
    with pytest.raises(ValueError, match="no tfm mapping for tfds dataset 'mnist'"):
        load_tfds("mnist", "train")


def test_hellaswag_multiple_choice():
    records = {
        "context": ["A man sits", "She jumps", "Kids play"],
        "endings": [["on a", "b c", "d", "e"], ["f", "g", "h", "i"], ["j", "a b", "c", "d"]],
        "label": [2, 0, 3],
        "activity_label": ["x"] * 3, "source_id": ["s"] * 3, "split_type": ["indomain"] * 3,
    }

    def as_dataset(self, *args, **kwargs):  # mock_data's random endings vary in number; real HellaSwag has 4
        return tf.data.Dataset.from_tensor_slices(records)

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        result = load_tfds("hellaswag", "validation")
    assert result.num_examples == 3 and result.labels is None
    assert {k: (v.shape.as_list(), v.dtype) for k, v in result.dataset.element_spec.items()} == {
        "context": ([], tf.string), "choices": ([4], tf.string), "label": ([], tf.int32)}
    first = next(result.dataset.as_numpy_iterator())
    assert (first["context"], first["choices"].tolist(), first["label"]) == (b"A man sits", [b"on a", b"b c", b"d", b"e"], 2)
    x, y = next(iter(multiple_choice_dataset(result, WordPieceTokenizer(TOKENIZER_VOCAB), 8, 3)))
    assert x["token_ids"].shape == (3, 4, 8) and y.numpy().tolist() == [2, 0, 3]
    # [CLS] a [UNK] [UNK] [SEP] [UNK] a [SEP]: context "A man sits" with choice "on a" (a is id 5).
    assert x["token_ids"].numpy()[0, 0].tolist() == [2, 5, 1, 1, 3, 1, 5, 3]


def test_swag_through_the_hugging_face_bridge(monkeypatch):
    # tfds has no SWAG builder; it is tfds' "huggingface:swag/regular" (needs the network and `datasets`),
    # so tfds.load is replaced by the records it would yield.
    calls = []
    records = {"sent1": ["Someone opens the hood.", "A dog"], "sent2": ["Then he", ""],
               **{f"ending{k}": [f"end {k}", f"e{k}"] for k in range(4)}, "label": [3, 1],
               "startphrase": ["Someone opens the hood. Then he", "A dog"]}

    class Info:
        splits = {}

    def fake_load(name, **kwargs):
        calls.append(name)
        return tf.data.Dataset.from_tensor_slices(records), Info()

    monkeypatch.setattr(tfds, "load", fake_load)
    result = load_tfds("swag", "train")
    assert calls == ["huggingface:swag/regular"] and result.num_examples == 2
    got = list(result.dataset.as_numpy_iterator())
    assert got[0]["context"] == b"Someone opens the hood." and got[0]["label"] == 3
    assert got[0]["choices"].tolist() == [b"Then he end 0", b"Then he end 1", b"Then he end 2", b"Then he end 3"]
    assert got[1]["choices"].tolist() == [b"e0", b"e1", b"e2", b"e3"]  # empty sent2 leaves no stray space
