"""An exact vector index: embed a corpus once, store its vectors, ids and texts in a directory, search by dot product.

Search is exact top-k. The corpus is read `chunk_size` rows at a time (memory-mapped, so a corpus larger than RAM
can be searched) and, because float32 BLAS sums in an order that depends on the matrix shapes, a chunk's BLAS
scores only *select* candidates: every row whose BLAS score is within a proven rounding bound of the running k-th
score is rescored in float64 (products of float32 are exact there) in a fixed order and rounded to float32.
Ranking is by that score, ties by the lower row, so results are identical for every chunk size and for shards
merged with `merge_results` (one shard per worker: `shard_range`).

Storage is float32, float16 or int8 (symmetric per row: `row = int8 * scale`, `scale = max|x| / 127`). Against
float32 scores of the same vectors, a query `q` and row `x` (H dims) differ by at most
`||q||_2 * (2**-11 * ||x||_2 + 2**-25 * sqrt(H))` in float16 (relative rounding 2**-11, subnormals 2**-25) and
`||q||_1 * max|x| / 254` in int8 (each element is off by at most half a step, `scale / 2`).

Example:
>>> index = Index.from_vectors(np.eye(3, dtype="float32"), texts=["a", "b", "c"])
>>> result = index.search(np.array([[0.1, 0.9, 0.0]], "float32"), k=2)
>>> result.ids, result.rows.tolist(), result.scores.astype("float64").round(3).tolist()
([['1', '0']], [[1, 0]], [[0.9, 0.1]])
"""

import collections
import hashlib
import json
import os
import sys
import time
import warnings

import numpy as np

from tfm.errors import InputError
from tfm.retrieval.corpus import Corpus, _numbers  # noqa: F401  (Corpus: re-exported)

FORMAT_VERSION = 1
DTYPES = ("float32", "float16", "int8")
METADATA_FILE, VECTORS_FILE, SCALES_FILE, RECORDS_FILE = "index.json", "vectors.npy", "scales.npy", "records.jsonl"
# Embedded at build time and again by a querying embedder: other weights, tokenizer or pooling show up here.
PROBE_TEXT = "Probe: the quick brown fox jumps over the lazy dog 1234 times. ¿Dónde está la biblioteca?"
PROBE_ATOL = 1e-3  # float32 on another machine differs by ~1e-6; other weights by far more

SearchResult = collections.namedtuple("SearchResult", ["scores", "rows", "ids", "texts"])
SearchResult.__doc__ = """Top-k per query: `scores` float32 (Q, k) descending, `rows` int64 (Q, k) (global corpus rows),
`ids` and `texts`: lists of k str per query. Ties are broken by the lower row."""


def shard_range(size, num_shards, shard):
    """`(start, stop)` rows of shard `shard` of `num_shards` contiguous, near-equal shards of `size` rows.

    >>> [shard_range(10, 3, i) for i in range(3)]
    [(0, 3), (3, 6), (6, 10)]
    """
    if not 0 <= shard < num_shards:
        raise InputError(f"shard {shard} is outside [0, {num_shards})")
    return size * shard // num_shards, size * (shard + 1) // num_shards


def _digest(value):
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def embedder_fingerprint(embedder, probe_text=PROBE_TEXT):
    """What identifies an embedder in index.json: classes, backbone config (no dropout/name/dtype) and its
    digest, pooling, tokenizer vocabulary digest, and the probe sentence's token ids and embedding."""
    backbone = embedder.backbone
    config = backbone.get_config()
    keys = getattr(backbone, "HYPERPARAMETERS", None) or sorted(config)
    config = {k: config[k] for k in keys if k in config and k not in ("dropout", "name", "trainable", "dtype")}
    tokenizer = embedder.tokenizer
    vocabulary = getattr(tokenizer, "vocabulary", None)
    return {"class": type(embedder).__name__, "backbone_class": type(backbone).__name__,
            "backbone_config": config, "config_digest": _digest(config), "pooling": embedder.pooling,
            "normalize": bool(embedder.normalize), "sequence_length": int(embedder.sequence_length),
            "tokenizer_class": type(tokenizer).__name__, "vocabulary_size": getattr(tokenizer, "vocabulary_size", None),
            "vocabulary_digest": _digest("\n".join(vocabulary)) if vocabulary is not None else None,
            "probe_text": probe_text, "probe_ids": np.asarray(tokenizer.tokenize([probe_text])[0]).tolist(),
            "probe": embedder.embed([probe_text])[0].tolist(),
            "source": getattr(embedder, "_tfm_source", None)}


