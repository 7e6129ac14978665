"""Entity chunks from tag sequences with seqeval's default (conlleval) rules: the one chunk decoder of tfm.

`chunk_spans` runs eagerly for evaluation (`tfm.metrics.get_entities` / `entity_scores`, which encode tag
strings as prefix codes and type ids) and in-graph in the token classifier export
(`tfm.export.entities.TokenClassifierModule`), so evaluation and serving find the same entities.
"""

import tensorflow as tf

from tfm.tasks.tagging import B, DOT, E, I, O, S, parse_tags  # noqa: F401  (parse_tags: the example)

_ROW_START_TYPE = -2  # the type before a row's first tag: equal to no tag's type


def _any_of(codes, *values):
    return tf.reduce_any(tf.stack([tf.equal(codes, v) for v in values]), axis=0)


def chunk_boundaries(prev_prefix, prev_type, prefix, type_id):
    """seqeval's `start_of_chunk` / `end_of_chunk` for tag pairs (previous, current), elementwise.

    Args:
        prev_prefix, prefix: int prefix codes (`O`, `B`, `I`, `E`, `S`, `DOT`, `OTHER`).
        prev_type, type_id: int type ids (equal ids = equal types).

    Returns:
        (starts, ends): bool; `starts` = a chunk starts at the current tag, `ends` = a chunk ended at the
        previous tag.
    """
    ends = (_any_of(prev_prefix, E, S) | (_any_of(prev_prefix, B, I) & _any_of(prefix, B, S, O))
            | (~_any_of(prev_prefix, O, DOT) & (prev_type != type_id)))
    starts = (_any_of(prefix, B, S) | (_any_of(prev_prefix, E, S, O) & _any_of(prefix, E, I))
              | (~_any_of(prefix, O, DOT) & (prev_type != type_id)))
    return starts, ends


def chunk_spans(prefixes, type_ids, row_ids, outside_type=-1):
    """Entity chunks of tag sequences given flat over rows, with seqeval's default (conlleval) rules.

    Each row is read as seqeval reads one sentence: it starts after an `O` of a type no tag has and ends
    with an `O` of type `outside_type` (seqeval appends the tag "O"). A chunk runs from the latest chunk
    start up to the tag before a chunk end, and takes the type of its last tag.

    Args:
        prefixes: int32 `(N,)` prefix codes.
        type_ids: int32 `(N,)` type ids (>= -1).
        row_ids: int `(N,)` row of each tag, non-decreasing (e.g. a RaggedTensor's `value_rowids()`).
        outside_type: int, the type id of the tag "O" (-1 with `parse_tags`).

    Returns:
        (first, last): int64 `(C,)` flat indices of each chunk's first and last (inclusive) tag, in order.

    Example:
    >>> prefixes, types, _ = parse_tags(["O", "B-PER", "I-PER", "B-LOC"])  # tags 0..3 -> codes
    >>> tags = [1, 2, 0, 2, 3]  # B-PER I-PER O I-PER B-LOC
    >>> first, last = chunk_spans(tf.gather(prefixes, tags), tf.gather(types, tags), [0, 0, 0, 0, 1])
    >>> first.numpy().tolist(), last.numpy().tolist()
    ([0, 3, 4], [1, 3, 4])
    """
    prefixes = tf.cast(prefixes, tf.int32)
    type_ids = tf.cast(type_ids, tf.int32)
    row_ids = tf.cast(row_ids, tf.int64)
    count = tf.size(row_ids, out_type=tf.int64)
    index = tf.range(count)
    row_first = tf.not_equal(row_ids, tf.roll(row_ids, 1, 0)) | tf.equal(index, 0)
    row_last = tf.not_equal(row_ids, tf.roll(row_ids, -1, 0)) | tf.equal(index, count - 1)
    prev_prefix = tf.where(row_first, O, tf.roll(prefixes, 1, 0))
    prev_type = tf.where(row_first, _ROW_START_TYPE, tf.roll(type_ids, 1, 0))
    next_prefix = tf.where(row_last, O, tf.roll(prefixes, -1, 0))
    next_type = tf.where(row_last, outside_type, tf.roll(type_ids, -1, 0))
    starts, _ = chunk_boundaries(prev_prefix, prev_type, prefixes, type_ids)
    _, ends_here = chunk_boundaries(prefixes, type_ids, next_prefix, next_type)  # a chunk ends at this tag
    last = tf.where(ends_here)[:, 0]
    # The chunk's first tag is the latest start at or before its last one within the row, else the row's
    # first tag (a chunk can end without a start of its own after ill-formed tags, as in seqeval).
    start_positions = tf.concat([tf.constant([-1], tf.int64), tf.where(starts)[:, 0]], axis=0)
    latest_start = tf.gather(start_positions, tf.gather(tf.cumsum(tf.cast(starts, tf.int64)), last))
    row_number = tf.cumsum(tf.cast(row_first, tf.int64)) - 1
    row_start = tf.gather(tf.where(row_first)[:, 0], tf.gather(row_number, last))
    return tf.maximum(latest_start, row_start), last
