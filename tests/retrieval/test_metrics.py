"""tfm.retrieval.metrics (Recall@k, MRR@k, nDCG@k) against hand arithmetic and against trec_eval / ranx numbers, and
the core path of tools/retrieval_benchmark.py (Index build + search + metrics) on a tiny random embedder."""

import json
import math
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import TINY_BERT
from tfm.retrieval.metrics import per_query_scores, retrieval_scores

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import retrieval_benchmark  # noqa: E402


def _ranking(relevant_rank, relevant="r", length=12):
    """Ids "x1".."x{length}" with `relevant` put at 1-based `relevant_rank` (None: absent)."""
    row = [f"x{i}" for i in range(1, length + 1)]
    if relevant_rank is not None:
        row[relevant_rank - 1] = relevant
    return row


def test_one_relevant_item_hand_computed():
    # Ranks of the relevant item: 1, 3, 11 (beyond the cutoff), 10, absent.
    ranked = [_ranking(1), _ranking(3), _ranking(11), _ranking(10), _ranking(None)]
    scores = retrieval_scores(ranked, ["r"] * 5)
    assert set(scores) == {"recall@1", "recall@10", "mrr@10", "ndcg@10"}
    assert scores["recall@1"] == float(Fraction(1, 5))
    assert scores["recall@10"] == float(Fraction(3, 5))
    assert scores["mrr@10"] == pytest.approx(float((Fraction(1, 1) + Fraction(1, 3) + Fraction(1, 10)) / 5), abs=1e-15)
    # nDCG with one relevant item: IDCG = 1/log2(2) = 1, DCG = 1/log2(rank + 1).
    assert scores["ndcg@10"] == pytest.approx((1 + 1 / math.log2(4) + 1 / math.log2(11)) / 5, abs=1e-15)
    # The same numbers from a (Q, K) integer array (the vectorized path), rank 11 cut off by a 10-wide array.
    array = np.array([[7, 1, 2, 3, 4, 5, 6, 8, 9, 10], [1, 2, 7, 3, 4, 5, 6, 8, 9, 10],
                      [1, 2, 3, 4, 5, 6, 8, 9, 10, 11], [1, 2, 3, 4, 5, 6, 8, 9, 10, 7],
                      [1, 2, 3, 4, 5, 6, 8, 9, 10, 11]])
    assert retrieval_scores(array, np.full(5, 7)) == scores


def test_qrels_hand_computed():
    ranked = [["a", "b", "c", "d"],           # relevant {a, c}: hits at ranks 1 and 3
              ["b", "a", "c"],                # relevant {c, z}: z never retrieved
              [f"p{i}" for i in range(12)],   # 12 relevant, the top 10 all relevant
              []]                             # nothing retrieved
    relevant = [{"a", "c"}, ("c", "z"), [f"p{i}" for i in range(12)], {"q"}]
    per = per_query_scores(ranked, relevant, ks=(1, 10))
    exact = lambda *values: [float(Fraction(v)) for v in values]  # noqa: E731 (float of the exact fraction)
    np.testing.assert_array_equal(per["recall@1"], exact(Fraction(1, 2), 0, Fraction(1, 12), 0))
    np.testing.assert_array_equal(per["recall@10"], exact(1, Fraction(1, 2), Fraction(10, 12), 0))
    np.testing.assert_array_equal(per["mrr@10"], exact(1, Fraction(1, 3), 1, 0))
    idcg2 = 1 + 1 / math.log2(3)  # two relevant: ideal ranks 1 and 2
    np.testing.assert_allclose(per["ndcg@10"], [(1 + 1 / math.log2(4)) / idcg2, (1 / math.log2(4)) / idcg2, 1.0, 0],
                               rtol=0, atol=1e-15)
    scores = retrieval_scores(ranked, relevant, ks=(1, 3, 10))
    assert scores["recall@3"] == float((1 + Fraction(1, 2) + Fraction(3, 12) + 0) / 4)
    assert scores["mrr@10"] == pytest.approx(float((1 + Fraction(1, 3) + 1) / 4), abs=1e-15)


def test_metrics_errors_name_the_query():
    with pytest.raises(ValueError, match="query 1: the ranking repeats an id"):
        retrieval_scores([["a", "b"], ["a", "a"]], ["a", "a"])
    with pytest.raises(ValueError, match="query 1: the ranking repeats an id"):
        retrieval_scores(np.array([[1, 2], [3, 3]]), [1, 3])
    with pytest.raises(ValueError, match="query 0 has no relevant ids"):
        retrieval_scores([["a"]], [set()])
    with pytest.raises(ValueError, match="ranked_ids has 2 queries but relevant_ids has 1"):
        retrieval_scores([["a"], ["b"]], ["a"])
    with pytest.raises(ValueError, match="positive cutoffs"):
        retrieval_scores([["a"]], ["a"], ks=(0, 10))


def _random_run(seed=20260117, queries=200, docs=100, depth=20):
    """A seeded random run: 1-3 relevant docs of 100 per query, boosted so their ranks spread over 1..20+, and
    ragged rankings of 5-20 ids (the same code made the reference numbers below)."""
    rng = np.random.default_rng(seed)
    ranked, relevant = [], []
    for _ in range(queries):
        n = int(rng.integers(1, 4))
        rel = rng.choice(docs, size=n, replace=False)
        scores = rng.random(docs)
        scores[rel] += 0.5 * rng.random(n)
        length = int(rng.integers(5, depth + 1))
        ranked.append([f"d{d}" for d in np.argsort(-scores, kind="stable")[:length]])
        relevant.append({f"d{d}" for d in rel})
    return ranked, relevant


