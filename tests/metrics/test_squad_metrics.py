"""SQuAD EM/F1 on answers whose scores are worked out by hand in the comments."""

import pytest

from tfm.metrics import squad_exact_match, squad_f1, squad_normalize_answer, squad_scores


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The Eiffel Tower!", "eiffel tower"),  # lowercase, punctuation, article
        ("An apple, a day.", "apple day"),  # both a and an go
        ("theater then", "theater then"),  # articles only as whole words
        ("  Hello,\t  World \n", "hello world"),  # whitespace collapsed
        ("U.S.A.", "usa"),  # punctuation removed, not replaced by spaces
        ("the-end", "theend"),  # punctuation goes before article removal
        ("The", ""),
    ],
)
def test_normalize(text, expected):
    assert squad_normalize_answer(text) == expected


def test_exact_match():
    assert squad_exact_match("the Eiffel Tower.", ["Eiffel Tower"]) == 1.0
    assert squad_exact_match("Eiffel Tower", ["Eiffel", "Paris"]) == 0.0
    assert squad_exact_match("paris", ["Eiffel", {"text": "Paris"}]) == 1.0
    assert squad_exact_match("Paris", "paris") == 1.0


def test_f1_token_overlap():
    # pred [eiffel, tower, in, paris] vs gold [eiffel, tower]: common 2, P 2/4, R 2/2 -> F1 2/3
    assert squad_f1("Eiffel Tower in Paris", ["the Eiffel Tower"]) == pytest.approx(2 / 3)
    # max over golds: vs [paris] common 1, P 1/4, R 1 -> 0.4; the max stays 2/3
    assert squad_f1("Eiffel Tower in Paris", ["Paris", "the Eiffel Tower"]) == pytest.approx(2 / 3)
    # repeated tokens are a multiset intersection: [x, x, y] & [x, y, y] = {x, y} -> P 2/3, R 2/3
    assert squad_f1("x x y", ["x y y"]) == pytest.approx(2 / 3)
    assert squad_f1("London", ["Paris"]) == 0.0


def test_no_answer_questions():
    # SQuAD 2.0: no ground truth -> 1 only for an empty (after normalization) prediction
    assert squad_exact_match("", []) == 1.0 and squad_f1("", []) == 1.0
    assert squad_exact_match("The.", []) == 1.0 and squad_f1("the", []) == 1.0
    assert squad_exact_match("Paris", []) == 0.0 and squad_f1("Paris", []) == 0.0
    # an empty prediction for an answerable question scores 0
    assert squad_exact_match("", ["Paris"]) == 0.0 and squad_f1("", ["Paris"]) == 0.0


def test_scores_on_squad_json():
    dataset = {
        "version": "v2.0",
        "data": [
            {
                "title": "Paris",
                "paragraphs": [
                    {
                        "context": "...",
                        "qas": [
                            {"id": "q1", "answers": [{"text": "Eiffel Tower", "answer_start": 0}]},
                            {"id": "q2", "answers": [{"text": "the Eiffel Tower", "answer_start": 0}]},
                            {"id": "q3", "answers": [], "is_impossible": True,
                             "plausible_answers": [{"text": "Louvre", "answer_start": 0}]},
                            {"id": "q4", "answers": [{"text": "Seine", "answer_start": 0}]},
                        ],
                    }
                ],
            }
        ],
    }
    predictions = {"q1": "The Eiffel Tower", "q2": "Eiffel Tower in Paris", "q3": "", "unknown": "x"}
    # EM: q1 1, q2 0, q3 1 (empty for no-answer), q4 0 (missing) -> 2/4 = 50%
    # F1: q1 1, q2 2/3, q3 1, q4 0 -> (8/3)/4 = 2/3 = 66.67%
    expected = {"exact_match": 50.0, "f1": pytest.approx(200 / 3)}
    assert squad_scores(predictions, dataset) == expected
    assert squad_scores(predictions, dataset["data"]) == expected


def test_scores_on_answer_dict():
    # q1 "Broncos" vs "Denver Broncos": P 1, R 1/2 -> F1 2/3, EM 0; q2 no-answer + "" -> 1, 1
    scores = squad_scores({"q1": "Broncos", "q2": ""}, {"q1": ["Denver Broncos"], "q2": []})
    assert scores == {"exact_match": 50.0, "f1": pytest.approx(100 * (2 / 3 + 1) / 2)}
    with pytest.raises(ValueError, match="no questions"):
        squad_scores({}, {})
