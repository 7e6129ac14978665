"""Entity-level precision/recall/F1 for tagged sequences, in the style of seqeval.

Two decoding modes:

- ``mode="default"`` is seqeval's default (conlleval-compatible) chunking. It reads IOB1, IOB2, IOE and
  IOBES tags alike and is forgiving: an ``I-X`` that follows ``O`` or another type starts a chunk, a change
  of type ends one. ``scheme`` is only checked for being a known name. The rules run in
  ``tfm.tasks.entity_chunks.chunk_spans`` (TensorFlow, eagerly here), the decoder of the token classifier
  export, so evaluation and serving chunk tags identically.
- ``mode="strict"`` is seqeval's ``mode="strict"``: only well-formed entities of ``scheme`` count
  (IOB2: ``B-X (I-X)*``; IOBES: ``S-X`` or ``B-X (I-X)* E-X``); a tag whose prefix the scheme does not
  allow raises ``ValueError``.

An entity is ``(type, start, end)`` with ``end`` inclusive, as seqeval returns it. A predicted entity is
correct only when its type, start and end all match a true entity: partial overlaps count as one false
positive and one false negative.
"""

import warnings

import numpy as np

SCHEMES = ("IOB2", "IOBES")
MODES = ("default", "strict")
_STRICT_PREFIXES = {"IOB2": "BIO", "IOBES": "BIOES"}
_AVERAGES = ("micro", "macro", "weighted")


