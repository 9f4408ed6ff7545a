"""The compared model families and their cross-validated out-of-fold predictions.

SMOTE runs inside imbalanced-learn's Pipeline, so `cross_val_predict` resamples only each fold's
training part: synthetic rows never leak into the rows they are scored on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import xgboost as xgb
from imblearn.over_sampling import SMOTE
from imblearn.pipeline import Pipeline as ImbPipeline
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

#: Depths compared by out-of-fold ROC-AUC; shallow trees suit 4 smooth features and 8000 rows.
XGB_DEPTHS = (1, 2, 3)
N_FOLDS = 5


@dataclass
class CandidateResult:
    family: str
    estimator: Any
    params: dict[str, Any]
    oof_raw: npt.NDArray[np.float64]
    fold_roc_auc: list[float] = field(default_factory=list)
    depth_search: dict[str, float] = field(default_factory=dict)

    @property
    def booster(self) -> xgb.Booster:
        step = self.estimator.steps[-1][1] if hasattr(self.estimator, "steps") else self.estimator
        booster: xgb.Booster = step.get_booster()
        return booster


def _xgb_params(seed: int, depth: int) -> dict[str, Any]:
    return {
        "n_estimators": 200,
        "learning_rate": 0.05,
        "max_depth": depth,
        "subsample": 0.8,
        "min_child_weight": 5,
        "reg_lambda": 5.0,
        "tree_method": "hist",
        "objective": "binary:logistic",
        "eval_metric": "logloss",
        "n_jobs": 2,
        "random_state": seed,
    }


def make_estimator(family: str, *, seed: int, depth: int = 1, pos_weight: float = 1.0) -> Any:
    if family == "xgb_smote":
        return ImbPipeline(
            [
                ("smote", SMOTE(random_state=seed)),
                ("xgb", xgb.XGBClassifier(**_xgb_params(seed, depth))),
            ]
        )
    if family == "xgb_weighted":
        return xgb.XGBClassifier(**_xgb_params(seed, depth), scale_pos_weight=pos_weight)
    if family == "logreg":
        return Pipeline(
            [("scale", StandardScaler()), ("lr", LogisticRegression(max_iter=1000, C=1.0))]
        )
    raise ValueError(f"unknown model family {family!r}")


def _oof(
    est: Any, X: npt.NDArray[np.float32], y: npt.NDArray[np.int64], cv: StratifiedKFold
) -> tuple[npt.NDArray[np.float64], list[float]]:
    oof = cross_val_predict(est, X, y, cv=cv, method="predict_proba")[:, 1]
    folds = [float(roc_auc_score(y[va], oof[va])) for _, va in cv.split(X, y)]
    return np.asarray(oof, dtype=np.float64), folds


def fit_family(
    family: str, X: npt.NDArray[np.float32], y: npt.NDArray[np.int64], *, seed: int
) -> CandidateResult:
    """Pick hyper-parameters by out-of-fold ROC-AUC on the training rows, then refit on all."""
    cv = StratifiedKFold(n_splits=N_FOLDS, shuffle=True, random_state=seed)
    pos_weight = float((y == 0).sum() / max((y == 1).sum(), 1))
    if family == "logreg":
        est = make_estimator(family, seed=seed)
        oof, folds = _oof(est, X, y, cv)
        est.fit(X, y)
        return CandidateResult(family, est, {"C": 1.0}, oof, folds)
    best: tuple[float, int, npt.NDArray[np.float64], list[float]] | None = None
    search: dict[str, float] = {}
    for depth in XGB_DEPTHS:
        est = make_estimator(family, seed=seed, depth=depth, pos_weight=pos_weight)
        oof, folds = _oof(est, X, y, cv)
        auc = float(roc_auc_score(y, oof))
        search[f"oof_roc_auc_depth_{depth}"] = auc
        if best is None or auc > best[0]:
            best = (auc, depth, oof, folds)
    assert best is not None  # nosec B101 - type narrowing for mypy on an invariant, not input validation
    _, depth, oof, folds = best
    est = make_estimator(family, seed=seed, depth=depth, pos_weight=pos_weight)
    est.fit(X, y)
    params = {**_xgb_params(seed, depth), "smote": family == "xgb_smote"}
    if family == "xgb_weighted":
        params["scale_pos_weight"] = pos_weight
    return CandidateResult(family, est, params, oof, folds, search)
