import numpy as np
import pytest
import tensorflow as tf

from tfm.data import (
    WordPieceTokenizer,
    causal_lm_split,
    chunk_stream,
    classification_dataset,
    clm_dataset,
    default_max_predictions,
    mask_tokens,
    mlm_dataset,
    pack_segments,
)

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c", "d", "e", "f", "##x", "##y"]


@pytest.fixture(scope="module")
def tiny():
    return WordPieceTokenizer(VOCAB)


# ---------------------------------------------------------------- packing
def test_pack_one_segment():
    out = pack_segments([tf.ragged.constant([[5, 6, 7], [8]])], 6, cls_id=2, sep_id=3, pad_id=0)
    assert sorted(out) == ["padding_mask", "segment_ids", "token_ids"]
    assert out["token_ids"].numpy().tolist() == [[2, 5, 6, 7, 3, 0], [2, 8, 3, 0, 0, 0]]
    assert out["segment_ids"].numpy().tolist() == [[0] * 6] * 2
    assert out["padding_mask"].numpy().tolist() == [[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]]
    assert all(v.dtype == tf.int32 and v.shape.as_list() == [2, 6] for v in out.values())


@pytest.mark.parametrize("truncate, expected", [
    ("round_robin", [[2, 5, 6, 7, 3, 9, 10, 3], [2, 5, 6, 7, 8, 3, 20, 3]]),
    ("longest_first", [[2, 5, 6, 3, 9, 10, 11, 3], [2, 5, 6, 7, 8, 3, 20, 3]]),
])
def test_pack_pairs_truncation(truncate, expected):
    a = tf.ragged.constant([[5, 6, 7, 8], list(range(5, 15))])
    b = tf.ragged.constant([[9, 10, 11, 12], [20]])
    out = pack_segments([a, b], 8, 2, 3, 0, truncate)
    assert out["token_ids"].numpy().tolist() == expected
    first_sep = [row.index(3) for row in expected]
    assert out["segment_ids"].numpy().tolist() == [[0] * (i + 1) + [1] * (7 - i) for i in first_sep]
    assert out["padding_mask"].numpy().tolist() == [[1] * 8] * 2


def test_pack_aligned_values_and_errors():
    ids = tf.ragged.constant([[5, 6, 7, 8, 9]])
    flags = tf.ragged.constant([[1, 0, 1, 1, 0]])
    out, (packed,) = pack_segments([ids], 5, 2, 3, 0, aligned=[([flags], 1)])
    assert out["token_ids"].numpy().tolist() == [[2, 5, 6, 7, 3]]
    assert packed.numpy().tolist() == [[1, 1, 0, 1, 1]]
    with pytest.raises(ValueError, match="truncate must be one of"):
        pack_segments([ids], 8, 2, 3, 0, "middle_out")
    with pytest.raises(ValueError, match="leaves no room"):
        pack_segments([ids, ids], 4, 2, 3, 0)


def test_overlong_document_is_truncated(tiny):
    x, _ = next(iter(classification_dataset(
        tf.data.Dataset.from_tensor_slices({"text": ["a b " * 50_000], "label": [1]}), tiny, 16, 1)))
    assert x["token_ids"].numpy().tolist() == [[2] + [5, 6] * 7 + [3]]


# ---------------------------------------------------------------- MLM masking
def _mask_real(wordpiece, sentences, whole_word, sequence_length=64, seed=7):
    ids = wordpiece.tokenize(sentences)
    starts = [wordpiece.word_starts(ids)] if whole_word else None
    packed = pack_segments([ids], sequence_length, 2, 3, 0, aligned=[(starts, 1)] if whole_word else None)
    x, flags = (packed[0], packed[1][0]) if whole_word else (packed, None)
    out = mask_tokens(x["token_ids"], vocabulary_size=wordpiece.vocabulary_size, mask_id=4,
                      special_ids=wordpiece.special_ids, max_predictions=default_max_predictions(sequence_length),
                      word_starts=flags, seed=seed)
    return x, flags, [t.numpy() for t in out]


