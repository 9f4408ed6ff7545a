"""Monotone constraints: the parameter, the trained booster's shape, and what the run records."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb
from mlflow.tracking import MlflowClient

from loan_default.features import FEATURE_NAMES, build_matrix
from loan_default.training import candidates
from tests.conftest import make_settings


@pytest.mark.unit
def test_constraint_setting_maps_to_xgboost_params() -> None:
    on = candidates.monotone_constraints(True)
    assert list(on) == list(FEATURE_NAMES)
    assert on == {"employed": 1, "bank_balance": 1, "annual_salary": -1, "saving_rate": 1}
    assert set(candidates.monotone_constraints(False).values()) == {0}
    assert candidates._xgb_params(0, 1, on)["monotone_constraints"] == "(1,1,-1,1)"
    assert candidates._xgb_params(0, 1)["monotone_constraints"] == "(0,0,0,0)"
    est = candidates.make_estimator("xgb_weighted", seed=0, constraints=on)
    assert est.get_params()["monotone_constraints"] == "(1,1,-1,1)"


def _bases() -> np.ndarray:
    """Base applicants: both employment values, low to high balance and income."""
    grid = [(e, b, s) for e in (0, 1) for b in (0, 5_000, 15_000, 25_000) for s in (1e4, 2e5, 8e5)]
    return build_matrix(grid)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("feature", "direction"),
    [("bank_balance", 1), ("saving_rate", 1), ("employed", 1), ("annual_salary", -1)],
)
def test_served_probability_moves_one_way_as_a_constrained_feature_grows(
    bundle, feature: str, direction: int
) -> None:  # type: ignore[no-untyped-def]
    """Scan the feature over a grid (others held fixed) through the serving kernel (ONNX and the
    calibration): the calibrated probability never moves against the constraint's direction;
    the booster's margin neither."""
    assert bundle.card.monotone_constraints[feature] == direction
    j = FEATURE_NAMES.index(feature)
    values = {
        "bank_balance": np.linspace(0, 60_000, 1_201),
        "saving_rate": np.concatenate([np.linspace(0, 0.2, 801), np.linspace(0.2, 5, 200)]),
        "employed": np.array([0.0, 0.25, 0.5, 0.75, 1.0]),
        "annual_salary": np.geomspace(1, 1e7, 1_001),
    }[feature].astype(np.float32)
    for base in _bases():
        grid = np.repeat(base[None, :], len(values), axis=0)
        grid[:, j] = values
        p = bundle.score(grid).probability
        assert np.all(direction * np.diff(p) >= 0), (feature, base)
        margin = bundle.booster.predict(xgb.DMatrix(grid), output_margin=True)
        assert np.all(direction * np.diff(margin) >= 0), (feature, base)
    # The calibration is increasing, so ordering reasons by log-odds orders them by probability.
    q = np.linspace(0.001, 0.999, 999)
    assert np.all(np.diff(bundle.card.calibration.apply(q)) > 0)


@pytest.mark.integration
def test_run_logs_the_constraints(trained_store: Path) -> None:
    settings = make_settings(trained_store)
    client = MlflowClient(settings.mlflow_tracking_uri)
    exp = client.get_experiment_by_name(settings.mlflow_experiment)
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.info.run_name == "train")
    assert json.loads(
        parent.data.params["monotone_constraints"]
    ) == candidates.monotone_constraints(True)
    assert parent.data.params["reasons_version"] == "1"
    child = next(r for r in runs if r.info.run_name == "xgb_smote")
    assert child.data.params["monotone_constraints"] == "(1,1,-1,1)"
