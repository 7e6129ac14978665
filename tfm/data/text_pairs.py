"""Text pairs for contrastive embedding training: reading (anchor, positive[, negative]) rows and batching them
as `(B, k, L)` inputs, the k texts of an example side by side (the layout `tfm.tasks.contrastive` expects)."""

import tensorflow as tf

from tfm.data.preprocessing import pack_segments
from tfm.data.readers import ReadResult, _Problems, _table_rows, format_of
from tfm.errors import InputError

AUTOTUNE = tf.data.AUTOTUNE
COLUMNS = ("text", "text_pair", "negative")  # the dataset keys: anchor, positive, hard negative


def read_text_pairs(path, text_column="text", text_pair_column="text_pair", negative_column=None, format=None,
                    header=True, on_error="raise"):
    """Read (anchor, positive[, hard negative]) text rows from a TSV / CSV / JSONL file.

    Rows with an empty text in a used column are skipped and counted under "empty_text" (a pair with
    nothing on one side teaches nothing and would pool to a zero vector).

    `text_column` may list several anchor columns (e.g. two translations of the same verse): each row then gives
    one example per anchor column, all with the row's positive (and negative); an empty anchor skips only its
    own example. The examples come column by column (every row's first anchor, then every row's second), so
    unshuffled batches do not hold one positive twice (in-batch negatives would count it as a wrong answer).

    Args:
        path: the file. text_column / text_pair_column / negative_column: the anchor (a column or a list of
            columns), positive and optional hard-negative columns (keys in JSONL). format: "tsv", "csv" or
            "jsonl" (default: the suffix).
        header: bool, TSV/CSV starts with a header row. on_error: "raise" or "skip" for malformed rows.

    Returns:
        ReadResult of `{"text", "text_pair"[, "negative"]: tf.string}`.

    Example:
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "pairs.tsv")
    >>> _ = open(path, "w").write("id\\tes\\tweb\\n1\\tHola\\tHello\\n2\\t\\tEmpty\\n")
    >>> pairs = read_text_pairs(path, "es", "web")
    >>> pairs.num_examples, pairs.skipped
    (1, {'empty_text': 1})
    >>> _ = open(path, "w").write("id\\tes\\tkjv\\tweb\\n1\\tHola\\tHail\\tHello\\n2\\t\\tFarewell\\tBye\\n")
    >>> pairs = read_text_pairs(path, ["es", "kjv"], "web")
    >>> [(r["text"].decode(), r["text_pair"].decode()) for r in pairs.dataset.as_numpy_iterator()], pairs.skipped
    ([('Hola', 'Hello'), ('Hail', 'Hello'), ('Farewell', 'Bye')], {'empty_text': 1})
    """
    kind = format_of(path, format)
    if kind not in ("tsv", "csv", "jsonl"):
        raise InputError(f"{path}: cannot tell the format from the suffix; pass format='tsv'|'csv'|'jsonl'")
    if not text_pair_column:
        raise InputError(f"{path}: contrastive pairs need data.text_pair_column (the positive's column)")
    anchors = [text_column] if isinstance(text_column, str) else list(text_column)
    if not anchors:
        raise InputError(f"{path}: data.text_column names no anchor column")
    others = [c for c in (text_pair_column, negative_column) if c is not None]
    columns = anchors + others
    problems = _Problems(path, on_error)
    rows = [[] for _ in anchors]  # one list per anchor column
    for line_no, row in _table_rows(path, kind, header, None, problems):
        missing = [c for c in columns if c not in row]
        if missing:
            problems.bad(line_no, "missing_field", f"missing column(s) {missing}; the row has {list(row)}")
            continue
        values = [row[c] for c in columns]
        if not all(isinstance(v, str) for v in values):
            problems.bad(line_no, "missing_field", f"columns {columns} must hold strings, got {values!r}"[:200])
            continue
        rest = [row[c] for c in others]
        rest_filled = all(v.strip() for v in rest)
        for column_rows, anchor in zip(rows, (row[c] for c in anchors)):
            if anchor.strip() and rest_filled:
                column_rows.append([anchor] + rest)
            else:
                problems.skip("empty_text")
    rows = [r for column_rows in rows for r in column_rows]
    features = {key: tf.constant([r[i] for r in rows], tf.string, shape=[len(rows)])
                for i, key in enumerate(COLUMNS[:1 + len(others)])}
    return ReadResult(tf.data.Dataset.from_tensor_slices(features), len(rows), problems.skipped)


def contrastive_dataset(data, tokenizer, sequence_length=128, batch_size=32, shuffle=False, seed=None,
                        drop_remainder=False, length_buckets=None, shuffle_buffer=10_000):
    """Batches for in-batch contrastive training: `(x, y)`.

    `x` packs every text as its own `[CLS] text [SEP]` sequence, an example's texts side by side: int32
    `(B, k, L)` with k = 2 (anchor, positive) or 3 (+ hard negative); `y` is zeros `(B,)` int32 (the target
    is each anchor's own positive; `fit` needs a `y`).

    Args:
        data: ReadResult of `read_text_pairs`, or a Dataset of its dicts.
        tokenizer: a Tokenizer with cls/sep/pad ids.
        sequence_length, batch_size: ints.
        shuffle: bool. seed: optional int. shuffle_buffer: int, examples in the shuffle buffer.
        drop_remainder: bool (training: every batch the same size).
        length_buckets: optional increasing ints: each batch is cut to the first of these (or
            `sequence_length`) that holds its longest text, so short batches run short (few XLA shapes).

    For evaluation, `tfm.training.task_data.static_batches` fills a short last batch with weight-0 copies,
    which the loss leaves out of every softmax.

    Example:
    >>> tok = tfm.data.WordPieceTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hola", "hello", "adios", "bye"])
    >>> pairs = tf.data.Dataset.from_tensor_slices({"text": ["hola", "adios"], "text_pair": ["hello", "bye"]})
    >>> x, y = next(iter(contrastive_dataset(pairs, tok, sequence_length=3, batch_size=2)))
    >>> x["token_ids"].numpy().tolist(), y.numpy().tolist()
    ([[[2, 4, 3], [2, 5, 3]], [[2, 6, 3], [2, 7, 3]]], [0, 0])
    """
    ds = data.dataset if isinstance(data, ReadResult) else data
    if shuffle:
        ds = ds.shuffle(max(1, shuffle_buffer), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    lengths = sorted(set(int(b) for b in (length_buckets or ()) if 0 < int(b) < sequence_length)) + [sequence_length]

    def encode(batch):
        packed = [pack_segments([tokenizer.tokenize(batch[key])], sequence_length, tokenizer.cls_id,
                                tokenizer.sep_id, tokenizer.pad_id) for key in COLUMNS if key in batch]
        x = {name: tf.stack([p[name] for p in packed], axis=1) for name in packed[0]}  # (B, k, L)
        longest = tf.reduce_max(tf.reduce_sum(tf.cast(x["padding_mask"], tf.int32), axis=-1))
        length = tf.gather(lengths, tf.searchsorted(lengths, longest[tf.newaxis], side="left"))[0]
        return {name: value[:, :, :length] for name, value in x.items()}, tf.zeros_like(batch["text"], tf.int32)

    return ds.map(encode, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)
