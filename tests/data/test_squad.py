import json
import math

import numpy as np
import pytest
import tensorflow as tf

from tfm.data import SquadExample, WordPieceTokenizer, read_squad, squad_features

FILLER = " ".join(f"Sentence number {i} talks about nothing in particular." for i in range(40))
PARAGRAPHS = [
    {"context": "The Eiffel Tower was completed in 1889 in Paris, France.",
     "qas": [{"id": "q1", "question": "When was the Eiffel Tower completed?",
              "answers": [{"text": "1889", "answer_start": 34}]},
             {"id": "q2", "question": "Where is the Eiffel Tower?",
              "answers": [{"text": "Paris, France", "answer_start": 42}, {"text": "Paris", "answer_start": 42}]}]},
    {"context": "Zürich liegt am Zürichsee; the café culture there is famous.",
     "qas": [{"id": "q3", "question": "Which lake is Zürich on?",
              "answers": [{"text": "Zürichsee", "answer_start": 16}]},
             {"id": "q4", "question": "Who built the lake?", "answers": [], "is_impossible": True}]},
    {"context": "我爱北京天安门。 Beijing is the capital.",
     "qas": [{"id": "q5", "question": "我爱哪里?", "answers": [{"text": "北京天安门", "answer_start": 2}]}]},
    {"context": FILLER + " The secret code is Rumpelstiltskin. " + FILLER,
     "qas": [{"id": "q6", "question": "What is the secret code?",
              "answers": [{"text": "Rumpelstiltskin", "answer_start": len(FILLER) + 20}]}]},
]


@pytest.fixture(scope="module")
def squad_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("squad") / "dev-v2.0.json"
    path.write_text(json.dumps({"version": "v2.0", "data": [{"title": "t", "paragraphs": PARAGRAPHS}]},
                               ensure_ascii=False, indent=1), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tokenizer():
    texts = [p["context"] for p in PARAGRAPHS] + [q["question"] for p in PARAGRAPHS for q in p["qas"]]
    return WordPieceTokenizer.train(texts * 2, vocabulary_size=400)


def test_read_squad(squad_file):
    examples, skipped = read_squad(squad_file)
    assert skipped == {}
    assert [e.id for e in examples] == ["q1", "q2", "q3", "q4", "q5", "q6"]
    assert examples[1].answers == [("Paris, France", 42), ("Paris", 42)]
    assert examples[3] == SquadExample("q4", "Who built the lake?", PARAGRAPHS[1]["context"], [], True)
    assert examples[5].context[examples[5].answers[0][1]:].startswith("Rumpelstiltskin")


def test_spans_round_trip_exactly(squad_file, tokenizer):
    examples, _ = read_squad(squad_file)
    features = squad_features(examples[:5], tokenizer, sequence_length=64, doc_stride=32, max_query_length=16)
    assert len(features) == 5  # short contexts: one window each
    assert features.example_index.tolist() == [0, 1, 2, 3, 4]
    recovered = [features.answer_text(w, s, e) for w, (s, e) in
                 enumerate(zip(features.start_positions, features.end_positions))]
    assert recovered == ["1889", "Paris, France", "Zürichsee", "", "北京天安门"]
    assert (features.start_positions[3], features.end_positions[3]) == (0, 0)  # impossible → [CLS]
    ids = features.features["token_ids"]
    assert ids.shape == (5, 64) and ids.dtype == np.int32 and (ids[:, 0] == tokenizer.cls_id).all()
    # Question tokens are segment 0, context + final [SEP] segment 1, offsets only on context tokens.
    q_len = len(tokenizer.tokenize(examples[0].question).numpy())
    seg = features.features["segment_ids"][0]
    n = int(features.features["padding_mask"][0].sum())
    assert seg[:q_len + 2].tolist() == [0] * (q_len + 2) and seg[q_len + 2:n].tolist() == [1] * (n - q_len - 2)
    assert (features.token_offsets[0, :q_len + 2] == -1).all() and (features.token_offsets[0, n - 1] == -1).all()
    assert (features.token_offsets[0, q_len + 2:n - 1] >= 0).all()


def test_doc_stride_windows_still_recover_the_answer(squad_file, tokenizer):
    examples, _ = read_squad(squad_file)
    long = examples[5]
    L, stride, max_q = 48, 16, 16
    features = squad_features([long], tokenizer, sequence_length=L, doc_stride=stride, max_query_length=max_q)
    n_context = len(tokenizer.tokenize(long.context).numpy())
    budget = L - len(tokenizer.tokenize(long.question).numpy()) - 3
    assert len(features) == 1 + math.ceil((n_context - budget) / stride)
    with_answer = [w for w in range(len(features)) if features.start_positions[w] > 0]
    assert len(with_answer) >= 2  # overlapping windows: the answer lies in more than one
    for w in range(len(features)):
        s, e = features.start_positions[w], features.end_positions[w]
        if w in with_answer:
            assert features.answer_text(w, s, e) == "Rumpelstiltskin"
        else:
            assert (s, e) == (0, 0)
    # The windows together cover the context: every context token offset appears in some window.
    covered = {tuple(o) for o in features.token_offsets.reshape(-1, 2).tolist() if o[0] >= 0}
    assert len(covered) == n_context


def test_squad_dataset_structure(squad_file, tokenizer):
    examples, _ = read_squad(squad_file)
    features = squad_features(examples, tokenizer, sequence_length=48, doc_stride=16, max_query_length=16)
    ds = features.dataset(batch_size=4, drop_remainder=True)
    x_spec, y_spec = ds.element_spec
    assert {k: (v.shape.as_list(), v.dtype) for k, v in x_spec.items()} == {
        "token_ids": ([4, 48], tf.int32), "segment_ids": ([4, 48], tf.int32), "padding_mask": ([4, 48], tf.int32)}
    assert {k: (v.shape.as_list(), v.dtype) for k, v in y_spec.items()} == {
        "start_positions": ([4], tf.int32), "end_positions": ([4], tf.int32)}
    assert sum(1 for _ in ds) == len(features) // 4


def test_bad_squad_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"data": [\n  {"paragraphs": [}\n]}')
    with pytest.raises(ValueError, match=r"bad\.json:2: invalid JSON"):
        read_squad(bad)
    bad.write_text(json.dumps({"data": [{"paragraphs": [{"context": "x", "qas": [{"id": "a", "answers": []}]}]}]}))
    with pytest.raises(ValueError, match=r"bad\.json: data\[0\]\.paragraphs\[0\]\.qas\[0\]: missing key 'question'"):
        read_squad(bad)
    paragraphs = [{"context": "red blue", "qas": [
        {"id": "a", "question": "q?", "answers": [{"text": "blue", "answer_start": 0}]},
        {"id": "b", "question": "q?", "answers": [{"text": "red", "answer_start": 0}]}]}]
    bad.write_text(json.dumps({"data": [{"paragraphs": paragraphs}]}))
    with pytest.raises(ValueError, match=r"qas\[0\]: answer 'blue' not at context\[0:4\] = 'red '"):
        read_squad(bad)
    examples, skipped = read_squad(bad, on_error="skip")
    assert [e.id for e in examples] == ["b"] and skipped == {"answer_mismatch": 1, "no_valid_answer": 1}