def test_mlm_masking_statistics(wordpiece, english_train, english_dev):
    sentences = (english_train + english_dev) * 9  # 7.2k shipped sentences, ≈ 90k candidate tokens
    x, _, (masked, positions, mask_ids, weights) = _mask_real(wordpiece, sentences, whole_word=False)
    original = x["token_ids"].numpy()
    special = np.isin(original, wordpiece.special_ids)
    n_candidates = int((~special).sum())
    n_selected = int(weights.sum())
    assert abs(n_selected / n_candidates - 0.15) < 0.01
    rows, cols = np.nonzero(weights)
    picked = positions[rows, cols]
    assert not special[rows, picked].any()  # never [CLS]/[SEP]/[PAD]/[UNK]
    np.testing.assert_array_equal(mask_ids[rows, cols], original[rows, picked])
    now = masked[rows, picked]
    as_mask = np.mean(now == 4)
    kept = np.mean(now == original[rows, picked])
    assert abs(as_mask - 0.8) < 0.02 and abs(kept - 0.1) < 0.02 and abs(1 - as_mask - kept - 0.1) < 0.02
    assert not np.isin(now[(now != 4) & (now != original[rows, picked])], wordpiece.special_ids).any()
    # Everything not selected is untouched; padding slots are (position 0, id 0, weight 0).
    untouched = np.ones_like(original, bool)
    untouched[rows, picked] = False
    np.testing.assert_array_equal(masked[untouched], original[untouched])
    assert (positions[weights == 0] == 0).all() and (mask_ids[weights == 0] == 0).all()
    # Selected positions are listed in increasing order, before the padding slots.
    for r in range(0, len(sentences), 97):
        k = int(weights[r].sum())
        assert weights[r, :k].all() and list(positions[r, :k]) == sorted(set(positions[r, :k]))


def test_whole_word_masking_keeps_words_whole(wordpiece, english_train):
    x, flags, (masked, positions, _, weights) = _mask_real(wordpiece, english_train * 4, whole_word=True)
    flags, original = flags.numpy(), x["token_ids"].numpy()
    selected = np.zeros_like(original, bool)
    rows, cols = np.nonzero(weights)
    selected[rows, positions[rows, cols]] = True
    split_words = multi_piece_selected = 0
    for r in range(len(original)):
        word = np.cumsum(flags[r])  # same number = same word
        for w in np.unique(word[selected[r]]):
            members = selected[r][word == w]
            split_words += int(not members.all())
            multi_piece_selected += int(len(members) > 1)
    assert split_words == 0 and multi_piece_selected > 50
    candidates = ~np.isin(original, wordpiece.special_ids)
    assert abs(selected.sum() / candidates.sum() - 0.15) < 0.01


