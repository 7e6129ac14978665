"""Answers grounded in an `Index`: retrieve-then-read with a `SpanQA` reader, and FAQ lookup.

`RetrieveThenRead` finds the top-k passages of each question and lets the reader pick a span in each; the
best-scoring span over the k passages wins. Windows, span search and the no-answer rule are tfm's own
(`tfm.data.squad_features`, `tfm.tasks.span_search`), the code `SpanQA` evaluation and its export run, so a
passage is read exactly as the SpanQA SavedModel would read it. `FaqAnswerer` returns the stored answer of
the nearest stored question, or no answer below a similarity threshold. `tfm.export.retrieval` puts both in
one SavedModel with the same outputs.
"""

import numpy as np

from tfm.errors import InputError

# Cosine similarity (normalized embedders) under which FaqAnswerer says it has no answer. Measured with
# all-MiniLM-L6-v2 on the 8-entry FAQ of tests/retrieval/test_grounded.py: reworded questions score 0.43-0.83
# against their stored question, off-topic ones ("what is the capital of Peru?") at most 0.22, so 0.35 sits
# between the two. No threshold separates an in-domain question the FAQ does not cover ("do you ship to
# Canada?" scores 0.44 against "How long does shipping take?"): add entries, or store several wordings of
# a question (rows with the same answer). To pick one for your encoder and FAQ: score held-out reworded
# questions and off-topic ones and take a value between the two ranges (higher: fewer wrong answers, more
# questions left unanswered).
DEFAULT_FAQ_THRESHOLD = 0.35


def _question_list(questions, where):
    if isinstance(questions, (str, bytes)):
        raise InputError(f"{where} takes a list of questions, got a single string: wrap it in a list")
    return [q.decode("utf-8", "replace") if isinstance(q, bytes) else str(q) for q in questions]


def _check_index(index, embedder, k):
    if index.size == 0:
        raise InputError("the index is empty (size 0): build it from at least one text")
    if int(k) < 1:
        raise InputError(f"k must be >= 1, got {k}")
    if embedder is not None:
        index.check_embedder(embedder)
    return min(int(k), index.size)


def best_over_passages(found, scores):
    """Each question's answer passage: the first of its k passages with the best answered score.

    Taking per passage the answer `SpanQA` gives it (best window, first on ties) and then the first passage
    with the highest score is the same as taking the first window with the best score over all of a
    question's windows; an unanswered passage (no span, or SQuAD v2 no-answer) never wins.

    Args:
        found: bool `(Q, k)`, the passage has an answer. scores: float32 `(Q, k)`.

    Returns:
        (best, answered, score): int `(Q,)` passage (0 when none answered), bool `(Q,)`, float32 `(Q,)` the
        winning score (when none answered, the smallest passage score: SpanQA's "" score is its smallest
        null score).

    Example:
    >>> best_over_passages([[True, True], [False, False]], [[1.0, 2.0], [3.0, -1.0]])
    (array([1, 0]), array([ True, False]), array([ 2., -1.], dtype=float32))
    """
    found, scores = np.asarray(found, bool), np.asarray(scores, np.float32)
    masked = np.where(found, scores, -np.inf)  # (Q, k), k >= 1
    best = np.argmax(masked, axis=1)  # first maximum
    answered = found.any(axis=1)
    score = np.where(answered, masked[np.arange(len(scores)), best], scores.min(axis=1))
    return np.where(answered, best, 0), answered, score.astype(np.float32)


