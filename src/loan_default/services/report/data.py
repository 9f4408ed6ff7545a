"""What the report shows, gathered from the decision store: numbers only, no HTML.

Everything is per UTC month of decision time over [start, end):
- PSI of each feature: the recorded inputs (`DecisionStore.iter_feature_columns`, streamed a page
  at a time into per-month bin counts) against the model card's training histograms, with
  `drift.bin_proportions` / `drift.psi`, the same functions the live drift monitor uses;
- realized vs expected default rate: `performance_monitor.build_report`'s cohorts, summed over
  model versions (count-weighted, so the aggregate is exact);
- reliability: each version's 10-bin table from `realized_performance`;
- ROC of production and challenger on the same observed decisions (those carrying an outcome
  *and* a challenger probability); production alone, said so, when there are none;
- score distribution: the last month's probabilities vs the training rows' scores the model card
  records (`ModelCard.score_distribution`); a card written before it recorded them is compared
  with the window's first month instead, and the chart's caption says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

import numpy as np
import numpy.typing as npt

from loan_default.core.config import Settings
from loan_default.features import FEATURE_NAMES
from loan_default.model.card import FeatureDistribution, ModelCard
from loan_default.services import drift
from loan_default.services.decisions.outcome_reads import FeatureColumns, JoinedOutcomes
from loan_default.services.performance import NO_OUTCOME, realized_performance
from loan_default.services.performance_monitor import PerformanceReport, build_report

#: Score histogram bins: equal width over [0, 1].
SCORE_BINS: Final = 20
#: Points kept of a ROC curve (enough to draw; a curve of 10^6 distinct scores stays small).
ROC_POINTS: Final = 200

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Curve:
    name: str
    x: tuple[float, ...]
    y: tuple[float | None, ...]


@dataclass(frozen=True)
class ReportData:
    start: datetime
    end: datetime
    decisions: int
    outcomes: int
    months: tuple[str, ...]
    psi: tuple[Curve, ...]
    """One curve per feature, y aligned with `months` (None: no decision that month)."""
    psi_threshold: float
    psi_note: str | None
    reference_version: str | None
    """The model version whose card gave the training histograms."""
    observed_rate: tuple[float | None, ...]
    """Per month: observed default rate of the decisions with an outcome."""
    predicted_rate: tuple[float | None, ...]
    """Per month: mean predicted probability of those same decisions."""
    expected_rate: tuple[float | None, ...]
    """Per month: estimated (CBPE) default rate of the decisions still waiting for one."""
    reliability: tuple[Curve, ...]
    roc: tuple[Curve, ...]
    roc_note: str | None
    score_edges: tuple[float, ...]
    scores: tuple[Curve, ...]
    """Proportions per score bin: the reference first, then the current month."""
    score_note: str
    performance: PerformanceReport | None = field(default=None, repr=False)


def _month_counts(
    pages: Iterable[FeatureColumns], reference: Mapping[str, FeatureDistribution]
) -> dict[str, tuple[int, dict[str, npt.NDArray[np.int64]]]]:
    """Per month: decisions, and per feature the counts in the training bins (one page held)."""
    out: dict[str, tuple[int, dict[str, npt.NDArray[np.int64]]]] = {}
    for page in pages:
        months = page.decided_at.astype("datetime64[M]")
        for month in np.unique(months):
            rows = page.values[months == month]
            n, counts = out.get(str(month), (0, {}))
            for j, name in enumerate(FEATURE_NAMES):
                ref = reference.get(name)
                if ref is None:
                    continue
                k = len(ref.edges) - 1
                share = drift.bin_proportions(rows[:, j], ref.edges)
                got = np.rint(share * len(rows)).astype(np.int64)
                counts[name] = counts.get(name, np.zeros(k, np.int64)) + got
            out[str(month)] = (n + len(rows), counts)
    return out


def _roc(y: FloatArray, p: FloatArray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(FPR, TPR) at every distinct score, thinned to at most ROC_POINTS points."""
    order = np.argsort(-p, kind="stable")
    ys, ps = y[order], p[order]
    last = np.r_[np.flatnonzero(np.diff(ps)), ps.size - 1]  # the last row of each score
    tps = np.cumsum(ys)[last]
    fps = (last + 1) - tps
    fpr, tpr = np.r_[0.0, fps / fps[-1]], np.r_[0.0, tps / tps[-1]]
    if fpr.size > ROC_POINTS:
        keep = np.unique(np.linspace(0, fpr.size - 1, ROC_POINTS).round().astype(np.int64))
        fpr, tpr = fpr[keep], tpr[keep]
    return tuple(fpr.tolist()), tuple(tpr.tolist())


