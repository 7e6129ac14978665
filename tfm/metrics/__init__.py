"""Evaluation scores: classification, seqeval-style entity F1, SQuAD EM/F1 (pure Python/NumPy)."""

from tfm.metrics.classification import (
    accuracy,
    classification_report,
    confusion_matrix,
    f1_score,
    matthews_corrcoef,
    precision_recall_f1,
)
from tfm.metrics.sequence_labeling import entity_classification_report, entity_scores, get_entities
from tfm.metrics.squad import squad_exact_match, squad_f1, squad_normalize_answer, squad_scores

__all__ = [
    "accuracy",
    "classification_report",
    "confusion_matrix",
    "entity_classification_report",
    "entity_scores",
    "f1_score",
    "get_entities",
    "matthews_corrcoef",
    "precision_recall_f1",
    "squad_exact_match",
    "squad_f1",
    "squad_normalize_answer",
    "squad_scores",
]