# Computed on _random_run() with ranx 0.3.21 (evaluate(Qrels, Run, ["recall@1", "recall@10", "mrr@10", "ndcg@10"]))
# and pytrec_eval-terrier 0.5.11 (trec_eval measures recall.1,10, ndcg_cut.10, and recip_rank on each run cut to
# its top 10), in a separate venv: both gave these exact float64 values. "single": each query's relevant set
# reduced to its smallest id (lexicographic).
REFERENCE = {
    "qrels": {"recall@1": 0.24583333333333332, "recall@10": 0.34, "mrr@10": 0.482765873015873,
              "ndcg@10": 0.34691351502079004},
    "single": {"recall@1": 0.235, "recall@10": 0.325, "mrr@10": 0.2663373015873016, "ndcg@10": 0.2804897856938951},
}


def test_parity_with_ranx_and_trec_eval():
    ranked, relevant = _random_run()
    # The generator still gives the run the references were computed on.
    assert (sum(map(len, ranked)), ranked[0][:3], relevant[0]) == (2681, ["d63", "d83", "d13"], {"d89"})
    for name, rel in (("qrels", relevant), ("single", [sorted(r)[0] for r in relevant])):
        scores = retrieval_scores(ranked, rel)
        for metric, value in REFERENCE[name].items():
            assert scores[metric] == pytest.approx(value, rel=1e-12, abs=1e-15), (name, metric)


def _tiny_embedder(vocabulary):
    import tfm

    backbone = tfm.models.BertBackbone(**{**TINY_BERT, "vocabulary_size": len(vocabulary)})
    return tfm.tasks.TextEmbedder(backbone, tokenizer=tfm.data.WordPieceTokenizer(vocabulary), sequence_length=12)


def _tiny_rows(n=30, seed=0):
    """bible_pairs-like columns: `kjv` equal to `web` (so each query's own document scores 1), `es` other
    texts; all texts distinct, 3-5 of 20 words (under the tiny embedder's 12-token limit)."""
    rng = np.random.default_rng(seed)
    texts = set()
    while len(texts) < 2 * n:
        texts.add(" ".join(f"w{i}" for i in rng.choice(20, size=int(rng.integers(3, 6)), replace=False)))
    texts = sorted(texts)
    rng.shuffle(texts)
    return {"id": [f"Gen.1.{i + 1}" for i in range(n)], "kjv": texts[:n], "web": texts[:n], "es": texts[n:]}


def test_benchmark_core_on_a_tiny_embedder(tmp_path):
    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + [f"w{i}" for i in range(20)]
    embedder = _tiny_embedder(vocabulary)
    rows = _tiny_rows()
    path = tmp_path / "dev.tsv"
    path.write_text("id\tkjv\tweb\tes\n" + "".join(f"{a}\t{b}\t{c}\t{d}\n" for a, b, c, d in zip(*rows.values())),
                    encoding="utf-8")
    assert retrieval_benchmark.read_split(path) == rows
    report = retrieval_benchmark.run_benchmark(rows, embedders={"tiny": embedder}, bm25=False, latency_queries=5,
                                               log=lambda *a: None)
    assert report["corpus_size"] == 30 and report["queries"] == {"kjv": 30, "es": 30}
    results = {r["benchmark"]: r for r in report["results"]}
    # KJV column == WEB column: each query's own document has cosine 1, all others less.
    assert [results["kjv"][m] for m in retrieval_benchmark.METRICS] == [1.0, 1.0, 1.0, 1.0]
    # Spanish column: the Index's ranking equals a float64 brute-force ranking of the same embeddings.
    corpus, queries = embedder.embed(rows["web"]).astype("float64"), embedder.embed(rows["es"]).astype("float64")
    brute = np.argsort(-(queries @ corpus.T), axis=1, kind="stable")[:, :10]
    expected = retrieval_scores([[rows["id"][i] for i in row] for row in brute], rows["id"])
    assert {m: results["es"][m] for m in retrieval_benchmark.METRICS} == expected
    speed = report["speed"]["tiny"]
    assert speed["dim"] == TINY_BERT["hidden_dim"] and speed["query_ms"]["n"] == speed["search_ms"]["n"] == 5
    assert speed["build_sentences_per_s"] == pytest.approx(30 / speed["build_s"])
    assert 0 < speed["search_ms"]["p50"] <= speed["search_ms"]["p99"]
    # --max-queries keeps evenly spaced rows, first and last included.
    assert retrieval_benchmark.query_rows(30, 4).tolist() == [0, 10, 19, 29]
    table = retrieval_benchmark.markdown(report)
    assert f"| Spanish -> WEB | tiny | {results['es']['recall@1']:.4f} | {results['es']['recall@10']:.4f} |" in table
    assert "| KJV -> WEB | tiny | 1.0000 | 1.0000 | 1.0000 | 1.0000 |" in table
    json.dumps(report)  # the report is JSON-serializable as written by --output


def test_random_vector_index_layout():
    """The 1M-vector latency row on 3,000 x 16: the directory loads, and int8 files hold exactly the vectors and
    the per-row scales (2 .npy files of 128-byte headers)."""
    row = retrieval_benchmark.million_row("int8", size=3000, dim=16, queries=5)
    assert row["vector_bytes"] == 3000 * 16 + 3000 * 4 + 2 * 128
    assert row["search_ms"]["n"] == 5 and row["peak_rss_mb"] >= row["rss_before_mb"] > 0
    table = retrieval_benchmark.markdown({"corpus_size": 0, "queries": {}, "results": [], "speed": {},
                                          "million": [row]})
    assert f"| int8 | 0 | {row['search_ms']['p50']:.1f} / {row['search_ms']['p99']:.1f} |" in table
    row = retrieval_benchmark.million_row("float32", size=3000, dim=16, queries=5)
    assert row["vector_bytes"] == 3000 * 16 * 4 + 128
