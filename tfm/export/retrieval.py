"""A vector index (and an FAQ or a SpanQA reader) as one SavedModel that takes question strings.

`export_retrieval(index, embedder, path)` writes `path/<version>/` with the embedder, its tokenizer and the
corpus inside: vectors as a float32 variable (dequantized from float16/int8 storage; a variable, not a graph
constant, so a corpus over the 2 GB GraphDef limit still saves), ids and texts as string variables. Loading
needs only `tensorflow` and `import tensorflow_text`, like the other exports. Signatures (inputs `tf.string
[None]`, cleaned to valid UTF-8 and truncated to the embedder's window as every export does):

- `search(query)` -> `ids`, `texts` string `(Q, k)`, `scores` float32 `(Q, k)`: exact top-k of the dot
  products with the corpus vectors (cosine for a normalizing embedder), `k` fixed at export; `Index.search`.
- `embed(query)` -> `embedding` float32 `(Q, H)`: the embedder's vector (what the index stores).
- `answer(question)`, reader mode -> `answer`, `source_id`, `source_text` string, `score` float32, `start`,
  `end` int32: `tfm.retrieval.RetrieveThenRead` in-graph (the SpanQA export reads each of the k passages).
- `answer(question)`, FAQ mode -> `answer` string, `score` float32, `source_id` string, `answered` bool:
  `tfm.retrieval.FaqAnswerer` with its threshold baked in.

`serving_default` is `answer` when there is one, else `search`.
"""

import os
import tempfile

import numpy as np
import tensorflow as tf

from tfm.errors import InputError
from tfm.export.saved_model import FORMAT_VERSION, new_version, save_module
from tfm.export.serving import STRINGS, ServingModule
from tfm.export.span_qa import SpanQAModule
from tfm.export.text_ops import GraphTokenizer, clean_text

_NEG_INF = float("-inf")


class RetrievalModule(ServingModule):
    """The embedder, its tokenizer and the corpus behind `search` / `embed` / `answer` (see the module doc).

    Args:
        embedder: a `tfm.tasks.TextEmbedder`. tokenizer: its `GraphTokenizer`.
        vectors: float32 `(N, H)`. ids, texts: lists of N str. k: int, results per query (<= N).
        answers: optional list of N str: FAQ mode. threshold: float, FAQ least similarity that answers.
        reader: optional `SpanQAModule`: reader mode (answers from the k passages).
    """

    task_name = "retrieval"

    def __init__(self, embedder, tokenizer, vectors, ids, texts, k, answers=None, threshold=0.35, reader=None):
        super().__init__(embedder, tokenizer, embedder.sequence_length)
        self.k = int(k)
        self.vectors = tf.Variable(np.asarray(vectors, np.float32), trainable=False, name="corpus_vectors")
        self.ids = tf.Variable(list(ids), dtype=tf.string, trainable=False, name="corpus_ids")
        self.texts = tf.Variable(list(texts), dtype=tf.string, trainable=False, name="corpus_texts")
        self.answers = None if answers is None else tf.Variable(list(answers), dtype=tf.string, trainable=False,
                                                                name="faq_answers")
        self.threshold = float(threshold)
        self.reader = reader
        self.mode = "reader" if reader is not None else "faq" if answers is not None else "search"

    def embed(self, query):
        return {"embedding": tf.cast(self.model(self._encode(query), training=False), tf.float32)}

    def _top_k(self, query, k):
        scores = tf.matmul(self.embed(query)["embedding"], self.vectors, transpose_b=True)  # (Q, N)
        return tf.math.top_k(scores, k=k)  # descending, first row on ties

    def search(self, query):
        scores, rows = self._top_k(query, self.k)
        return {"ids": tf.gather(self.ids, rows), "texts": tf.gather(self.texts, rows), "scores": scores}

    def answer_faq(self, question):
        scores, rows = self._top_k(question, 1)
        score, row = scores[:, 0], rows[:, 0]
        answered = score >= self.threshold
        return {"answer": tf.where(answered, tf.gather(self.answers, row), ""), "score": score,
                "source_id": tf.gather(self.ids, row), "answered": answered}

    def answer_read(self, question):
        """The SpanQA export's answer for each (question, passage) pair, then the best answered passage per
        question (first on ties), as `tfm.retrieval.grounded.best_over_passages`. An empty batch skips the
        reader (its window packing needs at least one pair)."""
        question = clean_text(question)
        count = tf.shape(question)[0]
        empty = {"answer": tf.zeros([0], tf.string), "score": tf.zeros([0], tf.float32),
                 "source_id": tf.zeros([0], tf.string), "source_text": tf.zeros([0], tf.string),
                 "start": tf.zeros([0], tf.int32), "end": tf.zeros([0], tf.int32)}
        return tf.cond(count > 0, lambda: self._read(question, count), lambda: empty)

    def _read(self, question, count):
        _, rows = self._top_k(question, self.k)  # (Q, k)
        passages = tf.reshape(tf.gather(self.texts, rows), [-1])  # (Q * k,), question-major
        pair_ids = tf.reshape(tf.gather(self.ids, rows), [-1])
        read = self.reader.answer(tf.repeat(question, self.k), passages)
        found = tf.reshape(read["start"] >= 0, [count, self.k])
        scores = tf.reshape(read["score"], [count, self.k])
        masked = tf.where(found, scores, _NEG_INF)
        best = tf.argmax(masked, axis=1, output_type=tf.int32)  # first maximum
        answered = tf.reduce_any(found, axis=1)
        pair = tf.range(count) * self.k + best
        pick = lambda name: tf.gather(read[name], pair)  # noqa: E731
        return {"answer": tf.where(answered, pick("answer"), ""),
                "score": tf.where(answered, tf.reduce_max(masked, axis=1), tf.reduce_min(scores, axis=1)),
                "source_id": tf.where(answered, tf.gather(pair_ids, pair), ""),
                "source_text": tf.where(answered, tf.gather(passages, pair), ""),
                "start": tf.where(answered, pick("start"), -1), "end": tf.where(answered, pick("end"), -1)}

    def signatures(self):
        signature = lambda fn: tf.function(fn, input_signature=[STRINGS]).get_concrete_function()  # noqa: E731
        out = {"search": signature(lambda query: self.search(query)),
               "embed": signature(lambda query: self.embed(query))}
        if self.mode == "reader":
            out["answer"] = signature(lambda question: self.answer_read(question))
        elif self.mode == "faq":
            out["answer"] = signature(lambda question: self.answer_faq(question))
        out["serving_default"] = out.get("answer", out["search"])
        return out

    def metadata(self):
        meta = {**super().metadata(), "mode": self.mode, "k": self.k, "size": int(self.vectors.shape[0]),
                "dim": int(self.vectors.shape[1]), "inputs": ["question"] if self.mode != "search" else ["query"]}
        if self.mode == "faq":
            meta["threshold"] = self.threshold
        if self.mode == "reader":
            meta["reader"] = self.reader.metadata()
        return meta


