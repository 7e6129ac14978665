"""In-graph text helpers shared by the serving modules: input cleaning, offsets, the tokenizer module.

Everything here runs inside exported `tf.function`s, so it uses TensorFlow and tf-text ops only.
"""

import os

import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text

from tfm.data.preprocessing import pack_segments

REPLACEMENT_CHAR = 0xFFFD


def clean_text(texts):
    """Valid UTF-8 `(batch,)` strings: every invalid byte sequence becomes U+FFFD.

    The tokenizers' byte offsets, and the character offsets derived from them, refer to this cleaned text;
    for valid UTF-8 input it is the input itself.
    """
    return tf.strings.unicode_transcode(texts, "UTF-8", "UTF-8", errors="replace",
                                        replacement_char=REPLACEMENT_CHAR)


def byte_to_char_offsets(texts, byte_offsets):
    """Character index of each byte offset of the valid UTF-8 `texts`.

    A character's index is the number of characters that start before its first byte, so begin offsets
    map to the character they start and exclusive end offsets to one past the last character covered.
    All rows are searched at once in one sorted 1-D array of global byte positions (a dense
    `(batch, max_chars)` table would be 200 MB for one 100k-character text in a batch of 256).

    Args:
        texts: `(batch,)` valid UTF-8 tf.string.
        byte_offsets: int RaggedTensor `(batch, None)` or dense `(batch, n)` of byte offsets into each text.

    Returns:
        int32 offsets of the same structure.
    """
    _, char_starts = tf.strings.unicode_decode_with_offsets(texts, "UTF-8")  # (B, chars) byte starts
    byte_base = tf.cumsum(tf.strings.length(texts), exclusive=True)  # (B,) first byte of each row
    char_base = tf.cast(char_starts.row_splits[:-1], tf.int32)  # (B,) first char of each row
    global_starts = char_starts + tf.cast(byte_base, char_starts.dtype)[:, None]  # sorted across rows
    ragged = isinstance(byte_offsets, tf.RaggedTensor)
    offsets = byte_offsets if ragged else tf.RaggedTensor.from_tensor(byte_offsets)
    rows = tf.cast(offsets.value_rowids(), tf.int32)
    queries = tf.cast(offsets.flat_values, tf.int64) + tf.gather(tf.cast(byte_base, tf.int64), rows)
    found = tf.searchsorted(tf.cast(global_starts.flat_values, tf.int64)[None], queries[None], side="left")[0]
    chars = offsets.with_flat_values(tf.cast(found, tf.int32) - tf.gather(char_base, rows))
    return chars if ragged else chars.to_tensor()


def pack_dense_single(ids, sequence_length, cls_id, sep_id, pad_id):
    """`[CLS] ids [SEP]` padded to `sequence_length` for one row, with dense ops only (TFLite built-ins).

    Equal to `pack_segments([ids], ...)` for a batch of one: the first `sequence_length - 2` tokens are kept.

    Args:
        ids: int32 `(n,)` token ids of one text.
    """
    ids = ids[: sequence_length - 2]
    n = tf.shape(ids)[0]
    row = tf.concat([[cls_id], ids, [sep_id]], 0)
    row = tf.pad(row, [[0, sequence_length - n - 2]], constant_values=pad_id)
    mask = tf.cast(tf.range(sequence_length) < n + 2, tf.int32)
    return {"token_ids": row[None], "segment_ids": tf.zeros_like(row)[None], "padding_mask": mask[None]}


