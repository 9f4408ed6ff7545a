"""A batch chunk's decisions column by column: the batch worker's fast path into the store.

`DecisionRecord` is one Python object per decision; building a million of them costs several
seconds of the worker's CPU before a byte is written, which is most of the 10 s a 1M-row job
may take end to end (>= 100,000 rows/s). A chunk already holds its inputs and scores as numpy
arrays and shares everything else (job, caller, model, time), so `DecisionBatch` keeps them as
they are. `DecisionStore.record_batch` turns them into PostgreSQL `COPY` text with Arrow, or
SQLite rows with `zip`, without a per-row object; `records()` gives the same decisions as
records (what `get` returns for each, field for field).

Row `i` of the batch is row `rows[i]` of the job, and its id is
`batch_decision_id(job_id, rows[i], created_at)`; its `decided_at` is the job's `created_at`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

import numpy as np
import numpy.typing as npt

from loan_default.services.decisions.ids import batch_decision_id, batch_decision_ids
from loan_default.services.decisions.records import (
    MAX_REFERENCE_LENGTH,
    DecisionRecord,
    check_text,
)

FloatArray = npt.NDArray[np.float64]
_ARRAYS: Final = (
    "rows",
    "employed",
    "bank_balance",
    "annual_salary",
    "saving_rate",
    "probability",
    "prediction",
)


@dataclass(frozen=True, slots=True)
class DecisionBatch:
    """Decisions of one chunk of batch job `job_id`; every sequence has one entry per row."""

    job_id: str
    created_at: datetime
    """The job's submission time: every row's `decided_at` (aware UTC, whole milliseconds)."""
    key_id: str
    model_name: str
    model_version: str
    model_alias: str | None
    threshold: float
    rows: npt.NDArray[np.int64]
    """Row numbers within the job (0-based); they make the decision ids."""
    employed: FloatArray
    bank_balance: FloatArray
    annual_salary: FloatArray
    saving_rate: FloatArray
    probability: FloatArray
    prediction: npt.NDArray[np.integer]
    risk_band: Sequence[str]
    reason_codes: Sequence[tuple[str, ...]]
    references: Sequence[str | None] | None = None
    request_id: str | None = None
    challenger_version: str | None = None
    challenger_probability: FloatArray | None = None
    """NaN for a row the challenger did not score (stored NULL, with a NULL version)."""

    def __post_init__(self) -> None:
        n = len(self.rows)
        lengths = {len(getattr(self, name)) for name in _ARRAYS}
        lengths |= {len(self.risk_band), len(self.reason_codes)}
        for extra in (self.references, self.challenger_probability):
            if extra is not None:
                lengths.add(len(extra))
        if lengths != {n}:
            raise ValueError("every column of a DecisionBatch needs one entry per row")
        offset = self.created_at.utcoffset()
        if offset is None or offset != timedelta(0) or self.created_at.microsecond % 1000:
            raise ValueError("created_at must be an aware UTC datetime in whole milliseconds")
        if n and (self.rows.min() < 0 or self.rows.max() >= 1 << 31):
            raise ValueError("rows must be within [0, 2**31)")
        if n and not np.isin(self.prediction, (0, 1)).all():
            raise ValueError("prediction must be 0 or 1")
        for name in ("request_id", "model_alias", "challenger_version"):
            if getattr(self, name) == "":
                object.__setattr__(self, name, None)
        if self.request_id is not None:
            check_text("request_id", self.request_id)
        for name in ("job_id", "key_id", "model_name", "model_version"):
            if not getattr(self, name):
                raise ValueError(f"{name} must not be empty")
        if not all(self.risk_band):
            raise ValueError("risk_band must not be empty")
        for ref in self.references or ():
            if ref is not None:
                if not 0 < len(ref) <= MAX_REFERENCE_LENGTH:
                    raise ValueError(f"reference must be 1..{MAX_REFERENCE_LENGTH} characters")
                check_text("reference", ref)

    def __len__(self) -> int:
        return len(self.rows)

    def decision_ids(self) -> list[str]:
        rows = self.rows
        if len(rows) and rows[-1] - rows[0] == len(rows) - 1 and (np.diff(rows) == 1).all():
            return batch_decision_ids(self.job_id, self.created_at, int(rows[0]), int(rows[-1]) + 1)
        return [batch_decision_id(self.job_id, int(r), self.created_at) for r in rows]

    def records(self) -> list[DecisionRecord]:
        """The same decisions as records (tests, and stores without a columnar path)."""
        refs = self.references or [None] * len(self)
        chall = self.challenger_probability
        unsampled = [True] * len(self) if chall is None else np.isnan(chall).tolist()
        return [
            DecisionRecord(
                decision_id=did,
                decided_at=self.created_at,
                request_id=self.request_id,
                key_id=self.key_id,
                reference=refs[i],
                source="batch",
                job_id=self.job_id,
                row=int(self.rows[i]),
                employed=float(self.employed[i]),
                bank_balance=float(self.bank_balance[i]),
                annual_salary=float(self.annual_salary[i]),
                saving_rate=float(self.saving_rate[i]),
                model_name=self.model_name,
                model_version=self.model_version,
                model_alias=self.model_alias,
                probability=float(self.probability[i]),
                threshold=self.threshold,
                prediction=int(self.prediction[i]),
                risk_band=self.risk_band[i],
                reason_codes=tuple(self.reason_codes[i]),
                challenger_version=None if unsampled[i] else self.challenger_version,
                challenger_probability=None if unsampled[i] else float(chall[i]),  # type: ignore[index]
            )
            for i, did in enumerate(self.decision_ids())
        ]
