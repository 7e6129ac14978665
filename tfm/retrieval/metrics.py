"""Ranking metrics for retrieval benchmarks: Recall@k, MRR@k and nDCG@k with binary relevance, in numpy.

Standard definitions (those of trec_eval and ranx, checked against both in tests/retrieval/test_metrics.py), for a
query with relevant set R and ranking d_1, d_2, ...:
- Recall@k = |R ∩ {d_1..d_k}| / |R| (with one relevant item: 1 if it is in the top k, else 0).
- MRR@k = 1 / (rank of the first relevant item) if that rank <= k, else 0.
- nDCG@k = DCG@k / IDCG@k, DCG@k = sum over relevant d_i, i <= k, of 1 / log2(i + 1), and IDCG@k the DCG of an
  ideal ranking (all of R first): sum over i <= min(|R|, k) of 1 / log2(i + 1).
Each is averaged over the queries. Ranks start at 1.

Two input forms:
- one relevant item per query (`relevant_ids` a flat list or 1-D array of ids): the bible_pairs benchmarks.
- qrels (`relevant_ids[q]` a set, list, tuple or frozenset of ids): several relevant items per query.
Rankings may be ragged and shorter than k (missing positions count as not relevant); an id must not repeat
within one query's ranking, since a repeat would count one relevant item twice.
"""

import numpy as np

_COLLECTIONS = (set, frozenset, list, tuple)


def _relevance(ranked_ids, relevant_ids, depth):
    """`(hits (Q, depth) bool, n_relevant (Q,) int)`: hits[q, i] says whether the (i+1)-th ranked id of query q is
    relevant. A fast vectorized path for a (Q, K) array against one relevant id per query."""
    if len(ranked_ids) != len(relevant_ids):
        raise ValueError(f"ranked_ids has {len(ranked_ids)} queries but relevant_ids has {len(relevant_ids)}; "
                         "expected one ranking per query")
    ranked_array = isinstance(ranked_ids, np.ndarray) and ranked_ids.ndim == 2
    single = not any(isinstance(r, _COLLECTIONS) for r in relevant_ids)
    if ranked_array and single:
        top = ranked_ids[:, :depth]
        for q, row in enumerate(top):
            if len(np.unique(row)) != len(row):
                raise ValueError(f"query {q}: the ranking repeats an id ({row.tolist()}); ids must be unique")
        hits = np.zeros((len(top), depth), bool)
        hits[:, :top.shape[1]] = top == np.asarray(relevant_ids).reshape(-1, 1)
        return hits, np.ones(len(top), np.int64)
    hits = np.zeros((len(ranked_ids), depth), bool)
    n_relevant = np.zeros(len(ranked_ids), np.int64)
    for q, (row, relevant) in enumerate(zip(ranked_ids, relevant_ids)):
        relevant = set(relevant) if isinstance(relevant, _COLLECTIONS) else {relevant}
        if not relevant:
            raise ValueError(f"query {q} has no relevant ids; every query needs at least one (drop it, as "
                             "trec_eval ignores queries without qrels)")
        row = list(row)
        if len(set(row)) != len(row):
            raise ValueError(f"query {q}: the ranking repeats an id ({row[:depth]}...); ids must be unique")
        n_relevant[q] = len(relevant)
        hits[q, :min(depth, len(row))] = [d in relevant for d in row[:depth]]
    return hits, n_relevant


def per_query_scores(ranked_ids, relevant_ids, ks=(1, 10)):
    """Per-query values of every metric of `retrieval_scores`: a dict of float64 arrays `(Q,)`.

    Args: as `retrieval_scores`.
    """
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive cutoffs, got {ks}")
    depth = ks[-1]
    hits, n_relevant = _relevance(ranked_ids, relevant_ids, depth)
    discount = 1.0 / np.log2(np.arange(2, depth + 2))  # position i (1-based) -> 1 / log2(i + 1)
    ideal = np.cumsum(discount)  # ideal[m - 1] = IDCG with m relevant items in the top positions
    out = {}
    for k in ks:
        out[f"recall@{k}"] = hits[:, :k].sum(axis=1) / n_relevant
    any_hit = hits.any(axis=1)
    first = np.argmax(hits, axis=1)  # 0-based position of the first hit (0 when none: masked below)
    out[f"mrr@{depth}"] = np.where(any_hit, 1.0 / (first + 1), 0.0)
    dcg = (hits * discount).sum(axis=1)
    out[f"ndcg@{depth}"] = dcg / ideal[np.minimum(n_relevant, depth) - 1]
    return out


def retrieval_scores(ranked_ids, relevant_ids, ks=(1, 10)):
    """Mean Recall@k for every k in `ks`, and MRR and nDCG at the largest k, over the queries.

    Args:
        ranked_ids: per query, its ranked ids, best first: a list of lists (ragged allowed) or a `(Q, K)` array.
        relevant_ids: per query, either its one relevant id, or a set/list/tuple of relevant ids (binary qrels).
        ks: cutoffs; Recall is reported at each, MRR and nDCG at `max(ks)`.

    Returns:
        dict of floats, e.g. `{"recall@1": ..., "recall@10": ..., "mrr@10": ..., "ndcg@10": ...}`.

    Example:
    >>> scores = retrieval_scores([["a", "b", "c"], ["c", "a", "b"]], ["b", {"c", "b"}], ks=(1, 3))
    >>> {name: round(value, 4) for name, value in scores.items()}
    {'recall@1': 0.25, 'recall@3': 1.0, 'mrr@3': 0.75, 'ndcg@3': 0.7753}
    """
    if len(ranked_ids) == 0:
        raise ValueError("retrieval_scores needs at least one query, got none")
    return {name: float(values.mean()) for name, values in per_query_scores(ranked_ids, relevant_ids, ks).items()}