def _check(scheme, mode):
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {list(SCHEMES)}, got {scheme!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")


def _split(tag):
    """'B-PER' -> ('B', 'PER'); 'O' -> ('O', '_'), like seqeval (type '_' when missing)."""
    return tag[0], tag[1:].split("-", maxsplit=1)[-1] or "_"


def _default_entities(tag_seqs):
    """seqeval's default chunking of each tag list, by `tfm.tasks.entity_chunks.chunk_spans` (the export's)."""
    from tfm.tasks.entity_chunks import chunk_spans
    from tfm.tasks.tagging import B, DOT, E, I, O, OTHER, S

    codes = {"O": O, "B": B, "I": I, "E": E, "S": S, ".": DOT}
    type_ids = {"_": 0}  # "O" has seqeval's type "_", as every tag without one
    prefixes, types, rows = [], [], []
    for row, tags in enumerate(tag_seqs):
        for chunk in tags:
            if chunk not in ("O", "B", "I", "E", "S") and not chunk.startswith(("B-", "I-", "E-", "S-")):
                warnings.warn(f"{chunk} seems not to be NE tag.")
            tag, type_ = _split(chunk)
            prefixes.append(codes.get(tag, OTHER))
            types.append(type_ids.setdefault(type_, len(type_ids)))
            rows.append(row)
    entities = [[] for _ in tag_seqs]
    if not rows:
        return entities
    first, last = chunk_spans(prefixes, types, rows, outside_type=type_ids["_"])
    names = list(type_ids)
    row_start = [0]
    for tags in tag_seqs:
        row_start.append(row_start[-1] + len(tags))
    for begin, end in zip(first.numpy().tolist(), last.numpy().tolist()):
        row = rows[end]
        entities[row].append((names[types[end]], begin - row_start[row], end - row_start[row]))
    return entities


def _strict_entities(tags, scheme):
    allowed = _STRICT_PREFIXES[scheme]
    split = []
    for tag in tags:
        prefix, type_ = _split(tag)
        if prefix not in allowed:
            raise ValueError(
                f"Invalid tag {tag!r} for scheme {scheme}: allowed prefixes are {', '.join(allowed)}."
            )
        split.append((prefix, type_))
    entities, i, n = [], 0, len(split)
    while i < n:
        prefix, type_ = split[i]
        if prefix == "S":
            entities.append((type_, i, i))
            i += 1
        elif prefix == "B":
            j = i + 1
            while j < n and split[j] == ("I", type_):
                j += 1
            if scheme == "IOB2":
                entities.append((type_, i, j - 1))
                i = j
            elif j < n and split[j] == ("E", type_):
                entities.append((type_, i, j))
                i = j + 1
            else:  # IOBES chunk not closed by E-X: not an entity; rescan from the breaking tag.
                i = j
        else:
            i += 1
    return entities


def get_entities(tags, scheme="IOB2", mode="default"):
    """Decodes one tag sequence into entities ``(type, start, end)``, ``end`` inclusive.

    Args:
        tags: list of str, e.g. ``["B-PER", "I-PER", "O"]``.
        scheme: str, ``"IOB2"`` or ``"IOBES"``; decides decoding only in strict mode.
        mode: str, ``"default"`` (seqeval/conlleval chunking) or ``"strict"``.

    Example:
    >>> get_entities(["B-PER", "I-PER", "O", "I-LOC"])
    [('PER', 0, 1), ('LOC', 3, 3)]
    >>> get_entities(["S-LOC", "B-PER", "E-PER"], scheme="IOBES", mode="strict")
    [('LOC', 0, 0), ('PER', 1, 2)]
    """
    _check(scheme, mode)
    tags = list(tags)
    return _strict_entities(tags, scheme) if mode == "strict" else _default_entities([tags])[0]


def _entity_sets(tag_seqs, scheme, mode):
    _check(scheme, mode)
    if mode == "strict":
        found = [_strict_entities(tags, scheme) for tags in tag_seqs]
    else:  # one batched decode for all sentences
        found = _default_entities(tag_seqs)
    return {(sent, *entity) for sent, entities in enumerate(found) for entity in entities}


def _divide(num, den):
    return np.divide(num, den, out=np.zeros_like(num, dtype=float), where=den != 0)


def _prf(tp, n_pred, n_true):
    precision = _divide(tp, n_pred)
    recall = _divide(tp, n_true)
    denom = precision + recall
    f1 = _divide(2 * precision * recall, denom)
    return precision, recall, f1


def entity_scores(true_tag_seqs, pred_tag_seqs, scheme="IOB2", mode="default"):
    """Per-type and averaged entity precision/recall/F1/support, as seqeval computes them.

    Ill-defined ratios (no predicted or no true entities) are 0.0, like seqeval's ``zero_division="warn"``
    without the warning. Averages: ``micro avg`` pools counts, ``macro avg`` is the plain mean over types,
    ``weighted avg`` weights types by support. Every average row's support is the total true entities.

    Args:
        true_tag_seqs: list of tag lists (one per sentence).
        pred_tag_seqs: list of tag lists, same lengths as ``true_tag_seqs``.
        scheme: str, ``"IOB2"`` or ``"IOBES"``.
        mode: str, ``"default"`` or ``"strict"``.

    Returns:
        dict: type name (sorted) and ``"micro avg"``, ``"macro avg"``, ``"weighted avg"`` ->
        ``{"precision": float, "recall": float, "f1": float, "support": int}``.

    Example:
    >>> s = entity_scores([["B-PER", "I-PER", "O"]], [["B-PER", "O", "O"]])
    >>> s["PER"]["f1"], s["PER"]["support"]
    (0.0, 1)
    """
    true_tag_seqs, pred_tag_seqs = [list(s) for s in true_tag_seqs], [list(s) for s in pred_tag_seqs]
    if len(true_tag_seqs) != len(pred_tag_seqs) or list(map(len, true_tag_seqs)) != list(map(len, pred_tag_seqs)):
        raise ValueError(
            "Found input variables with inconsistent numbers of samples:\n"
            f"{list(map(len, true_tag_seqs))}\n{list(map(len, pred_tag_seqs))}"
        )
    true_set = _entity_sets(true_tag_seqs, scheme, mode)
    pred_set = _entity_sets(pred_tag_seqs, scheme, mode)
    types = sorted({e[1] for e in true_set} | {e[1] for e in pred_set})
    tp = np.array([len({e for e in true_set & pred_set if e[1] == t}) for t in types], dtype=float)
    n_pred = np.array([sum(e[1] == t for e in pred_set) for t in types], dtype=float)
    n_true = np.array([sum(e[1] == t for e in true_set) for t in types], dtype=float)

    precision, recall, f1 = _prf(tp, n_pred, n_true)
    scores = {
        t: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for t, p, r, f, s in zip(types, precision, recall, f1, n_true)
    }
    support = int(n_true.sum())
    micro = _prf(tp.sum(keepdims=True), n_pred.sum(keepdims=True), n_true.sum(keepdims=True))
    scores["micro avg"] = dict(zip(("precision", "recall", "f1"), (float(v[0]) for v in micro)))
    if types:
        macro = (precision.mean(), recall.mean(), f1.mean())
    else:
        macro = (0.0, 0.0, 0.0)
    scores["macro avg"] = dict(zip(("precision", "recall", "f1"), map(float, macro)))
    if support == 0:  # seqeval: precision and F1 are 0 unless nothing was predicted either; recall is 0.
        weighted = (0.0, 0.0, 0.0)
    else:
        weighted = tuple(float(np.average(v, weights=n_true)) for v in (precision, recall, f1))
    scores["weighted avg"] = dict(zip(("precision", "recall", "f1"), weighted))
    for average in _AVERAGES:
        scores[f"{average} avg"]["support"] = support
    return scores


def entity_classification_report(
    true_tag_seqs, pred_tag_seqs, digits=4, scheme="IOB2", mode="default", output_dict=False
):
    """Formats :func:`entity_scores` exactly like ``seqeval.metrics.classification_report``.

    Args:
        true_tag_seqs: list of tag lists (one per sentence).
        pred_tag_seqs: list of tag lists, same lengths as ``true_tag_seqs``.
        digits: int, decimals of the ratios in the string report.
        scheme: str, ``"IOB2"`` or ``"IOBES"``.
        mode: str, ``"default"`` or ``"strict"``.
        output_dict: bool; True returns seqeval's dict layout (keys ``precision``, ``recall``,
            ``f1-score``, ``support``) instead of the string.

    Example:
    >>> print(entity_classification_report([["B-PER", "O"]], [["B-PER", "O"]], digits=2))
                  precision    recall  f1-score   support
    <BLANKLINE>
             PER       1.00      1.00      1.00         1
    <BLANKLINE>
       micro avg       1.00      1.00      1.00         1
       macro avg       1.00      1.00      1.00         1
    weighted avg       1.00      1.00      1.00         1
    <BLANKLINE>
    """
    scores = entity_scores(true_tag_seqs, pred_tag_seqs, scheme=scheme, mode=mode)
    if output_dict:
        return {
            name: {"precision": s["precision"], "recall": s["recall"], "f1-score": s["f1"], "support": s["support"]}
            for name, s in scores.items()
        }
    types = [name for name in scores if not name.endswith(" avg")]
    width = max([len(t) for t in types] + [len("weighted avg"), digits])
    header = "{:>{width}s} ".format("", width=width) + "".join(
        " {:>9}".format(h) for h in ("precision", "recall", "f1-score", "support")
    )
    row_fmt = "{:>{width}s} " + " {:>9.{digits}f}" * 3 + " {:>9}"

    def row(name):
        s = scores[name]
        return row_fmt.format(name, s["precision"], s["recall"], s["f1"], s["support"], width=width, digits=digits)

    lines = [row(t) for t in types] + [""] + [row(f"{a} avg") for a in _AVERAGES] + [""]
    return header + "\n\n" + "\n".join(lines)
