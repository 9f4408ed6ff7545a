"""Production vs challenger on the same decisions: agreement and score correlation.

Computed from the decision record's shadow-scored rows (`DecisionStore.challenger_rows`): the
production decision is the one answered; the challenger's is its probability at its own model
card's threshold (the record keeps only the challenger's probability, so the threshold is looked
up per version by the caller). Once outcomes are recorded, `realized_both` gives the realized
metrics of both models on the same decided-and-observed applications (`report`'s `realized`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from loan_default.core.versions import version_key
from loan_default.services.decisions.outcome_reads import JoinedOutcomes
from loan_default.services.decisions.records import iso_utc
from loan_default.services.performance import realized_performance

#: A challenger version's decision threshold (its model card's), None when it cannot be found.
ThresholdOf = Callable[[str], float | None]


def pearson(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> float | None:
    """Pearson's r; None with fewer than two rows or a constant column (undefined)."""
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def spearman(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> float | None:
    """Spearman's rho: Pearson's r of the ranks, ties at their average rank."""
    if len(x) < 2:
        return None
    return pearson(average_ranks(x), average_ranks(y))


def average_ranks(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """1-based ranks, tied values sharing their average rank (scipy's `rankdata` default; ten
    lines of numpy rather than a direct dependency on scipy)."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    average = ends - (counts - 1) / 2.0
    return np.asarray(average[inverse], dtype=np.float64)


def report(
    rows: Sequence[tuple[Any, ...]],
    *,
    start: datetime,
    end: datetime,
    threshold_of: ThresholdOf,
    realized: Callable[[], dict[str, Any] | None] | None = None,
) -> dict[str, Any]:
    """The comparison over `rows` (`queries.CHALLENGER_COLUMNS` tuples).

    `agreement_rate` is over the rows whose challenger threshold is known (`agreement_count`).
    `realized` is the hook for outcome-based metrics of both models on these decisions (None
    until outcomes are recorded)."""
    n = len(rows)
    production = np.fromiter((r[1] for r in rows), dtype=np.float64, count=n)
    predicted = np.fromiter((r[2] for r in rows), dtype=np.int64, count=n)
    challenger = np.fromiter((r[4] for r in rows), dtype=np.float64, count=n)
    versions = [str(r[3]) for r in rows]
    thresholds = {v: threshold_of(v) for v in sorted(set(versions))}
    cut = np.array([np.nan if thresholds[v] is None else thresholds[v] for v in versions])
    known = ~np.isnan(cut)
    agree = (challenger[known] >= cut[known]).astype(np.int64) == predicted[known]
    return {
        "from": iso_utc(start),
        "to": iso_utc(end),
        "count": n,
        "production_versions": sorted({str(r[0]) for r in rows}, key=version_key),
        "challenger_versions": sorted(thresholds, key=version_key),
        "challenger_thresholds": thresholds,
        "agreement_count": int(known.sum()),
        "agreement_rate": float(agree.mean()) if agree.size else None,
        "pearson": pearson(production, challenger),
        "spearman": spearman(production, challenger),
        "realized": realized() if realized is not None else None,
    }


def realized_both(joined: JoinedOutcomes) -> dict[str, Any] | None:
    """Realized metrics of production and of the challenger on the decisions that carry both
    the challenger's probability and an outcome (None while there are none)."""
    rows = (joined.defaulted >= 0) & ~np.isnan(joined.challenger_probability)
    if not rows.any():
        return None
    y = joined.defaulted[rows]
    return {
        "count": int(rows.sum()),
        "challenger_versions": sorted(
            set(joined.challenger_version[rows].tolist()), key=version_key
        ),
        "production": realized_performance(y=y, p=joined.probability[rows]).as_dict(),
        "challenger": realized_performance(y=y, p=joined.challenger_probability[rows]).as_dict(),
    }