def export_retrieval(index, embedder, path, reader=None, reader_tokenizer=None, k=10, threshold=None,
                     answer_field="answer", version=None, sequence_length=384, doc_stride=128, max_query_length=64,
                     max_answer_length=30, max_windows=128, allow_no_answer=False, no_answer_threshold=0.0):
    """Export `index` searched by `embedder` (and an FAQ or a reader) as `path/<version>/` (tag `serve`).

    Mode: reader when `reader` is given (`answer` reads the top-k passages; the reader settings are
    `RetrieveThenRead`'s, `rtr.reader_options()` gives them); else FAQ when every record of `index` has
    `answer_field` (`answer` returns the nearest question's answer, "" below `threshold`); else search only.
    `assets/tfm_export.json` holds the mode, k, threshold, reader settings, the index metadata and every
    signature's inputs and outputs, as `export_saved_model` writes it.

    Args:
        index: a `tfm.retrieval.Index` (any vector dtype; stored dequantized as float32).
        embedder: the `tfm.tasks.TextEmbedder` that built it (checked with `index.check_embedder`).
        path: export directory; versions are numbered subdirectories (TF Serving's layout).
        reader: optional `tfm.tasks.SpanQA`; reader_tokenizer: its tokenizer.
        k: int, results of `search` and passages read by `answer` (at most the index size).
        threshold: float, FAQ least similarity; default `tfm.retrieval.grounded.DEFAULT_FAQ_THRESHOLD` (0.35).
        answer_field: str, the FAQ record key. version: int; default the next free number.
        sequence_length, doc_stride, max_query_length, max_answer_length, allow_no_answer,
            no_answer_threshold: the reader's window settings. max_windows: int, windows read per passage
            (`max_windows * doc_stride` tokens; the Python `RetrieveThenRead` reads all of a passage).

    Returns:
        Path of the written version directory.

    Example:
        >>> export_retrieval(index, embedder, "exported/faq", threshold=0.35)  # doctest: +SKIP
        PosixPath('exported/faq/1')
    """
    from tfm.retrieval.grounded import DEFAULT_FAQ_THRESHOLD, _check_index, faq_answers

    threshold = DEFAULT_FAQ_THRESHOLD if threshold is None else float(threshold)

    k = _check_index(index, embedder, k)
    if reader is not None and reader_tokenizer is None:
        raise InputError("export_retrieval: a reader needs its reader_tokenizer")
    answers = None
    if reader is None and any(answer_field in r for r in index.records):
        answers = faq_answers(index, answer_field)  # InputError naming a record without an answer
    path, version = new_version(path, version)
    with tempfile.TemporaryDirectory() as scratch:
        assets = os.path.join(scratch, "assets")
        reader_module = None
        if reader is not None:
            reader_module = SpanQAModule(reader, GraphTokenizer(reader_tokenizer, os.path.join(assets, "reader")),
                                         sequence_length, doc_stride=doc_stride, max_query_length=max_query_length,
                                         max_answer_length=max_answer_length, max_windows=max_windows,
                                         allow_no_answer=allow_no_answer, no_answer_threshold=no_answer_threshold)
        module = RetrievalModule(embedder, GraphTokenizer(embedder.tokenizer, os.path.join(assets, "embedder")),
                                 index.vectors(), index.ids, index.texts, k, answers=answers, threshold=threshold,
                                 reader=reader_module)
        metadata = {**module.metadata(), "format_version": FORMAT_VERSION, "tokenizer": embedder.tokenizer.kind,
                    "index": index.metadata}
        return save_module(module, path, version, assets, metadata)
