"""Hugging Face tokenizer files in tfm: ids (and offsets) exactly equal to the `tokenizers` library's.

References are `tokenizers.Tokenizer` objects on the same files; texts are the shared SST-2, ChnSentiCorp and
CoNLL-2003 data (tests/data_paths.shared_data), plus every BMP code point and hand-picked edge cases.
"""

import functools
import json
import shutil

import pytest
import tensorflow as tf
import tokenizers

from tests.data_paths import shared_data
from tfm.data.hf_tokenizers import HFWordPieceTokenizer, hf_max_sequence_length, load_hf_tokenizer, \
    save_hf_tokenizer
from tfm.data import BytePairTokenizer, WordPieceTokenizer
from tfm.data.preprocessing import pack_segments
from tfm.errors import InputError

EDGE_CASES = [
    "Hello [SEP] world[MASK]x [cls] [CLS]",  # added tokens in the raw text become their ids; case matters
    "ÉCOLE naïve İstanbul ΟΔΟΣ Σ straße ǅ",  # accents, U+0130, final sigma, title case
    "a\u200bb c\u00add e\ufeff f\x00g h\x7fi \ue000 \U000f0000",  # deleted: zero-width, soft hyphen, NUL, private use
    "ＡＢＣ１２３，。！ ﬁ ㈱ ½",  # full-width and compatibility forms: no NFKC in HF
    "x" * 101 + " " + "д" * 60 + " " + "д" * 101 + " " + "ab" * 51,  # the 100-character word limit (not bytes)
    "ภาษาไทยเป็นภาษาที่ไม่มีการเว้นวรรคระหว่างคำในประโยคยาวๆแบบนี้",  # a long run of 3-byte characters
    "한국어 문장 입니다 😀 👍🏽 \u061d \u166d a\u2e43b \U0002b820 中文字",  # NFD Hangul, emoji, Unicode-version classes
    "", "   ", "\t\n\r", "a\u3000b\u2028c\u0085d",
]
# tfm's BytePairTokenizer (KerasHub's tf-text split) drops everything after a NUL; HF encodes it as a byte.
BPE_EDGE_CASES = [text.replace("\x00", "") for text in EDGE_CASES] + ["a<|endoftext|>b", "x   y  ", "it's I'M 3.14"]


@functools.lru_cache(maxsize=None)
def _tsv_texts(name, limit=None):
    lines = shared_data(name, "dev.tsv").read_text(encoding="utf-8").splitlines()[1:]  # header: label<TAB>text
    return tuple(line.split("\t", 1)[1] for line in lines[:limit])


@functools.lru_cache(maxsize=None)
def _conll_valid():
    """CoNLL-2003 valid sentences as word lists (first column; -DOCSTART- lines dropped)."""
    sentences, words = [], []
    for line in shared_data("conll2003", "valid.txt").read_text(encoding="utf-8").splitlines() + [""]:
        if line.strip() and not line.startswith("-DOCSTART-"):
            words.append(line.split(" ")[0])
        elif words:
            sentences.append(tuple(words))
            words = []
    return tuple(sentences)


def _texts(name):
    if name == "sst2":
        return list(_tsv_texts("sst2"))
    if name == "chnsenticorp":
        return list(_tsv_texts("chnsenticorp", 500))
    if name == "conll_sentences":
        return [" ".join(s) for s in _conll_valid()]
    return [list(s) for s in _conll_valid()]  # "conll_words": each word tokenized alone, is_split_into_words


def _reference(path):
    tok = tokenizers.Tokenizer.from_file(str(path))
    tok.no_padding()
    tok.no_truncation()
    return tok


