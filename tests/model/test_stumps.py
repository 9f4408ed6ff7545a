"""The stump table gives XGBoost's own `pred_contribs`, for synthetic boosters and the real one."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb

from loan_default.features import FEATURE_NAMES, build_matrix
from loan_default.model.stumps import StumpContributions


def _booster(depth: int, seed: int = 0) -> tuple[xgb.Booster, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2000, 4)).astype(np.float32)
    x[:, 0] = np.round(x[:, 0])  # few distinct values: many stumps share a threshold
    y = (x[:, 0] + 0.5 * x[:, 1] ** 2 - x[:, 2] + rng.normal(size=2000) > 0.5).astype(int)
    booster = xgb.train(
        {"max_depth": depth, "objective": "binary:logistic", "eta": 0.3, "base_score": 0.3},
        xgb.DMatrix(x, label=y),
        num_boost_round=40,
    )
    return booster, x


def _exact(booster: xgb.Booster, x: np.ndarray) -> np.ndarray:
    return np.asarray(booster.predict(xgb.DMatrix(x), pred_contribs=True))


@pytest.mark.unit
def test_synthetic_stumps_match_pred_contribs_everywhere() -> None:
    booster, x = _booster(depth=1)
    exact = _exact(booster, x)
    table = StumpContributions.from_booster(booster, ["a", "b", "c", "d"], bias=float(exact[0, -1]))
    assert table is not None
    np.testing.assert_allclose(table.contribs(x), exact, atol=2e-6)
    # on each threshold and one float32 step below it: the side of the split is XGBoost's
    split = [f for f, cuts in enumerate(table.thresholds) if len(cuts)]
    assert split == [0, 1, 2]  # `d` is noise: no split, contribution 0
    assert not table.contribs(x)[:, 3].any()
    for f in split:
        cuts = table.thresholds[f]
        for value in (cuts, np.nextafter(cuts, np.float32(-np.inf))):
            rows = np.repeat(x[:1], len(cuts), axis=0)
            rows[:, f] = value
            np.testing.assert_allclose(table.contribs(rows), _exact(booster, rows), atol=2e-6)
    # the rows sum to the margin, as SHAP values do
    margin = booster.predict(xgb.DMatrix(x), output_margin=True)
    np.testing.assert_allclose(table.contribs(x).sum(axis=1), margin, atol=1e-5)


@pytest.mark.unit
def test_deeper_trees_have_no_table() -> None:
    booster, _ = _booster(depth=2)
    assert StumpContributions.from_booster(booster, ["a", "b", "c", "d"], bias=0.0) is None


@pytest.mark.integration
def test_the_served_model_uses_the_table_and_gets_the_same_codes(bundle) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(7)
    n = 20_000
    raw = np.column_stack(
        [rng.integers(0, 2, n), rng.uniform(0, 30_000, n), rng.uniform(1, 800_000, n)]
    )
    matrix = build_matrix(raw)
    assert bundle._stumps is not None, "training chose stumps; the table must be in use"
    fast, exact = bundle.contribs(matrix), bundle.tree_shap(matrix)
    assert fast.shape == exact.shape == (n, len(FEATURE_NAMES) + 1)
    np.testing.assert_allclose(fast, exact, atol=1e-5)
    ranker = bundle._ranker
    assert ranker.rank(fast[:, :-1]) == ranker.rank(exact[:, :-1])