class GraphTokenizer(tf.Module):
    """A tfm tokenizer made part of an exported graph.

    Tokenization runs through the tfm tokenizer's own methods (so ids equal training's); its tf-text /
    KerasHub object is tracked here so its resources are saved. The id -> token table reads the
    vocabulary from an asset file, so the export carries it and can be moved.

    Args:
        tokenizer: a `tfm.data.Tokenizer`.
        asset_dir: directory (kept until the SavedModel is written) holding the tokenizer's files.
    """

    def __init__(self, tokenizer, asset_dir):
        super().__init__(name="tokenizer")
        self._tfm_tokenizer = tokenizer
        self.kind = tokenizer.kind
        self.tf_tokenizer = tokenizer.tf_tokenizer
        self.cls_id, self.sep_id, self.pad_id = tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id
        self.mask_id, self.end_token_id = tokenizer.mask_id, tokenizer.end_token_id
        self.mask_token = None if self.mask_id is None else tokenizer.id_to_token(self.mask_id)
        # The tokenizer's own files travel in the export's assets/, so the export says how it tokenizes
        # (the tf-text ops themselves hold their models as graph constants).
        files_dir = tokenizer.save(os.path.join(asset_dir, "tokenizer"))
        self.files = [tf.saved_model.Asset(str(p)) for p in sorted(files_dir.iterdir())]
        vocabulary = tokenizer.vocabulary
        bad = [t for t in vocabulary if "\n" in t or "\r" in t]
        if bad:
            raise ValueError(f"tokens with line breaks cannot go in a line-based vocabulary asset: {bad[:3]}")
        vocab_file = os.path.join(asset_dir, "id_to_token.txt")
        with open(vocab_file, "w", encoding="utf-8") as f:
            f.write("\n".join(vocabulary) + "\n")
        self.id_to_token_table = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(vocab_file, tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER,
                                          tf.string, tf.lookup.TextFileIndex.WHOLE_LINE),
            default_value="",
        )
        self.offsets_tokenizer = None
        if tokenizer.kind == "sentencepiece":
            # FastSentencepieceTokenizer has no offsets; the regular op gives the same ids for unigram models.
            self.offsets_tokenizer = tf_text.SentencepieceTokenizer(tokenizer.proto, out_type=tf.int32)
        self.word_start_table = tf.constant(_word_start_flags(tokenizer))

    @property
    def has_offsets(self):
        return self.kind == "wordpiece" or self.offsets_tokenizer is not None

    def tokenize(self, texts):
        """int32 RaggedTensor `(batch, None)` of ids (int64 row splits, whatever the tokenizer used)."""
        return tf.cast(self._tfm_tokenizer.tokenize(texts), tf.int32).with_row_splits_dtype(tf.int64)

    def tokenize_with_offsets(self, texts):
        """`(ids, begins, ends)`: int32 ids and int64 byte offsets, RaggedTensors `(batch, None)`."""
        if self.kind == "wordpiece":
            ids, begins, ends = self._tfm_tokenizer.tokenize_with_offsets(texts)
        elif self.offsets_tokenizer is not None:
            ids, begins, ends = self.offsets_tokenizer.tokenize_with_offsets(texts)
        else:
            raise ValueError(f"a {self.kind!r} tokenizer gives no character offsets")
        as_int64_rows = lambda x, dtype: tf.cast(x, dtype).with_row_splits_dtype(tf.int64)  # noqa: E731
        return as_int64_rows(ids, tf.int32), as_int64_rows(begins, tf.int64), as_int64_rows(ends, tf.int64)

    def word_starts(self, ids):
        """bool, same structure as `ids`: True where a token begins a word."""
        if isinstance(ids, tf.RaggedTensor):
            return ids.with_flat_values(tf.gather(self.word_start_table, ids.flat_values))
        return tf.gather(self.word_start_table, ids)

    def detokenize(self, ids):
        """`(batch,)` strings from a RaggedTensor of ids."""
        return self._tfm_tokenizer.detokenize(ids)

    def id_to_token(self, ids):
        """Token strings of int ids (any shape); "" for ids outside the vocabulary (e.g. -1 padding)."""
        return self.id_to_token_table.lookup(tf.cast(ids, tf.int64))

    def pack(self, segments, sequence_length):
        """`pack_segments` with this tokenizer's special ids (round-robin truncation, as in training)."""
        return pack_segments(segments, sequence_length, self.cls_id, self.sep_id, self.pad_id)

    def pack_aligned(self, segments, sequence_length, aligned):
        """`pack_segments` with `aligned` per-token values packed alike: returns `(inputs, [packed int32 values])`."""
        return pack_segments(segments, sequence_length, self.cls_id, self.sep_id, self.pad_id, aligned=aligned)

    def tokenize_with_masks(self, texts):
        """Ids of texts in which each literal mask token (e.g. "[MASK]", case-sensitive) becomes the mask id.

        The text is split on the literal first, because the tokenizers would cut "[MASK]" into "[", "mask", "]".
        """
        pieces = tf.strings.split(texts, sep=self.mask_token)  # (B, pieces): n masks -> n + 1 pieces
        piece_ids = self.tokenize(pieces.flat_values)  # (P, None)
        is_last = tf.equal(tf.range(tf.size(pieces.flat_values, out_type=tf.int64)) + 1,
                           tf.gather(pieces.row_splits[1:], pieces.value_rowids()))
        mask_count = 1 - tf.cast(is_last, tf.int64)  # a mask after every piece but the row's last
        masks = tf.RaggedTensor.from_row_lengths(tf.fill([tf.reduce_sum(mask_count)], self.mask_id), mask_count)
        with_masks = tf.concat([piece_ids, masks], axis=1)  # (P, None)
        return tf.RaggedTensor.from_row_splits(with_masks.flat_values, tf.gather(with_masks.row_splits,
                                                                                pieces.row_splits))


def _word_start_flags(tokenizer):
    """NumPy bool per vocabulary id: does the token begin a word (as `Tokenizer.word_starts`)."""
    return np.asarray(tokenizer.word_starts(tf.range(tokenizer.vocabulary_size)).numpy(), bool)