def _assert_same_ids(reference, tokenizer, texts):
    """Ids without special tokens equal for every text; the message shows the first differing ones."""
    words = bool(texts) and isinstance(texts[0], list)
    expected = [e.ids for e in reference.encode_batch(texts, is_pretokenized=words, add_special_tokens=False)]
    got = tokenizer.tokenize(texts)
    got = (got.merge_dims(1, 2) if words else got).to_list()
    bad = [i for i, (e, g) in enumerate(zip(expected, got)) if e != g]
    vocab = tokenizer.vocabulary
    shown = [(texts[i], [vocab[t] for t in expected[i]], [vocab[t] for t in got[i]]) for i in bad[:3]]
    assert len(got) == len(texts) and not bad, f"{len(bad)} of {len(texts)} differ; first: {shown}"


def _assert_same_offsets(reference, tokenizer, texts):
    """Byte offsets from `tokenize_with_offsets` equal HF's character offsets turned into bytes."""
    ids, begins, ends = (r.to_list() for r in tokenizer.tokenize_with_offsets(tf.constant(texts)))
    bad = []
    for i, encoding in enumerate(reference.encode_batch(texts, add_special_tokens=False)):
        byte = [0]
        for char in texts[i]:
            byte.append(byte[-1] + len(char.encode("utf-8")))
        expected = [(byte[b], byte[e]) for b, e in encoding.offsets]
        if ids[i] != encoding.ids or expected != list(zip(begins[i], ends[i])):
            bad.append((texts[i], expected, list(zip(begins[i], ends[i]))))
    assert not bad, f"{len(bad)} of {len(texts)} differ; first: {bad[:2]}"


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    """(tokenizers reference, tfm tokenizer) of all-MiniLM-L6-v2 (uncased BERT WordPiece, tokenizer.json only)."""
    return _reference(minilm_dir / "tokenizer.json"), load_hf_tokenizer(minilm_dir)


