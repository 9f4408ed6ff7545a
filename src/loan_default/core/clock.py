"""Timestamps as the API writes them: ISO 8601, UTC, millisecond precision, `Z` suffix."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def utc_iso(ts: float | None = None) -> str:
    """`2026-11-27T07:40:12.345Z` for a Unix time (now when omitted)."""
    moment = datetime.fromtimestamp(time.time() if ts is None else ts, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_utc(text: str) -> datetime:
    """An ISO 8601 date or time as an aware datetime; without an offset it is UTC.

    Only ISO 8601 text is accepted: a bare number is refused rather than read as a Unix
    time (pydantic's lax datetime would take `925` as 1970-01-01T00:15:25Z, so a mistyped
    year would silently query the wrong range). Raises ValueError with a message that says
    which form is expected.
    """
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except (ValueError, AttributeError, TypeError):
        raise ValueError(
            f"{text!r} is not an ISO 8601 date or time (e.g. 2026-01-31 or 2026-01-31T12:00Z)"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
