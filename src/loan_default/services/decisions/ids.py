"""Decision ids: time-ordered UUIDs whose first 48 bits are the decision's Unix time in ms.

Why the time is *in* the id: the PostgreSQL table is partitioned by month of `decided_at`, so its
primary key must be `(decision_id, decided_at)`; a duplicate id could only slip past that key
with a different time. Here the time is a function of the id (`decided_at_of`), and
`DecisionRecord` refuses a `decided_at` that disagrees, so the composite key is unique per id and
`ON CONFLICT DO NOTHING` makes every write idempotent. The ids also sort by time as text and as a
PostgreSQL `uuid`, which keeps inserts at the right edge of the indexes.

Two layouts share the RFC 9562 UUIDv7 timestamp field:

* `new_decision_id` — version 7: 48-bit ms, 12 bits of sub-millisecond time (RFC 9562 §6.2
  method 3, so ids made in one process sort in creation order), 62 random bits. Python 3.11 has
  no `uuid.uuid7` (3.14 adds it); these fifteen lines avoid a dependency for one function.
* `batch_decision_id` — version 8 (RFC 9562's "custom" layout, so nobody mistakes it for random):
  the job's creation ms, 42 bits of sha256(job_id), then the row number in the last 32 bits. A
  redelivered chunk derives the same ids (nothing is written twice), and a job's rows sort in row
  order, which is the order an auditor reads an export in.
"""

from __future__ import annotations

import hashlib
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Final

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)
_MAX_ROW: Final = 1 << 31  # the table's `row` is an int4
_VARIANT: Final = 0b10 << 62


def unix_ms(moment: datetime) -> int:
    """Whole milliseconds since the epoch of an aware datetime (exact integer arithmetic)."""
    if moment.tzinfo is None:
        raise ValueError("decision times must be timezone-aware (UTC)")
    return (moment - EPOCH) // _MS


def _format(value: int) -> str:
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_decision_id(now: datetime | None = None) -> str:
    """A fresh UUIDv7 string for a decision made at `now` (the current time when omitted)."""
    if now is None:
        ns = time.time_ns()
        ms, sub = divmod(ns, 1_000_000)
        frac = sub * 4096 // 1_000_000
    else:
        ms = unix_ms(now)
        frac = (now.microsecond % 1000) * 4096 // 1000
    rand = int.from_bytes(os.urandom(8)) & ((1 << 62) - 1)
    return _format((ms << 80) | (7 << 76) | (frac << 64) | _VARIANT | rand)


def _batch_prefix(job_id: str, created_at: datetime) -> int:
    ms = unix_ms(created_at)
    digest = int.from_bytes(hashlib.sha256(job_id.encode()).digest()[:6])  # 48 bits, 42 used
    high, low = digest >> 36, (digest >> 6) & ((1 << 30) - 1)
    return (ms << 80) | (8 << 76) | (high << 64) | _VARIANT | (low << 32)


def batch_id_bytes(job_id: str, created_at: datetime) -> bytes:
    """The 16 bytes of the id of row 0; row r's id is these with r in the last four."""
    return _batch_prefix(job_id, created_at).to_bytes(16, "big")


def batch_decision_id(job_id: str, row: int, created_at: datetime) -> str:
    """The deterministic id of row `row` (0-based) of batch job `job_id` created at `created_at`."""
    if not 0 <= row < _MAX_ROW:
        raise ValueError(f"row must be in [0, 2**31), got {row}")
    return _format(_batch_prefix(job_id, created_at) | row)


def batch_decision_ids(job_id: str, created_at: datetime, start: int, stop: int) -> list[str]:
    """`batch_decision_id` for rows `start..stop-1` at string-concatenation speed (a chunk)."""
    if not 0 <= start <= stop <= _MAX_ROW:
        raise ValueError(f"rows must be within [0, 2**31), got {start}..{stop}")
    head = _format(_batch_prefix(job_id, created_at))[:-8]
    return [f"{head}{row:08x}" for row in range(start, stop)]


def decided_at_of(decision_id: str) -> datetime:
    """The decision time embedded in a version 7 or 8 decision id (millisecond precision)."""
    if len(decision_id) != 36 or decision_id[14] not in "78" or decision_id[8] != "-":
        raise ValueError(f"not a decision id: {decision_id!r}")
    return EPOCH + int(decision_id[:8] + decision_id[9:13], 16) * _MS


def valid_decision_id(value: str) -> bool:
    """True for a canonical (lower-case, hyphenated) version 7 or 8 UUID string."""
    if len(value) != 36 or value[14] not in "78" or value[19] not in "89ab":
        return False
    parts = value.split("-")
    if [len(p) for p in parts] != [8, 4, 4, 4, 12]:
        return False
    return all(c in "0123456789abcdef" for c in value.replace("-", ""))


def whole_ms(moment: datetime) -> datetime:
    """`moment` truncated to the millisecond a decision id carries."""
    return moment.replace(microsecond=moment.microsecond - moment.microsecond % 1000)


def from_unix_s(seconds: float) -> datetime:
    """A job's float submission time as the whole-millisecond UTC datetime its rows record (by
    integer arithmetic: every worker derives the same value, hence the same decision ids)."""
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=int(seconds * 1000))
