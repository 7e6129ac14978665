"""Reading a corpus file for an index: plain text (one passage per line), TSV with a header, or JSONL; ids
from a column or the line number, empty lines skipped and counted, duplicate ids refused with both lines."""

import collections
import json
import os
import warnings

from tfm.errors import InputError

FORMATS = {".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".txt": "text", ".text": "text"}
_SHOWN = 5  # line numbers / ids named in a warning


class Corpus(collections.namedtuple("Corpus", ["texts", "ids", "extra"])):
    """`read_corpus`'s `(texts, ids, extra)`; also `path` and `skipped` (line numbers of the empty lines)."""

    path = None
    skipped = ()


def _numbers(values):
    values = list(values)
    return ", ".join(map(str, values[:_SHOWN])) + (f", ... ({len(values)} in all)" if len(values) > _SHOWN else "")


def _lines(path):
    """`(line number, text)` of a UTF-8 file, line ends and a leading BOM removed; InputError names a bad line."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise InputError(f"{path}:{number}: not UTF-8 (byte {raw[error.start]:#04x} at column "
                                 f"{error.start + 1})") from None
            yield number, (text.lstrip("\ufeff") if number == 1 else text).rstrip("\r\n")


def _read_text(lines, path, text_column, id_column):
    for number, text in lines:
        yield number, text.strip(), None, {}


def _read_tsv(lines, path, text_column, id_column):
    """Rows split on tabs, nothing quoted (as `csv.reader(delimiter="\\t", quoting=csv.QUOTE_NONE)`)."""
    number, header = next(lines, (1, ""))
    header = header.split("\t")
    if text_column not in header:
        raise InputError(f"{path}:{number}: no column {text_column!r} in the header {header}; pass text_column= "
                         f"(--text-column) one of them")
    t, i = header.index(text_column), header.index(id_column) if id_column in header else None
    for number, line in lines:
        if not line.strip():
            yield number, None, None, None
            continue
        row = line.split("\t")
        if len(row) != len(header):
            raise InputError(f"{path}:{number}: {len(row)} tab-separated field(s), the header has {len(header)}")
        if i is not None and not row[i].strip():
            raise InputError(f"{path}:{number}: empty {id_column!r}")
        fields = {name: value for j, (name, value) in enumerate(zip(header, row)) if j not in (t, i)}
        yield number, row[t].strip(), None if i is None else row[i].strip(), fields


def _read_jsonl(lines, path, text_column, id_column):
    for number, line in lines:
        if not line.strip():
            yield number, None, None, None
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"{path}:{number}: not valid JSON ({error.msg} at column {error.colno})") from None
        if not isinstance(record, dict) or text_column not in record:
            keys = sorted(record) if isinstance(record, dict) else type(record).__name__
            raise InputError(f"{path}:{number}: no {text_column!r} key (found {keys}); pass text_column= "
                             f"(--text-column)")
        text, id_ = record.pop(text_column), record.pop(id_column, None)
        if not isinstance(text, str):
            raise InputError(f"{path}:{number}: {text_column!r} is {type(text).__name__}, not a string")
        if id_ is not None and (isinstance(id_, (dict, list, bool)) or not str(id_).strip()):
            raise InputError(f"{path}:{number}: {id_column!r} must be a non-empty string or number, got {id_!r}")
        yield number, text.strip(), None if id_ is None else str(id_).strip(), record


_READERS = {"text": _read_text, "tsv": _read_tsv, "jsonl": _read_jsonl}


def read_corpus(path, format=None, text_column="text", id_column="id"):
    """`Index.read_corpus` (see there): a `Corpus(texts, ids, extra)` with `path` and `skipped` line numbers."""
    path = os.fspath(path)
    format = format or FORMATS.get(os.path.splitext(path)[1].lower())
    if format not in _READERS:
        raise InputError(f"{path}: cannot tell the corpus format (got {format!r}); pass format= (--format) one of "
                         f"{sorted(_READERS)}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such corpus file")
    texts, ids, extra, skipped, first_line = [], [], [], [], {}
    for number, text, id_, fields in _READERS[format](_lines(path), path, text_column, id_column):
        if not text:
            skipped.append(number)
            continue
        id_ = str(number) if id_ is None else id_
        if id_ in first_line:
            raise InputError(f"{path}: duplicate id {id_!r} on lines {first_line[id_]} and {number}")
        first_line[id_] = number
        texts.append(text)
        ids.append(id_)
        extra.append(fields)
    if skipped:
        warnings.warn(f"{path}: skipped {len(skipped)} empty line(s): line {_numbers(skipped)}", stacklevel=3)
    corpus = Corpus(texts, ids, extra)
    corpus.path, corpus.skipped = path, skipped
    return corpus