def _describe(fp):
    c = fp.get("backbone_config", {})
    shape = ", ".join(f"{k} {c[k]}" for k in ("num_layers", "hidden_dim", "vocabulary_size") if k in c)
    what = f"{fp.get('class')}({fp.get('backbone_class')}: {shape}; pooling {fp.get('pooling')}; config " \
           f"{fp.get('config_digest')})"
    return f"{fp['source']!r} = {what}" if fp.get("source") else what


def count_truncated(embedder, texts):
    """How many `texts` have more tokens than `embedder.embed` keeps (`sequence_length` minus [CLS] and [SEP])."""
    if not len(texts):
        return 0
    lengths = np.asarray(embedder.tokenizer.tokenize(list(texts)).row_lengths())
    return int(np.sum(lengths > int(embedder.sequence_length) - 2))


def _quantize(vectors, dtype):
    """`(stored, scales)`: float32/float16 (scales None) or int8 rows with per-row float32 scales."""
    if dtype == "float32":
        return np.ascontiguousarray(vectors, "float32"), None
    if dtype == "float16":
        big = np.abs(vectors).max(initial=0.0)
        if big >= 65504:
            raise InputError(f"dtype='float16' cannot hold the vector value {big} (float16 max 65504); use float32")
        return vectors.astype("float16"), None
    scales = (np.abs(vectors).max(axis=1, initial=0.0) / 127).astype("float32")
    quantized = np.rint(vectors / np.where(scales > 0, scales, 1)[:, None])
    return np.clip(quantized, -127, 127).astype("int8"), scales


def _progress(done, total, started, end=False):
    rate = done / max(time.time() - started, 1e-9)
    sys.stderr.write(f"\rembedding {done}/{total} texts ({rate:.0f} texts/s)" + ("\n" if end else ""))
    sys.stderr.flush()


def _embed(embedder, texts, batch_size, progress):
    """Embeds `texts` in blocks of 32 batches, longest texts first (each batch pads to about its own length)."""
    out = np.zeros((len(texts), embedder.output_shape[-1]), "float32")
    order = np.argsort([-len(t) for t in texts], kind="stable")
    block, started = int(batch_size) * 32, time.time()
    for start in range(0, len(texts), block):
        rows = order[start:start + block]
        out[rows] = embedder.embed([texts[i] for i in rows], batch_size)
        if progress:
            _progress(min(start + block, len(texts)), len(texts), started, end=start + block >= len(texts))
    return out


