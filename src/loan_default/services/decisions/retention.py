"""Retention: removing decisions (and their outcomes) older than the retention period.

PostgreSQL drops whole monthly partitions (no row deleted from any other partition, no vacuum
debt); SQLite deletes rows in short transactions of 10,000, so the group-commit writer is never
locked out for long. Outcomes go by one range of their key (decision ids begin with their time).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from loan_default.services.decisions import partitions, queries
from loan_default.services.decisions.engines import StoreType
from loan_default.services.decisions.schema import decisions, outcomes


def purge(engine: Engine, store_type: StoreType, older_than: datetime) -> int:
    """Remove records decided before `older_than`, and their outcomes; returns how many
    records. PostgreSQL drops the partitions whose month ends by then (and deletes no row
    from any other); SQLite deletes rows in short transactions so the writer is never
    locked out for long."""
    if older_than.tzinfo is None:
        raise ValueError("older_than must be timezone-aware")
    if store_type == "postgresql":
        removed = partitions.drop_partitions_before(engine, older_than)[0]
        # every decision before the cutoff's month is gone with its partition
        purge_outcomes(engine, partitions.month_start(older_than))
        return removed
    removed = 0
    at = decisions.c.decided_at
    # the id range finds them on the primary key (ids begin with their time, see queries)
    old = sa.and_(decisions.c.decision_id < queries.id_floor(older_than), at < older_than)
    victims: sa.Select[tuple[Any]] = sa.select(sa.literal_column("rowid")).where(old).limit(10_000)
    stmt = sa.delete(decisions).where(sa.literal_column("rowid").in_(victims.scalar_subquery()))
    while True:
        with engine.begin() as conn:
            n = conn.execute(stmt).rowcount
        removed += n
        if n == 0:
            purge_outcomes(engine, older_than)
            return removed


def purge_outcomes(engine: Engine, decided_before: datetime) -> int:
    """Delete the outcomes of decisions made before `decided_before` (purged already): one
    range of the outcomes' key, ids being time-ordered; in short transactions as above."""
    floor = queries.id_floor(decided_before)
    victims = sa.select(outcomes.c.decision_id).where(outcomes.c.decision_id < floor).limit(10_000)
    stmt = sa.delete(outcomes).where(outcomes.c.decision_id.in_(victims.scalar_subquery()))
    removed = 0
    while True:
        with engine.begin() as conn:
            n = conn.execute(stmt).rowcount
        removed += n
        if n == 0:
            return removed
