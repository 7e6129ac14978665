"""SQuAD v1.1 / v2.0: read JSON, turn character answer spans into token windows (doc stride) and back.

Windows come from `squad_windows`, batched TensorFlow ops shared with the SpanQA export (so evaluation and
serving cut contexts identically); the per-token character offsets are kept so predicted token spans map back
to context text.
"""

import dataclasses
import json

import numpy as np
import tensorflow as tf

from tfm.data.preprocessing import pack_segments
from tfm.data.readers import invalid_utf8_message
from tfm.errors import InputError


@dataclasses.dataclass
class SquadExample:
    """One question. `answers` is a list of (text, char_start) pairs; empty when `is_impossible`."""

    id: str
    question: str
    context: str
    answers: list
    is_impossible: bool = False


def read_squad(path, on_error="raise"):
    """Read a SQuAD v1.1 / v2.0 JSON file into a list of SquadExample.

    Args:
        path: the JSON file.
        on_error: "raise" or "skip" for answers whose `answer_start` does not point at their text.
            Structural problems (invalid UTF-8 or JSON, missing keys) always raise `InputError`, naming the
            file and the line or place.

    Returns:
        (examples, skipped): list of SquadExample, dict reason → count.
    """
    with open(path, "rb") as f:
        raw = f.read().removeprefix(b"\xef\xbb\xbf")  # UTF-8 BOM
    if not raw.strip():  # not JSON at all; say so plainly rather than "Expecting value"
        raise InputError(f"{path}: has no examples (the file is empty)")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        start = raw.rfind(b"\n", 0, e.start) + 1  # the bad line, so the message reads like the line readers'
        end = raw.find(b"\n", e.start)
        line = raw[start:end if end >= 0 else len(raw)]
        in_line = UnicodeDecodeError(e.encoding, line, e.start - start, e.end - start, e.reason)
        line_no = raw.count(b"\n", 0, e.start) + 1
        raise InputError(f"{path}:{line_no}: {invalid_utf8_message(line, in_line)}") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path}:{e.lineno}: invalid JSON: {e.msg} (column {e.colno})") from None
    examples, skipped = [], {}
    for i, article in enumerate(_get(data, "data", path, "")):
        for j, paragraph in enumerate(_get(article, "paragraphs", path, f"data[{i}]")):
            where = f"data[{i}].paragraphs[{j}]"
            context = _get(paragraph, "context", path, where)
            for k, qa in enumerate(_get(paragraph, "qas", path, where)):
                place = f"{where}.qas[{k}]"
                qa_id, question = str(_get(qa, "id", path, place)), _get(qa, "question", path, place)
                impossible = bool(qa.get("is_impossible", False))
                answers = []
                for answer in [] if impossible else _get(qa, "answers", path, place):
                    text, start = _get(answer, "text", path, place), _get(answer, "answer_start", path, place)
                    if context[start:start + len(text)] != text:
                        if on_error == "raise":
                            raise InputError(f"{path}: {place}: answer {text!r} not at context[{start}:"
                                             f"{start + len(text)}] = {context[start:start + len(text)]!r}")
                        skipped["answer_mismatch"] = skipped.get("answer_mismatch", 0) + 1
                        continue
                    answers.append((text, int(start)))
                if not impossible and not answers:
                    skipped["no_valid_answer"] = skipped.get("no_valid_answer", 0) + 1
                    continue
                examples.append(SquadExample(qa_id, question, context, answers, impossible))
    return examples, skipped


def _get(record, key, path, where):
    if not isinstance(record, dict) or key not in record:
        raise InputError(f"{path}: {where or 'top level'}: missing key {key!r}")
    return record[key]


