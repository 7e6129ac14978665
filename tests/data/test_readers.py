import collections
import json

import pytest
import tensorflow as tf

from tests.data_paths import shared_data
from tfm.data import LabelVocabulary, read_classification, read_text_corpus


def _raw_rows(path):
    """Independent count: split the file by hand (header dropped, CRLF stripped)."""
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    return [line.split("\t", 1) for line in lines]


@pytest.mark.parametrize("folder, name", [("sst2", "train.tsv"), ("sst2", "dev.tsv"),
                                          ("chnsenticorp", "train.tsv"), ("chnsenticorp", "dev.tsv")])
def test_read_real_classification_files(folder, name):
    path = shared_data(folder, name)
    result = read_classification(path)
    rows = _raw_rows(path)
    assert result.num_examples == len(rows) and result.skipped == {}
    assert result.labels == LabelVocabulary(["0", "1"])
    assert result.dataset.element_spec == {"text": tf.TensorSpec([], tf.string), "label": tf.TensorSpec([], tf.int32)}
    labels = collections.Counter(int(r[0]) for r in rows)
    seen = collections.Counter()
    first = None
    for example in result.dataset.batch(4096).as_numpy_iterator():
        seen.update(example["label"].tolist())
        first = first if first is not None else example["text"][0].decode()
    assert seen == labels
    assert first == rows[0][1]  # CRLF stripped, text intact


def test_known_real_counts():
    assert read_classification(shared_data("sst2", "train.tsv")).num_examples == 67349
    assert read_classification(shared_data("chnsenticorp", "dev.tsv")).num_examples == 1200


def test_label_vocabulary():
    labels = LabelVocabulary.from_values(["10", "2", "1", "2"])
    assert labels.names == ["1", "2", "10"]  # numeric order, not string order
    assert (labels.id("10"), labels.name(1), len(labels), "2" in labels) == (2, "2", 3, True)
    assert LabelVocabulary.from_json(labels.to_json()) == labels
    assert LabelVocabulary.from_values(["pos", "neg"]).names == ["neg", "pos"]
    with pytest.raises(KeyError, match=r"label 'x' not in label set \['1', '2', '10'\]"):
        labels.id("x")
    with pytest.raises(ValueError, match="duplicate"):
        LabelVocabulary(["a", "a"])


def test_pairs_csv_jsonl_and_headerless(tmp_path):
    (tmp_path / "pairs.csv").write_text('premise,hypothesis,gold\n"a, b",c,entail\nd,"e ""q""",contradict\n')
    result = read_classification(tmp_path / "pairs.csv", text_column="premise", text_pair_column="hypothesis",
                                 label_column="gold")
    got = list(result.dataset.as_numpy_iterator())
    assert [(g["text"], g["text_pair"], g["label"]) for g in got] == [(b"a, b", b"c", 1), (b"d", b'e "q"', 0)]
    assert result.labels.names == ["contradict", "entail"]

    with open(tmp_path / "x.jsonl", "w") as f:
        f.write(json.dumps({"sentence": "good", "label": 1}) + "\n\n" + json.dumps({"sentence": "bad", "label": 0}))
    result = read_classification(tmp_path / "x.jsonl", labels=["0", "1"])
    assert [(g["text"], g["label"]) for g in result.dataset.as_numpy_iterator()] == [(b"good", 1), (b"bad", 0)]
    assert result.skipped == {"empty_line": 1}

    (tmp_path / "nohead.tsv").write_text("pos\tnice one\nneg\tawful\n")
    result = read_classification(tmp_path / "nohead.tsv", header=False, text_column=1, label_column=0,
                                 labels=["neg", "pos"])
    assert [(g["text"], g["label"]) for g in result.dataset.as_numpy_iterator()] == [(b"nice one", 1),
                                                                                   (b"awful", 0)]
    named = read_classification(tmp_path / "nohead.tsv", header=False, column_names=["label", "text"])
    assert named.num_examples == 2 and named.labels.names == ["neg", "pos"]


