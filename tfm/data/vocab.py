"""Build a vocabulary from corpus files, and load whichever tokenizer a directory holds."""

from pathlib import Path

from tfm.data.byte_pair import BytePairTokenizer
from tfm.data.readers import read_text_corpus
from tfm.data.sentencepiece_tokenizer import SentencePieceTokenizer
from tfm.data.tokenizer_base import Tokenizer
from tfm.data.wordpiece import WordPieceTokenizer

TOKENIZER_TYPES = {cls.kind: cls for cls in (WordPieceTokenizer, SentencePieceTokenizer, BytePairTokenizer)}


def build_vocab(corpus_files, tokenizer_type="wordpiece", vocab_size=8000, out_dir=None, lowercase=True,
                format=None, text_field="text", model_type="unigram"):
    """Train a tokenizer on corpus files and save it (the `tfm vocab` command).

    Args:
        corpus_files: path or list of paths: plain text (one document per line) or .jsonl (`text_field`).
        tokenizer_type: "wordpiece" or "sentencepiece".
        vocab_size: int, target vocabulary size.
        out_dir: directory to save into (created); None to skip saving.
        lowercase: bool, uncased WordPiece (SentencePiece models are always cased).
        format: corpus format passed to `read_text_corpus` ("lines", "paragraphs", "jsonl").
        text_field: str, JSONL text key.
        model_type: "unigram" or "bpe" for SentencePiece.

    Returns:
        the trained Tokenizer.

    Example:
        >>> tok = build_vocab(["corpus.txt"], "wordpiece", 8000, "runs/vocab")  # doctest: +SKIP
    """
    if tokenizer_type not in ("wordpiece", "sentencepiece"):
        raise ValueError(f"tokenizer_type must be 'wordpiece' or 'sentencepiece', got {tokenizer_type!r}")
    corpus = read_text_corpus(corpus_files, format=format, text_field=text_field)
    if corpus.num_examples == 0:
        raise ValueError(f"no text found in {corpus_files} (skipped: {corpus.skipped})")
    if tokenizer_type == "wordpiece":
        tokenizer = WordPieceTokenizer.train(corpus.dataset, vocab_size, lowercase=lowercase)
    else:
        tokenizer = SentencePieceTokenizer.train(corpus.dataset, vocab_size, model_type=model_type)
    if out_dir is not None:
        tokenizer.save(out_dir)
    return tokenizer


def load_tokenizer(directory) -> Tokenizer:
    """Load the tokenizer saved in `directory`, whatever its type.

    Uses `tokenizer.json`'s "type" when present; otherwise recognizes a bare BERT `vocab.txt`,
    a single SentencePiece `*.model`, or GPT-2's `vocab.json` + `merges.txt`.

    Args:
        directory: path.
    """
    directory = Path(directory)
    kind = Tokenizer._read_config(directory).get("type")
    if kind is None:
        if (directory / "vocab.json").exists() and (directory / "merges.txt").exists():
            kind = "bpe"
        elif (directory / "vocab.txt").exists():
            kind = "wordpiece"
        elif list(directory.glob("*.model")):
            kind = "sentencepiece"
        else:
            raise FileNotFoundError(f"{directory}: no tokenizer.json, vocab.txt, *.model or vocab.json+merges.txt")
    if kind not in TOKENIZER_TYPES:
        raise ValueError(f"{directory}: unknown tokenizer type {kind!r}; known: {sorted(TOKENIZER_TYPES)}")
    return TOKENIZER_TYPES[kind].load(directory)
