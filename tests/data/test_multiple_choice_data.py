"""Multiple-choice JSONL reader and batches: exact packing, bad-input errors, and a model that learns from them."""

import json
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfm
from tests.helpers import shared_sentences
from tfm.data import WordPieceTokenizer, multiple_choice_dataset, read_multiple_choice
from tfm.models import BertBackbone
from tfm.tasks import MultipleChoice

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "she", "opened", "the", "hood", "then",  # 0-9
         "examined", "engine", "ate", "it", "a", "dog", "ran", "barked", "sat", "##s", "why", "?"]  # 10-21


def _write(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return path


def test_two_records_pack_to_exact_ids(tmp_path):
    path = _write(tmp_path / "mc.jsonl", [
        {"context": "She opened the hood", "choices": ["then examined the engine", "then ate it"], "label": 0},
        {"context": "A dog ran", "choices": ["it barked", "it sats"], "label": 1},
    ])
    data = read_multiple_choice(path)
    assert (data.num_examples, data.skipped, data.labels) == (2, {}, None)
    assert {k: (v.shape.as_list(), v.dtype) for k, v in data.dataset.element_spec.items()} == {
        "context": ([], tf.string), "choices": ([2], tf.string), "label": ([], tf.int32)}
    x, y = next(iter(multiple_choice_dataset(data, WordPieceTokenizer(VOCAB), sequence_length=10, batch_size=2)))
    # Choice 0 of record 0 has 4 + 4 tokens for a budget of 7: round robin keeps 4 of the context, 3 of the choice.
    assert x["token_ids"].numpy().tolist() == [
        [[2, 5, 6, 7, 8, 3, 9, 10, 7, 3], [2, 5, 6, 7, 8, 3, 9, 12, 13, 3]],
        [[2, 14, 15, 16, 3, 13, 17, 3, 0, 0], [2, 14, 15, 16, 3, 13, 18, 19, 3, 0]],
    ]
    assert x["segment_ids"].numpy().tolist() == [
        [[0, 0, 0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 1, 1, 1, 1]],
        [[0, 0, 0, 0, 0, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 1, 1, 1, 1, 0]],
    ]
    assert x["padding_mask"].numpy().sum(-1).tolist() == [[10, 10], [8, 9]]
    assert y.numpy().tolist() == [0, 1]

    # The batch fits MultipleChoice's inputs: (B, C, T) int32 -> (B, C) logits.
    model = MultipleChoice(BertBackbone(vocabulary_size=22, num_layers=1, num_heads=2, hidden_dim=8,
                                        intermediate_dim=16, max_sequence_length=10), num_choices=2)
    assert tuple(model(x).shape) == (2, 2)


def test_question_field_leads_every_choice_and_static_batch(tmp_path):
    path = _write(tmp_path / "race.jsonl", [
        {"article": "A dog ran", "q": "why?", "options": ["it ate", "she sat"], "answer": 1}])
    data = read_multiple_choice(path, context_field="article", choices_field="options", label_field="answer",
                                question_field="q")
    assert [c.decode() for c in next(iter(data.dataset))["choices"].numpy()] == ["why? it ate", "why? she sat"]
    ds = multiple_choice_dataset(data, WordPieceTokenizer(VOCAB), sequence_length=9, batch_size=1, drop_remainder=True)
    assert ds.element_spec[0]["token_ids"].shape.as_list() == [1, 2, 9]  # static for TPU
    x, _ = next(iter(ds))
    assert x["token_ids"].numpy().tolist() == [[[2, 14, 15, 16, 3, 20, 21, 13, 3], [2, 14, 15, 16, 3, 20, 21, 5, 3]]]


BAD_RECORDS = [
    {"context": "ok", "choices": ["a", "b"], "label": 1},               # 1 fine: sets C = 2
    '{"context": "broken", ',                                           # 2 bad_json
    {"context": "x", "label": 0},                                       # 3 missing_field
    {"context": "x", "choices": ["a", "b"], "label": 2},                # 4 bad_label (out of range)
    {"context": "x", "choices": ["a", "b"], "label": True},             # 5 bad_label (bool)
    {"context": "x", "choices": ["a", "b", "c"], "label": 0},           # 6 wrong_choice_count
    {"context": "x", "choices": ["a", ""], "label": 0},                 # 7 bad_choices
    {"context": 3, "choices": ["a", "b"], "label": 0},                  # 8 missing_field (not a string)
    {"context": "  ", "choices": ["a", "b"], "label": 0},               # 9 empty_text (always skipped)
    "",                                                                 # 10 empty_line
    {"context": "fine too", "choices": ["c", "d"], "label": 0},         # 11 fine
]


@pytest.mark.parametrize("line, message", [
    (2, "invalid JSON"),
    (3, "missing field(s) ['choices']"),
    (4, "'label' must be an int in [0, 2), got 2"),
    (5, "'label' must be an int in [0, 2), got True"),
    (6, "3 choices, but {path}:1 set 2"),
    (7, "'choices' must be a non-empty list of non-empty strings"),
    (8, "'context' must be a string"),
])
def test_bad_records_raise_with_file_and_line(tmp_path, line, message):
    path = _write(tmp_path / "bad.jsonl", BAD_RECORDS[:1] + BAD_RECORDS[line - 1:line])
    with pytest.raises(ValueError, match=re.escape(f"{path}:2: " + message.format(path=path))):
        read_multiple_choice(path)


def test_skip_counts_every_reason(tmp_path):
    path = _write(tmp_path / "bad.jsonl", BAD_RECORDS)
    result = read_multiple_choice(path, on_error="skip")
    assert result.skipped == {"bad_json": 1, "missing_field": 2, "bad_label": 2, "wrong_choice_count": 1,
                              "bad_choices": 1, "empty_text": 1, "empty_line": 1}
    assert result.num_examples == 2
    assert [e["context"].decode() for e in result.dataset.as_numpy_iterator()] == ["ok", "fine too"]
    with pytest.raises(ValueError, match="on_error must be"):
        read_multiple_choice(path, on_error="ignore")


def _language_toy(path, english, chinese, n, rng):
    """Context in English or Chinese; the right choice is in the context's language, the 3 others are not.

    Every (context, choice) sequence is scored on its own, so only a model that sees the context and the
    choice packed together (and labels aligned with choices) can beat chance (0.25).
    """
    records = []
    for i in range(n):
        same, other = (english, chinese) if i % 2 else (chinese, english)
        label = int(rng.integers(4))
        choices = [other[rng.integers(len(other))] for _ in range(3)]
        choices.insert(label, same[rng.integers(len(same))])
        records.append({"context": same[rng.integers(len(same))], "choices": choices, "label": label})
    return _write(path, records)


@pytest.mark.slow
def test_multiple_choice_learns_from_the_pipeline(tmp_path):
    english = shared_sentences("sst2", count=3000)
    chinese = [text[:24] for text in shared_sentences("chnsenticorp", count=3000)]
    rng = np.random.default_rng(0)
    train = read_multiple_choice(_language_toy(tmp_path / "train.jsonl", english[:2500], chinese[:2500], 3000, rng))
    held = read_multiple_choice(_language_toy(tmp_path / "held.jsonl", english[2500:], chinese[2500:], 256, rng))
    tokenizer = WordPieceTokenizer.train(english[:2500] + chinese[:2500], 800)
    data = multiple_choice_dataset(train, tokenizer, 24, 32, shuffle=True, seed=0, drop_remainder=True)
    backbone = BertBackbone(vocabulary_size=tokenizer.vocabulary_size, num_layers=1, num_heads=2, hidden_dim=32,
                            intermediate_dim=64, max_sequence_length=24, dropout=0.0)
    model = MultipleChoice(backbone, num_choices=4, dropout=0.0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit(data.repeat(), steps_per_epoch=50, epochs=10, verbose=0)  # 500 steps
    batches = list(multiple_choice_dataset(held, tokenizer, 24, 64))
    labels = np.concatenate([y.numpy() for _, y in batches])
    predicted = np.concatenate([model.predict_on_batch(x).argmax(-1) for x, _ in batches])
    accuracy = tfm.metrics.accuracy(labels, predicted)
    print(f"held-out multiple-choice accuracy {accuracy:.3f} (chance 0.25)")
    assert len(labels) == 256 and accuracy >= 0.8
