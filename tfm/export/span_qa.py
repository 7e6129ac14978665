"""SpanQA serving: `question`, `context` -> answer text, score and character offsets, all in-graph.

Long contexts are cut into overlapping windows with a doc stride by `tfm.data.squad.squad_windows`, the
routine `tfm.data.squad_features` runs for training and evaluation; every window is scored and each question
takes its best span over its windows with `tfm.tasks.span_search`, the search `tfm.tasks.span_predictions`
runs, so the export answers as the evaluation code does.
"""

import tensorflow as tf

from tfm.data.squad import squad_windows
from tfm.export.serving import STRINGS, EncoderModule
from tfm.export.text_ops import byte_to_char_offsets, clean_text
from tfm.tasks.span_search import question_spans, window_spans

# The export's names for the shared span search (`tfm.tasks.span_search`).
window_best_spans = window_spans


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
        """Packed windows of each (question, context) pair: `squad_windows`, as `squad_features`.

        Returns:
            (x, example, offsets): model inputs `(W, L)`; int32 `(W,)` example of each window; int32
            `(W, L, 2)` byte [begin, end) of context tokens in the cleaned context, -1 elsewhere.
        """
        tok = self.tokenizer
        ids, begins, ends = tok.tokenize_with_offsets(context)
        x, example, _, (packed_begin, packed_end) = squad_windows(
            tok.tokenize(question), ids, [begins, ends], self.sequence_length, self.doc_stride,
            self.max_query_length, tok.cls_id, tok.sep_id, tok.pad_id, max_windows=self.max_windows)
        return x, example, tf.stack([packed_begin, packed_end], axis=-1)

    def answer(self, question, context):
        # The window search indexes the first window, which an empty batch does not have.
        empty = {"answer": tf.zeros([0], tf.string), "score": tf.zeros([0], tf.float32),
                 "start": tf.zeros([0], tf.int32), "end": tf.zeros([0], tf.int32)}
        return tf.cond(tf.size(question) > 0, lambda: self._answer(question, context), lambda: empty)

    def _answer(self, question, context):
        question, context = clean_text(question), clean_text(context)
        x, example, offsets = self.windows(question, context)
        outputs = self.model(x, training=False)
        start_logits = tf.cast(outputs["start_logits"], tf.float32)
        end_logits = tf.cast(outputs["end_logits"], tf.float32)
        starts, ends, scores = window_spans(start_logits, end_logits, offsets[..., 0] >= 0, self.max_answer_length)
        null = start_logits[:, 0] + end_logits[:, 0]
        chosen, found, score = question_spans(scores, null, example, tf.shape(context)[0], self.allow_no_answer,
                                              self.no_answer_threshold)
        window_offsets = tf.gather(offsets, chosen)  # (B, L, 2)
        byte_begin = tf.gather(window_offsets[..., 0], tf.gather(starts, chosen), batch_dims=1)
        byte_end = tf.gather(window_offsets[..., 1], tf.gather(ends, chosen), batch_dims=1)
        byte_begin, byte_end = tf.where(found, byte_begin, 0), tf.where(found, byte_end, 0)
        text = tf.strings.substr(context, byte_begin, byte_end - byte_begin)
        char_begin = byte_to_char_offsets(context, byte_begin[:, None])[:, 0]
        char_end = byte_to_char_offsets(context, byte_end[:, None])[:, 0]
        return {
            "answer": tf.where(found, text, ""),
            "score": score,
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
