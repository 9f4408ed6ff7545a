"""Timestamps as the API writes them (ISO 8601, UTC, millisecond precision, `Z` suffix), and the
clock that stamps decisions.

`Clock` is the one seam for the time a decision is made at: the recorder (a single prediction's
`decided_at`), the batch service (a job's `created_at`, hence its rows' decision ids) and the
performance monitor (the end of its trailing window) each take one, `utc_now` by default, and
`create_app(clock=...)` hands the same one to all three. The simulated-year test
(`tests/test_simulated_year.py`) advances a fake clock month by month through it. `utc_now` is a
`functools.partial` of `datetime.now`, a C-level call: production pays no Python frame for the
seam.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Final, TypeAlias

Clock: TypeAlias = Callable[[], datetime]
"""Returns the current time as an aware UTC datetime."""

utc_now: Final[Clock] = partial(datetime.now, UTC)


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
