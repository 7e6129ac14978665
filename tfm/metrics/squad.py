"""SQuAD v1.1 / v2.0 exact match and token F1, as the official evaluation scripts compute them.

An answer is compared after :func:`squad_normalize_answer`. A question with no (non-empty) ground truth is a
SQuAD 2.0 no-answer question: it scores 1 when the prediction normalizes to the empty string, else 0.
"""

import collections
import re
import string

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def squad_normalize_answer(text):
    """Lowercases, removes punctuation, removes the articles a/an/the and collapses whitespace.

    Args:
        text: str.

    Example:
    >>> squad_normalize_answer("The  Eiffel-Tower, Paris!")
    'eiffeltower paris'
    """
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _gold(ground_truths):
    """Non-empty answers, or [""] for a no-answer question (official v2.0 rule)."""
    if isinstance(ground_truths, str):
        ground_truths = [ground_truths]
    texts = [a["text"] if isinstance(a, dict) else a for a in ground_truths]
    return [t for t in texts if squad_normalize_answer(t)] or [""]


def _f1(prediction, ground_truth):
    pred_tokens = squad_normalize_answer(prediction).split()
    gold_tokens = squad_normalize_answer(ground_truth).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    num_same = sum((collections.Counter(pred_tokens) & collections.Counter(gold_tokens)).values())
    if num_same == 0:
        return 0.0
    precision, recall = num_same / len(pred_tokens), num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_exact_match(prediction, ground_truths):
    """1.0 if the normalized prediction equals any normalized ground truth, else 0.0.

    Args:
        prediction: str.
        ground_truths: str, list of str, or list of ``{"text": str}``; empty means no answer.

    Example:
    >>> squad_exact_match("the Denver Broncos", ["Denver Broncos", "Broncos"])
    1.0
    """
    normalized = squad_normalize_answer(prediction)
    return float(any(normalized == squad_normalize_answer(g) for g in _gold(ground_truths)))


def squad_f1(prediction, ground_truths):
    """Maximum over ground truths of the token-level F1 between normalized answers.

    Args:
        prediction: str.
        ground_truths: str, list of str, or list of ``{"text": str}``; empty means no answer.

    Example:
    >>> squad_f1("Denver Broncos won", ["Denver Broncos"])
    0.8
    """
    return max(_f1(prediction, g) for g in _gold(ground_truths))


def _answers_by_id(dataset_or_answers):
    data = dataset_or_answers
    if isinstance(data, dict) and "data" in data and isinstance(data["data"], list):
        data = data["data"]
    if isinstance(data, dict):
        return dict(data)
    answers = {}
    for article in data:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                answers[qa["id"]] = [] if qa.get("is_impossible") else qa["answers"]
    return answers


def squad_scores(predictions, dataset_or_answers):
    """Exact match and F1 in percent over all questions, like the official SQuAD evaluation script.

    A question with no prediction scores 0 (SQuAD v1.1 script); predictions for unknown ids are ignored.

    Args:
        predictions: dict question id -> predicted answer text ("" = no answer).
        dataset_or_answers: a SQuAD json (dict with ``"data"``, or its ``"data"`` list), or a dict
            question id -> ground truths (list of str or of ``{"text": ...}``; empty list = no answer).

    Returns:
        ``{"exact_match": float, "f1": float}``, both in [0, 100].

    Example:
    >>> squad_scores({"q1": "Broncos", "q2": ""}, {"q1": ["Denver Broncos"], "q2": []})
    {'exact_match': 50.0, 'f1': 83.33333333333333}
    """
    answers = _answers_by_id(dataset_or_answers)
    if not answers:
        raise ValueError("squad_scores: the dataset has no questions")
    exact = f1 = 0.0
    for qid, ground_truths in answers.items():
        if qid in predictions:
            exact += squad_exact_match(predictions[qid], ground_truths)
            f1 += squad_f1(predictions[qid], ground_truths)
    return {"exact_match": 100.0 * exact / len(answers), "f1": 100.0 * f1 / len(answers)}
