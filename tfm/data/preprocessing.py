"""Batched in-graph preprocessors: BERT segment packing, MLM dynamic masking, causal-LM chunking.

All functions take and return tensors for a whole batch, so they run inside `dataset.map` after
`dataset.batch` with no Python per example.
"""

import tensorflow as tf
import tensorflow_text as tf_text

TRUNCATIONS = ("round_robin", "longest_first")


def pack_segments(segments, sequence_length, cls_id, sep_id, pad_id, truncate="round_robin", aligned=None):
    """Pack one or more segments as `[CLS] a [SEP] b [SEP]`, truncated and padded to `sequence_length`.

    Args:
        segments: list of RaggedTensor int `(batch, None)` token ids.
        sequence_length: int, output length (including the special tokens).
        cls_id, sep_id, pad_id: ints.
        truncate: "round_robin" (take tokens from each segment in turn) or "longest_first" (shorten the
            longest segment first).
        aligned: optional list of `(segments_like, fill)` pairs: per-token values aligned with `segments`
            (e.g. word-start flags or labels) that are truncated and packed the same way, with `fill`
            at [CLS]/[SEP]/padding positions.

    Returns:
        dict `{"token_ids", "segment_ids", "padding_mask"}` of int32 `(batch, sequence_length)` tensors,
        plus a list with the packed `aligned` tensors when `aligned` is given.
    """
    if truncate not in TRUNCATIONS:
        raise ValueError(f"truncate must be one of {TRUNCATIONS}, got {truncate!r}")
    budget = sequence_length - len(segments) - 1
    if budget < len(segments):
        raise ValueError(f"sequence_length={sequence_length} leaves no room for {len(segments)} segment(s)")
    segments = [tf.cast(s, tf.int32) for s in segments]
    batch = segments[0].shape[0]  # static under drop_remainder=True: keep it static (TPU)
    trimmer_cls = tf_text.RoundRobinTrimmer if truncate == "round_robin" else tf_text.ShrinkLongestTrimmer
    trimmer = trimmer_cls(max_seq_length=budget)
    token_ids, segment_ids = tf_text.combine_segments(trimmer.trim(segments), cls_id, sep_id)
    token_ids, padding_mask = tf_text.pad_model_inputs(token_ids, sequence_length, pad_value=pad_id)
    segment_ids, _ = tf_text.pad_model_inputs(tf.cast(segment_ids, tf.int32), sequence_length)
    out = {
        "token_ids": _fix(token_ids, batch, sequence_length),
        "segment_ids": _fix(segment_ids, batch, sequence_length),
        "padding_mask": _fix(tf.cast(padding_mask, tf.int32), batch, sequence_length),
    }
    if aligned is None:
        return out
    packed = []
    for values, fill in aligned:
        # The trimmers only look at lengths, so the same trimmer cuts aligned values identically.
        values, _ = tf_text.combine_segments(trimmer.trim([tf.cast(v, tf.int32) for v in values]), fill, fill)
        values, _ = tf_text.pad_model_inputs(values, sequence_length, pad_value=fill)
        packed.append(_fix(values, batch, sequence_length))
    return out, packed


def _fix(tensor, batch, length):
    tensor = tf.cast(tensor, tf.int32)
    tensor.set_shape([batch, length])
    return tensor


