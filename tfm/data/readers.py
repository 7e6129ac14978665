"""File readers → tf.data: text corpora (plain/paragraph/JSONL) and classification (TSV/CSV/JSONL).

Files are parsed in Python once (so every problem is reported with `file:line`), then served from
memory with `tf.data.Dataset.from_tensor_slices`. Bad input either raises `InputError("path:line: ...")`
(a ValueError the `tfm` CLI prints as one line; `on_error="raise"`, the default) or is skipped and counted
by reason in `ReadResult.skipped` (`on_error="skip"`); empty lines/texts are always skipped and counted,
never turned into examples. An empty file gives an empty ReadResult; `require_examples` turns that into
an error where examples are needed (training, evaluation).
"""

import csv
import dataclasses
import json
from pathlib import Path

import tensorflow as tf

from tfm.errors import InputError


@dataclasses.dataclass
class ReadResult:
    """What a reader returns.

    Args:
        dataset: tf.data.Dataset of the examples (structure documented by each reader).
        num_examples: int, examples in `dataset`.
        skipped: dict reason → count of input lines/records not turned into examples.
        labels: LabelVocabulary for labelled data, else None.
    """

    dataset: tf.data.Dataset
    num_examples: int
    skipped: dict
    labels: "LabelVocabulary | None" = None


class LabelVocabulary:
    """Bidirectional label name ↔ id map (ids are positions in `names`).

    Args:
        names: sequence of label names (str); ids follow this order.

    Example:
        >>> labels = LabelVocabulary(["neg", "pos"])
        >>> labels.id("pos"), labels.name(0)
        (1, 'neg')
    """

    def __init__(self, names):
        self.names = [str(n) for n in names]
        if len(set(self.names)) != len(self.names):
            raise InputError(f"duplicate label names in {self.names}")
        self._ids = {n: i for i, n in enumerate(self.names)}

    @classmethod
    def from_values(cls, values):
        """Labels seen in data, sorted (numerically when all are integers, so "0","1","10" stay in order)."""
        unique = set(values)
        key = int if all(_is_int(v) for v in unique) else str
        return cls(sorted(unique, key=key))

    def __len__(self):
        return len(self.names)

    def __contains__(self, name):
        return name in self._ids

    def __eq__(self, other):
        return isinstance(other, LabelVocabulary) and other.names == self.names

    def id(self, name):
        """Id of label `name`; KeyError listing the known labels otherwise."""
        try:
            return self._ids[name]
        except KeyError:
            raise KeyError(f"label {name!r} not in label set {self.names}") from None

    def name(self, label_id):
        """Name of label id `label_id`."""
        return self.names[int(label_id)]

    def to_json(self):
        return json.dumps(self.names, ensure_ascii=False)

    @classmethod
    def from_json(cls, text):
        return cls(json.loads(text))

    def __repr__(self):
        return f"LabelVocabulary({self.names})"


def _is_int(value):
    try:
        int(value)
        return True
    except ValueError:
        return False


class _Problems:
    """Raise `path:line: message`, or count the skip under `reason`, as `on_error` says."""

    def __init__(self, path, on_error):
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.path, self.on_error, self.skipped = path, on_error, {}

    def skip(self, reason):
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def bad(self, line_no, reason, message):
        if self.on_error == "raise":
            raise InputError(f"{self.path}:{line_no}: {message}")
        self.skip(reason)


def read_lines(path, problems):
    """Yield (line_number, text) of a file with line endings (\\n, \\r\\n) stripped.

    Args:
        path: file path.
        problems: _Problems; undecodable lines go to it as "invalid_utf8".
    """
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                problems.bad(line_no, "invalid_utf8", invalid_utf8_message(raw, e))
                continue
            if line_no == 1:
                text = text.lstrip("\ufeff")  # BOM
            yield line_no, text.rstrip("\r\n")


def invalid_utf8_message(raw, error):
    """What is wrong with the line `raw` (bytes) that failed to decode with `error`: offset, bad bytes, excerpt."""
    line = raw.rstrip(b"\r\n")
    return (f"invalid UTF-8 at byte {error.start} of the line (bad bytes {raw[error.start:error.end]!r}): "
            f"{line[:60]!r}")


