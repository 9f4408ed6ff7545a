"""The `decisions` and `outcomes` tables: one SQLAlchemy Core definition for SQLite and PostgreSQL.

The migrations under `migrations/versions` are frozen snapshots of this definition (a migration
must not change when this file does); `tests/services/decisions/test_migrations.py` compares a
migrated database with this table, so the two cannot drift apart.

Dialect differences live in the column types, not in two tables:

* `decision_id` is a native `uuid` (16 bytes) on PostgreSQL and the canonical 36-character text
  on SQLite; both sort the same way (lower-case hex, time first).
* `decided_at` is `timestamptz` on PostgreSQL; on SQLite it is SQLAlchemy's fixed-width text, in
  UTC, so text order is time order. `UTCDateTime` refuses naive datetimes and hands back aware UTC.
* `reason_codes` is `jsonb` on PostgreSQL and JSON text on SQLite.

The primary key is `(decision_id, decided_at)` because a partitioned PostgreSQL table can only
have unique keys that include the partition key; the time is a function of the id (see `ids`),
so this is unique per id. It is also the time index: ids begin with their millisecond, so the
order of `decision_id` *is* the order of `(decided_at, decision_id)`, and a time range is an id
range (`queries.id_floor`). There is therefore no separate `decided_at` index, and the other
indexes (reference, model version, caller's key id) end in `decision_id`, so a filtered page in
time order is one index range scan. One index fewer, each 8 bytes narrower an entry: measured,
index upkeep is most of the cost of a bulk insert.

On PostgreSQL the model-version index is BRIN (a min/max per range of pages), not a B-tree: a
version serves a contiguous stretch of time, so the rows of one version sit in contiguous pages,
which is BRIN's case; it costs next to nothing to maintain (measured: a bulk COPY 10 % cheaper
than with the B-tree), and over a stretch where every row has the queried version the planner
walks the primary key in time order anyway. SQLite has no BRIN and keeps the B-tree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect

TABLE: Final = "decisions"
OUTCOMES_TABLE: Final = "outcomes"
#: Alembic's version table for this store; not `alembic_version`, which MLflow's own migrations
#: use when both share a PostgreSQL database.
VERSION_TABLE: Final = "decisions_alembic_version"


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Aware UTC datetimes in and out; SQLite (no time zones) stores the UTC wall time."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("decision times must be timezone-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _uuid() -> sa.types.TypeEngine[Any]:
    return sa.String(36).with_variant(postgresql.UUID(as_uuid=False), "postgresql")


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


_DOUBLE = sa.Double

metadata = sa.MetaData()

decisions = sa.Table(
    TABLE,
    metadata,
    sa.Column("decision_id", _uuid(), nullable=False),
    sa.Column("decided_at", UTCDateTime(), nullable=False),
    sa.Column("request_id", sa.Text()),
    sa.Column("key_id", sa.String(64), nullable=False),
    sa.Column("reference", sa.String(64)),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("job_id", sa.String(64)),
    sa.Column("row", sa.Integer()),
    sa.Column("employed", _DOUBLE(), nullable=False),
    sa.Column("bank_balance", _DOUBLE(), nullable=False),
    sa.Column("annual_salary", _DOUBLE(), nullable=False),
    sa.Column("saving_rate", _DOUBLE(), nullable=False),
    sa.Column("model_name", sa.Text(), nullable=False),
    sa.Column("model_version", sa.String(64), nullable=False),
    sa.Column("model_alias", sa.Text()),
    sa.Column("probability", _DOUBLE(), nullable=False),
    sa.Column("threshold", _DOUBLE(), nullable=False),
    sa.Column("prediction", sa.SmallInteger(), nullable=False),
    sa.Column("risk_band", sa.String(16), nullable=False),
    sa.Column("reason_codes", _json(), nullable=False),
    sa.Column("challenger_version", sa.String(64)),
    sa.Column("challenger_probability", _DOUBLE()),
    sa.PrimaryKeyConstraint("decision_id", "decided_at", name="pk_decisions"),
    sa.Index(
        "ix_decisions_reference",
        "reference",
        "decision_id",
        postgresql_where=sa.text("reference IS NOT NULL"),
        sqlite_where=sa.text("reference IS NOT NULL"),
    ),
    sa.Index("ix_decisions_model_version", "model_version", "decision_id", postgresql_using="brin"),
    sa.Index("ix_decisions_key_id", "key_id", "decision_id"),
    postgresql_partition_by="RANGE (decided_at)",
)

#: Column names in table order (the same as `records.FIELD_NAMES`; a unit test checks it).
COLUMNS: Final = tuple(c.name for c in decisions.columns)

#: What became of a decision: whether the applicant defaulted, reported months later by the
#: lender (`services.decisions.outcomes`). One row per decision, so `decision_id` alone is the
#: primary key, and that key is also the join index: a time range of decisions is read on the
#: decisions' own key (ids begin with their time) and each row finds its outcome with one probe
#: of this one, or a merge of the two, both in decision-id order. No other index: the table is
#: only ever read joined to decisions, or by id when an outcome is recorded.
#:
#: Not partitioned, unlike `decisions`: it is a few columns per decision (about 60 bytes a row
#: against several hundred), and only the decisions that have an outcome have a row, so a year
#: of a million decisions a month fits in well under a gigabyte, which one B-tree serves. Its
#: retention follows the decisions': ids are time-ordered, so the purge deletes the outcomes of
#: purged decisions as one key range (`DecisionStore.purge`). There is no foreign key: the
#: decisions' key is `(decision_id, decided_at)` (a partitioned table's unique keys must contain
#: the partition key) and its partitions are dropped whole; the store checks that the decision
#: exists when it records an outcome instead.
outcomes = sa.Table(
    OUTCOMES_TABLE,
    metadata,
    sa.Column("decision_id", _uuid(), nullable=False),
    sa.Column("defaulted", sa.Boolean(), nullable=False),
    sa.Column("observed_at", UTCDateTime(), nullable=False),
    sa.Column("received_at", UTCDateTime(), nullable=False),
    sa.Column("key_id", sa.String(64), nullable=False),
    sa.PrimaryKeyConstraint("decision_id", name="pk_outcomes"),
)