class Index:
    """Vectors (memory-mapped when loaded), records (`id`, `text` and extra fields, in row order) and metadata.

    Attributes: `size`, `dim`, `dtype`, `ids`, `texts`, `records`, `metadata`, `directory` (when saved/loaded).
    Rows are global corpus rows: a shard built with `row_offset` returns rows `row_offset + local row`.
    """

    def __init__(self, vectors, scales, records, metadata, directory=None):
        self._vectors, self._scales, self.records, self.metadata = vectors, scales, records, metadata
        self.directory = directory
        self.ids = [r["id"] for r in records]
        self.texts = [r["text"] for r in records]
        self._checked = {}  # id(embedder) -> embedder that passed check_embedder

    size = property(lambda self: int(self._vectors.shape[0]))
    dim = property(lambda self: int(self._vectors.shape[1]))
    dtype = property(lambda self: self.metadata["dtype"])
    row_offset = property(lambda self: int(self.metadata.get("row_offset", 0)))

    def _max_norm(self):
        """The largest row norm (float64) of the stored (dequantized) vectors: it scales the rounding bound."""
        return max([float(np.sqrt(np.einsum("ij,ij->i", c, c, dtype="float64").max())) for c in
                    (self._rows(a, a + 65536) for a in range(0, self.size, 65536))], default=0.0)

    def __repr__(self):
        return f"Index(size={self.size}, dim={self.dim}, dtype={self.dtype!r}, directory={self.directory!r})"

    # ---- building -------------------------------------------------------------------------------
    @classmethod
    def from_vectors(cls, vectors, texts=None, ids=None, extra=None, dtype="float32", metadata=None,
                     directory=None, row_offset=0):
        """An index of given float vectors `(N, H)` (no embedder: `search` takes vectors, or pass metadata
        with an `embedder` fingerprint). `texts` default to "", `ids` to `str(row_offset + row)`."""
        if dtype not in DTYPES:
            raise InputError(f"dtype={dtype!r} is not supported; use one of {list(DTYPES)}")
        vectors = np.asarray(vectors, "float32")
        if vectors.ndim != 2:
            raise InputError(f"vectors must be 2-D (N, H), got shape {vectors.shape}")
        n = len(vectors)
        ids = [str(row_offset + i) for i in range(n)] if ids is None else [str(i) for i in ids]
        texts = [""] * n if texts is None else list(texts)
        extra = [{}] * n if extra is None else list(extra)
        for name, values in (("texts", texts), ("ids", ids), ("extra", extra)):
            if len(values) != n:
                raise InputError(f"{len(values)} {name} for {n} vectors: give one per vector")
        _check_unique(ids, lambda i: f"rows {i}")
        bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
        if len(bad):
            raise InputError(f"vector of id {ids[bad[0]]!r} (row {bad[0]}) is not finite (NaN or Inf)")
        records = []
        for i, (id_, text, fields) in enumerate(zip(ids, texts, extra)):
            clash = {"id", "text"} & set(fields or {})
            if clash:
                raise InputError(f"extra fields of id {id_!r} (row {i}) use the reserved key(s) {sorted(clash)}")
            records.append({"id": id_, "text": str(text), **(fields or {})})
        stored, scales = _quantize(vectors, dtype)
        index = cls(stored, scales, records, {})
        index.metadata = {"format_version": FORMAT_VERSION, "size": n, "dim": int(vectors.shape[1]), "dtype": dtype,
                          "row_offset": int(row_offset), "max_norm": index._max_norm(),
                          "skipped_empty": 0, "truncated": 0, "pooling": None, "normalize": None,
                          "sequence_length": None, "embedder": None, "embedder_source": None, **(metadata or {})}
        if directory is not None:
            index.save(directory)
        return index

    @classmethod
    def build(cls, embedder, texts, ids=None, extra=None, dtype="float32", batch_size=64, progress=False,
              directory=None, embedder_source=None, metadata=None, row_offset=0):
        """Embeds `texts` with a `TextEmbedder` and indexes them (saved to `directory` when given).

        Empty (all-whitespace) texts are skipped with a warning naming their ids, counted in metadata
        `skipped_empty`; texts longer than `embedder.sequence_length` tokens are embedded from their first
        tokens (counted in `truncated`, one warning). `ids` default to `str(row_offset + position)`.

        Args:
            embedder: a `tfm.tasks.TextEmbedder` with its tokenizer.
            texts: list of str. ids: optional list (unique). extra: optional list of dicts stored per record.
            dtype: "float32", "float16" or "int8" storage. batch_size: texts per model call.
            progress: bool, a progress line on stderr.
            embedder_source: str recorded as `embedder_source` (the preset / run dir `tfm index search` loads).
            metadata: dict merged into the metadata. row_offset: this shard's first global row.
        """
        texts = [t.decode("utf-8") if isinstance(t, bytes) else t for t in texts]
        wrong = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if wrong:
            raise InputError(f"text at row {wrong[0]} is {type(texts[wrong[0]]).__name__}, not str")
        ids = [str(row_offset + i) for i in range(len(texts))] if ids is None else [str(i) for i in ids]
        if len(ids) != len(texts) or (extra is not None and len(extra) != len(texts)):
            raise InputError(f"{len(texts)} texts but {len(ids)} ids and {len(extra or texts)} extra: one each")
        _check_unique(ids, lambda i: f"rows {i}")
        keep = [i for i, t in enumerate(texts) if t.strip()]
        metadata = dict(metadata or {})
        skipped = [ids[i] for i in sorted(set(range(len(texts))) - set(keep))]
        if skipped:
            warnings.warn(f"skipped {len(skipped)} empty text(s): ids {_numbers(skipped)}", stacklevel=2)
            texts, ids = [texts[i] for i in keep], [ids[i] for i in keep]
            extra = None if extra is None else [extra[i] for i in keep]
        metadata["skipped_empty"] = int(metadata.get("skipped_empty", 0)) + len(skipped)
        truncated = count_truncated(embedder, texts)
        if truncated:
            warnings.warn(f"{truncated} of {len(texts)} texts are longer than the embedder's sequence_length="
                          f"{embedder.sequence_length} tokens ([CLS] and [SEP] included): each was embedded from "
                          f"its first {int(embedder.sequence_length) - 2} tokens", stacklevel=2)
        vectors = _embed(embedder, texts, batch_size, progress)
        metadata.update(truncated=truncated, embedder=embedder_fingerprint(embedder), pooling=embedder.pooling,
                        normalize=bool(embedder.normalize), sequence_length=int(embedder.sequence_length),
                        embedder_source=embedder_source or getattr(embedder, "_tfm_source", None))
        return cls.from_vectors(vectors, texts, ids, extra, dtype, metadata, directory, row_offset)

    @classmethod
    def read_corpus(cls, path, format=None, text_column="text", id_column="id"):
        """`Corpus(texts, ids, extra)` from a TSV (header row, tab-separated, no quoting), JSONL or text file.

        Text files hold one passage per line, ids = line numbers from 1. TSV / JSONL take the text from
        `text_column` and the id from `id_column` (the line number when the file has no such column / key);
        other columns / keys go to `extra`. Empty lines and empty texts are skipped with one warning naming the
        file and the first line numbers (`Corpus.skipped` lists them all).

        Raises:
            InputError: naming the file and line: a duplicate id (with both lines), a missing column, a row
                with the wrong number of fields, invalid JSON, a text that is not a string, bad UTF-8.
        """
        from tfm.retrieval.corpus import read_corpus

        return read_corpus(path, format, text_column, id_column)

    # ---- storage --------------------------------------------------------------------------------
    @classmethod
    def load(cls, directory):
        """The index saved in `directory`, its vectors memory-mapped (read as they are searched)."""
        directory = os.fspath(directory)
        meta_path = os.path.join(directory, METADATA_FILE)
        if not os.path.isfile(meta_path):
            raise FileNotFoundError(f"{directory}: no {METADATA_FILE}, not an index directory (build one with "
                                    f"`tfm index build` or Index.build(..., directory=...))")
        with open(meta_path, encoding="utf-8") as f:
            try:
                metadata = json.load(f)
            except json.JSONDecodeError as error:
                raise InputError(f"{meta_path}: not valid JSON ({error})") from None
        if metadata.get("format_version") != FORMAT_VERSION:
            raise InputError(f"{meta_path}: format_version {metadata.get('format_version')!r}, this tfm reads "
                             f"{FORMAT_VERSION}")
        vectors = np.load(os.path.join(directory, VECTORS_FILE), mmap_mode="r")
        expected = (metadata["size"], metadata["dim"])
        if vectors.shape != expected or vectors.dtype != np.dtype(metadata["dtype"]):
            raise InputError(f"{os.path.join(directory, VECTORS_FILE)}: {vectors.dtype} {vectors.shape}, but "
                             f"{METADATA_FILE} says {metadata['dtype']} {expected}")
        scales = np.load(os.path.join(directory, SCALES_FILE)) if metadata["dtype"] == "int8" else None
        records_path = os.path.join(directory, RECORDS_FILE)
        with open(records_path, encoding="utf-8") as f:
            records = [json.loads(line) for line in f]
        if len(records) != metadata["size"]:
            raise InputError(f"{records_path}: {len(records)} records for {metadata['size']} vectors")
        return cls(vectors, scales, records, metadata, directory)

    def save(self, directory):
        """Writes index.json, vectors.npy (and scales.npy for int8) and records.jsonl into `directory`
        (each file written whole, then renamed into place)."""
        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)

        def write(name, save):
            path = os.path.join(directory, name)
            with open(path + ".tmp", "wb") as f:
                save(f)
            os.replace(path + ".tmp", path)

        write(VECTORS_FILE, lambda f: np.save(f, np.asarray(self._vectors)))
        if self._scales is not None:
            write(SCALES_FILE, lambda f: np.save(f, self._scales))
        write(RECORDS_FILE, lambda f: f.writelines(
            (json.dumps(r, ensure_ascii=False) + "\n").encode("utf-8") for r in self.records))
        write(METADATA_FILE, lambda f: f.write(("{\n" + ",\n".join(  # a key a line (the probe on one line)
            f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in self.metadata.items()) + "\n}\n"
                                                 ).encode("utf-8")))
        self.directory = directory

    def vectors(self, start=0, stop=None):
        """Rows `start:stop` (local rows) as a new float32 array, dequantized (int8 * scale, float16 widened)."""
        return np.array(self._rows(start, stop))

    def _rows(self, start, stop):  # vectors() without a copy for float32 (a read-only use)
        rows = np.asarray(self._vectors[start:stop], "float32")
        if self._scales is not None:
            rows *= self._scales[start:stop, None]
        return rows

    # ---- searching ------------------------------------------------------------------------------
    def check_embedder(self, embedder, atol=PROBE_ATOL):
        """Raises InputError unless `embedder` is the one that built this index (class, backbone config,
        pooling, tokenizer and the probe sentence's embedding within `atol`), naming both models."""
        built = self.metadata.get("embedder")
        if not built or self._checked.get(id(embedder)) is embedder:
            return
        mine = embedder_fingerprint(embedder, built.get("probe_text", PROBE_TEXT))
        reasons = [f"{key} {built.get(key)!r} vs {mine[key]!r}" for key in
                   ("class", "backbone_class", "pooling", "normalize", "tokenizer_class")
                   if built.get(key) != mine[key]]
        config = built.get("backbone_config", {})
        reasons += [f"{key} {config.get(key)!r} vs {mine['backbone_config'].get(key)!r}"
                    for key in sorted(set(config) | set(mine["backbone_config"]))
                    if config.get(key) != mine["backbone_config"].get(key)]
        if built.get("vocabulary_digest") != mine["vocabulary_digest"] or built.get("probe_ids") != mine["probe_ids"]:
            reasons.append("another tokenizer vocabulary")
        probe = np.asarray(built.get("probe", []), "float32")
        if probe.shape == np.shape(mine["probe"]) and not reasons:
            delta = float(np.abs(probe - np.asarray(mine["probe"], "float32")).max(initial=0.0))
            if delta > atol:
                reasons.append(f"other weights (probe embedding differs by max |delta| {delta:.3g} > {atol:g})")
        if reasons:
            query = "has the same architecture but" if _describe(mine) == _describe(built) else \
                f"is {_describe(mine)}:"
            source = self.metadata.get("embedder_source")
            raise InputError(f"{self.directory or 'this index'}: built by {_describe(built)}, but the querying "
                             f"embedder {query} {'; '.join(reasons)}. Query with the embedder that built the index"
                             f"{f' ({source})' if source else ''} or rebuild the index")
        self._checked[id(embedder)] = embedder

    def embed_queries(self, queries, embedder, batch_size=64):
        """`(Q, dim)` float32 query vectors: strings embedded (after `check_embedder`) or an array checked."""
        if isinstance(queries, (str, bytes)):
            raise InputError("search takes a list of queries, got a single string: wrap it in a list")
        if not isinstance(queries, np.ndarray) and all(isinstance(q, (str, bytes)) for q in queries):
            queries = [q.decode("utf-8") if isinstance(q, bytes) else q for q in queries]
            if not queries:
                return np.zeros((0, self.dim), "float32")
            if embedder is None:
                raise InputError(f"text queries need embedder= (this index was built by "
                                 f"{self.metadata.get('embedder_source')!r})")
            self.check_embedder(embedder)
            truncated = count_truncated(embedder, queries)
            if truncated:
                warnings.warn(f"{truncated} of {len(queries)} queries are longer than the embedder's "
                              f"sequence_length={embedder.sequence_length} tokens ([CLS] and [SEP] included): each "
                              f"was embedded from its first {int(embedder.sequence_length) - 2} tokens", stacklevel=3)
            return embedder.embed(queries, batch_size)
        vectors = np.asarray(queries, "float32")
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise InputError(f"query vectors must have shape (Q, {self.dim}), got {vectors.shape}")
        if not np.isfinite(vectors).all():
            raise InputError(f"query vector {int(np.flatnonzero(~np.isfinite(vectors).all(1))[0])} is not finite")
        return vectors

    def search(self, queries, k=10, embedder=None, chunk_size=65536):
        """Exact top-k by dot product (cosine for normalized vectors), ties to the lower row.

        Args:
            queries: list of str (embedded with `embedder`; queries longer than its `sequence_length` are
                truncated, with one warning giving the count) or a float array `(Q, dim)`.
            k: int, results per query (at most `size`).
            embedder: the `TextEmbedder` that built the index (checked, see `check_embedder`).
            chunk_size: corpus rows scored at a time (memory: about `chunk_size * (Q + dim) * 4` bytes).
        """
        if int(k) < 1 or int(chunk_size) < 1:
            raise InputError(f"k and chunk_size must be >= 1, got k={k}, chunk_size={chunk_size}")
        q32 = self.embed_queries(queries, embedder)
        if self.metadata.get("max_norm") is None:  # an index.json written by hand
            self.metadata["max_norm"] = self._max_norm()
        k = min(int(k), self.size)
        best_s = np.zeros((len(q32), 0), "float32")
        best_r = np.zeros((len(q32), 0), "int64")
        # |BLAS float32 score - float64 score| <= H * 2**-24 * ||q|| ||x|| (any summation order); with the final
        # rounding to float32, (2H + 2) * 2**-24 * ||q|| * max||x|| covers both with room.
        tol = (2 * self.dim + 2) * 2.0 ** -24 * np.linalg.norm(q32.astype("float64"), axis=1) \
            * self.metadata["max_norm"] * 1.01 + 1e-30
        q_block = max(1, (1 << 24) // max(1, min(int(chunk_size), self.size)))  # (Q, chunk) scores <= 64 MB
        for start in range(0, self.size if len(q32) else 0, int(chunk_size)):
            chunk = self._rows(start, start + int(chunk_size))
            parts = [_update(best_s[a:a + q_block], best_r[a:a + q_block], q32[a:a + q_block], tol[a:a + q_block],
                             chunk, start, k) for a in range(0, len(q32), q_block)]
            best_s = np.concatenate([p[0] for p in parts])
            best_r = np.concatenate([p[1] for p in parts])
        if not len(q32):
            best_s, best_r = np.zeros((0, k), "float32"), np.zeros((0, k), "int64")
        return self._result(best_s, best_r + self.row_offset)

    def _result(self, scores, rows):
        local = rows - self.row_offset
        return SearchResult(scores.astype("float32"), rows.astype("int64"), [[self.ids[r] for r in row] for row in local],
                            [[self.texts[r] for r in row] for row in local])


def _update(best_s, best_r, q32, tol, chunk, start, k):
    """The running top-k `(scores, rows)` of queries `q32` after corpus rows `start:start+len(chunk)`.

    BLAS scores pick the candidates: rows within `2 * tol` of the chunk's k-th BLAS score and within `tol` of the
    running exact k-th score (a row of the exact top-k always passes both). Candidates are rescored exactly."""
    approx = q32 @ chunk.T
    n, kk = chunk.shape[0], min(k, chunk.shape[0])
    threshold = np.partition(approx, n - kk, axis=1)[:, n - kk] - 2 * tol
    if best_s.shape[1] == k:
        threshold = np.maximum(threshold, best_s[:, -1] - tol)
    qi, ci = np.nonzero(approx >= threshold[:, None])
    exact = np.empty(len(qi), "float32")
    for a in range(0, len(qi), 8192):  # float64 products of float32 are exact; the row sum has a fixed order
        b = a + 8192
        exact[a:b] = (chunk[ci[a:b]].astype("float64") * q32[qi[a:b]].astype("float64")).sum(axis=1)
    q_all = np.concatenate([np.repeat(np.arange(len(q32)), best_s.shape[1]), qi])
    s_all = np.concatenate([best_s.ravel(), exact])
    r_all = np.concatenate([best_r.ravel(), ci.astype("int64") + start])
    order = np.lexsort((r_all, -s_all, q_all))
    q_sorted = q_all[order]
    rank = np.arange(len(order)) - np.searchsorted(q_sorted, q_sorted)
    keep = order[rank < k]
    width = min(k, start + n)
    return s_all[keep].reshape(len(q32), width), r_all[keep].reshape(len(q32), width)


def merge_results(results, k, offsets=None):
    """One top-k from per-shard `SearchResult`s of the same queries: equal to searching one index of the whole
    corpus when each shard's rows are global (`row_offset` at build) or `offsets` gives each shard's first row.

    >>> a = SearchResult(np.array([[0.9, 0.5]], "float32"), np.array([[1, 0]]), [["b", "a"]], [["B", "A"]])
    >>> b = SearchResult(np.array([[0.9, 0.7]], "float32"), np.array([[0, 1]]), [["c", "d"]], [["C", "D"]])
    >>> merge_results([a, b], k=3, offsets=[0, 2]).ids
    [['b', 'c', 'd']]
    """
    results = list(results)
    if not results:
        raise InputError("merge_results needs at least one SearchResult")
    queries = {len(r.scores) for r in results}
    if len(queries) != 1:
        raise InputError(f"the shards' results are for different numbers of queries: {sorted(queries)}")
    offsets = [0] * len(results) if offsets is None else list(offsets)
    if len(offsets) != len(results):
        raise InputError(f"{len(offsets)} offsets for {len(results)} results")
    scores = np.concatenate([np.asarray(r.scores, "float32") for r in results], axis=1)
    rows = np.concatenate([np.asarray(r.rows, "int64") + o for r, o in zip(results, offsets)], axis=1)
    ids = [sum((r.ids[q] for r in results), []) for q in range(queries.pop())]
    texts = [sum((r.texts[q] for r in results), []) for q in range(len(ids))]
    order = np.lexsort((rows, -scores))[:, :int(k)] if scores.size else np.zeros((len(ids), 0), "int64")
    take = np.take_along_axis
    return SearchResult(take(scores, order, 1), take(rows, order, 1), [[ids[q][j] for j in o] for q, o in
                        enumerate(order)], [[texts[q][j] for j in o] for q, o in enumerate(order)])


def _check_unique(ids, where):
    first = {}
    for i, id_ in enumerate(ids):
        if id_ in first:
            raise InputError(f"duplicate id {id_!r} at {where(f'{first[id_]} and {i}')}")
        first[id_] = i
