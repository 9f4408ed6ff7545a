"""Fit the calibration map stored in the model card.

SMOTE trains the booster on a 50/50 resampled population, so its scores overstate the ~3 % real
default rate. The map is fitted on out-of-fold predictions of the training rows (never the test
set), so it sees scores from models that did not train on those rows.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from loan_default.model.card import Calibration

_EPS = 1e-12


def logit(p: npt.ArrayLike) -> npt.NDArray[np.float64]:
    q = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.asarray(np.log(q / (1 - q)))


def fit_calibration(
    raw_proba: npt.ArrayLike, y: npt.ArrayLike, *, method: str = "sigmoid"
) -> Calibration:
    """Platt scaling on the logit (keeps the ranking, so ROC-AUC is unchanged) or isotonic."""
    p = np.asarray(raw_proba, dtype=np.float64)
    labels = np.asarray(y)
    if method == "sigmoid":
        lr = LogisticRegression(C=1e6, max_iter=1000)
        lr.fit(logit(p).reshape(-1, 1), labels)
        # Calibration.apply computes 1 / (1 + exp(a * logit + b)).
        return Calibration(method="sigmoid", a=-float(lr.coef_[0, 0]), b=-float(lr.intercept_[0]))
    if method == "isotonic":
        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
        iso.fit(p, labels)
        return Calibration(
            method="isotonic",
            x=[float(v) for v in iso.X_thresholds_],
            y=[float(v) for v in iso.y_thresholds_],
        )
    raise ValueError(f"unknown calibration method {method!r}")
