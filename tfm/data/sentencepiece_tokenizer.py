"""SentencePiece (BPE or unigram): train with the `sentencepiece` package, run in-graph with tf-text."""

import io
import re
import warnings
from pathlib import Path

import sentencepiece as spm
import tensorflow as tf
import tensorflow_text as tf_text
from sentencepiece import sentencepiece_model_pb2

from tfm.data.tokenizer_base import Tokenizer, strings_from
from tfm.errors import InputError

MODEL_FILE = "spm.model"
# Ids 0-3 are sentencepiece's own pad/unk/bos/eos; the BERT-style controls follow so one model can feed
# masked-LM and classification packing as well as causal-LM packing.
CONTROL_SYMBOLS = ("[CLS]", "[SEP]", "[MASK]")
WORD_START = "\u2581"  # "▁", sentencepiece's whitespace marker


class SentencePieceTokenizer(Tokenizer):
    """SentencePiece model run in-graph.

    Unigram models run with `tensorflow_text.FastSentencepieceTokenizer` (TFLite-convertible). BPE models
    run with `tensorflow_text.SentencepieceTokenizer`, because the fast op applies unigram scoring and
    gives different ids for BPE models.

    Args:
        proto: bytes of a serialized `.model`, or a path to one.

    Example:
        >>> tok = SentencePieceTokenizer.train(["a small corpus", "of lines"] * 50, vocabulary_size=22)
        >>> tok.detokenize(tok.tokenize(["a small corpus"])).numpy().tolist()
        [b'a small corpus']
    """

    kind = "sentencepiece"

    def __init__(self, proto):
        super().__init__()
        if isinstance(proto, (str, Path)):
            proto = Path(proto).read_bytes()
        self.proto = bytes(proto)
        sp = spm.SentencePieceProcessor(model_proto=self.proto)
        self._vocabulary = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
        index = {t: i for i, t in enumerate(self._vocabulary)}
        as_id = lambda i: i if i >= 0 else None  # noqa: E731  (sentencepiece uses -1 for "none")
        self.pad_id, self.unk_id = as_id(sp.pad_id()), as_id(sp.unk_id())
        self.bos_id, self.eos_id = as_id(sp.bos_id()), as_id(sp.eos_id())
        # Models without BERT controls pack with bos/eos as [CLS]/[SEP] and cannot be masked.
        self.cls_id = index.get("[CLS]", self.bos_id)
        self.sep_id = index.get("[SEP]", self.eos_id)
        self.mask_id = index.get("[MASK]")
        model = sentencepiece_model_pb2.ModelProto.FromString(self.proto)
        self.model_type = sentencepiece_model_pb2.TrainerSpec.ModelType.Name(model.trainer_spec.model_type).lower()
        if self.model_type == "unigram":
            self._tokenizer = tf_text.FastSentencepieceTokenizer(self.proto)
        else:
            self._tokenizer = tf_text.SentencepieceTokenizer(self.proto, out_type=tf.int32)

    @classmethod
    def train(cls, texts, vocabulary_size, model_type="unigram", character_coverage=0.9995, **trainer_options):
        """Train a model on `texts` in memory.

        Args:
            texts: list of str or a tf.data.Dataset of strings.
            vocabulary_size: int, vocabulary size; a corpus too small for it gives the largest size it supports,
                with a warning naming both sizes (a size too small for the characters is an `InputError`).
            model_type: "bpe" or "unigram".
            character_coverage: float, share of characters kept (0.9995 suits CJK; rarer ones → unk).
            **trainer_options: other `sentencepiece.SentencePieceTrainer.train` options.
        """
        if model_type not in ("bpe", "unigram"):
            raise ValueError(f"model_type must be 'bpe' or 'unigram', got {model_type!r}")
        sentences = [t for t in strings_from(texts) if t.strip()]
        if not sentences:
            raise ValueError("cannot train a SentencePiece model on an empty corpus")
        options = dict(
            pad_id=0, unk_id=1, bos_id=2, eos_id=3, control_symbols=list(CONTROL_SYMBOLS),
            character_coverage=character_coverage, num_threads=2, minloglevel=2,
            # Corpora of lines longer than the default 4192 bytes are otherwise silently dropped.
            max_sentence_length=1 << 16,
        )
        options.update(trainer_options)
        try:
            return cls(_train_model(sentences, vocabulary_size, model_type, options))
        except RuntimeError as error:
            too_high = re.search(r"Vocabulary size too high \(\d+\)\. Please set it to a value <= (\d+)", str(error))
            too_low = re.search(r"smaller than required_chars\. \d+ vs (\d+)", str(error))
            if too_low:
                raise InputError(f"a SentencePiece vocabulary of {vocabulary_size} tokens cannot hold the corpus's "
                                 f"{too_low.group(1)} characters and special pieces; ask for more tokens (or lower "
                                 f"character_coverage)") from None
            if not too_high:
                raise
        # Too little text for `vocabulary_size` pieces: train the largest model it supports and say so.
        reached = int(too_high.group(1))
        warnings.warn(f"SentencePiece vocabulary reached {reached} of the requested {vocabulary_size} tokens: the corpus "
                      f"has too little text; train on more text or ask for fewer tokens", stacklevel=2)
        return cls(_train_model(sentences, reached, model_type, options))

    def save(self, directory):
        """Write `spm.model` and `tokenizer.json` into `directory`; returns its Path."""
        directory = self._write_config(directory, model_file=MODEL_FILE, model_type=self.model_type)
        (directory / MODEL_FILE).write_bytes(self.proto)
        return directory

    @classmethod
    def load(cls, directory):
        """Rebuild a tokenizer written by `save`, or from the single `*.model` file in `directory`."""
        directory = Path(directory)
        name = cls._read_config(directory).get("model_file")
        if name is None:
            models = sorted(directory.glob("*.model"))
            if len(models) != 1:
                raise FileNotFoundError(f"{directory}: expected one *.model file, found {len(models)}")
            name = models[0].name
        return cls(directory / name)

    def _tokenize(self, strings):
        return tf.cast(self._tokenizer.tokenize(strings), tf.int32)

    def _detokenize(self, ids):
        return self._tokenizer.detokenize(ids)

    def _is_word_start_token(self, token):
        return token.startswith(WORD_START)

    @property
    def tf_tokenizer(self):
        """The underlying tf-text tokenizer (a tf.Module)."""
        return self._tokenizer


def _train_model(sentences, vocabulary_size, model_type, options):
    """Serialized model bytes trained by `sentencepiece` in memory."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=model, vocab_size=vocabulary_size, model_type=model_type,
        **options,
    )
    return model.getvalue()
