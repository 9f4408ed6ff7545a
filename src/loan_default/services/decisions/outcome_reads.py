"""Outcomes read back: decisions of a time range joined to their outcomes, and their inputs.

`iter_joined` (and `iter_features` for the recorded inputs) walk decisions
of a time range in id order with keyset pages (no transaction held between pages), each joined
to its outcome, as numpy columns: no pandas and no per-row objects beyond the driver's tuples.
The monitoring (realized performance, the challenger's comparison, the report) reads these.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa  # type: ignore[import-untyped]
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from loan_default.features import FEATURE_NAMES
from loan_default.services.decisions import queries
from loan_default.services.decisions.outcomes import id_millis
from loan_default.services.decisions.schema import decisions, outcomes


@dataclass(frozen=True, slots=True)
class JoinedOutcomes:
    """Decisions with their outcome, one array per column, in decision-id (time) order."""

    model_version: npt.NDArray[np.str_]
    decided_at: npt.NDArray[np.datetime64]
    """`datetime64[ms]`, UTC (the decision id's own millisecond)."""
    probability: npt.NDArray[np.float64]
    threshold: npt.NDArray[np.float64]
    prediction: npt.NDArray[np.int8]
    defaulted: npt.NDArray[np.int8]
    """1 defaulted, 0 did not, -1 no outcome recorded yet."""
    challenger_probability: npt.NDArray[np.float64]
    """NaN where no challenger scored the decision."""
    challenger_version: npt.NDArray[np.str_]
    """The version that shadow-scored the decision; "" where none did."""

    def __len__(self) -> int:
        return len(self.probability)

    @classmethod
    def concat(cls, pages: Sequence[JoinedOutcomes]) -> JoinedOutcomes:
        if not pages:
            return _page([])
        names = cls.__dataclass_fields__
        return cls(**{k: np.concatenate([getattr(p, k) for p in pages]) for k in names})


_JOINED_COLUMNS: Final = (
    decisions.c.decision_id,
    decisions.c.model_version,
    decisions.c.probability,
    decisions.c.threshold,
    decisions.c.prediction,
    decisions.c.challenger_probability,
    outcomes.c.defaulted,
    decisions.c.challenger_version,
)


def _page(rows: Sequence[Any]) -> JoinedOutcomes:
    cols = list(zip(*rows, strict=True)) if rows else [()] * len(_JOINED_COLUMNS)
    ids = pa.array(cols[0], pa.string())
    return JoinedOutcomes(
        model_version=np.array(cols[1], dtype=np.str_),
        decided_at=id_millis(ids).astype("datetime64[ms]"),
        probability=np.array(cols[2], dtype=np.float64),
        threshold=np.array(cols[3], dtype=np.float64),
        prediction=np.array(cols[4], dtype=np.int8),
        defaulted=np.array([-1 if v is None else int(v) for v in cols[6]], dtype=np.int8),
        challenger_probability=np.array(
            [np.nan if v is None else v for v in cols[5]], dtype=np.float64
        ),
        challenger_version=np.array(["" if v is None else v for v in cols[7]], dtype=np.str_),
    )


def iter_joined(
    engine: Engine,
    start: datetime,
    end: datetime,
    *,
    model_version: str | None = None,
    page_size: int = 50_000,
) -> Iterator[JoinedOutcomes]:
    """Pages of decisions with start <= decided_at < end (and of `model_version`), each joined
    to its outcome; one short query a page, keyed on the last id (as `queries.select_page`)."""
    t = decisions.c
    base = (
        sa.select(*_JOINED_COLUMNS)
        .select_from(decisions.outerjoin(outcomes, outcomes.c.decision_id == t.decision_id))
        .where(*queries.in_window(start, end))
        .order_by(t.decision_id)
        .limit(page_size)
    )
    if model_version is not None:
        base = base.where(t.model_version == model_version)
    for rows in _keyset(engine, base, page_size):
        yield _page(rows)


def _keyset(
    engine: Engine, base: sa.Select[Any], page_size: int
) -> Iterator[Sequence[sa.Row[Any]]]:
    """Pages of `base` (ordered by decision id, first column the id, limited to `page_size`),
    each after the last id of the one before: one short query a page, no transaction held."""
    after: str | None = None
    while True:
        stmt = base if after is None else base.where(decisions.c.decision_id > after)
        with engine.connect() as conn:
            rows = conn.execute(stmt).all()
        if rows:
            yield rows
        if len(rows) < page_size:
            return
        after = str(rows[-1][0])


@dataclass(frozen=True, slots=True)
class FeatureColumns:
    """The recorded model inputs of a page of decisions, in decision-id (time) order."""

    decided_at: npt.NDArray[np.datetime64]
    """`datetime64[ms]`, UTC (the decision id's own millisecond)."""
    values: npt.NDArray[np.float64]
    """Shape (n, len(FEATURE_NAMES)), columns in `features.FEATURE_NAMES` order."""

    def __len__(self) -> int:
        return len(self.decided_at)


def iter_features(
    engine: Engine, start: datetime, end: datetime, *, page_size: int = 50_000
) -> Iterator[FeatureColumns]:
    """Pages of the feature columns of decisions with start <= decided_at < end (the PSI of
    recorded inputs against the training histograms reads these; five columns, not records)."""
    t = decisions.c
    base = (
        sa.select(t.decision_id, *(t[name] for name in FEATURE_NAMES))
        .where(*queries.in_window(start, end))
        .order_by(t.decision_id)
        .limit(page_size)
    )
    for rows in _keyset(engine, base, page_size):
        ids = pa.array([row[0] for row in rows], pa.string())
        yield FeatureColumns(
            decided_at=id_millis(ids).astype("datetime64[ms]"),
            values=np.array([row[1:] for row in rows], dtype=np.float64),
        )
