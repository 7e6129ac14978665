"""Classification scores on inputs whose answers are worked out by hand in the comments."""

import math

import numpy as np
import pytest

from tfm.metrics import (
    accuracy,
    classification_report,
    confusion_matrix,
    f1_score,
    matthews_corrcoef,
    precision_recall_f1,
)

# Three classes. Confusion matrix (rows true, columns predicted):
#   true 0: [1, 1, 0]   true 1: [0, 2, 0]   true 2: [1, 0, 1]
Y_TRUE_3 = [0, 0, 1, 1, 2, 2]
Y_PRED_3 = [0, 1, 1, 1, 2, 0]
# Binary: TP 3, FP 1, FN 0, TN 2.
Y_TRUE_2 = [1, 1, 1, 0, 0, 0]
Y_PRED_2 = [1, 1, 1, 1, 0, 0]


def test_accuracy():
    assert accuracy([0, 1, 2, 2, 1], [0, 2, 2, 2, 1]) == 0.8  # 4 of 5
    assert accuracy(np.array([["a"], ["b"]]), ["a", "c"]) == 0.5


def test_confusion_matrix_and_labels():
    matrix, labels = confusion_matrix(Y_TRUE_3, Y_PRED_3)
    assert labels == [0, 1, 2]
    assert matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    matrix, labels = confusion_matrix(["neg", "pos", "pos"], ["pos", "pos", "neg"])
    assert labels == ["neg", "pos"] and matrix.tolist() == [[0, 1], [1, 1]]


def test_f1_binary():
    # pos 1: P 3/4, R 3/3 -> F1 = 2*(3/4)/(7/4) = 6/7
    assert f1_score(Y_TRUE_2, Y_PRED_2) == pytest.approx(6 / 7)
    # pos 0: TP 2, FP 0, FN 1 -> P 1, R 2/3 -> F1 = (4/3)/(5/3) = 4/5
    assert f1_score(Y_TRUE_2, Y_PRED_2, pos_label=0) == pytest.approx(4 / 5)
    # macro = (6/7 + 4/5)/2 = 29/35; micro = accuracy = 5/6
    assert f1_score(Y_TRUE_2, Y_PRED_2, average="macro") == pytest.approx(29 / 35)
    assert f1_score(Y_TRUE_2, Y_PRED_2, average="micro") == pytest.approx(5 / 6)


def test_f1_multiclass():
    # label 0: P 1/2, R 1/2, F 1/2; label 1: P 2/3, R 1, F 4/5; label 2: P 1, R 1/2, F 2/3
    # macro = (1/2 + 4/5 + 2/3)/3 = 59/90; micro = 4 correct / 6 = 2/3
    assert f1_score(Y_TRUE_3, Y_PRED_3, average="macro") == pytest.approx(59 / 90)
    assert f1_score(Y_TRUE_3, Y_PRED_3, average="micro") == pytest.approx(2 / 3)
    assert precision_recall_f1(Y_TRUE_3, Y_PRED_3)[1] == pytest.approx(
        {"precision": 2 / 3, "recall": 1.0, "f1": 4 / 5, "support": 2}
    )


def test_f1_errors_and_edge_cases():
    with pytest.raises(ValueError, match=r"average='binary' needs at most 2 labels, found 3: \[0, 1, 2\]"):
        f1_score(Y_TRUE_3, Y_PRED_3)
    with pytest.raises(ValueError, match=r"pos_label='yes' is not a valid label: \['neg', 'pos'\]"):
        f1_score(["neg", "pos"], ["pos", "pos"], pos_label="yes")
    with pytest.raises(ValueError, match=r"average must be one of \['binary', 'macro', 'micro'\], got 'weighted'"):
        f1_score([0], [0], average="weighted")
    with pytest.raises(ValueError, match="differ in length: 2 vs 1"):
        f1_score([0, 1], [0])
    # only negatives anywhere: no positive predictions or labels -> 0.0 (scikit-learn's value)
    assert f1_score([0, 0], [0, 0]) == 0.0


def test_mcc_known_confusion_matrices():
    # 3-class matrix above: c = 4, s = 6, t = (2, 2, 2), p = (2, 3, 1)
    # (c*s - t.p) = 24 - 12 = 12; s^2 - p.p = 36 - 14 = 22; s^2 - t.t = 36 - 12 = 24
    # MCC = 12 / sqrt(22 * 24) = 3 / sqrt(33)
    assert matthews_corrcoef(Y_TRUE_3, Y_PRED_3) == pytest.approx(3 / math.sqrt(33))
    # binary: (TP*TN - FP*FN)/sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (6 - 0)/sqrt(4*3*3*2) = 1/sqrt(2)
    assert matthews_corrcoef(Y_TRUE_2, Y_PRED_2) == pytest.approx(1 / math.sqrt(2))
    assert matthews_corrcoef([0, 1, 0, 1], [1, 0, 1, 0]) == pytest.approx(-1.0)
    assert matthews_corrcoef([0, 1, 2], [0, 1, 2]) == pytest.approx(1.0)
    # constant prediction: s^2 - p.p = 0 -> defined as 0
    assert matthews_corrcoef([0, 1, 1], [1, 1, 1]) == 0.0


def test_classification_report_dict():
    r = classification_report(Y_TRUE_2, Y_PRED_2, label_names=["neg", "pos"])
    assert list(r) == ["neg", "pos", "accuracy", "macro avg", "weighted avg", "matthews_corrcoef"]
    assert r["neg"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 4 / 5, "support": 3})
    assert r["pos"] == pytest.approx({"precision": 3 / 4, "recall": 1.0, "f1": 6 / 7, "support": 3})
    assert r["accuracy"] == pytest.approx(5 / 6)
    # macro P (1 + 3/4)/2 = 7/8, R (2/3 + 1)/2 = 5/6, F1 29/35; equal supports -> weighted == macro
    assert r["macro avg"] == pytest.approx({"precision": 7 / 8, "recall": 5 / 6, "f1": 29 / 35, "support": 6})
    assert r["weighted avg"] == pytest.approx(r["macro avg"])
    assert r["matthews_corrcoef"] == pytest.approx(1 / math.sqrt(2))
