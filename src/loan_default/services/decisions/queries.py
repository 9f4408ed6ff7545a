"""Reading decisions back: filters, keyset paging and the opaque cursor.

Pages are in time order. Decision ids begin with their millisecond (see `ids`), so ordering by
`decision_id` *is* ordering by `(decided_at, decision_id)`, and every index ends in
`decision_id`. The next page starts strictly after the last id seen (`decision_id > :last`),
never at an OFFSET: a page costs the same at row 10 and at row 10 million, and rows written
meanwhile neither repeat nor vanish. A time range is also an id range (`id_floor`), which the
primary-key index serves; the `decided_at` conditions stay beside it so PostgreSQL can skip
whole partitions.

The cursor is the last decision id, base64url-encoded behind a version tag. It is opaque so its
form can change; a cursor that does not decode is a 422, not a silent first page.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime, timedelta
from typing import Final

import sqlalchemy as sa

from loan_default.services.decisions.errors import InvalidCursor
from loan_default.services.decisions.ids import unix_ms, valid_decision_id
from loan_default.services.decisions.schema import decisions

_CURSOR_TAG: Final = "d1:"
MAX_LIMIT: Final = 10_000
_US: Final = timedelta(microseconds=1)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ZERO_ID: Final = "00000000-0000-0000-0000-000000000000"


def encode_cursor(decision_id: str) -> str:
    return base64.urlsafe_b64encode(f"{_CURSOR_TAG}{decision_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The decision id of the last row of the previous page."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidCursor("cursor is not one this API returned") from exc
    decision_id = raw.removeprefix(_CURSOR_TAG)
    if not raw.startswith(_CURSOR_TAG) or not valid_decision_id(decision_id):
        raise InvalidCursor("cursor is not one this API returned")
    return decision_id


def id_floor(moment: datetime) -> str:
    """The smallest decision id decided at or after `moment` could have (ids hold whole ms).
    Ids count milliseconds from the Unix epoch, so any moment before it floors to the zero id
    (and `datetime.min`, which a query may carry, does not overflow)."""
    if moment.tzinfo is not None and moment <= _EPOCH:
        return _ZERO_ID
    ms = unix_ms(moment - _US) + 1  # ceil to the millisecond: a decision at ms >= moment
    h = f"{ms:012x}"
    return f"{h[:8]}-{h[8:]}-0000-0000-000000000000"


def _aware(name: str, value: datetime | None) -> None:
    if value is not None and value.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware")


def in_window(start: datetime | None, end: datetime | None) -> list[sa.ColumnElement[bool]]:
    """[start, end) as conditions on `decisions` (an open side when None): each bound both on
    the id (the primary-key range the index scans) and on `decided_at` (exact)."""
    _aware("start", start)
    _aware("end", end)
    t = decisions.c
    conditions: list[sa.ColumnElement[bool]] = []
    if start is not None:
        conditions += [t.decision_id >= id_floor(start), t.decided_at >= start]
    if end is not None:
        conditions += [t.decision_id < id_floor(end), t.decided_at < end]
    return conditions


def select_page(
    *,
    reference: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    model_version: str | None = None,
    key_id: str | None = None,
    after: str | None = None,
    limit: int = 100,
) -> sa.Select[tuple[object, ...]]:
    """Up to `limit` rows matching every given filter, after decision id `after`, in time
    order. `start` is inclusive and `end` exclusive, so consecutive ranges never share a row."""
    if not 1 <= limit <= MAX_LIMIT + 1:
        raise ValueError(f"limit must be 1..{MAX_LIMIT}")
    t = decisions.c
    stmt = sa.select(decisions).where(*in_window(start, end))
    if reference is not None:
        stmt = stmt.where(t.reference == reference)
    if model_version is not None:
        stmt = stmt.where(t.model_version == model_version)
    if key_id is not None:
        stmt = stmt.where(t.key_id == key_id)
    if after is not None:
        stmt = stmt.where(t.decision_id > after)
    return stmt.order_by(t.decision_id).limit(limit)


#: What the challenger comparison reads of each shadow-scored decision.
CHALLENGER_COLUMNS: Final = (
    "model_version",
    "probability",
    "prediction",
    "challenger_version",
    "challenger_probability",
)


def select_challenger(*, start: datetime, end: datetime) -> sa.Select[tuple[object, ...]]:
    """The decisions of [start, end) that carry a challenger probability (their columns in
    CHALLENGER_COLUMNS order), in time order."""
    t = decisions.c
    return (
        sa.select(*(t[c] for c in CHALLENGER_COLUMNS))
        .where(*in_window(start, end))
        .where(t.challenger_probability.is_not(None))
        .order_by(t.decision_id)
    )