class RetrieveThenRead:
    """Top-k passages from `index` -> a `SpanQA` reader on each (question, passage) -> the best span.

    Each passage is read as `SpanQA` evaluation reads a context (`squad_features` windows, `span_search`
    best span per window and the per-passage no-answer rule); the answer is the best-scoring answered
    passage's span, score = its start + end logit (as the SpanQA export's `score`). A question none of whose
    passages gives an answer gets "" with source_id "" and start = end = -1.

    Args:
        index: a `tfm.retrieval.Index` (its texts are the passages).
        embedder: the `tfm.tasks.TextEmbedder` that built `index` (checked with `index.check_embedder`).
        reader: a `tfm.tasks.SpanQA`. reader_tokenizer: its tokenizer (WordPiece or SentencePiece: offsets).
        k: int, passages read per question (at most the index size).
        sequence_length, doc_stride, max_query_length, max_answer_length: the reader's window settings.
        allow_no_answer: bool, SQuAD v2 readers: a passage can answer "". no_answer_threshold: float.
        batch_size: int, reader windows per model call.

    Example:
        >>> rtr = RetrieveThenRead(index, embedder, qa, qa_tokenizer, k=5)  # doctest: +SKIP
        >>> rtr.answer(["Where did Ada Lovelace live?"])[0]["answer"]  # doctest: +SKIP
        'London'
    """

    def __init__(self, index, embedder, reader, reader_tokenizer, k=5, sequence_length=384, doc_stride=128,
                 max_query_length=64, max_answer_length=30, allow_no_answer=False, no_answer_threshold=0.0,
                 batch_size=32):
        self.k = _check_index(index, embedder, k)
        self.index, self.embedder = index, embedder
        self.reader, self.reader_tokenizer = reader, reader_tokenizer
        self.sequence_length, self.doc_stride = int(sequence_length), int(doc_stride)
        self.max_query_length, self.max_answer_length = int(max_query_length), int(max_answer_length)
        self.allow_no_answer, self.no_answer_threshold = bool(allow_no_answer), float(no_answer_threshold)
        self.batch_size = int(batch_size)

    def reader_options(self):
        """The reader settings, as `tfm.export.retrieval.export_retrieval` takes them."""
        return {"sequence_length": self.sequence_length, "doc_stride": self.doc_stride,
                "max_query_length": self.max_query_length, "max_answer_length": self.max_answer_length,
                "allow_no_answer": self.allow_no_answer, "no_answer_threshold": self.no_answer_threshold}

    def read(self, questions, passages):
        """SpanQA's answer to each (question, passage) pair: list of `(found, text, score, start, end)`."""
        from tfm.data.squad import SquadExample, squad_features
        from tfm.tasks.span_search import question_spans, search_windows

        examples = [SquadExample(str(n), q, p, []) for n, (q, p) in enumerate(zip(questions, passages))]
        features = squad_features(examples, self.reader_tokenizer, self.sequence_length, self.doc_stride,
                                  self.max_query_length)
        starts, ends = [], []
        for i in range(0, len(features), self.batch_size):
            out = self.reader({k: v[i:i + self.batch_size] for k, v in features.features.items()}, training=False)
            starts.append(np.asarray(out["start_logits"], np.float32))
            ends.append(np.asarray(out["end_logits"], np.float32))
        width = self.sequence_length
        start_logits = np.concatenate(starts) if starts else np.zeros((0, width), np.float32)
        end_logits = np.concatenate(ends) if ends else np.zeros((0, width), np.float32)
        in_context = features.token_offsets[..., 0] >= 0
        span_start, span_end, span_score = search_windows(start_logits, end_logits, in_context,
                                                          self.max_answer_length)
        null = start_logits[:, 0] + end_logits[:, 0]
        windows, found, scores = question_spans(span_score, null, features.example_index, len(examples),
                                                self.allow_no_answer, self.no_answer_threshold)
        out = []
        for w, ok, score in zip(windows.numpy().tolist(), found.numpy().tolist(), scores.numpy().tolist()):
            if not ok:
                out.append((False, "", score, -1, -1))
                continue
            s, e = span_start[w], span_end[w]
            begin, end = (int(v) for v in (features.token_offsets[w, s, 0], features.token_offsets[w, e, 1]))
            out.append((True, features.answer_text(w, s, e), score, begin, end))
        return out

    def answer(self, questions):
        """Answer each question from its top-k passages.

        Args:
            questions: list of str.

        Returns:
            list of dicts, one per question: `answer` str, `score` float (start + end logit), `source_id` and
            `source_text` of the passage, `start`/`end` character offsets of the answer in `source_text`
            (-1 without an answer), `passages`: the k retrieved ids, best first.
        """
        questions = _question_list(questions, "RetrieveThenRead.answer")
        if not questions:
            return []
        hits = self.index.search(questions, k=self.k, embedder=self.embedder)
        k = len(hits.ids[0])
        pairs = [(q, hits.texts[n][j]) for n, q in enumerate(questions) for j in range(k)]
        read = self.read([q for q, _ in pairs], [p for _, p in pairs])
        found = np.array([r[0] for r in read], bool).reshape(len(questions), k)
        scores = np.array([r[2] for r in read], np.float32).reshape(len(questions), k)
        best, answered, score = best_over_passages(found, scores)
        results = []
        for n, (j, ok) in enumerate(zip(best.tolist(), answered.tolist())):
            _, text, _, begin, end = read[n * k + j]
            results.append({"answer": text if ok else "", "score": float(score[n]),
                            "source_id": hits.ids[n][j] if ok else "", "source_text": hits.texts[n][j] if ok else "",
                            "start": begin if ok else -1, "end": end if ok else -1, "passages": list(hits.ids[n])})
        return results


