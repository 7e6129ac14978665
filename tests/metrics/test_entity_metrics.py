"""Entity-level scores: every expected number is worked out by hand in the comment next to it."""

import random
import warnings

import pytest

from tfm.metrics import entity_classification_report, entity_scores, get_entities
from tfm.metrics.sequence_labeling import _entity_sets


def test_iob2_decoding():
    tags = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC"]
    # B-LOC B-LOC: a second B starts a new entity; ends are inclusive.
    expected = [("PER", 0, 1), ("LOC", 3, 3), ("LOC", 4, 5)]
    assert get_entities(tags) == expected
    assert get_entities(tags, mode="strict") == expected


def test_sloppy_iob1_input_default_vs_strict():
    tags = ["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-MISC"]
    # default (conlleval): an I- after O or after another type starts a chunk.
    assert get_entities(tags) == [("PER", 0, 1), ("LOC", 3, 3), ("LOC", 4, 4), ("MISC", 5, 5)]
    # strict IOB2: only B-X (I-X)* counts, so only the lone B-LOC survives.
    assert get_entities(tags, scheme="IOB2", mode="strict") == [("LOC", 4, 4)]


def test_type_change_inside_chunk_splits_it():
    # B-PER I-LOC: the type change ends PER at 0 and starts LOC at 1 (default mode).
    assert get_entities(["B-PER", "I-LOC", "O"]) == [("PER", 0, 0), ("LOC", 1, 1)]


def test_types_with_dashes_keep_everything_after_the_first_dash():
    assert get_entities(["B-ORG-X", "I-ORG-X"]) == [("ORG-X", 0, 1)]


def test_iobes_decoding_both_modes():
    tags = ["S-PER", "B-LOC", "I-LOC", "E-LOC", "O", "B-ORG", "E-ORG", "S-ORG"]
    # E- closes a chunk and S- is a one-token chunk, so E-ORG S-ORG are two ORG entities.
    expected = [("PER", 0, 0), ("LOC", 1, 3), ("ORG", 5, 6), ("ORG", 7, 7)]
    assert get_entities(tags, scheme="IOBES") == expected
    assert get_entities(tags, scheme="IOBES", mode="strict") == expected


def test_iobes_strict_drops_unclosed_and_mismatched_chunks():
    tags = ["B-PER", "I-PER", "O", "B-LOC", "E-LOC", "B-ORG", "E-PER"]
    # B-PER I-PER never reaches E-PER -> dropped; B-ORG E-PER has a type mismatch -> dropped.
    assert get_entities(tags, scheme="IOBES", mode="strict") == [("LOC", 3, 4)]
    # default mode keeps what conlleval would: PER 0-1, LOC 3-4, ORG 5, PER 6.
    assert get_entities(tags, scheme="IOBES") == [("PER", 0, 1), ("LOC", 3, 4), ("ORG", 5, 5), ("PER", 6, 6)]


def test_strict_rejects_prefixes_outside_the_scheme():
    with pytest.raises(ValueError, match=r"Invalid tag 'E-PER' for scheme IOB2: allowed prefixes are B, I, O"):
        get_entities(["B-PER", "E-PER"], scheme="IOB2", mode="strict")


def test_unknown_scheme_and_mode():
    with pytest.raises(ValueError, match=r"scheme must be one of \['IOB2', 'IOBES'\], got 'BILOU'"):
        get_entities(["O"], scheme="BILOU")
    with pytest.raises(ValueError, match=r"mode must be one of \['default', 'strict'\], got 'lenient'"):
        get_entities(["O"], mode="lenient")


# true entities: PER s0[0-1], LOC s0[3], ORG s1[0-1], PER s1[3]  -> support PER 2, LOC 1, ORG 1 (4)
# pred entities: PER s0[0] (boundary wrong), LOC s0[3] (right), ORG s1[0-1] (right), LOC s1[3] (type wrong)
TRUE = [["B-PER", "I-PER", "O", "B-LOC", "O"], ["B-ORG", "I-ORG", "O", "B-PER", "O"]]
PRED = [["B-PER", "O", "O", "B-LOC", "O"], ["B-ORG", "I-ORG", "O", "B-LOC", "O"]]


def test_partial_matches_count_as_errors():
    s = entity_scores(TRUE, PRED)
    # LOC: tp 1 of 2 predicted, 1 true -> P 1/2, R 1, F1 = 2*(1/2)/(3/2) = 2/3
    assert s["LOC"] == {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "support": 1}
    assert s["ORG"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    # PER: the short PER and the PER-tagged-as-LOC are both misses -> everything 0.
    assert s["PER"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    # micro: tp 2, predicted 4, true 4 -> 1/2 each.
    assert s["micro avg"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 4}
    # macro: P (1/2+1+0)/3 = 1/2, R (1+1+0)/3 = 2/3, F1 (2/3+1+0)/3 = 5/9
    assert s["macro avg"] == pytest.approx({"precision": 0.5, "recall": 2 / 3, "f1": 5 / 9, "support": 4})
    # weighted by support (1, 1, 2): P (1/2+1)/4 = 3/8, R (1+1)/4 = 1/2, F1 (2/3+1)/4 = 5/12
    assert s["weighted avg"] == pytest.approx({"precision": 3 / 8, "recall": 0.5, "f1": 5 / 12, "support": 4})
    assert list(s) == ["LOC", "ORG", "PER", "micro avg", "macro avg", "weighted avg"]


def test_iobes_scores_default_vs_strict():
    true = [["S-PER", "B-LOC", "E-LOC", "O"]]
    pred = [["S-PER", "B-LOC", "I-LOC", "O"]]
    # default mode chunks B-LOC I-LOC as LOC[1-2], equal to the true LOC -> all correct.
    assert entity_scores(true, pred, scheme="IOBES")["micro avg"]["f1"] == 1.0
    # strict: the unclosed LOC is no entity -> tp 1, predicted 1, true 2: P 1, R 1/2, F1 2/3.
    micro = entity_scores(true, pred, scheme="IOBES", mode="strict")["micro avg"]
    assert micro == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})


