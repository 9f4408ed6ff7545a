"""A batch job's record and state, the errors of the batch service, and job ids.

The record is written *before* any task is published, so an id we never issued is a 404 (Celery
alone reports every unknown id PENDING). Status and progress are derived from what the workers
wrote (the `done` map), never from Celery.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, Field

from loan_default.core.errors import LoanDefaultError, ServiceUnavailable
from loan_default.core.versions import version_key
from loan_default.services.decisions.ids import batch_decision_ids, from_unix_s

JobStatus = Literal["PENDING", "PROGRESS", "SUCCESS", "FAILURE"]

#: Each worker process refreshes a key of this lifetime every HEARTBEAT_S: a chunk begun by a
#: process whose key expired is reported as awaiting redelivery in the job status.
HEARTBEAT_S: Final = 2.0
HEARTBEAT_TTL_S: Final = 6
#: A chunk begun less than this long ago cannot be reported lost yet, so its worker's key is not
#: read: the worker beat at most HEARTBEAT_S before beginning it, so the key outlives the begin
#: by HEARTBEAT_TTL_S - HEARTBEAT_S at least; half of that is left for the clocks of the
#: worker's host and the API's to differ. (A job's status is polled every few ms while its
#: chunks are being scored; this saves each such poll a round trip.)
RECENTLY_BEGUN_S: Final = (HEARTBEAT_TTL_S - HEARTBEAT_S) / 2
#: How long a JSON job's rendered result rows (`rows-<i>`, ~260 bytes a row against ~40 for its
#: input and scores) stay in the store. Clients read a job's results as soon as it succeeds;
#: a later read renders its page from the input and scores, as a file job's always does.
RENDERED_ROWS_TTL_S: Final = 900


class PayloadTooLarge(LoanDefaultError):
    status_code = 413
    code = "payload_too_large"


class IdempotencyConflict(LoanDefaultError):
    """The Idempotency-Key was already used with a different body."""

    status_code = 409
    code = "idempotency_conflict"


class StoreUnavailable(ServiceUnavailable):
    """The job store (Redis) cannot be reached."""


class JobRecord(BaseModel):
    job_id: str
    kind: Literal["json", "file"]
    total: int
    chunk_sizes: list[int]
    created_at: float
    expires_at: float
    skipped: int = 0
    row_errors: list[dict[str, Any]] = Field(default_factory=list)
    filename: str | None = None
    owner: str | None = None
    """Key id (digest prefix) of the API key that submitted the job; only it may read the job.
    Records written before owners were recorded have none and are readable by no key."""

    @property
    def n_chunks(self) -> int:
        return len(self.chunk_sizes)

    @property
    def chunk_starts(self) -> npt.NDArray[np.int64]:
        return np.concatenate([[0], np.cumsum(self.chunk_sizes, dtype=np.int64)])


@dataclass(frozen=True, slots=True)
class JobState:
    """A record plus what the workers have written so far."""

    record: JobRecord
    done: dict[int, str]
    failure: str | None
    started: dict[int, str] = field(default_factory=dict)
    """chunk -> "unix time:worker id" of the last worker that began scoring it."""
    prefetched: dict[str, bytes] = field(default_factory=dict)
    """Blobs read in the same round trip as the state (those that exist), by name."""

    def begun(self) -> dict[int, tuple[float, str]]:
        """Chunks begun but not done: chunk -> (unix time begun, worker id)."""
        return {
            i: (float(ts), worker)
            for i, (ts, _, worker) in ((i, m.partition(":")) for i, m in self.started.items())
            if i not in self.done
        }

    @property
    def completed(self) -> int:
        return sum(self.record.chunk_sizes[i] for i in self.done)

    @property
    def status(self) -> JobStatus:
        if self.failure is not None:
            return "FAILURE"
        if len(self.done) >= self.record.n_chunks:
            return "SUCCESS"
        return "PROGRESS" if self.done else "PENDING"

    @property
    def progress(self) -> int:
        """0-100; 100 only once every chunk is stored."""
        if self.status == "SUCCESS":
            return 100
        return min(99, math.floor(100 * self.completed / max(1, self.record.total)))

    @property
    def model_version(self) -> str | None:
        """Version that scored the rows; several (comma-joined) only if the alias moved mid-job."""
        versions = sorted({m.partition(":")[2] for m in self.done.values()}, key=version_key)
        return ",".join(versions) if versions else None


@dataclass(frozen=True, slots=True)
class Submitted:
    job_id: str
    total: int
    replayed: bool = False
    skipped: int = 0
    row_errors: list[dict[str, Any]] = field(default_factory=list)


def new_job_id() -> str:
    return str(uuid.uuid4())


def valid_job_id(job_id: str) -> bool:
    try:
        return str(uuid.UUID(job_id)) == job_id.lower() and len(job_id) == 36
    except ValueError:
        return False


def row_decision_ids(record: JobRecord, start: int, stop: int, *, show: bool) -> list[str | None]:
    """Rows start..stop-1's decision ids (derived from the job and the row, as the worker
    records them), or None for each when decisions are not recorded."""
    if not show:
        return [None] * (stop - start)
    ids: list[str | None] = list(
        batch_decision_ids(record.job_id, from_unix_s(record.created_at), start, stop)
    )
    return ids