@dataclasses.dataclass
class SquadFeatures:
    """Model windows for a list of SquadExample.

    Args:
        features: dict of int32 arrays `(windows, L)`: token_ids, segment_ids, padding_mask.
        start_positions, end_positions: int32 `(windows,)` token labels (0 = [CLS] = no answer here).
        token_offsets: int32 `(windows, L, 2)` character [begin, end) in the context, -1 for other tokens.
        example_index: int32 `(windows,)` index of each window's example.
        examples: the SquadExample list.
    """

    features: dict
    start_positions: np.ndarray
    end_positions: np.ndarray
    token_offsets: np.ndarray
    example_index: np.ndarray
    examples: list

    def __len__(self):
        return len(self.example_index)

    def answer_text(self, window, start, end):
        """Context text covered by token positions start..end (inclusive) of `window`; "" if not in context."""
        begin, finish = self.token_offsets[window, start, 0], self.token_offsets[window, end, 1]
        if begin < 0 or finish < 0 or end < start:
            return ""
        return self.examples[self.example_index[window]].context[begin:finish]

    def dataset(self, batch_size, shuffle=False, seed=None, drop_remainder=False):
        """Batched `(x, y)` with x = {token_ids, segment_ids, padding_mask}, y = {start_positions, end_positions}.

        Args:
            batch_size: int.
            shuffle: bool, shuffle windows (training).
            seed: optional int shuffle seed.
            drop_remainder: bool, static batch dimension (TPU).
        """
        y = {"start_positions": self.start_positions, "end_positions": self.end_positions}
        ds = tf.data.Dataset.from_tensor_slices((self.features, y))
        if shuffle:
            ds = ds.shuffle(len(self), seed=seed, reshuffle_each_iteration=True)
        return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


def squad_features(examples, tokenizer, sequence_length=384, doc_stride=128, max_query_length=64):
    """Tokenize questions and contexts and cut long contexts into overlapping windows.

    The windows are `squad_windows`' (run eagerly here), the routine the SpanQA export runs in its graph.

    Args:
        examples: list of SquadExample.
        tokenizer: a tokenizer with `tokenize_with_offsets` (WordPieceTokenizer).
        sequence_length: int, window length `[CLS] question [SEP] context [SEP]`.
        doc_stride: int, tokens between the starts of consecutive context windows (as in BERT's
            run_squad; the overlap is `context_budget - doc_stride`).
        max_query_length: int, questions are truncated to this many tokens.

    Returns:
        SquadFeatures. Training labels use the first answer; a window that does not contain the whole
        answer (or a v2 impossible question) points start and end at [CLS] (index 0).
    """
    L = sequence_length
    if not examples:
        empty = lambda *shape: np.zeros(shape, np.int32)  # noqa: E731
        return SquadFeatures({k: empty(0, L) for k in ("token_ids", "segment_ids", "padding_mask")}, empty(0),
                             empty(0), empty(0, L, 2), empty(0), [])
    questions = tokenizer.tokenize([e.question for e in examples])
    question_lengths = np.minimum(questions.row_lengths().numpy(), max_query_length)
    if (L - question_lengths - 3 < 1).any():
        raise InputError(f"sequence_length={sequence_length} too short for max_query_length={max_query_length}")
    ids, begins, ends = tokenizer.tokenize_with_offsets(tf.constant([e.context for e in examples], tf.string))
    x, example, window_start, (byte_begin, byte_end) = squad_windows(
        questions, ids, [begins, ends], L, doc_stride, max_query_length, tokenizer.cls_id, tokenizer.sep_id,
        tokenizer.pad_id)
    example, window_start = example.numpy(), window_start.numpy()
    # Byte offsets -> character offsets, through one table of all contexts' byte -> character maps.
    tables = [np.asarray(_char_index_of_bytes(e.context), np.int32) for e in examples]
    table_base = np.cumsum([0] + [len(t) for t in tables[:-1]])
    flat_table = np.concatenate(tables)
    offsets = np.stack([byte_begin.numpy(), byte_end.numpy()], axis=-1)  # (W, L, 2)
    in_context = offsets >= 0
    chars = flat_table[np.where(in_context, offsets + table_base[example][:, None, None], 0)]
    token_offsets = np.where(in_context, chars, -1).astype(np.int32)
    # Labels: the first answer's context-token span, relative to each window that holds all of it.
    answers = []
    for n, (e, b, f) in enumerate(zip(examples, begins.to_list(), ends.to_list())):
        answer = None
        if e.answers and not e.is_impossible:
            text, char_start = e.answers[0]
            inside = [t for t, (begin, end) in enumerate(zip(b, f)) if tables[n][end] > char_start
                      and tables[n][begin] < char_start + len(text)]
            answer = (inside[0], inside[-1]) if inside else None
        answers.append(answer)
    starts, stops = np.zeros(len(example), np.int32), np.zeros(len(example), np.int32)
    window_stop = window_start + in_context[..., 0].sum(axis=1)
    for w, (n, first, stop) in enumerate(zip(example, window_start, window_stop)):
        answer, head = answers[n], 2 + question_lengths[n]
        if answer and first <= answer[0] and answer[1] < stop:
            starts[w], stops[w] = answer[0] - first + head, answer[1] - first + head
    return SquadFeatures(
        features={k: v.numpy() for k, v in x.items()}, start_positions=starts, end_positions=stops,
        token_offsets=token_offsets, example_index=example.astype(np.int32), examples=list(examples),
    )


