"""Evaluation metrics reported for every model and used by the promotion gate."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    f1_score,
    log_loss,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
)


def expected_calibration_error(y: npt.ArrayLike, p: npt.ArrayLike, *, n_bins: int = 10) -> float:
    """Weighted mean |observed rate - mean predicted| over equal-width probability bins."""
    labels = np.asarray(y, dtype=np.float64)
    probs = np.asarray(p, dtype=np.float64)
    bins = np.minimum((probs * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            ece += m.mean() * abs(labels[m].mean() - probs[m].mean())
    return float(ece)


def precision_at_recall(y: npt.ArrayLike, p: npt.ArrayLike, *, recall: float = 0.8) -> float:
    """Best precision among thresholds whose recall is at least `recall`."""
    prec, rec, _ = precision_recall_curve(np.asarray(y), np.asarray(p))
    ok = rec >= recall
    return float(prec[ok].max()) if ok.any() else 0.0


def evaluate(y: npt.ArrayLike, p: npt.ArrayLike, *, threshold: float) -> dict[str, float]:
    labels = np.asarray(y)
    probs = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    pred = (probs >= threshold).astype(int)
    return {
        "roc_auc": float(roc_auc_score(labels, probs)),
        "pr_auc": float(average_precision_score(labels, probs)),
        "brier": float(brier_score_loss(labels, probs)),
        "log_loss": float(log_loss(labels, np.clip(probs, 1e-15, 1 - 1e-15))),
        "ece": expected_calibration_error(labels, probs),
        "precision_at_recall_0_8": precision_at_recall(labels, probs, recall=0.8),
        "f1": float(f1_score(labels, pred, zero_division=0)),
        "precision": float(precision_score(labels, pred, zero_division=0)),
        "recall": float(recall_score(labels, pred, zero_division=0)),
        "accuracy": float(accuracy_score(labels, pred)),
        "threshold": float(threshold),
    }
