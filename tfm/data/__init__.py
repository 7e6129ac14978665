"""tfm.data: tokenizers, readers and in-graph tf.data preprocessors.

Tokenizers share one interface (`tokenize`/`detokenize`, special ids, `save`/`load`); readers turn files
(or tfds names) into `tf.data` datasets with `file:line` errors for bad input; the `*_dataset` helpers
produce batched, prefetched model inputs for each job.
"""

from tfm.data.byte_pair import BytePairTokenizer
from tfm.data.conll import IGNORE_LABEL, align_word_labels, bio_label_order, read_conll
from tfm.data.pipelines import (
    classification_dataset,
    clm_dataset,
    default_max_predictions,
    length_bucketed,
    mlm_dataset,
    token_classification_dataset,
)
from tfm.data.multiple_choice import multiple_choice_dataset, read_multiple_choice
from tfm.data.preprocessing import causal_lm_split, chunk_stream, mask_tokens, pack_segments
from tfm.data.readers import LabelVocabulary, ReadResult, read_classification, read_text_corpus
from tfm.data.sentencepiece_tokenizer import SentencePieceTokenizer
from tfm.data.squad import SquadExample, SquadFeatures, read_squad, squad_features
from tfm.data.text_pairs import contrastive_dataset, read_text_pairs
from tfm.data.tfds_readers import load_tfds
from tfm.data.tokenizer_base import Tokenizer
from tfm.data.vocab import build_vocab, load_tokenizer
from tfm.data.wordpiece import WordPieceTokenizer

__all__ = [
    "BytePairTokenizer", "IGNORE_LABEL", "LabelVocabulary", "ReadResult", "SentencePieceTokenizer", "SquadExample",
    "SquadFeatures", "Tokenizer", "WordPieceTokenizer", "align_word_labels", "bio_label_order", "build_vocab",
    "causal_lm_split", "chunk_stream", "classification_dataset", "clm_dataset", "contrastive_dataset",
    "default_max_predictions",
    "length_bucketed", "load_tfds", "load_tokenizer", "mask_tokens", "mlm_dataset", "multiple_choice_dataset",
    "pack_segments",
    "read_classification", "read_conll", "read_multiple_choice", "read_squad", "read_text_corpus",
    "read_text_pairs",
    "squad_features", "token_classification_dataset",
]
