import json
import unicodedata

import numpy as np
import pytest
import sentencepiece as spm
import tensorflow as tf

from tfm.data import (
    BytePairTokenizer,
    SentencePieceTokenizer,
    WordPieceTokenizer,
    build_vocab,
    load_tokenizer,
)
from tfm.data.wordpiece import is_cjk

RESERVED = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def bert_basic_tokens(text, lowercase=True):
    """Independent pure-Python BERT basic tokenizer: the "normalized input" a round trip must give back."""
    if lowercase:
        text = "".join(c for c in unicodedata.normalize("NFD", text.lower()) if unicodedata.category(c) != "Mn")
    words, current = [], []
    for ch in text:
        cp = ord(ch)
        punct = (33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126
                 or unicodedata.category(ch).startswith("P"))
        if ch.isspace() or punct or is_cjk(ch):
            if current:
                words.append("".join(current))
                current = []
            if not ch.isspace():
                words.append(ch)
        else:
            current.append(ch)
    if current:
        words.append("".join(current))
    return words


# ---------------------------------------------------------------- WordPiece
def test_wordpiece_reserved_tokens_and_lookups(wordpiece):
    assert wordpiece.vocabulary[:5] == RESERVED
    assert (wordpiece.pad_id, wordpiece.unk_id, wordpiece.cls_id, wordpiece.sep_id, wordpiece.mask_id) == (
        0, 1, 2, 3, 4)
    assert wordpiece.special_ids == [0, 1, 2, 3, 4]
    assert wordpiece.vocabulary_size == len(wordpiece.vocabulary)
    # Never above the target; close to it (the shipped text has about that many pieces seen twice or more).
    assert 170 <= wordpiece.vocabulary_size <= 190
    film = wordpiece.token_to_id("film")
    assert wordpiece.id_to_token(film) == "film"
    with pytest.raises(KeyError, match="not in the vocabulary"):
        wordpiece.token_to_id("no-such-token")
    with pytest.raises(IndexError):
        wordpiece.id_to_token(wordpiece.vocabulary_size)


def test_wordpiece_round_trip(wordpiece, english_train, english_dev):
    # Training text: every character is in the vocabulary, so there is no [UNK] and the round trip is exact.
    ids = wordpiece.tokenize(english_train)
    assert ids.dtype == tf.int32 and ids.shape.rank == 2
    assert int(tf.reduce_sum(tf.cast(ids.flat_values == wordpiece.unk_id, tf.int32))) == 0
    back = [s.decode("utf-8") for s in wordpiece.detokenize(ids).numpy()]
    expected = [" ".join(bert_basic_tokens(s)) for s in english_train]
    assert back == expected
    # Held-out dev text: exact wherever the vocabulary covers the sentence (no [UNK]).
    ids = wordpiece.tokenize(english_dev).to_list()
    back = [s.decode("utf-8") for s in wordpiece.detokenize(tf.ragged.constant(ids)).numpy()]
    covered = [i for i, row in enumerate(ids) if wordpiece.unk_id not in row]
    assert len(covered) >= 0.9 * len(english_dev)
    assert [back[i] for i in covered] == [" ".join(bert_basic_tokens(english_dev[i])) for i in covered]


def test_wordpiece_input_shapes(wordpiece):
    scalar = wordpiece.tokenize("a film")
    assert isinstance(scalar, tf.Tensor) and scalar.numpy().tolist() == [
        wordpiece.token_to_id("a"), wordpiece.token_to_id("film")]
    words = wordpiece.tokenize(tf.ragged.constant([["a", "film"], ["film"]]))
    assert words.to_list() == [[[scalar[0]], [scalar[1]]], [[scalar[1]]]]
    dense = wordpiece.tokenize(tf.constant([["a", "film"]]))  # (1, 2) → (1, 2, pieces)
    assert dense.to_list() == [[[scalar[0]], [scalar[1]]]]
    # Dense packed ids detokenize with trailing padding stripped.
    a, film = scalar.numpy().tolist()
    assert wordpiece.detokenize(tf.constant([[a, film, 0, 0]])).numpy().tolist() == [b"a film"]
    assert wordpiece.detokenize(scalar).numpy() == b"a film"


def test_wordpiece_cased_and_uncased():
    texts = ["Paris is in France", "paris Paris PARIS", "Café café"] * 20
    uncased = WordPieceTokenizer.train(texts, 60, lowercase=True)
    cased = WordPieceTokenizer.train(texts, 60, lowercase=False)
    assert uncased.lowercase and not cased.lowercase
    u = uncased.tokenize(["Paris paris", "Café"]).to_list()
    assert u[0][0] == u[0][1]  # same id for both cases
    assert [uncased.id_to_token(i) for i in u[1]] == ["cafe"]  # accents stripped when uncased
    c = cased.tokenize(["Paris paris", "Café"]).to_list()
    assert c[0][0] != c[0][1]
    assert "".join(cased.id_to_token(i).lstrip("#") for i in c[1]) == "Café"
    assert cased.detokenize(cased.tokenize(["Paris is in France"])).numpy().tolist() == [b"Paris is in France"]


