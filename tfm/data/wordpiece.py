"""BERT WordPiece tokenizer: train with tf-text's learner, run in-graph with `FastBertTokenizer`."""

from pathlib import Path

import tensorflow as tf
import tensorflow_text as tf_text
from tensorflow_text.tools.wordpiece_vocab import bert_vocab_from_dataset as vocab_learner

from tfm.data.tokenizer_base import Tokenizer, strings_from

RESERVED_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
SUFFIX = "##"


class WordPieceTokenizer(Tokenizer):
    """WordPiece over BERT normalization: split on whitespace/punctuation, CJK ideographs one per token.

    Runs `tensorflow_text.FastBertTokenizer`, which works inside `tf.data`, SavedModels and TFLite.

    Args:
        vocabulary: list of tokens or path to a `vocab.txt` (one token per line); continuation pieces
            start with `##`. Must contain `[UNK]`; `[PAD] [CLS] [SEP] [MASK]` are looked up when present.
        lowercase: bool, lowercase + strip accents (uncased BERT) before splitting.

    Example:
        >>> tok = WordPieceTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hi", "##s", "!"])
        >>> tok.tokenize(["His!"]).to_list()
        [[5, 6, 7]]
    """

    kind = "wordpiece"

    def __init__(self, vocabulary, lowercase=True):
        super().__init__()
        if isinstance(vocabulary, (str, Path)):
            vocabulary = Path(vocabulary).read_text(encoding="utf-8").splitlines()
        self._vocabulary = list(vocabulary)
        if "[UNK]" not in self._vocabulary:
            raise ValueError("a WordPiece vocabulary needs an '[UNK]' token")
        self.lowercase = bool(lowercase)
        index = {t: i for i, t in enumerate(self._vocabulary)}
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (index.get(t) for t in RESERVED_TOKENS)
        self._tokenizer = tf_text.FastBertTokenizer(
            vocab=self._vocabulary,
            suffix_indicator=SUFFIX,
            token_out_type=tf.int32,
            unknown_token="[UNK]",
            support_detokenization=True,
            lower_case_nfd_strip_accents=self.lowercase,
        )

    @classmethod
    def train(cls, texts_or_dataset, vocab_size, lowercase=True, reserved_tokens=RESERVED_TOKENS, **learn_params):
        """Learn a vocabulary of about `vocab_size` tokens (tf-text's learner stops within ~5%).

        Args:
            texts_or_dataset: list of str, or a tf.data.Dataset of tf.string scalars or batches.
            vocab_size: int, target size including the reserved tokens.
            lowercase: bool, train an uncased vocabulary.
            reserved_tokens: tokens placed first, in order (default `[PAD] [UNK] [CLS] [SEP] [MASK]`).
            **learn_params: passed to `wordpiece_tokenizer_learner_lib.learn` (e.g. `slack_ratio`).
        """
        if isinstance(texts_or_dataset, tf.data.Dataset):
            dataset = texts_or_dataset
            if dataset.element_spec.shape.rank == 0:
                dataset = dataset.batch(1024)
        else:
            dataset = tf.data.Dataset.from_tensor_slices(tf.constant(strings_from(texts_or_dataset), tf.string))
            dataset = dataset.batch(1024)
        # The learner's default cap of 1000 characters would turn most Chinese text into [UNK]; scale it.
        learn_params.setdefault("max_unique_chars", max(1000, vocab_size // 2))
        # Its default minimum count of 10 leaves small corpora far below vocab_size.
        learn_params.setdefault("lower_thresh", 2)
        vocab = vocab_learner.bert_vocab_from_dataset(
            dataset.prefetch(tf.data.AUTOTUNE),
            vocab_size,
            list(reserved_tokens),
            bert_tokenizer_params={"lower_case": lowercase},
            learn_params=learn_params,
        )
        # "##<CJK>" can never be produced (ideographs are always split off as whole words): drop them.
        vocab = [t for t in vocab if not (t.startswith(SUFFIX) and len(t) == 3 and is_cjk(t[2]))]
        return cls(vocab, lowercase=lowercase)

    def save(self, directory):
        """Write `vocab.txt` and `tokenizer.json` (type, lowercase) into `directory`; returns its Path."""
        directory = self._write_config(directory, lowercase=self.lowercase)
        (directory / "vocab.txt").write_text("\n".join(self._vocabulary) + "\n", encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory):
        """Rebuild a tokenizer written by `save` (a bare BERT `vocab.txt` directory loads as uncased)."""
        config = cls._read_config(directory)
        return cls(Path(directory) / "vocab.txt", lowercase=config.get("lowercase", True))

    def _tokenize(self, strings):
        return self._tokenizer.tokenize(strings)

    def tokenize_with_offsets(self, strings):
        """Ids plus begin/end byte offsets of each token in the original (unnormalized) strings.

        Args:
            strings: `(batch,)` tf.string.
        """
        return self._tokenizer.tokenize_with_offsets(strings)

    def _detokenize(self, ids):
        return self._tokenizer.detokenize(ids)

    def _is_word_start_token(self, token):
        return not token.startswith(SUFFIX)

    @property
    def tf_tokenizer(self):
        """The underlying `tensorflow_text.FastBertTokenizer` (a tf.Module, trackable in SavedModels)."""
        return self._tokenizer


_CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
               (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def is_cjk(char):
    """True for CJK ideographs, the characters BERT splits into single-character words."""
    code = ord(char)
    return any(lo <= code <= hi for lo, hi in _CJK_RANGES)
