"""SpanQA serving: `question`, `context` -> answer text, score and character offsets, all in-graph.

Long contexts are cut into overlapping windows with a doc stride exactly as `tfm.data.squad_features`
does for training and evaluation, every window is scored, and each question takes its best span over its
windows (`tfm.tasks.span_predictions`' rules), so the export answers as the evaluation code does.
"""

import tensorflow as tf

from tfm.export.serving import STRINGS, EncoderModule
from tfm.export.text_ops import byte_to_char_offsets, clean_text

_NEG_INF = float("-inf")


def window_best_spans(start_logits, end_logits, in_context, max_answer_length):
    """Best `(start, end, score)` per window among context spans of at most `max_answer_length` tokens.

    Same candidates and tie-breaking as `tfm.tasks.best_spans` (first maximum in start-major order), but
    over `(W, T, max_answer_length)` (start, length) pairs instead of a `(T, T)` matrix per window.

    Args:
        start_logits, end_logits: float32 `(W, T)`.
        in_context: bool `(W, T)`, positions that may start or end an answer.
        max_answer_length: int.

    Returns:
        int32 starts, int32 ends, float32 scores `(W,)`; score -inf when a window has no context token.
    """
    length = tf.shape(start_logits)[1]
    width = max_answer_length
    pad = lambda x, value: tf.pad(x, [[0, 0], [0, width]], constant_values=value)  # noqa: E731
    ends = tf.stack([pad(end_logits, 0.0)[:, d:d + length] for d in range(width)], axis=-1)  # (W, T, A)
    end_ok = tf.stack([pad(in_context, False)[:, d:d + length] for d in range(width)], axis=-1)
    valid = in_context[..., None] & end_ok
    scores = tf.where(valid, start_logits[..., None] + ends, _NEG_INF)
    flat = tf.reshape(scores, [tf.shape(scores)[0], -1])
    best = tf.argmax(flat, axis=-1, output_type=tf.int32)  # first maximum
    starts = best // width
    return starts, starts + best % width, tf.reduce_max(flat, axis=-1)


