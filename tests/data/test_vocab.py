"""`tfm vocab` / `build_vocab`: the requested size on mixed English/Chinese text, TSV/CSV corpora, errors."""

import random

import pytest

from tests.helpers import shared_sentences
from tfm.cli import main
from tfm.data import SentencePieceTokenizer, WordPieceTokenizer, build_vocab
from tfm.data.wordpiece import RESERVED_TOKENS, is_cjk
from tfm.errors import InputError


def _mixed_corpus():
    """1,500 sentences of made-up English-like words (Zipf-distributed) + 300 of 200 distinct CJK ideographs."""
    rng = random.Random(0)
    syllables = ["ka", "lo", "mi", "ten", "ra", "su", "vo", "pe", "zan", "dor", "li", "mu", "ner", "sa", "to", "bi"]
    lexicon = ["".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))) for _ in range(400)]
    weights = [1 / (rank + 1) for rank in range(len(lexicon))]
    english = [" ".join(rng.choices(lexicon, weights, k=8)) + " ." for _ in range(1500)]
    ideographs = [chr(0x4E00 + 7 * i) for i in range(200)]
    chinese = ["".join(rng.choices(ideographs, k=15)) + "。" for _ in range(300)]
    return english + chinese, ideographs


def _is_cjk_suffix(token):
    return token.startswith("##") and len(token) == 3 and is_cjk(token[2])


def test_wordpiece_reaches_the_requested_size_on_mixed_english_and_chinese():
    texts, ideographs = _mixed_corpus()
    tokenizer = WordPieceTokenizer.train(texts, 500)
    vocab = tokenizer.vocabulary
    # Counting the learner's 200 unusable "##<CJK>" pieces and dropping them afterwards gave 300 tokens.
    assert len(vocab) == len(set(vocab)) and 475 <= len(vocab) <= 500  # within the documented 5% slack
    assert vocab[:5] == list(RESERVED_TOKENS)
    assert not any(_is_cjk_suffix(t) for t in vocab)
    assert set(ideographs) <= set(vocab)
    chars = set("".join(texts).replace(" ", ""))
    alphabet = 5 + sum(1 if is_cjk(c) else 2 for c in chars)  # reserved, each ideograph, other characters + ##them
    assert alphabet == 5 + 200 + 2 * (len(chars) - 200)
    assert sum(len(t.lstrip("#")) > 1 for t in vocab[5:]) == len(vocab) - alphabet  # the rest: multi-character pieces
    sentence = texts[0] + " " + texts[-1]
    ids = tokenizer.tokenize([sentence]).to_list()[0]
    assert tokenizer.unk_id not in ids
    assert [tokenizer.id_to_token(i) for i in ids][-16:] == list(texts[-1])  # one token per ideograph


def test_wordpiece_on_too_little_text_warns_with_both_sizes():
    texts = ["the cat sat on the mat", "the dog sat on the log"] * 3
    with pytest.warns(UserWarning) as caught:
        tokenizer = WordPieceTokenizer.train(texts, 1000)
    reached = tokenizer.vocabulary_size
    assert reached < 100
    assert [str(w.message).split(":")[0] for w in caught] == [
        f"WordPiece vocabulary reached {reached} of the requested 1000 tokens"]


def test_sentencepiece_on_too_little_text_warns_and_keeps_what_it_can():
    texts = ["hello world", "a small corpus of quick brown foxes"] * 20
    with pytest.warns(UserWarning, match=r"SentencePiece vocabulary reached (\d+) of the requested 1000 tokens") as w:
        tokenizer = SentencePieceTokenizer.train(texts, 1000, model_type="bpe")
    assert f"reached {tokenizer.vocabulary_size} of" in str(w[0].message) and tokenizer.vocabulary_size < 200
    with pytest.raises(InputError, match=r"vocabulary of 8 tokens cannot hold the corpus's \d+ characters"):
        SentencePieceTokenizer.train(texts, 8)


def _write_table(path, rows, delimiter):
    path.write_text("\n".join(delimiter.join(row) for row in rows) + "\n", encoding="utf-8")
    return path


def test_build_vocab_reads_the_text_column_of_tsv_and_csv(tmp_path):
    english = ["zebra quilt", "quilt zebra yak", "yak yak zebra"] * 4
    chinese = ["我爱北京", "北京很大"] * 4
    # SST-2's layout (label first) and ChnSentiCorp's column name; the CSV has the text first and a quoted comma.
    tsv = _write_table(tmp_path / "train.tsv", [["label", "sentence"]] + [["1", t] for t in english], "\t")
    zh_rows = [["text_a", "label"]] + [[t, "0"] for t in chinese] + [['"北京, 我"', "1"]]
    csv = _write_table(tmp_path / "zh.csv", zh_rows, ",")
    tokenizer = build_vocab([tsv, csv], "wordpiece", 60, tmp_path / "out")
    learned = set(tokenizer.vocabulary[5:])
    assert {"zebra", "quilt", "yak", "我", "爱", "北", "京", "很", "大", ","} <= learned
    assert not {"label", "sentence", "text_a", "0", "1", '"'} & learned  # header, label column and quotes unread
    assert (tmp_path / "out" / "vocab.txt").read_text(encoding="utf-8").splitlines() == tokenizer.vocabulary