def _variant(minilm_dir, directory, lowercase, strip_accents):
    """MiniLM's tokenizer.json with other BertNormalizer options."""
    data = json.loads((minilm_dir / "tokenizer.json").read_text(encoding="utf-8"))
    data["normalizer"].update(lowercase=lowercase, strip_accents=strip_accents)
    directory.mkdir(exist_ok=True)
    (directory / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    return _reference(directory / "tokenizer.json"), load_hf_tokenizer(directory)


@pytest.mark.parametrize("name, count", [("sst2", 872), ("chnsenticorp", 500), ("conll_sentences", 3250),
                                         ("conll_words", 3250)])
def test_minilm_ids_equal_tokenizers(minilm, name, count):
    texts = _texts(name)
    assert len(texts) == count
    _assert_same_ids(*minilm, texts)
    if name == "conll_words":
        assert sum(len(words) for words in texts) == 51362


def test_minilm_offsets_and_packing_equal_tokenizers(minilm, minilm_dir):
    reference, tokenizer = minilm
    assert isinstance(tokenizer, HFWordPieceTokenizer) and tokenizer.lowercase and tokenizer.strip_accents
    assert (tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id, tokenizer.unk_id, tokenizer.mask_id) == \
        (101, 102, 0, 100, 103)
    for name in ("sst2", "chnsenticorp", "conll_sentences"):
        _assert_same_offsets(reference, tokenizer, _texts(name))
    _assert_same_offsets(reference, tokenizer, EDGE_CASES)
    # [CLS] ... [SEP] padded to 128, as the shipped tokenizer.json (truncation and padding 128) encodes it.
    shipped = tokenizers.Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    texts = _texts("sst2")
    packed = pack_segments([tokenizer.tokenize(texts)], 128, tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id)
    encodings = shipped.encode_batch(texts)
    assert packed["token_ids"].numpy().tolist() == [e.ids for e in encodings]
    assert packed["padding_mask"].numpy().tolist() == [e.attention_mask for e in encodings]


@pytest.mark.parametrize("lowercase, strip_accents, last", [(True, None, 0xFFFF), (False, None, 0xFFFF),
                                                             (True, False, 0x3000), (False, True, 0x3000)])
def test_every_bmp_code_point(minilm, minilm_dir, tmp_path, lowercase, strip_accents, last):
    """Each code point U+0000..`last` (and supplementary ones the class tables patch) inside a word and alone.

    Over all 1.1M code points (a 2-minute run, not kept here) the four normalizer options gave 0 differences.
    """
    reference, tokenizer = minilm if (lowercase, strip_accents) == (True, None) else \
        _variant(minilm_dir, tmp_path / "variant", lowercase, strip_accents)
    points = [*range(min(last + 1, 0xD800)), *range(0xE000, last + 1), *range(0xAC00, 0xD7A4, 97),
              *range(0x10D6E, 0x10D70), *range(0x2B81E, 0x2B922), *range(0x11C41, 0x11C46), 0x111C9, 0x1F600, 0xE0001]
    texts = [f"a{chr(c)}a {chr(c)}{chr(c)} X{chr(c)}" for c in points]
    _assert_same_ids(reference, tokenizer, texts)
    _assert_same_ids(reference, tokenizer, EDGE_CASES)
    _assert_same_offsets(reference, tokenizer, EDGE_CASES)


def test_cased_wordpiece_trained_by_tokenizers(tmp_path):
    trained = tokenizers.BertWordPieceTokenizer(lowercase=False)
    trained.train_from_iterator(_train_texts(), vocab_size=4000, show_progress=False)
    trained.save(str(tmp_path / "tokenizer.json"))
    tokenizer = load_hf_tokenizer(tmp_path)
    assert isinstance(tokenizer, HFWordPieceTokenizer) and not tokenizer.lowercase and not tokenizer.strip_accents
    assert tokenizer.vocabulary_size == trained.get_vocab_size() > 3000
    reference = _reference(tmp_path / "tokenizer.json")
    for name in ("conll_sentences", "conll_words"):
        _assert_same_ids(reference, tokenizer, _texts(name))
    _assert_same_ids(reference, tokenizer, EDGE_CASES)


@functools.lru_cache(maxsize=None)
def _train_texts():
    lines = shared_data("sst2", "train.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return tuple(line.split("\t", 1)[1] for line in lines)


def test_vocab_txt_and_config_give_the_tokenizer_json_ids(minilm, minilm_dir, tmp_path):
    vocab = json.loads((minilm_dir / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
    (tmp_path / "vocab.txt").write_text("\n".join(sorted(vocab, key=vocab.get)) + "\n", encoding="utf-8")
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(minilm_dir / name, tmp_path / name)
    tokenizer = load_hf_tokenizer(tmp_path)
    assert isinstance(tokenizer, HFWordPieceTokenizer) and tokenizer.lowercase and tokenizer.strip_accents
    assert tokenizer.model_max_length == 512  # tokenizer_config.json's model_max_length
    for name in ("sst2", "chnsenticorp"):
        _assert_same_ids(minilm[0], tokenizer, _texts(name))
    _assert_same_ids(minilm[0], tokenizer, EDGE_CASES)


def test_wordpiece_save_round_trip(minilm, tmp_path):
    reference, tokenizer = minilm
    saved = save_hf_tokenizer(tokenizer, tmp_path / "hf", model_max_length=256)
    assert sorted(p.name for p in saved.iterdir()) == ["special_tokens_map.json", "tokenizer.json",
                                                       "tokenizer_config.json", "vocab.txt"]
    config = json.loads((saved / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert (config["tokenizer_class"], config["do_lower_case"], config["model_max_length"]) == ("BertTokenizer", True,
                                                                                               256)
    assert (saved / "vocab.txt").read_text(encoding="utf-8").splitlines() == tokenizer.vocabulary
    written = tokenizers.Tokenizer.from_file(str(saved / "tokenizer.json"))  # the structure HF reads
    texts = _texts("sst2") + _texts("chnsenticorp") + EDGE_CASES
    assert [e.ids for e in written.encode_batch(texts)] == [e.ids for e in reference.encode_batch(texts)]  # [CLS]..
    _assert_same_ids(reference, load_hf_tokenizer(saved), texts)
    assert hf_max_sequence_length(saved) == 256
    # tfm's own WordPiece (tf-text normalization) written for HF: same ids where NFKC changes nothing.
    own = WordPieceTokenizer(tokenizer.vocabulary, lowercase=True)
    written = _reference(save_hf_tokenizer(own, tmp_path / "own") / "tokenizer.json")
    _assert_same_ids(written, own, _texts("sst2") + _texts("conll_sentences"))
    # A directory tfm saved itself still loads as tfm's tokenizer (through tfm.data.load_tokenizer), and the HF
    # reader says so instead of guessing.
    from tfm.data import load_tokenizer

    assert type(load_tokenizer(own.save(tmp_path / "tfm"))) is WordPieceTokenizer
    assert type(load_tokenizer(saved)) is HFWordPieceTokenizer
    with pytest.raises(InputError, match="a tfm tokenizer directory, not Hugging Face files"):
        load_hf_tokenizer(tmp_path / "tfm")


def test_max_sequence_length(minilm_dir, tmp_path):
    assert hf_max_sequence_length(minilm_dir) == 256  # sentence_bert_config.json's, over tokenizer.json's 128
    shutil.copy(minilm_dir / "tokenizer.json", tmp_path / "tokenizer.json")
    assert hf_max_sequence_length(tmp_path) == 128
    (tmp_path / "tokenizer.json").unlink()
    shutil.copy(minilm_dir / "tokenizer_config.json", tmp_path / "tokenizer_config.json")
    assert hf_max_sequence_length(tmp_path) == 512
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": int(1e30)}))
    assert hf_max_sequence_length(tmp_path) is None


@pytest.fixture(scope="module")
def gpt2_bpe(tmp_path_factory):
    """A GPT-2 style byte-level BPE (2000 tokens) trained on SST-2 train, saved as vocab.json + merges.txt."""
    directory = tmp_path_factory.mktemp("bpe")
    trained = tokenizers.ByteLevelBPETokenizer(add_prefix_space=False)
    trained.train_from_iterator(_train_texts(), vocab_size=2000, special_tokens=["<|endoftext|>"],
                                show_progress=False)
    trained.save_model(str(directory))
    return trained, directory


def test_gpt2_bpe_vocab_and_merges(gpt2_bpe):
    reference, directory = gpt2_bpe
    tokenizer = load_hf_tokenizer(directory)
    assert isinstance(tokenizer, BytePairTokenizer) and tokenizer.vocabulary_size == 2000
    assert tokenizer.eos_id == 0 and not tokenizer.add_prefix_space
    for name in ("sst2", "chnsenticorp", "conll_sentences"):
        _assert_same_ids(reference, tokenizer, _texts(name))
    _assert_same_ids(reference, tokenizer, BPE_EDGE_CASES)


def test_gpt2_bpe_save_round_trip(gpt2_bpe, tmp_path):
    reference, directory = gpt2_bpe
    saved = save_hf_tokenizer(load_hf_tokenizer(directory), tmp_path, model_max_length=1024)
    config = json.loads((saved / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert (config["tokenizer_class"], config["eos_token"], config["model_max_length"]) == \
        ("GPT2Tokenizer", "<|endoftext|>", 1024)
    texts = _texts("sst2")[:200] + BPE_EDGE_CASES
    written = _reference(saved / "tokenizer.json")
    assert [e.ids for e in written.encode_batch(texts)] == [e.ids for e in reference.encode_batch(texts)]
    tokenizer = load_hf_tokenizer(saved)  # now through tokenizer.json (model.type BPE)
    _assert_same_ids(reference, tokenizer, texts)
    (saved / "tokenizer.json").unlink()  # vocab.json + merges.txt + tokenizer_config.json
    _assert_same_ids(reference, load_hf_tokenizer(saved), texts[:20])


def test_in_graph(minilm):
    reference, tokenizer = minilm
    texts = _texts("sst2")[:64] + EDGE_CASES
    dataset = tf.data.Dataset.from_tensor_slices(texts).batch(16).map(tokenizer.tokenize)
    got = [row for batch in dataset for row in batch.to_list()]
    assert got == [e.ids for e in reference.encode_batch(texts, add_special_tokens=False)]
    offsets = tf.function(tokenizer.tokenize_with_offsets, input_signature=[tf.TensorSpec([None], tf.string)])
    assert [r.to_list() for r in offsets(tf.constant(texts))] == \
        [r.to_list() for r in tokenizer.tokenize_with_offsets(tf.constant(texts))]


def _write(directory, name, data):
    directory.mkdir(exist_ok=True)
    (directory / name).write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return directory


def _wordpiece_json(**changes):
    data = {"normalizer": {"type": "BertNormalizer", "lowercase": True}, "pre_tokenizer": {"type": "BertPreTokenizer"},
            "model": {"type": "WordPiece", "unk_token": "[UNK]", "vocab": {"[UNK]": 0, "a": 1}}}
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            data[section][field] = value
        else:
            data[section] = value
    return data


@pytest.mark.parametrize("files, message", [
    ({"tokenizer.json": _wordpiece_json(model={"type": "Unigram", "vocab": [["a", 0.0]]})},
     "tokenizer.json: model.type is 'Unigram'; tfm reproduces only 'WordPiece' or 'BPE'"),
    ({"tokenizer.json": _wordpiece_json(model={"type": "WordPiece", "unk_token": "[UNK]"})},
     "tokenizer.json: model.vocab is missing or empty"),
    ({"tokenizer.json": _wordpiece_json(model__vocab={"[UNK]": 0, "a": 2})},
     "tokenizer.json: model.vocab ids must be 0..1 without gaps; found 'a': 2"),
    ({"tokenizer.json": _wordpiece_json(normalizer__handle_chinese_chars=False)},
     "tokenizer.json: normalizer.handle_chinese_chars is False; tfm reproduces only True"),
    ({"tokenizer.json": _wordpiece_json(normalizer={"type": "Sequence", "normalizers": []})},
     "tokenizer.json: normalizer.type is 'Sequence'; tfm reproduces only 'BertNormalizer'"),
    ({"tokenizer.json": _wordpiece_json(pre_tokenizer={"type": "Whitespace"})},
     "tokenizer.json: pre_tokenizer.type is 'Whitespace'; tfm reproduces only 'BertPreTokenizer'"),
    ({"tokenizer.json": _wordpiece_json(model__unk_token="<unk>")},
     "tokenizer.json: no unknown token '<unk>' in the vocabulary"),
    ({"vocab.txt": "[UNK]\na\n", "tokenizer_config.json": {"tokenize_chinese_chars": False}},
     "tokenizer_config.json: tokenize_chinese_chars is False; tfm reproduces only True"),
    ({"vocab.txt": "[UNK]\na\n", "tokenizer_config.json": {"tokenizer_class": "XLNetTokenizer"}},
     "tokenizer_config.json: tokenizer_class is 'XLNetTokenizer'"),
    ({"vocab.json": {"a": 0}}, "merges.txt: no such file (a GPT-2 BPE needs vocab.json and merges.txt)"),
    ({"tokenizer.json": {"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [], "byte_fallback": True},
                         "pre_tokenizer": {"type": "ByteLevel"}}},
     "tokenizer.json: model.byte_fallback is True; tfm reproduces only None"),
    ({"tokenizer.json": "{not json"}, "tokenizer.json: not valid JSON"),
    ({}, "no Hugging Face tokenizer files (a tokenizer.json with a 'model', vocab.txt, or vocab.json + merges.txt)"),
])
def test_bad_files_name_file_key_and_value(tmp_path, files, message):
    directory = tmp_path / "tok"
    directory.mkdir()
    for name, data in files.items():
        _write(directory, name, data)
    with pytest.raises(InputError) as error:
        load_hf_tokenizer(directory)
    assert message in str(error.value) and str(directory) in str(error.value)