class FaqAnswerer:
    """Nearest stored question -> its stored answer; no answer below a similarity `threshold`.

    The index holds the FAQ's questions as texts and each answer in its records (`Index.build(...,
    extra=[{"answer": ...}, ...])`). The similarity is the index's score (cosine for a normalizing embedder).
    Below `threshold` the answer is "" with `answered=False`; the nearest question's id and score are still
    returned, so a caller can log near misses or hand the question to a person.

    Args:
        index: a `tfm.retrieval.Index` whose every record has `answer_field`.
        embedder: the `tfm.tasks.TextEmbedder` that built it.
        threshold: float, least similarity that answers (see `DEFAULT_FAQ_THRESHOLD` for how to pick it).
        answer_field: str, the record key holding the answer.

    Example:
        >>> faq = FaqAnswerer(index, embedder, threshold=0.35)  # doctest: +SKIP
        >>> faq.answer(["how do I get my money back?"])[0]["answered"]  # doctest: +SKIP
        True
    """

    def __init__(self, index, embedder, threshold=DEFAULT_FAQ_THRESHOLD, answer_field="answer"):
        _check_index(index, embedder, 1)
        self.index, self.embedder = index, embedder
        self.threshold, self.answer_field = float(threshold), answer_field
        self.answers = faq_answers(index, answer_field)

    def answer(self, questions):
        """Answer each question from the FAQ.

        Args:
            questions: list of str.

        Returns:
            list of dicts: `answer` str ("" when not answered), `score` float similarity to the nearest
            stored question, `source_id` its id, `matched_question` its text, `answered` bool.
        """
        questions = _question_list(questions, "FaqAnswerer.answer")
        if not questions:
            return []
        hits = self.index.search(questions, k=1, embedder=self.embedder)
        results = []
        for n in range(len(questions)):
            score, row = float(hits.scores[n][0]), int(hits.rows[n][0]) - self.index.row_offset  # shard rows
            ok = score >= self.threshold
            results.append({"answer": self.answers[row] if ok else "", "score": score, "source_id": hits.ids[n][0],
                            "matched_question": hits.texts[n][0], "answered": ok})
        return results


def faq_answers(index, answer_field="answer"):
    """The `answer_field` string of every record of `index`, in row order; InputError naming the first row
    (and id) without one."""
    answers = []
    for row, record in enumerate(index.records):
        value = record.get(answer_field)
        if not isinstance(value, str):
            raise InputError(f"FAQ index record {row} (id {record.get('id')!r}) has no string {answer_field!r} "
                             f"field (found {type(value).__name__}): build the index with "
                             f"extra=[{{{answer_field!r}: ...}}, ...] for every question")
        answers.append(value)
    return answers
