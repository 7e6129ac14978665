"""SQuAD v1.1 / v2.0: read JSON, turn character answer spans into token windows (doc stride) and back.

Windows are computed once in NumPy from batched in-graph tokenization (SQuAD-sized sets take seconds);
the per-token character offsets are kept so predicted token spans map back to context text.
"""

import dataclasses
import json

import numpy as np
import tensorflow as tf

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
    questions = tokenizer.tokenize([e.question for e in examples]).to_list() if examples else []
    contexts = [e.context for e in examples]
    ids, begins, ends = tokenizer.tokenize_with_offsets(tf.constant(contexts, tf.string, shape=[len(contexts)]))
    ids, begins, ends = ids.to_list(), begins.to_list(), ends.to_list()
    out = {k: [] for k in ("token_ids", "segment_ids", "padding_mask", "start", "end", "offsets", "example")}
    for n, example in enumerate(examples):
        question = questions[n][:max_query_length]
        char_of_byte = _char_index_of_bytes(example.context)
        char_begins = [char_of_byte[b] for b in begins[n]]
        char_ends = [char_of_byte[e] for e in ends[n]]
        answer = None
        if example.answers and not example.is_impossible:
            text, char_start = example.answers[0]
            inside = [t for t, (b, e) in enumerate(zip(char_begins, char_ends))
                      if e > char_start and b < char_start + len(text)]
            answer = (inside[0], inside[-1]) if inside else None
        budget = sequence_length - len(question) - 3
        if budget < 1:
            raise InputError(f"sequence_length={sequence_length} too short for max_query_length={max_query_length}")
        window_start = 0
        while True:
            window = range(window_start, min(window_start + budget, len(ids[n])))
            head = [tokenizer.cls_id] + question + [tokenizer.sep_id]
            tokens = head + [ids[n][t] for t in window] + [tokenizer.sep_id]
            pad = sequence_length - len(tokens)
            out["token_ids"].append(tokens + [tokenizer.pad_id] * pad)
            out["segment_ids"].append([0] * len(head) + [1] * (len(window) + 1) + [0] * pad)
            out["padding_mask"].append([1] * len(tokens) + [0] * pad)
            offsets = [(-1, -1)] * len(head) + [(char_begins[t], char_ends[t]) for t in window]
            out["offsets"].append(offsets + [(-1, -1)] * (sequence_length - len(offsets)))
            start = end = 0
            if answer and window.start <= answer[0] and answer[1] < window.stop:
                start, end = answer[0] - window.start + len(head), answer[1] - window.start + len(head)
            out["start"].append(start)
            out["end"].append(end)
            out["example"].append(n)
            if window.stop >= len(ids[n]):
                break
            window_start += doc_stride
    as_array = lambda key, shape: np.asarray(out[key], np.int32).reshape(shape)  # noqa: E731
    L = sequence_length
    return SquadFeatures(
        features={k: as_array(k, (-1, L)) for k in ("token_ids", "segment_ids", "padding_mask")},
        start_positions=as_array("start", (-1,)), end_positions=as_array("end", (-1,)),
        token_offsets=as_array("offsets", (-1, L, 2)), example_index=as_array("example", (-1,)),
        examples=list(examples),
    )


def _char_index_of_bytes(text):
    """Map each UTF-8 byte offset of `text` (and its end) to the character index it belongs to."""
    index = []
    for i, ch in enumerate(text):
        index.extend([i] * len(ch.encode("utf-8")))
    index.append(len(text))
    return index
