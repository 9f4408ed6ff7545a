"""Realized metrics against scikit-learn/scipy, CBPE estimates against brute force and against the
truth revealed afterwards (calibrated, covariate shift, concept shift), cohorts and alerts."""

from __future__ import annotations

import json
import warnings
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from scipy.stats import ks_2samp
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from loan_default.core.config import Settings
from loan_default.services import performance as perf
from loan_default.services import performance_cohorts as pc
from loan_default.services.drift import bin_proportions, psi
from loan_default.training.metrics import expected_calibration_error

pytestmark = pytest.mark.unit

GATE_MIN_AUC = Settings.model_fields["gate_min_roc_auc"].default
Floats = npt.NDArray[np.float64]


def _population(
    n: int, *, seed: int, risk_shift: float = 0.0, concept_shift: float = 0.0
) -> tuple[Floats, npt.NDArray[np.int64]]:
    """Calibrated probabilities p of a logistic model and outcomes drawn from the true risk.

    `risk_shift` moves the applicants (more high-risk ones; the model stays right);
    `concept_shift` adds to the true log-odds, so applicants default more often than p says.
    Base population: ~2.7 % defaults, ROC-AUC ~0.97 (like the production model's test split).
    """
    rng = np.random.default_rng(seed)
    logit = -7.5 + 3.5 * rng.normal(risk_shift, 1.0, n)
    p = 1.0 / (1.0 + np.exp(-logit))
    truth = 1.0 / (1.0 + np.exp(-(logit + concept_shift)))
    return p, (rng.random(n) < truth).astype(np.int64)


def _json(obj: Any) -> Any:
    """JSON round trip that refuses NaN/inf, as the HTTP endpoint will."""
    return json.loads(json.dumps(obj, allow_nan=False))


# --- realized: equal to scikit-learn -------------------------------------------------------------
@pytest.mark.parametrize("decimals", [None, 2], ids=["continuous", "tied-scores"])
def test_realized_equals_sklearn_on_10000_decisions(decimals: int | None) -> None:
    p, y = _population(10_000, seed=11, risk_shift=1.0)
    if decimals is not None:
        p = np.round(p, decimals)  # ~100 distinct scores: most rows tie with others
        assert np.unique(p).size < 110
    threshold = 0.3
    r = perf.realized_performance(y=y, p=p, threshold=threshold)

    assert r.count == 10_000
    assert r.defaults == int(y.sum()) > 100
    assert r.roc_auc == pytest.approx(roc_auc_score(y, p), abs=1e-9)
    assert r.pr_auc == pytest.approx(average_precision_score(y, p), abs=1e-9)
    assert r.brier == pytest.approx(brier_score_loss(y, p), abs=1e-9)
    assert r.ks == pytest.approx(ks_2samp(p[y == 1], p[y == 0]).statistic, abs=1e-9)
    fpr, tpr, _ = roc_curve(y, p)
    assert r.ks == pytest.approx(np.max(tpr - fpr), abs=1e-9)
    assert r.observed_default_rate == pytest.approx(y.mean(), abs=1e-12)
    assert r.mean_predicted == pytest.approx(p.mean(), abs=1e-12)
    assert r.calibration_in_the_large == pytest.approx(y.mean() - p.mean(), abs=1e-12)
    assert r.observed_expected_ratio == pytest.approx(y.mean() / p.mean(), abs=1e-12)

    declined = (p >= threshold).astype(int)
    assert r.at_threshold is not None
    assert r.at_threshold.precision == pytest.approx(precision_score(y, declined), abs=1e-12)
    assert r.at_threshold.recall == pytest.approx(recall_score(y, declined), abs=1e-12)
    assert r.at_threshold.f1 == pytest.approx(f1_score(y, declined), abs=1e-12)


def test_reliability_table_bins_and_empty_bins() -> None:
    p = np.array([0.0, 0.05, 0.15, 0.15, 0.95, 1.0])
    y = np.array([0, 0, 1, 0, 1, 1])
    bins = perf.realized_performance(y=y, p=p).reliability

    assert [b.count for b in bins] == [2, 2, 0, 0, 0, 0, 0, 0, 0, 2]
    assert (bins[0].lower, bins[0].upper, bins[9].lower, bins[9].upper) == (0.0, 0.1, 0.9, 1.0)
    assert bins[0].mean_predicted == pytest.approx(0.025)
    assert bins[0].observed_rate == 0.0
    assert bins[1].observed_rate == 0.5
    assert bins[9].mean_predicted == pytest.approx(0.975)  # 1.0 falls in the last bin
    assert bins[2].mean_predicted is None
    assert bins[2].observed_rate is None


