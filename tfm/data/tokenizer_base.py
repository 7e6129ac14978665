"""The interface every tfm tokenizer shares, so preprocessors and export never care which one they hold."""

import json
from pathlib import Path

import numpy as np
import tensorflow as tf

CONFIG_FILE = "tokenizer.json"


class Tokenizer:
    """Base class: in-graph `tokenize`/`detokenize` plus vocabulary look-ups and special ids.

    Subclasses set `self._vocabulary` (list of token strings) and the special ids, and implement
    `_tokenize(strings_1d) -> RaggedTensor int32` and `_detokenize(ragged_ids) -> strings`.
    Ids are int32 everywhere; a special id is None when the vocabulary lacks that token.
    """

    kind = None  # written to tokenizer.json so `load_tokenizer` knows the class
    pad_id = unk_id = cls_id = sep_id = mask_id = bos_id = eos_id = None

    def __init__(self):
        self._token_to_id = None
        self._word_start_table = None

    # ---- vocabulary -------------------------------------------------------------------------
    @property
    def vocabulary(self):
        return list(self._vocabulary)

    @property
    def vocabulary_size(self):
        return len(self._vocabulary)

    @property
    def end_token_id(self):
        """The id appended after each document by causal-LM packing."""
        return self.eos_id if self.eos_id is not None else self.sep_id

    @property
    def special_ids(self):
        """Sorted ids of the control tokens (never chosen for masking, never random replacements)."""
        ids = {self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id, self.bos_id, self.eos_id}
        return sorted(i for i in ids if i is not None)

    def token_to_id(self, token):
        """Id of `token`; raises KeyError naming the token when it is not in the vocabulary."""
        if self._token_to_id is None:
            self._token_to_id = {t: i for i, t in enumerate(self._vocabulary)}
        try:
            return self._token_to_id[token]
        except KeyError:
            raise KeyError(f"token {token!r} is not in the vocabulary ({self.vocabulary_size} tokens)") from None

    def id_to_token(self, token_id):
        """Token string of `token_id`; raises IndexError for ids outside [0, vocabulary_size)."""
        if not 0 <= int(token_id) < self.vocabulary_size:
            raise IndexError(f"id {token_id} outside [0, {self.vocabulary_size})")
        return self._vocabulary[int(token_id)]

    def _is_word_start_token(self, token):
        raise NotImplementedError

    # ---- in-graph ops -----------------------------------------------------------------------
    def tokenize(self, strings):
        """Tokenize strings into ids.

        Args:
            strings: tf.string scalar, `(batch,)` tensor, list of str, or a RaggedTensor of strings
                (e.g. pre-split words `(batch, words)` → ids `(batch, words, pieces)`).

        Returns:
            int32 ids: a 1-D tensor for a scalar input, else a RaggedTensor with one more ragged dim.
        """
        strings = _as_string_tensor(strings)
        if isinstance(strings, tf.Tensor) and strings.shape.rank > 1:
            strings = tf.RaggedTensor.from_tensor(strings)
        if isinstance(strings, tf.RaggedTensor):
            return strings.with_flat_values(self._tokenize(strings.flat_values))
        if strings.shape.rank == 0:
            return self._tokenize(strings[tf.newaxis])[0]
        ids = self._tokenize(strings)
        if strings.shape[0] is not None and ids.shape[0] is None:
            # tf-text loses the static batch size; restore it so drop_remainder batches stay static.
            splits = tf.ensure_shape(ids.row_splits, [strings.shape[0] + 1])
            ids = tf.RaggedTensor.from_row_splits(ids.values, splits, validate=False)
        return ids

    __call__ = tokenize

    def word_starts(self, ids):
        """Bool flags, same shape as `ids`: True where a token begins a word (for whole-word masking)."""
        if self._word_start_table is None:
            flags = [self._is_word_start_token(t) for t in self._vocabulary]
            for i in set(self.special_ids) - {self.unk_id}:  # control tokens stand alone
                flags[i] = True
            # Cache NumPy, not a tensor: a tensor made while tracing one tf.data graph can't enter another.
            self._word_start_table = np.array(flags)
        table = tf.constant(self._word_start_table)
        if isinstance(ids, tf.RaggedTensor):
            return ids.with_flat_values(tf.gather(table, ids.flat_values))
        return tf.gather(table, ids)

    def tokenize_with_word_starts(self, strings, boundaries="pieces"):
        """Like `tokenize`, also returning word-start flags of the ids.

        Args:
            strings: `(batch,)` tf.string.
            boundaries: `"pieces"`: the tokenizer's own (`word_starts`: a piece without the continuation
                mark); `"whitespace"`: a token starts a word where it starts its text or follows whitespace, for
                text whose words a segmenter separated by spaces (Chinese whole-word masking: each character is
                a token, `中国 人民` masks `中国` as one word).
        """
        if boundaries == "pieces":
            ids = self.tokenize(strings)
            return ids, self.word_starts(ids)
        if boundaries != "whitespace":
            raise ValueError(f"boundaries must be 'pieces' or 'whitespace', got {boundaries!r}")
        if not hasattr(self, "tokenize_with_offsets"):
            raise ValueError(f"{type(self).__name__} gives no offsets; whitespace word boundaries need them "
                             f"(use a WordPiece tokenizer)")
        ids, begins, _ = self.tokenize_with_offsets(strings)
        begins = tf.cast(begins.flat_values, tf.int64)
        texts = tf.gather(tf.reshape(strings, [-1]), ids.value_rowids())
        before = tf.strings.substr(texts, tf.maximum(begins - 1, 0), tf.cast(begins > 0, tf.int64))
        starts = (begins == 0) | tf.strings.regex_full_match(before, r"\s")
        return ids, ids.with_flat_values(starts)

    def detokenize(self, ids):
        """Turn ids back into text: a RaggedTensor/list of rows gives `(batch,)` strings, 1-D ids a scalar.

        Args:
            ids: int ids; dense inputs have trailing `pad_id`s stripped first (packed model inputs).
        """
        if isinstance(ids, (list, tuple)) and ids and isinstance(ids[0], (list, tuple)):
            ids = tf.ragged.constant(ids, dtype=tf.int32)
        if isinstance(ids, tf.RaggedTensor):
            return self._detokenize(tf.cast(ids, tf.int32))
        ids = tf.cast(tf.convert_to_tensor(ids), tf.int32)
        if ids.shape.rank == 1:
            return self.detokenize(ids[tf.newaxis])[0]
        padding = self.pad_id if self.pad_id is not None else -1
        return self._detokenize(tf.RaggedTensor.from_tensor(ids, padding=padding))

    # ---- files ------------------------------------------------------------------------------
    def _write_config(self, directory, **options):
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {"type": self.kind, **options}
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        return directory

    @staticmethod
    def _read_config(directory):
        path = Path(directory) / CONFIG_FILE
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}

    def __repr__(self):
        return f"{type(self).__name__}(vocabulary_size={self.vocabulary_size})"


def _as_string_tensor(strings):
    if isinstance(strings, (tf.Tensor, tf.RaggedTensor)):
        return strings
    if isinstance(strings, str):
        return tf.constant(strings)
    strings = list(strings)
    if strings and isinstance(strings[0], (list, tuple)):
        return tf.ragged.constant(strings, dtype=tf.string)
    return tf.constant(strings, dtype=tf.string, shape=[len(strings)])


def strings_from(texts_or_dataset):
    """Python str list from a list of str/bytes, a tf.data.Dataset of strings (scalar or batched)."""
    if isinstance(texts_or_dataset, tf.data.Dataset):
        out = []
        for item in texts_or_dataset.as_numpy_iterator():
            items = item.reshape(-1) if hasattr(item, "reshape") else [item]
            out.extend(x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in items)
        return out
    return [t.decode("utf-8", "replace") if isinstance(t, bytes) else t for t in texts_or_dataset]