def test_wordpiece_splits_cjk_into_characters():
    vocab = RESERVED + ["我", "爱", "北", "京", "abc", "!", "##s", "hello"]
    tok = WordPieceTokenizer(vocab)
    ids = tok.tokenize(["我爱北京abc!", "hello我们"]).to_list()
    assert [[tok.id_to_token(i) for i in row] for row in ids] == [
        ["我", "爱", "北", "京", "abc", "!"], ["hello", "我", "[UNK]"]]
    assert tok.word_starts(tf.ragged.constant(ids)).to_list() == [[True] * 6, [True] * 3]


def test_wordpiece_trained_on_chinese_keeps_characters(chinese_text):
    texts = chinese_text
    tok = WordPieceTokenizer.train(texts, 150)  # room for all characters (max_unique_chars = size / 2)
    vocab = set(tok.vocabulary)
    assert not any(t.startswith("##") and len(t) == 3 and is_cjk(t[2]) for t in vocab)  # never produced
    chars = {ch for t in texts for ch in t if is_cjk(ch)}
    assert len(chars) > 60 and chars <= vocab  # every ideograph of the corpus has its own token
    pure = [t for t in texts[:200] if t and all(is_cjk(ch) for ch in t)]
    ids = tok.tokenize(texts[:200]).to_list()
    for i, text in enumerate(texts[:200]):
        pieces = [tok.id_to_token(j) for j in ids[i]]
        assert [p for p in pieces if len(p) == 1 and is_cjk(p)] == [ch for ch in text if is_cjk(ch)]
    assert all(len(ids[texts.index(t)]) == len(t) for t in pure)


def test_wordpiece_word_starts_mark_continuations(wordpiece, english_dev):
    ids, starts = wordpiece.tokenize_with_word_starts(english_dev[:50])
    tokens = [[wordpiece.id_to_token(i) for i in row] for row in ids.to_list()]
    expected = [[not t.startswith("##") for t in row] for row in tokens]
    assert starts.to_list() == expected
    assert sum(not f for row in expected for f in row) > 0  # the slice does contain continuations
    # Words = runs starting at a word start, equal to the basic tokenizer's words.
    n_words = [sum(row) for row in expected]
    assert n_words == [len(bert_basic_tokens(s)) for s in english_dev[:50]]


def test_wordpiece_save_load(tmp_path, wordpiece, english_dev):
    path = wordpiece.save(tmp_path / "wp")
    assert sorted(p.name for p in path.iterdir()) == ["tokenizer.json", "vocab.txt"]
    assert json.loads((path / "tokenizer.json").read_text()) == {"type": "wordpiece", "lowercase": True}
    loaded = WordPieceTokenizer.load(path)
    assert loaded.vocabulary == wordpiece.vocabulary and loaded.lowercase
    assert loaded.tokenize(english_dev[:20]).to_list() == wordpiece.tokenize(english_dev[:20]).to_list()
    again = load_tokenizer(path)
    assert isinstance(again, WordPieceTokenizer) and again.vocabulary == wordpiece.vocabulary
    # A bare BERT directory (vocab.txt only) loads as uncased WordPiece.
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "vocab.txt").write_text("\n".join(RESERVED + ["hi"]) + "\n")
    bare = load_tokenizer(tmp_path / "bare")
    assert isinstance(bare, WordPieceTokenizer) and bare.tokenize(["HI"]).to_list() == [[5]]


def test_wordpiece_runs_inside_tf_function(wordpiece):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def encode(s):
        return wordpiece.tokenize(s).to_tensor()

    eager = wordpiece.tokenize(["a gorgeous , witty film"]).to_tensor().numpy()
    np.testing.assert_array_equal(encode(tf.constant(["a gorgeous , witty film"])).numpy(), eager)


# ---------------------------------------------------------------- SentencePiece
@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_sentencepiece_matches_reference_library(tmp_path, english_train, english_dev, model_type):
    tok = SentencePieceTokenizer.train(english_train, 200, model_type=model_type)
    assert tok.model_type == model_type and tok.vocabulary_size == 200
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
    assert (tok.cls_id, tok.sep_id, tok.mask_id, tok.end_token_id) == (4, 5, 6, 3)
    assert tok.vocabulary[:7] == ["<pad>", "<unk>", "<s>", "</s>", "[CLS]", "[SEP]", "[MASK]"]
    reference = spm.SentencePieceProcessor(model_proto=tok.proto)
    texts = english_dev[:200]
    ids = tok.tokenize(texts).to_list()
    assert ids == [reference.encode(t) for t in texts]
    assert [s.decode() for s in tok.detokenize(tf.ragged.constant(ids)).numpy()] == [
        reference.decode(row) for row in ids]
    starts = tok.word_starts(tf.ragged.constant(ids)).to_list()
    assert starts == [[reference.id_to_piece(i).startswith("\u2581") for i in row] for row in ids]
    loaded = load_tokenizer(tok.save(tmp_path / model_type))
    assert isinstance(loaded, SentencePieceTokenizer) and loaded.proto == tok.proto
    assert loaded.tokenize(texts[:10]).to_list() == ids[:10]