def require_examples(path, num_examples, skipped, header=False):
    """Raise `InputError("path: has no examples (why)")` when a data file gave no example.

    Readers return an empty ReadResult for an empty file (that is a valid answer); training and evaluation,
    which cannot run on nothing, call this per file so the user learns which file is empty.

    Args:
        path: the file read.
        num_examples: int, examples it gave.
        skipped: dict reason -> count of records not turned into examples.
        header: bool, the file starts with a header row (TSV/CSV), named in the message.
    """
    if num_examples:
        return
    if Path(path).is_file() and Path(path).stat().st_size == 0:
        why = "the file is empty"
    elif skipped:
        why = "every record was skipped: " + ", ".join(f"{k}={v}" for k, v in sorted(skipped.items()))
    else:
        why = "no data rows after the header" if header else "no data records"
    raise InputError(f"{path}: has no examples ({why})")


def format_of(path, format):
    """`format` if given, else the file's format from its suffix (shared by the readers and `build_vocab`)."""
    if format is not None:
        return format
    suffix = Path(path).suffix.lower()
    return {".jsonl": "jsonl", ".json": "jsonl", ".tsv": "tsv", ".csv": "csv"}.get(suffix, "lines")


def read_text_corpus(paths, format=None, text_field="text", on_error="raise"):
    """Read documents for pretraining / vocabulary building.

    Args:
        paths: a path or list of paths.
        format: "lines" (one document per line), "paragraphs" (documents separated by blank lines, their
            lines joined by a space) or "jsonl" (one JSON object per line, text under `text_field`).
            Default: "jsonl" for .jsonl/.json files, else "lines".
        text_field: str, JSONL key holding the text.
        on_error: "raise" or "skip" for invalid UTF-8, bad JSON and records without a string `text_field`.

    Returns:
        ReadResult whose dataset yields tf.string scalars (one per document); empty lines/documents
        are skipped and counted as "empty_line"/"empty_text".
    """
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    documents, skipped = [], {}
    for path in paths:
        problems = _Problems(path, on_error)
        kind = format_of(path, format)
        if kind == "paragraphs":
            documents.extend(_paragraphs(read_lines(path, problems)))
        elif kind == "lines":
            for _, line in read_lines(path, problems):
                if line.strip():
                    documents.append(line)
                else:
                    problems.skip("empty_line")
        elif kind == "jsonl":
            for line_no, record in _jsonl_records(path, problems):
                text = record.get(text_field)
                if not isinstance(text, str):
                    problems.bad(line_no, "missing_field", f"expected a string field {text_field!r}, got "
                                 f"keys {sorted(record)}")
                elif not text.strip():
                    problems.skip("empty_text")
                else:
                    documents.append(text)
        else:
            raise InputError(f"unknown corpus format {kind!r}; use 'lines', 'paragraphs' or 'jsonl'")
        for reason, count in problems.skipped.items():
            skipped[reason] = skipped.get(reason, 0) + count
    dataset = tf.data.Dataset.from_tensor_slices(tf.constant(documents, tf.string, shape=[len(documents)]))
    return ReadResult(dataset, len(documents), skipped)


def _paragraphs(lines):
    current = []
    for _, line in lines:
        if line.strip():
            current.append(line.strip())
        elif current:
            yield " ".join(current)
            current = []
    if current:
        yield " ".join(current)


def _jsonl_records(path, problems):
    for line_no, line in read_lines(path, problems):
        if not line.strip():
            problems.skip("empty_line")
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            problems.bad(line_no, "bad_json", f"invalid JSON ({e.msg} at column {e.colno}): {line[:60]!r}")
            continue
        if not isinstance(record, dict):
            problems.bad(line_no, "bad_json", f"expected a JSON object, got {type(record).__name__}")
            continue
        yield line_no, record