def test_text_corpus_formats(tmp_path):
    (tmp_path / "lines.txt").write_text("first doc\n\n  \nsecond doc\r\n")
    (tmp_path / "paras.txt").write_text("a b\nc\n\n\nd e\n\nf\n")
    (tmp_path / "docs.jsonl").write_text('{"text": "one"}\n{"text": ""}\n{"body": "x", "text": "two"}\n')
    lines = read_text_corpus(tmp_path / "lines.txt")
    assert list(lines.dataset.as_numpy_iterator()) == [b"first doc", b"second doc"]
    assert (lines.num_examples, lines.skipped) == (2, {"empty_line": 2})
    paras = read_text_corpus(tmp_path / "paras.txt", format="paragraphs")
    assert list(paras.dataset.as_numpy_iterator()) == [b"a b c", b"d e", b"f"]
    docs = read_text_corpus([tmp_path / "docs.jsonl", tmp_path / "lines.txt"])
    assert list(docs.dataset.as_numpy_iterator()) == [b"one", b"two", b"first doc", b"second doc"]
    assert docs.skipped == {"empty_text": 1, "empty_line": 2}
    assert docs.dataset.element_spec == tf.TensorSpec([], tf.string)


# ---------------------------------------------------------------- bad input
def test_non_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_bytes(b"label\tsentence\n1\tfine\n0\tbro\xffken\n1\talso fine\n")
    with pytest.raises(ValueError, match=r"bad\.tsv:3: invalid UTF-8 at byte 5"):
        read_classification(path)
    result = read_classification(path, on_error="skip")
    assert (result.num_examples, result.skipped) == (2, {"invalid_utf8": 1})
    (tmp_path / "bad.txt").write_bytes(b"ok\n\xe4\xb8\n")
    with pytest.raises(ValueError, match=r"bad\.txt:2: invalid UTF-8"):
        read_text_corpus(tmp_path / "bad.txt")


def test_wrong_columns_unknown_labels_and_empty_text(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_text("label\tsentence\n1\tgood\n2\tweird label\n1\n0\t\n1\ttoo\tmany\n0\tbad\n")
    with pytest.raises(ValueError, match=r"c\.tsv:3: label '2' not in label set \['0', '1'\]"):
        read_classification(path, labels=["0", "1"])
    with pytest.raises(ValueError, match=r"c\.tsv:4: expected 2 columns \['label', 'sentence'\], got 1"):
        read_classification(path)
    result = read_classification(path, labels=["0", "1"], on_error="skip")
    assert [(g["text"], g["label"]) for g in result.dataset.as_numpy_iterator()] == [(b"good", 1), (b"bad", 0)]
    assert result.skipped == {"unknown_label": 1, "wrong_column_count": 2, "empty_text": 1}


def test_malformed_json_lines(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "ok"}\n{"text": "unterminated\n[1, 2]\n{"txt": "x"}\n')
    with pytest.raises(ValueError, match=r"d\.jsonl:2: invalid JSON"):
        read_text_corpus(path)
    result = read_text_corpus(path, on_error="skip")
    assert list(result.dataset.as_numpy_iterator()) == [b"ok"]
    assert result.skipped == {"bad_json": 2, "missing_field": 1}
    (tmp_path / "e.jsonl").write_text('{"text": "a", "label": 0}\n' * 3 + '{"txt": "x", "label": 0}\n')
    with pytest.raises(ValueError, match=r"e\.jsonl:4: missing column\(s\) \['text'\]"):
        read_classification(tmp_path / "e.jsonl", text_column="text")


def test_overlong_documents_are_kept_whole(tmp_path):
    long_doc = " ".join(["word"] * 100_000)
    (tmp_path / "long.txt").write_text(long_doc + "\nshort\n")
    result = read_text_corpus(tmp_path / "long.txt")
    docs = list(result.dataset.as_numpy_iterator())
    assert [len(d) for d in docs] == [len(long_doc), 5]  # truncation/chunking is the preprocessors' job


def test_bad_arguments(tmp_path):
    (tmp_path / "x.txt").write_text("a\n")
    with pytest.raises(ValueError, match="on_error must be"):
        read_text_corpus(tmp_path / "x.txt", on_error="ignore")
    with pytest.raises(ValueError, match="pass format="):
        read_classification(tmp_path / "x.txt")
    (tmp_path / "three.tsv").write_text("label\ta\tb\n1\tx\ty\n")
    with pytest.raises(ValueError, match="cannot infer text_column"):
        read_classification(tmp_path / "three.tsv")
