"""BERT WordPiece tokenizer: train with tf-text's learner, run in-graph with `FastBertTokenizer`."""

import warnings
from pathlib import Path

import tensorflow as tf
import tensorflow_text as tf_text
from tensorflow_text.python.ops import bert_tokenizer
from tensorflow_text.tools.wordpiece_vocab import wordpiece_tokenizer_learner_lib as learner

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
    def train(cls, texts_or_dataset, vocabulary_size, lowercase=True, reserved_tokens=RESERVED_TOKENS,
              max_unique_chars=None, slack_ratio=0.05):
        """Learn a vocabulary of `vocabulary_size` tokens.

        Words are counted with tf-text's BERT basic tokenizer (the same normalization and splitting the
        tokenizer applies) and pieces learned with tf-text's WordPiece learner. When the corpus has more
        pieces seen twice or more than fit, the count threshold is searched until the vocabulary is within
        `slack_ratio` below `vocabulary_size`; where neighbouring integer thresholds jump over that band, the next
        most frequent pieces of the lower threshold fill it up to `vocabulary_size`. A corpus with too little text gives fewer tokens, and an
        alphabet (`max_unique_chars`) too large for `vocabulary_size` more; both warn, naming the two sizes.
        `##` + a CJK ideograph is never learned: BERT splits ideographs into one-character words, so
        such a piece could never be used and would only take a slot.

        Args:
            texts_or_dataset: list of str, or a tf.data.Dataset of tf.string scalars or batches.
            vocabulary_size: int, target size including the reserved tokens.
            lowercase: bool, train an uncased vocabulary.
            reserved_tokens: tokens placed first, in order (default `[PAD] [UNK] [CLS] [SEP] [MASK]`).
            max_unique_chars: int alphabet size (rarer characters become [UNK]); default `vocabulary_size // 2`
                (at least 1000), so Chinese keeps its characters (the learner's own default is 1000).
            slack_ratio: float, how far below `vocabulary_size` the vocabulary may end (a search that cannot
                stop inside this band fills it with the next most frequent pieces).
        """
        if isinstance(texts_or_dataset, tf.data.Dataset):
            dataset = texts_or_dataset
            if dataset.element_spec.shape.rank == 0:
                dataset = dataset.batch(1024)
        else:
            texts = strings_from(texts_or_dataset)
            dataset = tf.data.Dataset.from_tensor_slices(tf.constant(texts, tf.string, shape=[len(texts)]))
            dataset = dataset.batch(1024)
        splitter = bert_tokenizer.BasicTokenizer(lower_case=lowercase)
        counts = learner.count_words(dataset.map(splitter.tokenize, tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE))
        max_unique_chars = max_unique_chars or max(1000, vocabulary_size // 2)
        vocab = _learn(counts, vocabulary_size, list(reserved_tokens), max_unique_chars, slack_ratio)
        if len(vocab) < (1 - slack_ratio) * vocabulary_size:
            warnings.warn(f"WordPiece vocabulary reached {len(vocab)} of the requested {vocabulary_size} tokens: the "
                          f"corpus has no more pieces seen twice or more; train on more text or ask for fewer "
                          f"tokens", stacklevel=2)
        elif len(vocab) > vocabulary_size:
            warnings.warn(f"WordPiece vocabulary reached {len(vocab)} tokens, more than the requested {vocabulary_size}: "
                          f"its alphabet of up to {max_unique_chars} characters (max_unique_chars) does not fit; "
                          f"ask for more tokens or a smaller alphabet", stacklevel=2)
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


def _is_unusable(token):
    """`##` + a CJK ideograph: BERT splits ideographs into single-character words, so it never matches."""
    return token.startswith(SUFFIX) and len(token) == len(SUFFIX) + 1 and is_cjk(token[-1])


def _learn(counts, vocabulary_size, reserved_tokens, max_unique_chars, slack_ratio, min_count=2):
    """Vocabulary of the smallest count threshold that fits `vocabulary_size`, topped up to it.

    tf-text's own search bisects from the most frequent word's count downwards (~log2(max count) full
    learning passes); thresholds that fit are usually small, so searching upwards from `min_count` (doubling,
    then bisection) needs far fewer passes (3 instead of 11 on 4k SST-2 sentences). Sizes are measured
    without the unusable `##<CJK>` pieces the learner adds for every ideograph (counting them halved the
    vocabulary of mixed English/Chinese text). Thresholds are integers and the size jumps between
    neighbours, so the search stops within `slack_ratio` and the most frequent pieces of the next lower
    threshold's (too large) vocabulary fill the gap.
    """
    params = learner.Params(None, min_count, 4, int(5e6), 50, max_unique_chars, vocabulary_size, slack_ratio, True,
                            SUFFIX, reserved_tokens)
    words = learner.get_input_words(list(counts.items()), reserved_tokens, params.max_token_length)
    allowed = learner.get_allowed_chars(words, max_unique_chars)
    words = learner.filter_input_words(words, allowed, params.max_input_tokens)
    max_count = max((c for _, c in words), default=min_count)

    def learn(threshold):
        return [t for t in learner.learn_with_thresh(words, threshold, params) if not _is_unusable(t)]

    low, vocab = min_count, learn(min_count)
    if len(vocab) <= vocabulary_size:
        return vocab  # the corpus has no more pieces seen `min_count` times
    high, larger = low, vocab
    while len(vocab) > vocabulary_size and high <= max_count:  # double until a threshold fits
        low, larger = high, vocab
        high = min(2 * high, max_count + 1)
        vocab = learn(high)
    if len(vocab) > vocabulary_size:
        return vocab  # even the alphabet alone does not fit
    while high - low > 1 and len(vocab) < (1 - slack_ratio) * vocabulary_size:
        mid = (low + high) // 2
        candidate = learn(mid)
        if len(candidate) <= vocabulary_size:
            high, vocab = mid, candidate
        else:
            low, larger = mid, candidate
    if len(vocab) >= (1 - slack_ratio) * vocabulary_size:
        return vocab  # within the slack: left as the threshold gives it (vocabularies stay reproducible)
    # `larger` lists its learned pieces by count, most frequent first; every one keeps the vocabulary valid.
    present = set(vocab)
    return vocab + [t for t in larger if t not in present][:vocabulary_size - len(vocab)]
