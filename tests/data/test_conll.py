import collections

import numpy as np
import pytest
import tensorflow as tf

from tests.data_paths import shared_data
from tfm.data import (
    IGNORE_LABEL,
    WordPieceTokenizer,
    align_word_labels,
    bio_label_order,
    read_conll,
    token_classification_dataset,
)


def independent_counts(path):
    """Sentence count and entity count per type, straight from the text (not via tfm)."""
    sentences, entities, in_sentence = 0, collections.Counter(), False
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("-DOCSTART-"):
            sentences += in_sentence
            in_sentence = False
            continue
        in_sentence = True
        tag = line.split()[-1]
        if tag.startswith("B-"):
            entities[tag[2:]] += 1
    return sentences + in_sentence, entities


def entity_counts(result):
    counts = collections.Counter()
    names = result.labels.names
    for tags in result.dataset.map(lambda x: x["tags"]).ragged_batch(4096):
        counts.update(names[t][2:] for t in tags.flat_values.numpy() if names[t].startswith("B-"))
    return counts


@pytest.mark.parametrize("folder, name, n_sentences", [
    ("conll2003", "train.txt", 14041), ("conll2003", "valid.txt", 3250),
    ("zh_ner", "train.txt", 4636), ("zh_ner", "dev.txt", 1159)])
def test_real_conll_counts(folder, name, n_sentences):
    path = shared_data(folder, name)
    result = read_conll(path)
    expected_sentences, expected_entities = independent_counts(path)
    assert result.num_examples == expected_sentences == n_sentences
    assert entity_counts(result) == expected_entities
    kinds = sorted(expected_entities)
    assert result.labels.names == ["O"] + [f"{p}-{k}" for k in kinds for p in "BI"]
    spec = result.dataset.element_spec
    assert {k: (v.shape.as_list(), v.dtype) for k, v in spec.items()} == {"tokens": ([None], tf.string),
                                                                        "tags": ([None], tf.int32)}
    if name == "train.txt" and folder == "conll2003":
        assert result.skipped == {"docstart": 946}
        first = next(iter(result.dataset))
        assert first["tokens"].numpy().tolist() == [b"EU", b"rejects", b"German", b"call", b"to", b"boycott",
                                                    b"British", b"lamb", b"."]
        assert [result.labels.name(t) for t in first["tags"].numpy()] == [
            "B-ORG", "O", "B-MISC", "O", "O", "O", "B-MISC", "O", "O"]


def test_conll2003_entity_counts_per_type():
    result = read_conll(shared_data("conll2003", "train.txt"))
    _, expected = independent_counts(shared_data("conll2003", "train.txt"))
    assert set(expected) == {"PER", "LOC", "ORG", "MISC"}
    assert entity_counts(result) == expected


def test_bio_label_order():
    assert bio_label_order(["I-PER", "O", "B-LOC", "B-PER", "I-LOC"]) == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


def test_align_word_labels_first_piece_carries_label():
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "new", "york", "##er", "u", ".", "s"]
    tok = WordPieceTokenizer(vocab)
    words = tf.ragged.constant([["New", "Yorker", "U.S.", "\u200b"], ["york"]])  # "\u200b" normalizes to nothing
    tags = tf.ragged.constant([[1, 2, 3, 0], [4]], dtype=tf.int32)
    ids, labels = align_word_labels(tok.tokenize(words), tags, tok.unk_id)
    assert ids.to_list() == [[5, 6, 7, 8, 9, 10, 9, 1], [6]]
    assert labels.to_list() == [[1, 2, -100, 3, -100, -100, -100, 0], [4]]