def test_build_vocab_says_how_when_a_table_has_no_single_text_column(tmp_path):
    tsv = _write_table(tmp_path / "pairs.tsv", [["label", "premise", "hypothesis"], ["1", "a b", "c d"]], "\t")
    with pytest.raises(InputError, match=r"pairs.tsv:2: cannot infer text_column .*A TSV corpus is read like "
                                         r"classification data: a header row, a 'label' column and one text column"):
        build_vocab([tsv], "wordpiece", 100)
    no_label = _write_table(tmp_path / "texts.csv", [["text"], ["hello there"]], ",")
    with pytest.raises(InputError, match=r"texts.csv:2: missing column\(s\) \['label'\].*A CSV corpus is read like"):
        build_vocab([no_label], "wordpiece", 100)


def test_vocab_command_reads_tsv_and_reports_bad_tables_in_one_line(tmp_path, capsys):
    tsv = _write_table(tmp_path / "data.tsv", [["label", "sentence"]] + [["1", "zebra quilt yak"]] * 3, "\t")
    assert main(["vocab", "--corpus", str(tsv), "--size", "40", "--out", str(tmp_path / "v")]) == 0
    assert capsys.readouterr().out.startswith("wordpiece vocabulary of ")
    assert "zebra" in (tmp_path / "v" / "vocab.txt").read_text(encoding="utf-8").splitlines()
    bad = _write_table(tmp_path / "bad.tsv", [["a", "b", "c"], ["1", "2", "3"]], "\t")
    assert main(["vocab", "--corpus", str(bad), "--out", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"tfm vocab: error: {bad}:2: ")


@pytest.mark.slow
def test_wordpiece_reaches_3000_tokens_on_sst2_plus_chnsenticorp(tmp_path):
    texts = shared_sentences("sst2", count=20000) + shared_sentences("chnsenticorp", count=3000)
    corpus = tmp_path / "MIXED.txt"
    corpus.write_text("\n".join(texts) + "\n", encoding="utf-8")
    # Before the fix: 1,573 tokens (1,500 alphabet characters, 68 "##" letters, 5 reserved, nothing learned).
    tokenizer = build_vocab([corpus], "wordpiece", 3000)
    vocab = tokenizer.vocabulary
    assert len(vocab) == len(set(vocab)) and 2850 <= len(vocab) <= 3000 and not any(_is_cjk_suffix(t) for t in vocab)
    assert sum(len(t) == 1 and is_cjk(t) for t in vocab) > 1400
    assert {"the", "film", "movie", "##ing"} <= set(vocab)


def _many_ideographs(n):
    """n distinct CJK ideographs, ideograph i seen n + 2 - i times (all at least twice): the rarer ones come last."""
    ideographs = [chr(0x4E00 + i) for i in range(n)]
    rng = random.Random(0)
    seen = [c for i, c in enumerate(ideographs) for _ in range(n + 2 - i)]
    rng.shuffle(seen)
    return ["".join(seen[i:i + 20]) for i in range(0, len(seen), 20)], ideographs


@pytest.mark.filterwarnings("ignore:WordPiece vocabulary reached")  # no multi-character pieces here, by design
@pytest.mark.parametrize("max_unique_chars, kept", [(None, 1000), (1500, 1200)])
def test_wordpiece_alphabet_size_decides_which_ideographs_survive(max_unique_chars, kept, tmp_path):
    # 1,200 ideographs, each seen twice or more. The default alphabet, max(1000, 2000 // 2), keeps the 1,000
    # most frequent and the 200 rarest become [UNK]; `data.tokenizer.max_unique_chars: 1500` (or `tfm vocab
    # --max-unique-chars 1500`) keeps them all.
    texts, ideographs = _many_ideographs(1200)
    corpus = tmp_path / "zh.txt"
    corpus.write_text("\n".join(texts) + "\n", encoding="utf-8")
    args = [] if max_unique_chars is None else ["--max-unique-chars", str(max_unique_chars)]
    assert main(["vocab", "--corpus", str(corpus), "--size", "2000", "--out", str(tmp_path / "v"), *args]) == 0
    vocab = set((tmp_path / "v" / "vocab.txt").read_text(encoding="utf-8").splitlines())
    assert [c in vocab for c in ideographs] == [True] * kept + [False] * (1200 - kept)

    from tfm.training.config import from_dict, ExperimentConfig
    from tfm.training.experiment import prepare_tokenizer

    tokenizer = {"vocabulary_size": 2000, "max_unique_chars": max_unique_chars}
    cfg = from_dict(ExperimentConfig, {"output_dir": str(tmp_path / "run"), "task": {"name": "masked_lm"},
                                       "data": {"train": [str(corpus)], "tokenizer": tokenizer}})
    assert set(prepare_tokenizer(cfg).vocabulary) == vocab  # the config key reaches the same training


def test_max_unique_chars_is_for_wordpiece_only():
    from tfm.training.config import ConfigError, from_dict, ExperimentConfig

    with pytest.raises(ConfigError, match="max_unique_chars is for WordPiece only, not type 'sentencepiece'"):
        from_dict(ExperimentConfig, {"data": {"tokenizer": {"type": "sentencepiece", "max_unique_chars": 10}}})
    with pytest.raises(ConfigError, match="max_unique_chars must be > 0, got 0"):
        from_dict(ExperimentConfig, {"data": {"tokenizer": {"max_unique_chars": 0}}})
