"""Is the model still right? Realized performance once outcomes arrive, estimated before they do.

Pure and protocol-neutral (numpy only): the API, the Prometheus exporter and the report call these
functions on arrays they read from the decision store; nothing here knows where rows come from.

One kernel, two entry points. Every ranking metric is computed from the same grouped sums over
the distinct scores (`_ScoreGroups`), weighted by a per-row probability of default `w`:
- realized metrics use the observed outcome, `w = y` (0 or 1), and equal scikit-learn's
  `roc_auc_score`, `average_precision_score` and `brier_score_loss` (tested to 1e-9, with ties);
- estimated metrics use the model's own calibrated probability, `w = p`: each row counts as a
  defaulter with weight p and a non-defaulter with weight 1 - p. This is confidence-based
  performance estimation (NannyML's CBPE); why it is written here rather than imported is in
  DESIGN.md ("Performance estimation").
CBPE assumes the calibration still holds. It follows a covariate shift (new kinds of applicants
that the model scores correctly) but cannot see a concept shift (the same applicants now default
more often than p says): only realized metrics show that, once outcomes arrive. The two sides are
therefore reported next to each other, per model version and monthly cohort.

Metrics that are undefined for the rows given (ROC-AUC with no defaulters, a rate over no rows)
are None, never NaN, and never raise; invalid input (labels not 0/1, probabilities outside [0, 1],
arrays of different lengths) raises ValueError, because it is a caller's bug.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

NO_OUTCOME: Final = -1
"""Cohort label of a decision whose outcome is not known yet: it feeds the estimated side."""
RELIABILITY_BINS: Final = 10

FloatArray = npt.NDArray[np.float64]


# --- results -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReliabilityBin:
    """One equal-width bin [lower, upper) of predicted probability (the last bin includes 1)."""

    lower: float
    upper: float
    count: int
    mean_predicted: float | None
    observed_rate: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "lower": self.lower,
            "upper": self.upper,
            "count": self.count,
            "mean_predicted": self.mean_predicted,
            "observed_rate": self.observed_rate,
        }


@dataclass(frozen=True)
class ThresholdMetrics:
    """Decisions at the card's threshold (`p >= threshold` declines, as the API decides)."""

    threshold: float
    precision: float | None
    recall: float | None
    f1: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
        }


@dataclass(frozen=True)
class RealizedPerformance:
    """Metrics of decisions whose outcome is known."""

    count: int
    defaults: int
    observed_default_rate: float | None
    mean_predicted: float | None
    calibration_in_the_large: float | None
    """Observed rate - mean predicted: > 0 means the model underestimates risk."""
    observed_expected_ratio: float | None
    """Observed / expected default rate (None when the model expected no defaults)."""
    roc_auc: float | None
    pr_auc: float | None
    """Average precision, as scikit-learn's `average_precision_score` (not the trapezoid)."""
    brier: float | None
    ks: float | None
    """Largest distance between the score CDFs of defaulters and non-defaulters."""
    reliability: tuple[ReliabilityBin, ...]
    at_threshold: ThresholdMetrics | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "defaults": self.defaults,
            "observed_default_rate": self.observed_default_rate,
            "mean_predicted": self.mean_predicted,
            "calibration_in_the_large": self.calibration_in_the_large,
            "observed_expected_ratio": self.observed_expected_ratio,
            "roc_auc": self.roc_auc,
            "pr_auc": self.pr_auc,
            "brier": self.brier,
            "ks": self.ks,
            "reliability": [b.as_dict() for b in self.reliability],
            "at_threshold": None if self.at_threshold is None else self.at_threshold.as_dict(),
        }


