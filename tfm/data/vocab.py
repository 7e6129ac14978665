"""Build a vocabulary from corpus files, and load whichever tokenizer a directory holds."""

import dataclasses
from pathlib import Path

from tfm.data.byte_pair import BytePairTokenizer
from tfm.data.readers import format_of, read_classification, read_text_corpus
from tfm.data.sentencepiece_tokenizer import SentencePieceTokenizer
from tfm.data.tokenizer_base import Tokenizer
from tfm.data.wordpiece import WordPieceTokenizer
from tfm.errors import InputError

TOKENIZER_TYPES = {cls.kind: cls for cls in (WordPieceTokenizer, SentencePieceTokenizer, BytePairTokenizer)}


def build_vocab(corpus_files, tokenizer_type="wordpiece", vocabulary_size=8000, out_dir=None, lowercase=True,
                format=None, text_field="text", model_type="unigram", max_unique_chars=None):
    """Train a tokenizer on corpus files and save it (the `tfm vocab` command).

    Args:
        corpus_files: path or list of paths: plain text (one document per line), .jsonl (`text_field`), or
            .tsv/.csv classification data (the text column, found as the classification readers find it).
        tokenizer_type: "wordpiece" or "sentencepiece".
        vocabulary_size: int, target vocabulary size.
        out_dir: directory to save into (created); None to skip saving.
        lowercase: bool, uncased WordPiece (SentencePiece models are always cased).
        format: corpus format: "lines", "paragraphs", "jsonl" (see `read_text_corpus`), "tsv" or "csv";
            default from each file's suffix.
        text_field: str, JSONL text key.
        model_type: "unigram" or "bpe" for SentencePiece.
        max_unique_chars: WordPiece alphabet size (see `WordPieceTokenizer.train`); None for its default.

    Returns:
        the trained Tokenizer.

    Raises:
        InputError: unknown type, unreadable or empty corpus, a table whose text column cannot be found.

    Example:
        >>> tok = build_vocab(["corpus.txt"], "wordpiece", 8000, "runs/vocab")  # doctest: +SKIP
    """
    if tokenizer_type not in ("wordpiece", "sentencepiece"):
        raise InputError(f"tokenizer_type must be 'wordpiece' or 'sentencepiece', got {tokenizer_type!r}")
    paths = [corpus_files] if isinstance(corpus_files, (str, Path)) else list(corpus_files)
    dataset, num_texts = None, 0
    for path in paths:
        try:
            part = _read_texts(path, format, text_field)
        except ValueError as error:  # the readers' "path:line: problem", shown as a user error
            raise InputError(str(error)) from None
        dataset = part.dataset if dataset is None else dataset.concatenate(part.dataset)
        num_texts += part.num_examples
    if num_texts == 0:
        raise InputError(f"no text found in {', '.join(map(str, paths))}")
    if tokenizer_type == "wordpiece":
        tokenizer = WordPieceTokenizer.train(dataset, vocabulary_size, lowercase=lowercase,
                                             max_unique_chars=max_unique_chars)
    else:
        tokenizer = SentencePieceTokenizer.train(dataset, vocabulary_size, model_type=model_type)
    if out_dir is not None:
        tokenizer.save(out_dir)
    return tokenizer


def _read_texts(path, format, text_field):
    """ReadResult of one corpus file's texts; a TSV/CSV gives its text column, as for classification."""
    kind = format_of(path, format)
    if kind not in ("tsv", "csv"):
        return read_text_corpus(path, format=format, text_field=text_field)
    try:
        table = read_classification(path, format=kind)
    except ValueError as error:
        raise InputError(f"{error}. A {kind.upper()} corpus is read like classification data: a header row, a "
                         f"'label' column and one text column (e.g. 'label<TAB>sentence'); otherwise give a text "
                         f"file with one document a line") from None
    return dataclasses.replace(table, dataset=table.dataset.map(lambda row: row["text"]))


def load_tokenizer(directory) -> Tokenizer:
    """Load the tokenizer saved in `directory`, whatever its type.

    Uses `tokenizer.json`'s "type" when present; Hugging Face tokenizer files (a `tokenizer.json` with a "model", or
    a `tokenizer_config.json`) load with `tfm.data.hf_tokenizers`; otherwise recognizes a bare BERT `vocab.txt`,
    a single SentencePiece `*.model`, or GPT-2's `vocab.json` + `merges.txt`.

    Args:
        directory: path.
    """
    directory = Path(directory)
    config = Tokenizer._read_config(directory)
    if "model" in config or ("type" not in config and (directory / "tokenizer_config.json").exists()):
        from tfm.data.hf_tokenizers import load_hf_tokenizer  # Hugging Face files: HF's exact normalization

        return load_hf_tokenizer(directory)
    kind = config.get("type")
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
