from __future__ import annotations

import numpy as np
import pytest

from loan_default.training.metrics import evaluate, expected_calibration_error, precision_at_recall

pytestmark = pytest.mark.unit


def test_ece_by_hand() -> None:
    # Bin [0.1,0.2): p=0.1 x2, one default -> |0.5-0.1|; bin [0.9,1]: p=0.9 x2, both -> |1-0.9|.
    y = np.array([0, 1, 1, 1])
    p = np.array([0.1, 0.1, 0.9, 0.9])
    assert expected_calibration_error(y, p) == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)


def test_precision_at_recall() -> None:
    y = np.array([1, 0, 1, 0, 0, 1])
    p = np.array([0.9, 0.8, 0.7, 0.3, 0.2, 0.1])
    assert precision_at_recall(y, p, recall=0.6) == pytest.approx(2 / 3)
    assert precision_at_recall(y, p, recall=1.0) == pytest.approx(0.5)


def test_evaluate_reports_every_metric() -> None:
    y = np.array([0, 0, 1, 1])
    m = evaluate(y, np.array([0.1, 0.6, 0.4, 0.9]), threshold=0.5)
    assert m["roc_auc"] == pytest.approx(0.75)
    assert m["precision"] == pytest.approx(0.5)
    assert m["recall"] == pytest.approx(0.5)
    assert set(m) >= {"pr_auc", "brier", "log_loss", "ece", "f1", "accuracy", "threshold"}
