"""The compared model families and their cross-validated out-of-fold predictions.

SMOTE runs inside imbalanced-learn's Pipeline, so `cross_val_predict` resamples only each fold's
training part: synthetic rows never leak into the rows they are scored on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

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

from loan_default.core.config import Settings
from loan_default.features import FEATURE_NAMES
from loan_default.model.card import Calibration
from loan_default.training.calibration import fit_calibration
from loan_default.training.metrics import evaluate
from loan_default.training.threshold import select_threshold

#: Depths compared by out-of-fold ROC-AUC; shallow trees suit 4 smooth features and 8000 rows.
XGB_DEPTHS = (1, 2, 3)
N_FOLDS = 5

#: The direction each feature may move the booster's log-odds (+1: a larger value never lowers the
#: risk; 0: free). Constrained where the data and the domain agree (DESIGN.md, "Reason codes and
#: monotone constraints", has the evidence): a higher card balance, alone or relative to income,
#: never lowers risk; at the same balance and income non-students (`employed` = 1) default more
#: often than students (ISLP's confounding: students default more only because they carry higher
#: balances; logistic p = 0.006, positive in 99.5 % of bootstrap refits), so `employed` is +1;
#: income has no effect once balance and student status are known (p = 0.71; its negative
#: marginal effect is the same confounding). Left free, the stumps learned noise that named *high*
#: income as an adverse reason; -1 (the domain's direction: more income never raises risk, which
#: the data do not contradict) removes every income split, and the model goals still hold. The
#: reason codes name a direction only for a feature constrained in that direction
#: (`model.reasons.build_table`).
MONOTONE_DIRECTIONS: Final[Mapping[str, int]] = {
    "employed": 1,
    "bank_balance": 1,
    "annual_salary": -1,
    "saving_rate": 1,
}


def monotone_constraints(enabled: bool) -> dict[str, int]:
    """Per-feature constraints for training, in FEATURE_NAMES order: the directions, or all 0."""
    return {name: MONOTONE_DIRECTIONS[name] if enabled else 0 for name in FEATURE_NAMES}


def _constraint_param(constraints: Mapping[str, int] | None) -> str:
    """XGBoost's positional form, e.g. `(1,1,0,1)` (the model matrix has no column names)."""
    values = [int((constraints or {}).get(name, 0)) for name in FEATURE_NAMES]
    return "(" + ",".join(str(v) for v in values) + ")"


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


def _xgb_params(
    seed: int, depth: int, constraints: Mapping[str, int] | None = None
) -> dict[str, Any]:
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
        "monotone_constraints": _constraint_param(constraints),
    }


def make_estimator(
    family: str,
    *,
    seed: int,
    depth: int = 1,
    pos_weight: float = 1.0,
    constraints: Mapping[str, int] | None = None,
) -> Any:
    """One unfitted candidate; `constraints` (feature -> -1/0/+1) apply to the XGBoost families."""
    params = _xgb_params(seed, depth, constraints)
    if family == "xgb_smote":
        return ImbPipeline(
            [("smote", SMOTE(random_state=seed)), ("xgb", xgb.XGBClassifier(**params))]
        )
    if family == "xgb_weighted":
        return xgb.XGBClassifier(**params, scale_pos_weight=pos_weight)
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
    family: str,
    X: npt.NDArray[np.float32],
    y: npt.NDArray[np.int64],
    *,
    seed: int,
    constraints: Mapping[str, int] | None = None,
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
        est = make_estimator(
            family, seed=seed, depth=depth, pos_weight=pos_weight, constraints=constraints
        )
        oof, folds = _oof(est, X, y, cv)
        auc = float(roc_auc_score(y, oof))
        search[f"oof_roc_auc_depth_{depth}"] = auc
        if best is None or auc > best[0]:
            best = (auc, depth, oof, folds)
    assert best is not None  # nosec B101 - type narrowing for mypy on an invariant, not input validation
    _, depth, oof, folds = best
    est = make_estimator(
        family, seed=seed, depth=depth, pos_weight=pos_weight, constraints=constraints
    )
    est.fit(X, y)
    params = {**_xgb_params(seed, depth, constraints), "smote": family == "xgb_smote"}
    if family == "xgb_weighted":
        params["scale_pos_weight"] = pos_weight
    return CandidateResult(family, est, params, oof, folds, search)


@dataclass
class FamilyResult:
    """One candidate family fitted on the training rows and measured on the test rows."""

    res: CandidateResult
    calibration: Calibration
    threshold: float
    p_test: npt.NDArray[np.float64]
    test_metrics: dict[str, float]
    cv: dict[str, float]


def fit_and_evaluate(
    settings: Settings,
    family: str,
    X_tr: npt.NDArray[np.float32],
    y_tr: npt.NDArray[np.int64],
    X_te: npt.NDArray[np.float32],
    y_te: npt.NDArray[np.int64],
) -> FamilyResult:
    """Fit one family (hyper-parameters, calibration and threshold chosen on the training rows
    only), then measure it on the test rows. No MLflow: `train` logs, benchmarks compare."""
    constraints = monotone_constraints(settings.monotone_constraints)
    res = fit_family(family, X_tr, y_tr, seed=settings.random_seed, constraints=constraints)
    if family == "logreg":
        calibration = Calibration(method="identity")
    else:
        calibration = fit_calibration(res.oof_raw, y_tr, method=settings.calibration_method)
    oof_cal = calibration.apply(res.oof_raw)
    threshold = select_threshold(
        y_tr,
        oof_cal,
        objective=settings.threshold_objective,
        cost_fn=settings.cost_false_negative,
        cost_fp=settings.cost_false_positive,
    )
    p_test = calibration.apply(res.estimator.predict_proba(X_te)[:, 1])
    cv = {
        "cv_roc_auc_mean": float(np.mean(res.fold_roc_auc)),
        "cv_roc_auc_std": float(np.std(res.fold_roc_auc)),
        **{f"oof_{k}": v for k, v in evaluate(y_tr, oof_cal, threshold=threshold).items()},
        **res.depth_search,
    }
    return FamilyResult(
        res, calibration, threshold, p_test, evaluate(y_te, p_test, threshold=threshold), cv
    )