def _table_rows(path, kind, header, column_names, problems):
    """Yield (line_number, {column: value}) for TSV/CSV (header row or given names) and JSONL."""
    if kind == "jsonl":
        yield from _jsonl_records(path, problems)
        return
    lines = read_lines(path, problems)
    # TSV is read without quote handling: SST-2-style text is full of unbalanced quotes.
    dialect = dict(delimiter="\t", quoting=csv.QUOTE_NONE) if kind == "tsv" else dict(delimiter=",")
    names = list(column_names) if column_names else None
    for line_no, line in lines:
        if not line.strip():
            problems.skip("empty_line")
            continue
        cells = next(csv.reader([line], **dialect))
        if names is None:
            if header:
                names = [c.strip() for c in cells]
                continue
            names = list(range(len(cells)))
        if len(cells) != len(names):
            problems.bad(line_no, "wrong_column_count",
                         f"expected {len(names)} columns {names}, got {len(cells)}: {line[:80]!r}")
            continue
        yield line_no, dict(zip(names, cells))


def read_classification(path, text_column=None, text_pair_column=None, label_column="label", format=None,
                        header=True, column_names=None, labels=None, on_error="raise"):
    """Read a single-text or text-pair classification file.

    Args:
        path: .tsv, .csv or .jsonl file (or set `format`).
        text_column: column/key of the text. Default: the only column other than the label (and pair)
            columns — so SST-2 (`label sentence` / `label content`) and ChnSentiCorp (`label text_a`) work
            unchanged.
        text_pair_column: column/key of the second text for pair tasks, or None.
        label_column: column/key of the label (str; an int index when `header=False` without names).
        format: "tsv", "csv" or "jsonl"; default from the file suffix.
        header: bool, whether a TSV/CSV file starts with a header row.
        column_names: list naming the columns of a header-less TSV/CSV file.
        labels: LabelVocabulary or list of label names; default: the sorted labels found in the file.
            Labels outside a given set are errors (or skips counted as "unknown_label").
        on_error: "raise" or "skip" for malformed rows, invalid UTF-8 and unknown labels.

    Returns:
        ReadResult whose dataset yields `{"text": tf.string, ["text_pair": tf.string,] "label": tf.int32}`.
    """
    kind = format_of(path, format)
    if kind not in ("tsv", "csv", "jsonl"):
        raise InputError(f"{path}: cannot tell the format from the suffix; pass format='tsv'|'csv'|'jsonl'")
    problems = _Problems(path, on_error)
    labels = _as_labels(labels) if labels is not None else None
    texts, pairs, raw_labels = [], [], []
    for line_no, row in _table_rows(path, kind, header, column_names, problems):
        if text_column is None:
            others = [c for c in row if c not in (label_column, text_pair_column)]
            if len(others) != 1:
                raise InputError(f"{path}:{line_no}: cannot infer text_column from columns {list(row)}; pass it")
            text_column = others[0]
        missing = [c for c in (text_column, text_pair_column, label_column) if c is not None and c not in row]
        if missing:
            problems.bad(line_no, "missing_field", f"missing column(s) {missing}; row has {list(row)}")
            continue
        label = row[label_column]
        label = str(label).strip() if not isinstance(label, bool) else str(int(label))
        text = row[text_column]
        pair = row[text_pair_column] if text_pair_column is not None else ""
        if not isinstance(text, str) or not isinstance(pair, str):
            problems.bad(line_no, "missing_field", f"text fields must be strings, got {type(text).__name__}")
            continue
        if not text.strip() or (text_pair_column is not None and not pair.strip()):
            problems.skip("empty_text")
            continue
        if labels is not None and label not in labels:
            problems.bad(line_no, "unknown_label", f"label {label!r} not in label set {labels.names}")
            continue
        texts.append(text)
        pairs.append(pair)
        raw_labels.append(label)
    vocab = labels if labels is not None else LabelVocabulary.from_values(raw_labels)
    features = {"text": tf.constant(texts, tf.string, shape=[len(texts)])}
    if text_pair_column is not None:
        features["text_pair"] = tf.constant(pairs, tf.string, shape=[len(pairs)])
    features["label"] = tf.constant([vocab.id(v) for v in raw_labels], tf.int32, shape=[len(raw_labels)])
    return ReadResult(tf.data.Dataset.from_tensor_slices(features), len(texts), problems.skipped, vocab)


def _as_labels(labels):
    return labels if isinstance(labels, LabelVocabulary) else LabelVocabulary(labels)