class SpanQAModule(EncoderModule):
    """`question`, `context` -> `answer` string, `score` float32, `start`/`end` int32 character offsets.

    Windows are `[CLS] question [SEP] context-slice [SEP]`: questions keep their first `max_query_length`
    tokens, context slices start every `doc_stride` tokens. At most `max_windows` windows are scored per
    question (`max_windows * doc_stride` context tokens; the rest of a longer context is not searched).
    `score` is the start + end logit of the answer; with `allow_no_answer` (SQuAD v2) the answer is ""
    with offsets -1 when the smallest window null score ([CLS] start + end) beats it by more than
    `no_answer_threshold`. An empty context also answers "" (-1, -1). The score of a "" answer is the
    smallest window null score.

    Args:
        doc_stride, max_query_length, max_answer_length, max_windows: ints.
        allow_no_answer: bool. no_answer_threshold: float.
    """

    task_name = "span_qa"

    def __init__(self, task, tokenizer, sequence_length, doc_stride=128, max_query_length=64,
                 max_answer_length=30, max_windows=128, allow_no_answer=False, no_answer_threshold=0.0):
        super().__init__(task, tokenizer, sequence_length)
        if not tokenizer.has_offsets:
            raise ValueError(f"a {tokenizer.kind!r} tokenizer gives no offsets; use WordPiece or SentencePiece")
        if sequence_length - max_query_length - 3 < 1:
            raise ValueError(f"sequence_length={sequence_length} too short for max_query_length={max_query_length}")
        self.doc_stride, self.max_query_length = int(doc_stride), int(max_query_length)
        self.max_answer_length, self.max_windows = int(max_answer_length), int(max_windows)
        self.allow_no_answer, self.no_answer_threshold = bool(allow_no_answer), float(no_answer_threshold)

    def windows(self, question, context):
        """Packed windows of each (question, context) pair, like `squad_features`.

        Returns:
            (x, example, offsets): model inputs `(W, L)`; int32 `(W,)` example of each window; int32
            `(W, L, 2)` byte [begin, end) of context tokens in the cleaned context, -1 elsewhere.
        """
        tok, length = self.tokenizer, self.sequence_length
        questions = tok.tokenize(question)[:, : self.max_query_length]
        ids, begins, ends = tok.tokenize_with_offsets(context)
        n = ids.row_lengths()  # (B,) context tokens
        budget = length - questions.row_lengths() - 3  # (B,) context tokens per window
        stride = tf.constant(self.doc_stride, tf.int64)
        # A window starts every `stride` tokens until one reaches the end (at least one, even if empty).
        extra = tf.maximum(n - budget + stride - 1, 0) // stride
        per_example = tf.minimum(extra + 1, self.max_windows)
        example = tf.repeat(tf.range(tf.size(n, out_type=tf.int64)), per_example)  # (W,)
        window_start = tf.ragged.range(per_example).flat_values * stride
        window_stop = tf.minimum(window_start + tf.gather(budget, example), tf.gather(n, example))
        base = tf.gather(ids.row_splits[:-1], example)
        flat_index = tf.ragged.range(base + window_start, base + window_stop)  # (W, None) into flat tokens

        def take(values):  # the window's slice of per-token values
            return flat_index.with_flat_values(tf.gather(values.flat_values, flat_index.flat_values))

        window_ids = take(ids)
        window_questions = tf.gather(questions, example)
        no_offset = window_questions * 0 - 1  # question tokens have no context offset
        x, (packed_begin, packed_end) = tok.pack_aligned([window_questions, window_ids], length,
                                                         [([no_offset, take(begins)], -1),
                                                          ([no_offset, take(ends)], -1)])
        return x, tf.cast(example, tf.int32), tf.stack([packed_begin, packed_end], axis=-1)

    def answer(self, question, context):
        question, context = clean_text(question), clean_text(context)
        batch = tf.shape(context)[0]
        x, example, offsets = self.windows(question, context)
        outputs = self.model(x, training=False)
        start_logits = tf.cast(outputs["start_logits"], tf.float32)
        end_logits = tf.cast(outputs["end_logits"], tf.float32)
        in_context = offsets[..., 0] >= 0
        starts, ends, scores = window_best_spans(start_logits, end_logits, in_context, self.max_answer_length)
        null = start_logits[:, 0] + end_logits[:, 0]
        # Per question: the first window holding the best span, and the smallest null score.
        best = tf.math.unsorted_segment_max(scores, example, batch)  # -inf: no context token anywhere
        window_index = tf.range(tf.shape(example)[0])
        is_best = tf.equal(scores, tf.gather(best, example)) & tf.reduce_any(in_context, axis=1)
        big = tf.shape(example)[0]
        chosen = tf.math.unsorted_segment_min(tf.where(is_best, window_index, big), example, batch)
        min_null = tf.math.unsorted_segment_min(null, example, batch)
        found = chosen < big
        chosen = tf.minimum(chosen, big - 1)
        if self.allow_no_answer:
            found &= ~(min_null - best > self.no_answer_threshold)
        window_offsets = tf.gather(offsets, chosen)  # (B, L, 2)
        byte_begin = tf.gather(window_offsets[..., 0], tf.gather(starts, chosen), batch_dims=1)
        byte_end = tf.gather(window_offsets[..., 1], tf.gather(ends, chosen), batch_dims=1)
        byte_begin, byte_end = tf.where(found, byte_begin, 0), tf.where(found, byte_end, 0)
        text = tf.strings.substr(context, byte_begin, byte_end - byte_begin)
        char_begin = byte_to_char_offsets(context, byte_begin[:, None])[:, 0]
        char_end = byte_to_char_offsets(context, byte_end[:, None])[:, 0]
        return {
            "answer": tf.where(found, text, ""),
            "score": tf.where(found, best, min_null),
            "start": tf.where(found, char_begin, -1),
            "end": tf.where(found, char_end, -1),
        }

    def signatures(self):
        serve = tf.function(self.answer, input_signature=[STRINGS, STRINGS])
        return {"serving_default": serve.get_concrete_function(), **super().signatures()}

    def metadata(self):
        return {**super().metadata(), "inputs": ["question", "context"], "doc_stride": self.doc_stride,
                "max_query_length": self.max_query_length, "max_answer_length": self.max_answer_length,
                "max_windows": self.max_windows, "allow_no_answer": self.allow_no_answer}