def mask_tokens(token_ids, *, vocabulary_size, mask_id, special_ids, max_predictions, mask_rate=0.15,
                mask_token_rate=0.8, random_token_rate=0.1, word_starts=None, random_token_min_id=None,
                seed=None, stateless_seed=None):
    """Dynamic MLM masking of a packed batch (BERT recipe: 15% selected, of those 80/10/10).

    Each candidate (not a special id) is selected independently with probability `mask_rate` (whole
    words when `word_starts` is given: a word's tokens share one draw), so the expected selection rate
    is exactly `mask_rate`. When more than `max_predictions` are selected, a random subset of whole
    units is kept. Selected tokens become [MASK] (`mask_token_rate`), a random non-special token
    (`random_token_rate`), or stay unchanged (the rest).

    Args:
        token_ids: int32 `(batch, length)` packed ids.
        vocabulary_size: int, random replacements are drawn from [random_token_min_id, vocabulary_size).
        mask_id: int id of [MASK].
        special_ids: list of ints never selected ([CLS], [SEP], [PAD], ...).
        max_predictions: int, fixed number of predicted positions per sequence (rest are padding).
        mask_rate, mask_token_rate, random_token_rate: floats.
        word_starts: optional int/bool `(batch, length)`, 1 where a token starts a word (whole-word masking).
        random_token_min_id: int, default `max(special_ids) + 1` (keeps replacements non-special).
        seed: optional int for `tf.random` op seeds (determinism in tests).
        stateless_seed: optional int64 `(2,)` tensor; when given, draws use stateless random ops, so the
            masks depend only on this seed (reproducible under parallel `map` and after a resume).

    Returns:
        (masked_token_ids, mask_positions, mask_ids, mask_weights): int32 `(batch, length)`, int32
        `(batch, max_predictions)` sorted positions (0 for padding), int32 original ids there, float32
        1.0 for real predictions / 0.0 for padding.
    """
    token_ids = tf.convert_to_tensor(token_ids, tf.int32)
    length = token_ids.shape[1]
    if length is None or max_predictions > length:
        raise ValueError(f"need a static sequence length >= max_predictions={max_predictions}, got {length}")
    shape = tf.shape(token_ids)
    candidate = tf.reduce_all(tf.not_equal(token_ids[..., None], tf.constant(list(special_ids), tf.int32)), -1)
    def uniform(k, maxval=1.0, dtype=tf.float32, minval=0):
        if stateless_seed is not None:
            op_seed = tf.cast(stateless_seed, tf.int64) + tf.constant([0, 1_000_003], tf.int64) * k
            return tf.random.stateless_uniform(shape, op_seed, minval, maxval, dtype=dtype)
        return tf.random.uniform(shape, minval, maxval, dtype=dtype, seed=None if seed is None else seed + k)

    draws = uniform(0)
    if word_starts is not None:
        # Every token takes the draw of its word's first token (special tokens count as their own word).
        starts = tf.logical_or(tf.cast(word_starts, tf.bool), tf.logical_not(candidate))
        word_index = tf.maximum(tf.math.cumsum(tf.cast(starts, tf.int32), axis=1) - 1, 0)
        word_draws = tf.ragged.boolean_mask(draws, starts).to_tensor(default_value=1.0, shape=shape)
        draws = tf.gather(word_draws, word_index, batch_dims=1)
    scores = tf.where(candidate & (draws < mask_rate), draws, 2.0)  # lower = kept first under the cap
    selected = scores < 2.0
    # Cap at max_predictions: keep scores below the k-th smallest, plus the unit at that score only when
    # all of its tokens fit (so whole words are never split).
    kth = -tf.math.top_k(-scores, k=max_predictions).values[:, -1:]
    below = scores < kth
    at = tf.equal(scores, kth) & selected
    fits = tf.reduce_sum(tf.cast(below | at, tf.int32), 1, keepdims=True) <= max_predictions
    selected = selected & (below | (at & fits))

    action = uniform(1)
    low = max(special_ids) + 1 if random_token_min_id is None else random_token_min_id
    random_ids = uniform(2, vocabulary_size, tf.int32, low)
    replaced = tf.where(action < mask_token_rate, mask_id, token_ids)
    replaced = tf.where((action >= mask_token_rate) & (action < mask_token_rate + random_token_rate),
                        random_ids, replaced)
    masked = tf.where(selected, replaced, token_ids)

    # Densify: the selected positions in increasing order, then padding slots (key >= length).
    order_key = tf.where(selected, 0, length) + tf.range(length)[tf.newaxis]
    keys = -tf.math.top_k(-order_key, k=max_predictions).values
    valid = keys < length
    mask_positions = tf.where(valid, keys, 0)
    mask_ids = tf.where(valid, tf.gather(token_ids, mask_positions, batch_dims=1), 0)
    return masked, mask_positions, mask_ids, tf.cast(valid, tf.float32)


def chunk_stream(token_batches, chunk_length):
    """Concatenate a dataset of 1-D token tensors and cut it into rows of exactly `chunk_length`.

    The tail shorter than `chunk_length` is dropped (no padding anywhere).

    Args:
        token_batches: tf.data.Dataset of int32 `(None,)` tensors (e.g. a batch of documents, flattened).
        chunk_length: int.

    Returns:
        tf.data.Dataset of int32 `(chunk_length,)` rows.
    """
    def step(carry, tokens):
        stream = tf.concat([carry, tokens], 0)
        n_rows = tf.shape(stream)[0] // chunk_length
        rows = tf.reshape(stream[: n_rows * chunk_length], [n_rows, chunk_length])
        return stream[n_rows * chunk_length:], rows

    return token_batches.scan(tf.zeros([0], tf.int32), step).unbatch()


def causal_lm_split(chunks):
    """`(batch, T + 1)` chunks → `({"token_ids", "padding_mask"}, labels, sample_weight)` of length T.

    Args:
        chunks: int32 `(batch, T + 1)`.
    """
    x = {"token_ids": chunks[:, :-1], "padding_mask": tf.ones_like(chunks[:, :-1])}
    return x, chunks[:, 1:], tf.ones_like(chunks[:, 1:], tf.float32)
