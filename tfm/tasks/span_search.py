"""Answer-span search for `SpanQA`: the one implementation behind `best_spans` / `span_predictions` (evaluation)
and the SavedModel's `SpanQAModule` (serving).

Both functions are TensorFlow and run in-graph (the export) or eagerly on NumPy arrays (evaluation):
`window_spans` finds each window's best context span, `question_spans` picks each question's answer over its
windows (and applies the SQuAD v2 no-answer rule).
"""

import functools

import numpy as np
import tensorflow as tf

_NEG_INF = float("-inf")


def window_spans(start_logits, end_logits, in_context, max_answer_length):
    """Best `(start, end, score)` per window among context spans of at most `max_answer_length` tokens.

    Score = start logit + end logit; candidates satisfy `start <= end <= start + max_answer_length - 1` with
    both ends where `in_context`. Ties go to the first maximum in (start, end) order. The search runs over
    `(W, T, max_answer_length)` (start, length) pairs, not a `(T, T)` matrix per window.

    Args:
        start_logits, end_logits: float32 `(W, T)`.
        in_context: bool `(W, T)`, positions that may start or end an answer.
        max_answer_length: int.

    Returns:
        int32 starts, int32 ends, float32 scores `(W,)`; score -inf (start = end = 0) where a window has no
        candidate.

    Example:
    >>> s, e = tf.constant([[0.0, 1.0, 5.0, 0.0]]), tf.constant([[0.0, 0.0, 1.0, 4.0]])
    >>> [t.numpy().tolist() for t in window_spans(s, e, tf.constant([[True] * 4]), 2)]
    [[2], [3], [9.0]]
    """
    start_logits = tf.convert_to_tensor(start_logits, tf.float32)
    end_logits = tf.convert_to_tensor(end_logits, tf.float32)
    in_context = tf.cast(in_context, tf.bool)
    length = tf.shape(start_logits)[1]
    width = int(max_answer_length)
    pad = lambda x, value: tf.pad(x, [[0, 0], [0, width]], constant_values=value)  # noqa: E731
    ends = tf.stack([pad(end_logits, 0.0)[:, d:d + length] for d in range(width)], axis=-1)  # (W, T, A)
    end_ok = tf.stack([pad(in_context, False)[:, d:d + length] for d in range(width)], axis=-1)
    valid = in_context[..., None] & end_ok
    scores = tf.where(valid, start_logits[..., None] + ends, _NEG_INF)
    flat = tf.reshape(scores, [tf.shape(scores)[0], -1])
    best = tf.argmax(flat, axis=-1, output_type=tf.int32)  # first maximum (0 when all are -inf)
    starts = best // width
    return starts, starts + best % width, tf.reduce_max(flat, axis=-1)


def question_spans(scores, null_scores, example_index, num_examples, allow_no_answer=False,
                   no_answer_threshold=0.0):
    """Each question's answer window: the first window holding its best span score.

    A question without any span candidate has no answer; with `allow_no_answer` (SQuAD v2) neither has one
    whose smallest window null score beats its best span by more than `no_answer_threshold` (BERT's
    `null_score_diff_threshold` rule).

    Args:
        scores: float32 `(W,)` best span score per window (`window_spans`; -inf: no candidate).
        null_scores: float32 `(W,)` [CLS] start + end logit per window.
        example_index: int `(W,)` question of each window.
        num_examples: int or scalar tensor, number of questions.
        allow_no_answer: bool. no_answer_threshold: float.

    Returns:
        (window, found, score): int32 `(Q,)` answer window (0 when not found), bool `(Q,)`, float32 `(Q,)`
        score of the answer (the smallest null score when not found; -inf for a question without windows).
    """
    scores = tf.convert_to_tensor(scores, tf.float32)
    example_index = tf.cast(example_index, tf.int32)
    best = tf.math.unsorted_segment_max(scores, example_index, num_examples)  # -inf: no candidate anywhere
    min_null = tf.math.unsorted_segment_min(tf.cast(null_scores, tf.float32), example_index, num_examples)
    count = tf.shape(scores)[0]
    is_best = tf.equal(scores, tf.gather(best, example_index)) & (scores > _NEG_INF)
    window = tf.math.unsorted_segment_min(tf.where(is_best, tf.range(count), count), example_index, num_examples)
    found = window < count
    if allow_no_answer:
        found &= ~(min_null - best > no_answer_threshold)
    window = tf.where(found, window, 0)
    return window, found, tf.where(found, best, min_null)


def search_windows(start_logits, end_logits, in_context, max_answer_length, chunk=256):
    """`window_spans` eagerly on NumPy arrays, `chunk` windows at a time (bounded memory); NumPy outputs."""
    start_logits = np.asarray(start_logits, np.float32)
    end_logits = np.asarray(end_logits, np.float32)
    in_context = np.asarray(in_context).astype(bool)
    search = _compiled_window_spans(int(max_answer_length))
    parts = [search(start_logits[i:i + chunk], end_logits[i:i + chunk], in_context[i:i + chunk])
             for i in range(0, len(start_logits), chunk)]
    if not parts:
        return np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.float32)
    return tuple(np.concatenate([p[k].numpy() for p in parts]) for k in range(3))


@functools.lru_cache(maxsize=8)
def _compiled_window_spans(max_answer_length):
    """`window_spans` traced once per answer length (any number of windows): ~2x faster than eager."""
    specs = [tf.TensorSpec([None, None], tf.float32)] * 2 + [tf.TensorSpec([None, None], tf.bool)]
    return tf.function(lambda s, e, c: window_spans(s, e, c, max_answer_length), input_signature=specs)