def squad_windows(question_ids, context_ids, context_values, sequence_length, doc_stride, max_query_length, cls_id,
                  sep_id, pad_id, max_windows=None):
    """`[CLS] question [SEP] context-slice [SEP]` windows of (question, context) pairs, with TensorFlow ops.

    The one windowing routine of tfm: `squad_features` runs it eagerly, the SpanQA export in its serving
    graph. Questions keep their first `max_query_length` tokens; a context slice of up to
    `sequence_length - len(question) - 3` tokens starts every `doc_stride` tokens until one reaches the
    context's end (at least one window per pair, even for an empty context).

    Args:
        question_ids, context_ids: int RaggedTensors `(B, None)`.
        context_values: list of int RaggedTensors aligned with `context_ids` (e.g. byte offsets), packed
            alongside the tokens with -1 at question, special and padding positions.
        sequence_length, doc_stride, max_query_length: ints.
        cls_id, sep_id, pad_id: ints.
        max_windows: optional int, only the first `max_windows` windows of a pair are made.

    Returns:
        (x, example, window_start, values): model inputs `{token_ids, segment_ids, padding_mask}` int32
        `(W, L)`; int32 `(W,)` pair of each window and index of its first context token; the packed
        `context_values`, int32 `(W, L)` each.
    """
    rows = lambda x: tf.cast(x, tf.int64).with_row_splits_dtype(tf.int64)  # noqa: E731
    questions = rows(question_ids)[:, :max_query_length]
    ids = rows(context_ids)
    n = ids.row_lengths()  # (B,) context tokens
    budget = sequence_length - questions.row_lengths() - 3  # (B,) context tokens per window
    stride = tf.constant(doc_stride, tf.int64)
    per_example = tf.maximum(n - budget + stride - 1, 0) // stride + 1
    if max_windows is not None:
        per_example = tf.minimum(per_example, max_windows)
    example = tf.repeat(tf.range(tf.size(n, out_type=tf.int64)), per_example)  # (W,)
    window_start = tf.ragged.range(per_example).flat_values * stride
    window_stop = tf.minimum(window_start + tf.gather(budget, example), tf.gather(n, example))
    base = tf.gather(ids.row_splits[:-1], example)
    flat_index = tf.ragged.range(base + window_start, base + window_stop)  # (W, None) into flat tokens

    def take(values):  # the window's slice of per-token values
        return flat_index.with_flat_values(tf.gather(rows(values).flat_values, flat_index.flat_values))

    window_questions = tf.gather(questions, example)
    no_value = window_questions * 0 - 1  # question tokens have no context value
    x, values = pack_segments([window_questions, take(ids)], sequence_length, cls_id, sep_id, pad_id,
                              aligned=[([no_value, take(v)], -1) for v in context_values])
    return x, tf.cast(example, tf.int32), tf.cast(window_start, tf.int32), values


def _char_index_of_bytes(text):
    """Map each UTF-8 byte offset of `text` (and its end) to the character index it belongs to."""
    index = []
    for i, ch in enumerate(text):
        index.extend([i] * len(ch.encode("utf-8")))
    index.append(len(text))
    return index