def test_sentencepiece_round_trips_training_text(english_train):
    tok = SentencePieceTokenizer.train(english_train, 200, model_type="unigram")
    ids = tok.tokenize(english_train[:500])
    back = [s.decode() for s in tok.detokenize(ids).numpy()]
    # character_coverage=0.9995 leaves the rarest characters (e.g. "$") to <unk>: exact elsewhere.
    covered = [i for i, row in enumerate(ids.to_list()) if tok.unk_id not in row]
    assert len(covered) >= 480
    assert [back[i] for i in covered] == [" ".join(english_train[i].split()) for i in covered]


def test_sentencepiece_external_model_without_bert_controls(tmp_path):
    import io

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(["the cat sat on the mat"] * 30), model_writer=model,
                                   vocab_size=15, minloglevel=2)  # defaults: unk=0, bos=1, eos=2, no pad
    (tmp_path / "m.model").write_bytes(model.getvalue())
    tok = load_tokenizer(tmp_path)
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (None, 0, 1, 2)
    assert (tok.cls_id, tok.sep_id, tok.mask_id, tok.end_token_id) == (1, 2, None, 2)


# ---------------------------------------------------------------- GPT-2 byte-level BPE
BPE_VOCAB = {"<|endoftext|>": 0, "a": 1, "b": 2, "c": 3, "\u0120": 4, "\u0120a": 5, "ab": 6, "\u0120ab": 7,
             "bc": 8, "!": 9}
BPE_MERGES = ["a b", "\u0120 a", "\u0120a b", "b c"]


def test_byte_pair_tokenizer_hand_made_vocab(tmp_path):
    tok = BytePairTokenizer(BPE_VOCAB, BPE_MERGES)
    ids = tok.tokenize(["ab abc bc!", "a a"])
    assert isinstance(ids, tf.RaggedTensor)
    # Merge ranks decide: in " abc", "a b" (rank 0) fires before "Ġ a" (rank 1), leaving Ġ | ab | c;
    # in " a" only "Ġ a" applies.
    assert ids.to_list() == [[6, 4, 6, 3, 4, 8, 9], [1, 5]]
    assert tok.detokenize(ids).numpy().tolist() == [b"ab abc bc!", b"a a"]
    assert tok.word_starts(ids).to_list() == [[False, True, False, False, True, False, False], [False, True]]
    assert (tok.end_token_id, tok.pad_id, tok.vocabulary_size) == (0, 0, 10)
    assert tok.tokenize(["a<|endoftext|>b"]).to_list() == [[1, 0, 2]]
    saved = tok.save(tmp_path / "bpe")
    (saved / "tokenizer.json").unlink()  # GPT-2's own directory has only vocab.json + merges.txt
    loaded = load_tokenizer(saved)
    assert isinstance(loaded, BytePairTokenizer) and loaded.merges == BPE_MERGES
    assert loaded.tokenize(["ab abc bc!"]).to_list() == [[6, 4, 6, 3, 4, 8, 9]]


def test_byte_pair_rejects_gappy_vocab():
    with pytest.raises(ValueError, match="0..N-1"):
        BytePairTokenizer({"a": 0, "b": 2}, [])


# ---------------------------------------------------------------- build_vocab / load_tokenizer
def test_build_vocab_from_text_and_jsonl(tmp_path, english_train, chinese_text):
    (tmp_path / "a.txt").write_text("\n".join(english_train) + "\n\n", encoding="utf-8")
    with open(tmp_path / "b.jsonl", "w", encoding="utf-8") as f:
        for s in chinese_text:
            f.write(json.dumps({"text": s}, ensure_ascii=False) + "\n")
    files = [tmp_path / "a.txt", tmp_path / "b.jsonl"]
    wp = build_vocab(files, "wordpiece", 250, tmp_path / "wp")
    assert isinstance(wp, WordPieceTokenizer) and wp.vocabulary[:5] == RESERVED
    assert (tmp_path / "wp" / "vocab.txt").read_text(encoding="utf-8").splitlines() == wp.vocabulary
    sp = build_vocab(files, "sentencepiece", 200, tmp_path / "sp", model_type="bpe")
    assert sp.vocabulary_size == 200 and sp.model_type == "bpe"
    loaded = load_tokenizer(tmp_path / "sp")
    assert isinstance(loaded, SentencePieceTokenizer) and loaded.vocabulary == sp.vocabulary
    # The jsonl file (the Chinese text) was used: its frequent characters are in the vocabulary.
    counts = {ch: "".join(chinese_text).count(ch) for ch in "".join(chinese_text) if is_cjk(ch)}
    frequent = [ch for ch, n in counts.items() if n >= 5]
    assert len(frequent) > 30 and all(wp.tokenize([ch]).to_list()[0] != [wp.unk_id] for ch in frequent)
    with pytest.raises(ValueError, match="tokenizer_type"):
        build_vocab(files, "bpe", 100, None)
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="no text found"):
        build_vocab([tmp_path / "empty.txt"], "wordpiece", 100, None)


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"type": "morse"}')
    with pytest.raises(ValueError, match="unknown tokenizer type 'morse'"):
        load_tokenizer(tmp_path)
