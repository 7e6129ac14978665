"""CoNLL / BIO token files → tf.data, and word-piece label alignment for token classification."""

import tensorflow as tf

from tfm.data.readers import LabelVocabulary, ReadResult, _Problems, read_lines

IGNORE_LABEL = -100  # label of non-first word pieces and special tokens; weight 0 in the loss


def bio_label_order(tags):
    """Sort tags "O" first, then by entity type, B- before I- (stable ids across runs and files)."""
    def key(tag):
        prefix, _, kind = tag.partition("-")
        return (tag != "O", kind, prefix)

    return sorted(set(tags), key=key)


def read_conll(path, labels=None, on_error="raise"):
    """Read `token ... tag` lines (tag = last column), blank lines between sentences.

    `-DOCSTART-` lines and the blank line after them are skipped (counted as "docstart"). The column
    count is fixed by the first token line (4 for CoNLL-2003, 2 for `char tag` files).

    Args:
        path: file path.
        labels: LabelVocabulary or list of tag names; default: tags in the file, ordered by
            `bio_label_order`. Tags outside a given set are errors (or skipped sentences, "unknown_label").
        on_error: "raise" or "skip": malformed lines, invalid UTF-8 and unknown tags either raise
            `InputError("path:line: ...")` (a ValueError) or drop the whole sentence, counted by reason.

    Returns:
        ReadResult whose dataset yields `{"tokens": tf.string (words,), "tags": tf.int32 (words,)}`.
    """
    problems = _Problems(path, on_error)
    if labels is not None and not isinstance(labels, LabelVocabulary):
        labels = LabelVocabulary(labels)
    sentences, bad_sentence, current, width = [], False, [], None

    def finish():
        nonlocal current, bad_sentence
        if bad_sentence:
            problems.skip("bad_sentence")
        elif current:
            sentences.append(current)
        current, bad_sentence = [], False

    for line_no, line in read_lines(path, problems):
        fields = line.split()
        if not fields:
            finish()
            continue
        if fields[0] == "-DOCSTART-":
            finish()
            problems.skip("docstart")
            continue
        width = width or len(fields)
        if len(fields) < 2 or len(fields) != width:
            problems.bad(line_no, "malformed_line",
                         f"expected 'token ... tag' with {max(width, 2)} columns, got {line[:80]!r}")
            bad_sentence = True
            continue
        if labels is not None and fields[-1] not in labels:
            problems.bad(line_no, "unknown_label", f"tag {fields[-1]!r} not in label set {labels.names}")
            bad_sentence = True
            continue
        current.append((fields[0], fields[-1]))
    finish()
    if "bad_sentence" in problems.skipped:  # already counted per line; keep one sentence-level number
        problems.skipped["skipped_sentences"] = problems.skipped.pop("bad_sentence")
    vocab = labels if labels is not None else LabelVocabulary(bio_label_order(t for s in sentences for _, t in s))
    # Flat values + row lengths: tf.ragged.constant takes ~10 s on CoNLL-2003 train.
    lengths = tf.constant([len(s) for s in sentences], tf.int64, shape=[len(sentences)])
    words = [w for s in sentences for w, _ in s]
    tag_ids = [vocab.id(t) for s in sentences for _, t in s]
    tokens = tf.RaggedTensor.from_row_lengths(tf.constant(words, tf.string, shape=[len(words)]), lengths)
    tags = tf.RaggedTensor.from_row_lengths(tf.constant(tag_ids, tf.int32, shape=[len(tag_ids)]), lengths)
    dataset = tf.data.Dataset.from_tensor_slices({"tokens": tokens, "tags": tags})
    return ReadResult(dataset, len(sentences), problems.skipped, vocab)


def align_word_labels(piece_ids, word_labels, unk_id, ignore_label=IGNORE_LABEL):
    """Flatten word pieces and give each word's label to its first piece, `ignore_label` to the rest.

    Args:
        piece_ids: RaggedTensor int32 `(batch, words, pieces)` from tokenizing pre-split words.
        word_labels: RaggedTensor int32 `(batch, words)`.
        unk_id: int, piece used for words that normalize to nothing (so no word loses its label).
        ignore_label: int label for non-first pieces.

    Returns:
        (ids, labels): RaggedTensors int32 `(batch, pieces)`.
    """
    pieces = piece_ids.values  # (total_words, pieces)
    empty = tf.equal(pieces.row_lengths(), 0)
    filler = tf.RaggedTensor.from_row_lengths(
        tf.fill([tf.reduce_sum(tf.cast(empty, tf.int32))], tf.cast(unk_id, pieces.dtype)),
        tf.cast(empty, tf.int64))
    pieces = tf.concat([pieces, filler], axis=1)
    first = tf.equal(tf.ragged.range(pieces.row_lengths()).flat_values, 0)
    repeated = tf.repeat(word_labels.flat_values, pieces.row_lengths())
    labels = tf.where(first, repeated, tf.cast(ignore_label, repeated.dtype))
    ids = piece_ids.with_values(pieces).merge_dims(1, 2)
    return ids, ids.with_flat_values(labels)