def test_entities_do_not_cross_sentences():
    # I-PER at the start of sentence 2 is a new chunk, not a continuation of sentence 1's B-PER.
    s = entity_scores([["O", "B-PER"], ["I-PER", "O"]], [["O", "B-PER"], ["I-PER", "O"]])
    assert s["PER"]["support"] == 2


def test_length_mismatch_raises():
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        entity_scores([["O", "O"]], [["O"]])


def test_report_exact_layout():
    expected = (
        "              precision    recall  f1-score   support\n"
        "\n"
        "         LOC     0.5000    1.0000    0.6667         1\n"
        "         ORG     1.0000    1.0000    1.0000         1\n"
        "         PER     0.0000    0.0000    0.0000         2\n"
        "\n"
        "   micro avg     0.5000    0.5000    0.5000         4\n"
        "   macro avg     0.5000    0.6667    0.5556         4\n"
        "weighted avg     0.3750    0.5000    0.4167         4\n"
    )
    assert entity_classification_report(TRUE, PRED) == expected


def test_report_widens_for_long_type_names_and_digits():
    true, pred = [["B-ORGANIZATION_NAME", "O"]], [["B-ORGANIZATION_NAME", "O"]]
    # name width 17 > len("weighted avg") = 12, digits 2.
    expected = (
        "                   precision    recall  f1-score   support\n"
        "\n"
        "ORGANIZATION_NAME       1.00      1.00      1.00         1\n"
        "\n"
        "        micro avg       1.00      1.00      1.00         1\n"
        "        macro avg       1.00      1.00      1.00         1\n"
        "     weighted avg       1.00      1.00      1.00         1\n"
    )
    assert entity_classification_report(true, pred, digits=2) == expected


def test_report_output_dict_uses_seqeval_keys():
    d = entity_classification_report(TRUE, PRED, output_dict=True)
    assert d["ORG"] == {"precision": 1.0, "recall": 1.0, "f1-score": 1.0, "support": 1}
    assert d["micro avg"] == {"precision": 0.5, "recall": 0.5, "f1-score": 0.5, "support": 4}
    assert list(d) == ["LOC", "ORG", "PER", "micro avg", "macro avg", "weighted avg"]


def test_no_entities_anywhere_scores_zero():
    s = entity_scores([["O", "O"]], [["O", "O"]])
    assert s == {
        name: {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
        for name in ("micro avg", "macro avg", "weighted avg")
    }


def _seqeval_get_entities(seq):
    """seqeval 1.2.2's `get_entities` (prefix tags), transcribed rule by rule: the oracle for default mode."""
    def end_of_chunk(prev_tag, tag, prev_type, type_):
        return (prev_tag in ("E", "S") or (prev_tag in ("B", "I") and tag in ("B", "S", "O"))
                or (prev_tag != "O" and prev_tag != "." and prev_type != type_))

    def start_of_chunk(prev_tag, tag, prev_type, type_):
        return (tag in ("B", "S") or (prev_tag in ("E", "S", "O") and tag in ("E", "I"))
                or (tag != "O" and tag != "." and prev_type != type_))

    prev_tag, prev_type, begin_offset, chunks = "O", "", 0, []
    for i, chunk in enumerate(list(seq) + ["O"]):
        tag, type_ = chunk[0], chunk[1:].split("-", maxsplit=1)[-1] or "_"
        if end_of_chunk(prev_tag, tag, prev_type, type_):
            chunks.append((prev_type, begin_offset, i - 1))
        if start_of_chunk(prev_tag, tag, prev_type, type_):
            begin_offset = i
        prev_tag, prev_type = tag, type_
    return chunks


def test_default_mode_equals_seqeval_on_random_ill_formed_tags():
    # Every prefix seqeval distinguishes (B I E S O "." and others), types with dashes, bare and odd tags.
    alphabet = ["O", "B-PER", "I-PER", "E-PER", "S-PER", "B-LOC", "I-LOC", "E-LOC", "S-LOC", "B", "I", "E", "S",
                ".-PER", ".", "X-PER", "U-LOC", "L-LOC", "B-ORG-X", "I-ORG-X", "B-_", "I-_", "Oops", "O-PER", "PER"]
    rng = random.Random(0)
    sentences = [[rng.choice(alphabet) for _ in range(rng.randint(0, 12))] for _ in range(2000)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "... seems not to be NE tag."
        expected = [_seqeval_get_entities(tags) for tags in sentences]
        assert [get_entities(tags) for tags in sentences[:100]] == expected[:100]
        # entity_scores decodes all sentences in one batched call: the same entities.
        assert _entity_sets(sentences, "IOB2", "default") == {
            (n, *entity) for n, entities in enumerate(expected) for entity in entities}
    assert sum(map(len, expected)) > 4000
