"""Monthly partitions of the PostgreSQL `decisions` table, and retention by dropping them.

A partition holds one calendar month (UTC) of `decided_at` and is named `decisions_pYYYYMM`;
the name is the only place its range is read back from, so partitions made by hand under other
names are never touched.

There is deliberately no DEFAULT partition. Rows in it could not be dropped by month (retention
would have to DELETE them row by row); creating a monthly partition would then have to scan the
default one for rows of that month under a lock that blocks writers; and `DETACH ... CONCURRENTLY`
is refused while one exists. Instead the store creates partitions ahead (`ensure_partitions` at
start-up and every hour, `months_ahead` months beyond the current one) and, should a row still
find none (a clock far off, a store idle for months), creates that row's month and retries, so a
missing partition costs one retry, not an outage.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from loan_default.services.decisions.schema import TABLE

_NAME: Final = re.compile(rf"^{TABLE}_p(\d{{4}})(\d{{2}})$")
#: pg_advisory_xact_lock key serialising partition DDL between processes (API workers, batch
#: workers and the purge job may all run it at once).
_LOCK_KEY: Final = 0x6465636973696F6E  # "decision"
#: A purge waits at most this long for the table lock: it must never queue writers behind it.
PURGE_LOCK_TIMEOUT: Final = "5s"


def month_start(moment: datetime) -> datetime:
    """The first instant (UTC) of `moment`'s month."""
    m = moment.astimezone(UTC)
    return datetime(m.year, m.month, 1, tzinfo=UTC)


def add_months(moment: datetime, months: int) -> datetime:
    """`moment` moved by whole calendar months, the day clamped to the target month's length."""
    m = moment.astimezone(UTC)
    year, month0 = divmod(m.year * 12 + m.month - 1 + months, 12)
    last_day = calendar.monthrange(year, month0 + 1)[1]
    return m.replace(year=year, month=month0 + 1, day=min(m.day, last_day))


def retention_cutoff(months: int, now: datetime | None = None) -> datetime:
    """Records decided before this are past a retention of `months` calendar months."""
    return add_months(now or datetime.now(UTC), -months)


def partition_name(month: datetime) -> str:
    return f"{TABLE}_p{month.year:04d}{month.month:02d}"


def _create(conn: Connection, months: Iterable[datetime]) -> list[str]:
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
    existing = set(_partitions(conn))
    made = []
    for start in sorted(set(months)):
        name = partition_name(start)
        if name in existing:
            continue
        end = add_months(start, 1)
        conn.execute(
            sa.text(
                f'CREATE TABLE IF NOT EXISTS "{name}" PARTITION OF "{TABLE}" '
                f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
            )
        )
        made.append(name)
    return made


def ensure_partitions(
    engine: Engine, months_ahead: int = 2, *, now: datetime | None = None
) -> list[str]:
    """Create the partitions of the current month and the next `months_ahead`; returns the new
    ones. Idempotent and safe to run from several processes at once."""
    first = month_start(now or datetime.now(UTC))
    with engine.begin() as conn:
        return _create(conn, (add_months(first, i) for i in range(months_ahead + 1)))


def ensure_months(engine: Engine, moments: Iterable[datetime]) -> list[str]:
    """Create the partitions holding these times (the retry after 'no partition for row')."""
    with engine.begin() as conn:
        return _create(conn, {month_start(m) for m in moments})


def _partitions(conn: Connection) -> dict[str, datetime]:
    """Partitions of the table named by our convention -> the first instant of their month."""
    names = conn.execute(
        sa.text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass(:t)"
        ),
        {"t": TABLE},
    ).scalars()
    out = {}
    for name in names:
        match = _NAME.match(name)
        if match:
            out[name] = datetime(int(match[1]), int(match[2]), 1, tzinfo=UTC)
    return out


def list_partitions(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(_partitions(conn))


def drop_partitions_before(engine: Engine, cutoff: datetime) -> tuple[int, list[str]]:
    """Drop every partition whose whole month ends at or before `cutoff`; rows in a partition
    that straddles the cutoff are kept until their month is entirely past it (retention keeps
    *at least* the period, and no row is ever deleted one by one).

    Returns (rows dropped, partition names). Rows are counted before each drop, in the same
    transaction, so the figure is exact; a month of records counts in seconds, once a month.
    """
    dropped: list[str] = []
    rows = 0
    with engine.begin() as conn:
        conn.execute(sa.text(f"SET LOCAL lock_timeout = '{PURGE_LOCK_TIMEOUT}'"))
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
        for name, start in sorted(_partitions(conn).items()):
            if add_months(start, 1) > cutoff:
                continue
            # `name` matched _NAME (decisions_pYYYYMM): no quoting can be broken
            rows += conn.execute(sa.text(f'SELECT count(*) FROM "{name}"')).scalar_one()  # noqa: S608  # nosec B608 - name matched _NAME
            conn.execute(sa.text(f'DROP TABLE "{name}"'))
            dropped.append(name)
    return rows, dropped