@dataclass(frozen=True)
class EstimatedPerformance:
    """What the model expects of its own decisions, from calibrated probabilities alone (CBPE).

    Each figure is the realized metric with the outcome replaced by its probability: a ratio of
    expectations, consistent as the cohort grows, and right only while the calibration holds.
    """

    count: int
    expected_default_rate: float | None
    expected_brier: float | None
    expected_roc_auc: float | None
    expected_pr_auc: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "expected_default_rate": self.expected_default_rate,
            "expected_brier": self.expected_brier,
            "expected_roc_auc": self.expected_roc_auc,
            "expected_pr_auc": self.expected_pr_auc,
        }


# --- the kernel ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _ScoreGroups:
    """Sums per distinct score, highest score first: rows, default weight, non-default weight, and
    the weight a row pairs with itself (w(1 - w): 0 for observed labels)."""

    rows: FloatArray
    pos: FloatArray
    neg: FloatArray
    self_pairs: FloatArray

    @classmethod
    def of(cls, p: FloatArray, w: FloatArray) -> _ScoreGroups:
        order = np.argsort(-p, kind="stable")
        ps, ws = p[order], w[order]
        starts = np.flatnonzero(np.r_[True, ps[1:] != ps[:-1]])
        return cls(
            rows=np.diff(np.r_[starts, ps.size]).astype(np.float64),
            pos=np.add.reduceat(ws, starts),
            neg=np.add.reduceat(1.0 - ws, starts),
            self_pairs=np.add.reduceat(ws * (1.0 - ws), starts),
        )

    def roc_auc(self) -> float | None:
        """P(a defaulter scores above a non-defaulter), ties half, over pairs of distinct rows.

        Sorting makes it O(n log n): a group's defaulters outrank every non-defaulter in the
        groups below it. With 0/1 weights this is the Mann-Whitney statistic, i.e. ROC-AUC.
        """
        total_neg = float(self.neg.sum())
        pairs = float(self.pos.sum()) * total_neg - float(self.self_pairs.sum())
        if pairs <= 0:
            return None
        below = total_neg - np.cumsum(self.neg)
        ties = self.pos * self.neg - self.self_pairs
        return float((np.sum(self.pos * below) + 0.5 * np.sum(ties)) / pairs)

    def average_precision(self) -> float | None:
        """sum over thresholds of (recall step) x precision, one threshold per distinct score."""
        tps = np.cumsum(self.pos)
        if tps[-1] <= 0:
            return None
        recall = tps / tps[-1]
        precision = tps / np.cumsum(self.rows)
        return float(np.sum(np.diff(recall, prepend=0.0) * precision))

    def ks(self) -> float | None:
        """max |TPR - FPR| over thresholds (= the two-sample KS statistic of the score)."""
        tps, fps = np.cumsum(self.pos), np.cumsum(self.neg)
        if tps[-1] <= 0 or fps[-1] <= 0:
            return None
        return float(np.max(np.abs(tps / tps[-1] - fps / fps[-1])))


def _brier(p: FloatArray, w: FloatArray) -> float:
    """E[(Y - p)^2] with Y ~ Bernoulli(w): (y - p)^2 for an observed y, p(1 - p) for w = p."""
    return float(np.mean(w * (1.0 - p) ** 2 + (1.0 - w) * p**2))


# --- realized ------------------------------------------------------------------------------------
def probabilities(p: npt.ArrayLike) -> FloatArray:
    arr = np.asarray(p, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"probabilities must be one-dimensional, got shape {arr.shape}")
    if not np.all((arr >= 0.0) & (arr <= 1.0)):  # also refuses NaN
        raise ValueError("probabilities must be in [0, 1]")
    return arr