def test_masking_cap_keeps_whole_words():
    # One row of 3-piece words: "[CLS] a ##x ##y (x5) [SEP]"; rate 1.0 selects all; cap 7 fits two words.
    row = [2] + [5, 11, 12] * 5 + [3]
    ids = tf.constant([row])
    starts = tf.constant([[1] + [1, 0, 0] * 5 + [1]])
    masked, positions, mask_ids, weights = mask_tokens(
        ids, vocabulary_size=13, mask_id=4, special_ids=[0, 1, 2, 3, 4], max_predictions=7, mask_rate=1.0,
        mask_token_rate=1.0, random_token_rate=0.0, word_starts=starts, seed=3)
    k = int(weights.numpy().sum())
    assert k == 6  # two whole words; a third would need 9 slots
    picked = positions.numpy()[0, :k]
    words = {(p - 1) // 3 for p in picked}
    assert len(words) == 2 and set(picked) == {3 * w + 1 + i for w in words for i in range(3)}
    assert (masked.numpy()[0, picked] == 4).all() and mask_ids.numpy()[0, :k].tolist() == [row[p] for p in picked]
    with pytest.raises(ValueError, match="max_predictions"):
        mask_tokens(ids, vocabulary_size=13, mask_id=4, special_ids=[0], max_predictions=99)


def test_mlm_dataset_structure(tiny):
    ds = mlm_dataset(["a b c d e f", "ax by", "c"] * 4, tiny, sequence_length=12, batch_size=4,
                     max_predictions=3, drop_remainder=True, seed=1)
    x_spec, y_spec, w_spec = ds.element_spec
    assert {k: (v.shape.as_list(), v.dtype) for k, v in x_spec.items()} == {
        "token_ids": ([4, 12], tf.int32), "segment_ids": ([4, 12], tf.int32), "padding_mask": ([4, 12], tf.int32),
        "mask_positions": ([4, 3], tf.int32)}
    assert (y_spec.shape.as_list(), y_spec.dtype, w_spec.shape.as_list(), w_spec.dtype) == (
        [4, 3], tf.int32, [4, 3], tf.float32)
    batches = list(ds)
    assert len(batches) == 3
    x, y, w = batches[0]
    assert x["padding_mask"].numpy().sum(1).tolist() == [8, 6, 3, 8]
    assert default_max_predictions(128) == 27 and default_max_predictions(512) == 93


def test_mlm_next_sentence_pairs(tiny):
    lines = [f"{a} {b}" for a in "abcdef" for b in "abcdef"] * 40  # 1440 texts
    ds = mlm_dataset(lines, tiny, sequence_length=12, batch_size=64, next_sentence=True, seed=5)
    x_spec, y_spec, w_spec = ds.element_spec
    assert sorted(y_spec) == ["mask_ids", "next_sentence_label"] and sorted(w_spec) == sorted(y_spec)
    labels, pairs = [], 0
    for x, y, w in ds:
        labels.extend(y["next_sentence_label"].numpy().tolist())
        np.testing.assert_array_equal(w["next_sentence_label"].numpy(), 1.0)
        seg = x["segment_ids"].numpy()
        assert (seg.sum(1) == 3).all()  # "c d [SEP]" is segment 1
        pairs += len(seg)
    assert pairs == 720 and abs(np.mean(labels) - 0.5) < 0.06


# ---------------------------------------------------------------- causal LM
def test_chunk_stream_is_exact():
    parts = tf.data.Dataset.from_tensor_slices(tf.ragged.constant([[1, 2, 3], [4, 5], [6, 7, 8, 9, 10], [11]]))
    rows = [r.tolist() for r in chunk_stream(parts.map(lambda r: tf.cast(r, tf.int32)), 4).as_numpy_iterator()]
    assert rows == [[1, 2, 3, 4], [5, 6, 7, 8]]  # 9, 10, 11 left over: dropped, never padded
    x, y, w = causal_lm_split(tf.constant([[1, 2, 3, 4]]))
    assert x["token_ids"].numpy().tolist() == [[1, 2, 3]] and y.numpy().tolist() == [[2, 3, 4]]
    assert x["padding_mask"].numpy().tolist() == [[1, 1, 1]] and w.numpy().tolist() == [[1.0, 1.0, 1.0]]


def test_clm_dataset_packs_documents_with_end_token(tiny):
    docs = ["a b c", "d e", "f a b c d e f", "a"] * 3
    ds = clm_dataset(docs, tiny, sequence_length=5, batch_size=2, documents_per_step=3)
    x_spec, y_spec, w_spec = ds.element_spec
    assert x_spec["token_ids"].shape.as_list() == [2, 5] and y_spec.shape.as_list() == [2, 5]
    stream = [5, 6, 7, 3, 8, 9, 3, 10, 5, 6, 7, 8, 9, 10, 3, 5, 3] * 3  # 51 tokens → 8 rows of 6
    rows = [stream[i:i + 6] for i in range(0, 48, 6)]
    got = [(x["token_ids"].numpy().tolist(), y.numpy().tolist()) for x, y, _ in ds]
    assert got == [([r[:-1] for r in rows[i:i + 2]], [r[1:] for r in rows[i:i + 2]]) for i in range(0, 8, 2)]
    assert all(x["padding_mask"].numpy().all() and w.numpy().all() for x, _, w in ds)
    long = clm_dataset(["a " * 1000], tiny, sequence_length=99, batch_size=1)
    assert len(list(long)) == 10  # 1001 tokens → 10 full rows of 100, no padding anywhere