def test_reliability_table_bins_as_training_ece_does() -> None:
    p, y = _population(5_000, seed=3, risk_shift=1.5)
    r = perf.realized_performance(y=y, p=p)
    ece = sum(
        b.count / r.count * abs(b.observed_rate - b.mean_predicted)
        for b in r.reliability
        if b.observed_rate is not None and b.mean_predicted is not None
    )
    assert ece == pytest.approx(expected_calibration_error(y, p), abs=1e-12)


@pytest.mark.parametrize(
    ("y", "p"),
    [
        ([0, 0, 0], [0.1, 0.2, 0.3]),
        ([1, 1], [0.5, 0.9]),
        ([1, 0], [0.0, 0.0]),
        ([], []),
    ],
    ids=["no-defaulters", "only-defaulters", "expected-nothing", "empty"],
)
def test_undefined_metrics_are_none_without_warnings(y: list[int], p: list[float]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = perf.realized_performance(y=y, p=p, threshold=0.5)
        e = perf.estimated_performance(p=p)
    body = _json({"realized": r.as_dict(), "estimated": e.as_dict()})  # no NaN anywhere
    if 0 < sum(y) < len(y):
        assert r.roc_auc is not None
    else:
        assert r.roc_auc is None
        assert r.ks is None
    if sum(y) == 0:
        assert r.pr_auc is None
    if not y:
        assert body["realized"]["count"] == 0
        assert body["realized"]["brier"] is None
        assert body["estimated"]["expected_default_rate"] is None
        assert [b["count"] for b in body["realized"]["reliability"]] == [0] * 10


def test_only_defaulters_average_precision_is_one() -> None:
    r = perf.realized_performance(y=[1, 1], p=[0.5, 0.9])
    assert r.pr_auc == pytest.approx(average_precision_score([1, 1], [0.5, 0.9]))
    assert r.pr_auc == 1.0


def test_threshold_that_declines_nobody() -> None:
    at = perf.realized_performance(y=[0, 1], p=[0.1, 0.2], threshold=0.9).at_threshold
    assert at is not None
    assert (at.precision, at.recall, at.f1) == (None, 0.0, 0.0)


@pytest.mark.parametrize(
    ("y", "p"),
    [([0, 2], [0.1, 0.2]), ([0, 1], [0.1, 1.2]), ([0, 1], [0.1, float("nan")]), ([0], [0.1, 0.2])],
    ids=["label-2", "p-above-1", "p-nan", "lengths"],
)
def test_invalid_input_is_a_caller_bug(y: list[int], p: list[float]) -> None:
    with pytest.raises(ValueError):
        perf.realized_performance(y=y, p=p)


# --- estimated: definitions ----------------------------------------------------------------------
def test_expected_auc_equals_brute_force_pairs_with_ties() -> None:
    p = np.round(np.random.default_rng(5).random(300), 1)  # 11 distinct values: heavy ties
    pos, neg = p[:, None], 1.0 - p[None, :]
    order = (p[:, None] > p[None, :]) + 0.5 * (p[:, None] == p[None, :])
    weight = pos * neg
    np.fill_diagonal(weight, 0.0)  # distinct rows only
    brute = float(np.sum(weight * order) / np.sum(weight))

    assert perf.estimated_performance(p=p).expected_roc_auc == pytest.approx(brute, abs=1e-12)


def test_expected_pr_auc_is_average_precision_with_soft_labels() -> None:
    # each row once as a defaulter with weight p and once as a non-defaulter with weight 1 - p
    p = np.round(np.random.default_rng(6).random(500) ** 3, 2)
    soft = average_precision_score(
        np.r_[np.ones_like(p), np.zeros_like(p)], np.r_[p, p], sample_weight=np.r_[p, 1 - p]
    )
    assert perf.estimated_performance(p=p).expected_pr_auc == pytest.approx(soft, abs=1e-12)


def test_expected_rate_and_brier() -> None:
    e = perf.estimated_performance(p=[0.1, 0.5, 0.9])
    assert e.count == 3
    assert e.expected_default_rate == pytest.approx(0.5)
    assert e.expected_brier == pytest.approx((0.09 + 0.25 + 0.09) / 3)
    assert perf.estimated_performance(p=[0.3]).expected_roc_auc is None  # no pair of rows
    assert perf.estimated_performance(p=[0.0, 0.0]).expected_pr_auc is None


# --- estimated vs the truth revealed afterwards --------------------------------------------------
def _gaps(p: Floats, y: npt.NDArray[np.int64]) -> dict[str, float]:
    r = perf.realized_performance(y=y, p=p)
    e = perf.estimated_performance(p=p)
    pairs = {
        "default_rate": (e.expected_default_rate, r.observed_default_rate),
        "brier": (e.expected_brier, r.brier),
        "roc_auc": (e.expected_roc_auc, r.roc_auc),
        "pr_auc": (e.expected_pr_auc, r.pr_auc),
    }
    return {k: abs(est - real) for k, (est, real) in pairs.items() if est and real}


def test_estimates_match_realized_when_calibration_holds() -> None:
    p, y = _population(20_000, seed=21)
    gaps = _gaps(p, y)
    assert set(gaps) == {"default_rate", "brier", "roc_auc", "pr_auc"}
    assert all(gap < 0.03 for gap in gaps.values()), gaps


def test_covariate_shift_is_followed_and_does_not_alert() -> None:
    before, _ = _population(20_000, seed=31)
    p, y = _population(20_000, seed=32, risk_shift=0.5)  # more high-risk applicants, model right
    # the input drift monitor sees it: PSI of the score over the reference deciles
    edges = list(np.quantile(np.log(before / (1 - before)), np.linspace(0.0, 1.0, 11)))
    score_psi = psi([0.1] * 10, bin_proportions(np.log(p / (1 - p)), edges))
    assert score_psi > Settings.model_fields["drift_psi_threshold"].default

    gaps = _gaps(p, y)
    assert all(gap < 0.03 for gap in gaps.values()), gaps
    r = perf.realized_performance(y=y, p=p)
    e = perf.estimated_performance(p=p)
    assert r.observed_default_rate is not None
    assert r.observed_default_rate > 0.05  # the shift is real: the rate more than doubled
    for metrics in (r, e):
        assert pc.performance_alerts(metrics, min_auc=GATE_MIN_AUC, min_count=2_000) == []


def test_concept_shift_is_invisible_to_estimates_but_visible_once_outcomes_arrive() -> None:
    p, y_before = _population(20_000, seed=41)
    _, y_after = _population(20_000, seed=41, concept_shift=0.8)  # same applicants, riskier
    e = perf.estimated_performance(p=p)
    before = perf.realized_performance(y=y_before, p=p)
    after = perf.realized_performance(y=y_after, p=p)

    # CBPE sees only p, and p did not move: it still reports the old performance
    assert pc.performance_alerts(e, min_auc=GATE_MIN_AUC, min_count=2_000) == []
    assert e.expected_default_rate is not None
    assert after.observed_default_rate is not None
    assert after.observed_default_rate - e.expected_default_rate > 0.015
    # the outcomes show it: defaults ~1.6x what the model expected
    assert after.observed_expected_ratio is not None
    assert after.observed_expected_ratio > 1.5
    assert pc.performance_alerts(before, min_auc=GATE_MIN_AUC, min_count=2_000) == []
    assert pc.performance_alerts(after, min_auc=GATE_MIN_AUC, min_count=2_000) == [
        pc.OBSERVED_EXPECTED_OUT_OF_BAND
    ]


# --- alerts --------------------------------------------------------------------------------------
def test_alerts_fire_on_auc_and_ratio_and_wait_for_min_count() -> None:
    y = np.array([1, 0, 1, 0] * 50)
    p = np.array([0.2, 0.3, 0.6, 0.1] * 50)  # AUC 0.625, observed 0.5 vs expected 0.3
    r = perf.realized_performance(y=y, p=p)
    fired = pc.performance_alerts(r, min_auc=0.9, min_count=200)
    assert fired == [pc.REALIZED_AUC_BELOW_GATE, pc.OBSERVED_EXPECTED_OUT_OF_BAND]
    assert pc.performance_alerts(r, min_auc=0.9, min_count=201) == []
    assert pc.performance_alerts(r, min_auc=0.6, oe_band=(0.5, 2.0), min_count=1) == []

    e = perf.estimated_performance(p=[0.5] * 10)  # every pair ties: expected AUC 0.5
    assert pc.performance_alerts(e, min_auc=0.9, min_count=10) == [pc.ESTIMATED_AUC_BELOW_GATE]


def test_band_edges_do_not_alert() -> None:
    r = perf.realized_performance(y=[1, 0, 0, 0, 0], p=[0.16] * 5)  # 0.2 / 0.16 = 1.25
    assert r.observed_expected_ratio == pytest.approx(1.25)
    assert pc.performance_alerts(r, min_auc=0.0, oe_band=(0.8, 1.25 + 1e-12), min_count=1) == []


# --- cohorts -------------------------------------------------------------------------------------
def test_cohorts_by_version_and_utc_month() -> None:
    p, y = _population(4_000, seed=51, risk_shift=1.0)
    rng = np.random.default_rng(52)
    versions = rng.choice(["9", "10", "challenger"], size=p.size)
    start = np.datetime64("2024-01-20T00:00:00", "ms")
    decided_at = start + rng.integers(0, 45 * 86_400_000, size=p.size).astype("timedelta64[ms]")
    labels = np.where(rng.random(p.size) < 0.25, perf.NO_OUTCOME, y)  # a quarter still pending

    cohorts = pc.cohort_performance(
        versions=versions, decided_at=decided_at, y=labels, p=p, thresholds={"10": 0.3}
    )

    keys = [(c.model_version, c.month) for c in cohorts]
    assert keys == [
        (v, m) for v in ["9", "10", "challenger"] for m in ["2024-01", "2024-02", "2024-03"]
    ]
    assert sum(c.realized.count + c.estimated.count for c in cohorts) == p.size
    months = decided_at.astype("datetime64[M]").astype(str)
    for c in cohorts:
        rows = (versions == c.model_version) & (months == c.month)
        known = rows & (labels != perf.NO_OUTCOME)
        assert c.realized == perf.realized_performance(
            y=y[known], p=p[known], threshold=0.3 if c.model_version == "10" else None
        )
        assert c.estimated == perf.estimated_performance(p=p[rows & ~known])
        assert c.estimated.count > 0


def test_cohort_month_is_utc_and_dict_is_json_ready() -> None:
    decided_at = np.array(["2024-01-31T23:59:59.999", "2024-02-01T00:00:00.000"], "datetime64[ms]")
    cohorts = pc.cohort_performance(
        versions=["3", "3"], decided_at=decided_at, y=[1, perf.NO_OUTCOME], p=[0.4, 0.2]
    )
    body = _json([c.as_dict() for c in cohorts])

    assert [(c["model_version"], c["month"]) for c in body] == [("3", "2024-01"), ("3", "2024-02")]
    assert body[0]["realized"]["count"] == 1
    assert body[0]["realized"]["roc_auc"] is None
    assert body[0]["realized"]["observed_expected_ratio"] == pytest.approx(2.5)
    assert body[0]["estimated"]["count"] == 0
    assert body[1]["estimated"]["expected_default_rate"] == pytest.approx(0.2)
    assert body[1]["realized"]["at_threshold"] is None


def test_cohort_input_checks() -> None:
    from datetime import UTC, datetime

    aware = np.array([datetime(2024, 1, 1, tzinfo=UTC)], dtype=object)
    with pytest.raises(TypeError, match="datetime64"):
        pc.cohort_performance(versions=["1"], decided_at=aware, y=[0], p=[0.1])
    with pytest.raises(ValueError, match="pending"):
        pc.cohort_performance(
            versions=["1"], decided_at=np.array(["2024-01-01"], "datetime64[D]"), y=[2], p=[0.1]
        )
    empty = np.array([], "datetime64[ms]")
    assert pc.cohort_performance(versions=[], decided_at=empty, y=[], p=[]) == []