def _reliability(y: FloatArray, p: FloatArray) -> tuple[ReliabilityBin, ...]:
    # the binning of training's expected_calibration_error: floor(10 p), 1.0 in the last bin
    idx = np.minimum((p * RELIABILITY_BINS).astype(np.int64), RELIABILITY_BINS - 1)
    counts = np.bincount(idx, minlength=RELIABILITY_BINS)
    sum_p = np.bincount(idx, weights=p, minlength=RELIABILITY_BINS)
    sum_y = np.bincount(idx, weights=y, minlength=RELIABILITY_BINS)
    return tuple(
        ReliabilityBin(
            lower=b / RELIABILITY_BINS,
            upper=(b + 1) / RELIABILITY_BINS,
            count=int(counts[b]),
            mean_predicted=float(sum_p[b] / counts[b]) if counts[b] else None,
            observed_rate=float(sum_y[b] / counts[b]) if counts[b] else None,
        )
        for b in range(RELIABILITY_BINS)
    )


def _at_threshold(y: FloatArray, p: FloatArray, threshold: float) -> ThresholdMetrics:
    declined = p >= threshold
    tp = float(np.sum(y[declined]))
    fp = float(np.count_nonzero(declined)) - tp
    fn = float(np.sum(y)) - tp
    return ThresholdMetrics(
        threshold=float(threshold),
        precision=tp / (tp + fp) if tp + fp else None,
        recall=tp / (tp + fn) if tp + fn else None,
        f1=2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None,
    )


def realized_performance(
    *, y: npt.ArrayLike, p: npt.ArrayLike, threshold: float | None = None
) -> RealizedPerformance:
    """Metrics of decisions with a known outcome `y` (0/1) and calibrated probability `p`.

    Keyword-only so the two arrays cannot be swapped silently. `threshold` adds
    precision/recall/F1 of the decisions the model took at it.
    """
    probs = probabilities(p)
    labels = np.asarray(y)
    if labels.shape != probs.shape:
        raise ValueError(f"y and p differ in shape: {labels.shape} vs {probs.shape}")
    if not np.all((labels == 0) | (labels == 1)):
        raise ValueError("outcomes must be 0 or 1")
    obs = labels.astype(np.float64)
    n = int(obs.size)
    reliability = _reliability(obs, probs)
    at = None if threshold is None else _at_threshold(obs, probs, threshold)
    if n == 0:
        return RealizedPerformance(
            count=0,
            defaults=0,
            observed_default_rate=None,
            mean_predicted=None,
            calibration_in_the_large=None,
            observed_expected_ratio=None,
            roc_auc=None,
            pr_auc=None,
            brier=None,
            ks=None,
            reliability=reliability,
            at_threshold=at,
        )
    rate, mean_p = float(np.mean(obs)), float(np.mean(probs))
    groups = _ScoreGroups.of(probs, obs)
    return RealizedPerformance(
        count=n,
        defaults=int(np.sum(labels)),
        observed_default_rate=rate,
        mean_predicted=mean_p,
        calibration_in_the_large=rate - mean_p,
        observed_expected_ratio=rate / mean_p if mean_p > 0 else None,
        roc_auc=groups.roc_auc(),
        pr_auc=groups.average_precision(),
        brier=_brier(probs, obs),
        ks=groups.ks(),
        reliability=reliability,
        at_threshold=at,
    )


# --- estimated -----------------------------------------------------------------------------------
def estimated_performance(*, p: npt.ArrayLike) -> EstimatedPerformance:
    """Expected default rate, Brier, ROC-AUC and PR-AUC if outcomes follow the calibrated `p`.

    Expected ROC-AUC weights every pair of distinct rows (i, j) by p_i (1 - p_j): the chance that
    i defaults and j does not; expected PR-AUC is average precision with expected true positives
    (NannyML's estimate, with tied scores grouped as scikit-learn groups them).
    """
    probs = probabilities(p)
    if probs.size == 0:
        return EstimatedPerformance(0, None, None, None, None)
    groups = _ScoreGroups.of(probs, probs)
    return EstimatedPerformance(
        count=int(probs.size),
        expected_default_rate=float(np.mean(probs)),
        expected_brier=_brier(probs, probs),
        expected_roc_auc=groups.roc_auc(),
        expected_pr_auc=groups.average_precision(),
    )