def test_token_classification_dataset_structure():
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "new", "york", "##er", "is", "big"]
    tok = WordPieceTokenizer(vocab)
    ds = tf.data.Dataset.from_tensor_slices({
        "tokens": tf.ragged.constant([["New", "Yorker", "is", "big"], ["big"] * 10]),
        "tags": tf.ragged.constant([[1, 2, 0, 0], [3] * 10], dtype=tf.int32)})
    dataset = token_classification_dataset(ds, tok, sequence_length=8, batch_size=2)
    x_spec, y_spec, w_spec = dataset.element_spec
    assert {k: v.shape.as_list() for k, v in x_spec.items()} == {
        "token_ids": [None, 8], "segment_ids": [None, 8], "padding_mask": [None, 8]}
    assert (y_spec.shape.as_list(), y_spec.dtype, w_spec.shape.as_list(), w_spec.dtype) == (
        [None, 8], tf.int32, [None, 8], tf.float32)
    x, y, w = next(iter(dataset))
    assert x["token_ids"].numpy().tolist() == [[2, 5, 6, 7, 8, 9, 3, 0], [2, 9, 9, 9, 9, 9, 9, 3]]
    assert x["padding_mask"].numpy().tolist() == [[1] * 7 + [0], [1] * 8]
    assert x["segment_ids"].numpy().tolist() == [[0] * 8] * 2
    assert y.numpy().tolist() == [[-100, 1, 2, -100, 0, 0, -100, -100], [-100, 3, 3, 3, 3, 3, 3, -100]]
    np.testing.assert_array_equal(w.numpy(), (y.numpy() != IGNORE_LABEL).astype("float32"))


def test_real_token_classification_keeps_every_entity():
    path = shared_data("conll2003", "valid.txt")
    result = read_conll(path)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "☃"]
    tok = WordPieceTokenizer(vocab)  # every word → [UNK]: one piece per word, so nothing is truncated at 128
    b_ids = {i for i, n in enumerate(result.labels.names) if n.startswith("B-")}
    found = 0
    for _, y, w in token_classification_dataset(result, tok, sequence_length=128, batch_size=512):
        found += int(np.isin(y.numpy(), list(b_ids)).sum())
    assert found == sum(independent_counts(path)[1].values())


# ---------------------------------------------------------------- bad input
def test_malformed_conll_names_file_and_line(tmp_path):
    path = tmp_path / "ner.txt"
    path.write_text("EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nGerman JJ B-MISC\nok NN B-NP O\n\nfine NN B-NP O\n")
    with pytest.raises(ValueError, match=r"ner\.txt:4: expected 'token \.\.\. tag' with 4 columns, got "
                                         r"'German JJ B-MISC'"):
        read_conll(path)
    result = read_conll(path, on_error="skip")
    assert result.num_examples == 2 and result.skipped == {"malformed_line": 1, "skipped_sentences": 1}
    assert [x["tokens"].tolist() for x in result.dataset.as_numpy_iterator()] == [[b"EU", b"rejects"], [b"fine"]]
    (tmp_path / "single.txt").write_text("token\n")
    with pytest.raises(ValueError, match=r"single\.txt:1: expected 'token \.\.\. tag'"):
        read_conll(tmp_path / "single.txt")


def test_unknown_tag_and_non_utf8(tmp_path):
    path = tmp_path / "zh.txt"
    path.write_text("北 B-LOC\n京 I-LOC\n\n人 B-XYZ\n")
    with pytest.raises(ValueError, match=r"zh\.txt:4: tag 'B-XYZ' not in label set"):
        read_conll(path, labels=["O", "B-LOC", "I-LOC"])
    result = read_conll(path, labels=["O", "B-LOC", "I-LOC"], on_error="skip")
    assert result.num_examples == 1 and result.skipped == {"unknown_label": 1, "skipped_sentences": 1}
    path.write_bytes("北 B-LOC\n".encode() + b"\xff O\n")
    with pytest.raises(ValueError, match=r"zh\.txt:2: invalid UTF-8"):
        read_conll(path)


def test_empty_conll_file(tmp_path):
    (tmp_path / "e.txt").write_text("-DOCSTART- -X- -X- O\n\n\n")
    result = read_conll(tmp_path / "e.txt", labels=["O"])
    assert result.num_examples == 0 and list(result.dataset) == [] and result.skipped == {"docstart": 1}