def _roc_curves(joined: JoinedOutcomes) -> tuple[tuple[Curve, ...], str | None]:
    known = joined.defaulted != NO_OUTCOME
    both = known & ~np.isnan(joined.challenger_probability)
    y_both = joined.defaulted[both].astype(np.float64)
    curves: list[Curve] = []
    if both.any() and 0 < y_both.sum() < y_both.size:
        for name, p, versions in (
            ("production", joined.probability[both], joined.model_version[both]),
            ("challenger", joined.challenger_probability[both], joined.challenger_version[both]),
        ):
            auc = realized_performance(y=y_both, p=p).roc_auc
            label = f"{name} v{', v'.join(sorted(set(versions.tolist())))} (AUC {auc:.3f})"
            curves.append(Curve(label, *_roc(y_both, p)))
        return tuple(curves), f"{int(both.sum()):,} decisions scored by both, with an outcome"
    y = joined.defaulted[known].astype(np.float64)
    if y.size == 0 or not 0 < y.sum() < y.size:
        return (), "no outcomes of both classes in this window: no ROC curve"
    p = joined.probability[known]
    auc = realized_performance(y=y, p=p).roc_auc
    curves.append(Curve(f"production (AUC {auc:.3f})", *_roc(y, p)))
    return tuple(curves), "no challenger data: production alone"


def _scores(
    joined: JoinedOutcomes, card: ModelCard | None, version: str | None
) -> tuple[tuple[float, ...], tuple[Curve, ...], str]:
    """The latest month's scores against the training scores the card records, or, for a card
    written before it recorded them, against the window's first month (said so in the note)."""
    trained = card.score_distribution if card is not None else None
    edges = np.asarray(trained.edges if trained else np.linspace(0.0, 1.0, SCORE_BINS + 1))
    if len(joined) == 0:
        return tuple(edges.tolist()), (), "no decisions in this window"
    months = joined.decided_at.astype("datetime64[M]")
    first, last = months.min(), months.max()

    def share(rows: npt.NDArray[np.bool_]) -> FloatArray:
        return drift.bin_proportions(joined.probability[rows], edges.tolist())

    now = share(months == last)
    latest = Curve(f"{last} (latest month)", tuple(edges[:-1]), tuple(now.tolist()))
    if trained is not None:
        ref = np.asarray(trained.proportions, dtype=np.float64)
        label = f"training{f' (v{version})' if version else ''}"
        curves = (Curve(label, tuple(edges[:-1]), tuple(ref.tolist())), latest)
        return tuple(edges.tolist()), curves, f"PSI against training {drift.psi(ref, now):.3f}"
    ref = share(months == first)
    curves = (
        Curve(f"{first} (first month of the window)", tuple(edges[:-1]), tuple(ref.tolist())),
        latest,
    )
    note = (
        f"the model card records no training distribution of scores, so the reference is the "
        f"first month of the window; PSI {drift.psi(ref, now):.3f}"
    )
    return tuple(edges.tolist()), curves, note


def _rate(num: float, den: float) -> float | None:
    return num / den if den else None


def gather(
    *,
    joined: JoinedOutcomes,
    features: Iterable[FeatureColumns],
    card: ModelCard | None,
    reference_version: str | None,
    settings: Settings,
    start: datetime,
    end: datetime,
) -> ReportData:
    """The report's numbers from the decisions of [start, end) joined to their outcomes and
    their recorded inputs (pages of either may come straight from the store)."""
    performance = build_report(joined, start=start, end=end, settings=settings)
    reference = dict(card.training_distribution) if card is not None else {}
    by_month = _month_counts(features, reference)
    months = sorted({*by_month, *(c.month for c in performance.cohorts)})
    psi_curves = []
    for name in FEATURE_NAMES:
        ref = reference.get(name)
        if ref is None:
            continue
        ys: list[float | None] = []
        for month in months:
            n, counts = by_month.get(month, (0, {}))
            ys.append(drift.psi(ref.proportions, counts[name] / n) if n else None)
        psi_curves.append(Curve(name, tuple(range(len(months))), tuple(ys)))
    psi_note = None if card is not None else "no model card available: PSI not computed"

    sums: dict[str, list[float]] = {m: [0.0] * 5 for m in months}
    for c in performance.cohorts:
        s, r, e = sums[c.month], c.realized, c.estimated
        s[0] += r.count
        s[1] += r.defaults
        s[2] += (r.mean_predicted or 0.0) * r.count
        s[3] += e.count
        s[4] += (e.expected_default_rate or 0.0) * e.count
    reliability = tuple(
        Curve(
            f"v{v.model_version}",
            tuple(b.mean_predicted or 0.0 for b in v.realized.reliability if b.count),
            tuple(b.observed_rate for b in v.realized.reliability if b.count),
        )
        for v in performance.versions
        if v.realized.count
    )
    roc, roc_note = _roc_curves(joined)
    edges, scores, score_note = _scores(joined, card, reference_version)
    known = int(np.count_nonzero(joined.defaulted != NO_OUTCOME))
    return ReportData(
        start=start,
        end=end,
        decisions=len(joined),
        outcomes=known,
        months=tuple(months),
        psi=tuple(psi_curves),
        psi_threshold=settings.drift_psi_threshold,
        psi_note=psi_note,
        reference_version=reference_version if card is not None else None,
        observed_rate=tuple(_rate(sums[m][1], sums[m][0]) for m in months),
        predicted_rate=tuple(_rate(sums[m][2], sums[m][0]) for m in months),
        expected_rate=tuple(_rate(sums[m][4], sums[m][3]) for m in months),
        reliability=reliability,
        roc=roc,
        roc_note=roc_note,
        score_edges=edges,
        scores=scores,
        score_note=score_note,
        performance=performance,
    )
