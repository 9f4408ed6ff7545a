"""Timestamps as the API writes them: ISO 8601, UTC, millisecond precision, `Z` suffix."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def utc_iso(ts: float | None = None) -> str:
    """`2026-11-27T07:40:12.345Z` for a Unix time (now when omitted)."""
    moment = datetime.fromtimestamp(time.time() if ts is None else ts, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
