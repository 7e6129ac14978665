"""GPT-2 byte-level BPE (`vocab.json` + `merges.txt`), wrapping KerasHub's in-graph implementation."""

import json
from pathlib import Path

import tensorflow as tf

from tfm.data.tokenizer_base import Tokenizer

END_OF_TEXT = "<|endoftext|>"
WORD_START = "\u0120"  # "Ġ": GPT-2's byte-level encoding of a leading space


class BytePairTokenizer(Tokenizer):
    """GPT-2 style byte-level BPE with the tfm tokenizer interface.

    `<|endoftext|>` (when in the vocabulary) is the end, bos and padding token, as in GPT-2; BPE has no
    [CLS]/[SEP]/[MASK], so it serves causal-LM packing only.

    Args:
        vocabulary: dict token → id, or a path to `vocab.json`.
        merges: list of "a b" merge rules (rank order), or a path to `merges.txt`.
        add_prefix_space: bool, encode a leading space so the first word tokenizes like later ones.

    Example:
        >>> tok = BytePairTokenizer({"<|endoftext|>": 0, "a": 1, "b": 2, "Ġ": 3, "ab": 4}, ["a b"])
        >>> tok.tokenize(["ab a"]).to_list()
        [[4, 3, 1]]
    """

    kind = "bpe"

    def __init__(self, vocabulary, merges, add_prefix_space=False):
        super().__init__()
        import keras_hub  # deferred: importing keras_hub costs seconds, only BPE users pay it

        if isinstance(vocabulary, (str, Path)):
            vocabulary = json.loads(Path(vocabulary).read_text(encoding="utf-8"))
        if isinstance(merges, (str, Path)):
            lines = Path(merges).read_text(encoding="utf-8").splitlines()
            merges = [m for m in lines if m and not m.startswith("#version")]
        self._vocab_map = {str(k): int(v) for k, v in vocabulary.items()}
        size = max(self._vocab_map.values()) + 1
        if sorted(self._vocab_map.values()) != list(range(size)):
            raise ValueError("vocab.json ids must be exactly 0..N-1 with no gaps or duplicates")
        self._vocabulary = [None] * size
        for token, i in self._vocab_map.items():
            self._vocabulary[i] = token
        self.merges = list(merges)
        self.add_prefix_space = bool(add_prefix_space)
        special = [END_OF_TEXT] if END_OF_TEXT in self._vocab_map else None
        self._tokenizer = keras_hub.tokenizers.BytePairTokenizer(
            vocabulary=self._vocab_map, merges=self.merges, add_prefix_space=self.add_prefix_space,
            unsplittable_tokens=special, dtype="int32",
            _allow_python_workflow=False,  # eager calls too use the in-graph tf-text path, as tf.data does
        )
        end = self._vocab_map.get(END_OF_TEXT)
        self.eos_id = self.bos_id = self.pad_id = end

    def save(self, directory):
        """Write `vocab.json`, `merges.txt` and `tokenizer.json` into `directory`; returns its Path."""
        directory = self._write_config(directory, add_prefix_space=self.add_prefix_space)
        (directory / "vocab.json").write_text(json.dumps(self._vocab_map, ensure_ascii=False), encoding="utf-8")
        (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(self.merges) + "\n", encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory):
        """Rebuild a tokenizer from a directory with `vocab.json` and `merges.txt` (e.g. GPT-2's files)."""
        directory = Path(directory)
        config = cls._read_config(directory)
        return cls(directory / "vocab.json", directory / "merges.txt",
                   add_prefix_space=config.get("add_prefix_space", False))

    def _tokenize(self, strings):
        with _keep_tensors():
            return tf.cast(self._tokenizer.tokenize(strings), tf.int32)

    def _detokenize(self, ids):
        with _keep_tensors():
            return self._tokenizer.detokenize(ids)

    def _is_word_start_token(self, token):
        return token.startswith(WORD_START)

    @property
    def tf_tokenizer(self):
        """The underlying `keras_hub.tokenizers.BytePairTokenizer` layer."""
        return self._tokenizer


def _keep_tensors():
    """KerasHub turns eager outputs into Python lists; inside this scope it returns tf tensors."""
    from keras_hub.src.utils.tensor_utils import no_convert_scope

    return no_convert_scope()
