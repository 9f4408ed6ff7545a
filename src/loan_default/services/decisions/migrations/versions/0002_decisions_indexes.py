"""Secondary indexes: client reference, model version and caller, each in decision-id order.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27

The primary key (decision_id, decided_at) is the time index (ids begin with their time). On
PostgreSQL an index on the partitioned table is created on every partition, present and future.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_index(
        "ix_decisions_reference",
        "decisions",
        ["reference", "decision_id"],
        postgresql_where=sa.text("reference IS NOT NULL"),
        sqlite_where=sa.text("reference IS NOT NULL"),
    )
    op.create_index(
        "ix_decisions_model_version",
        "decisions",
        ["model_version", "decision_id"],
        postgresql_using="brin",  # versions serve contiguous time: see schema.py
    )
    op.create_index("ix_decisions_key_id", "decisions", ["key_id", "decision_id"])


def downgrade() -> None:
    for name in ("ix_decisions_key_id", "ix_decisions_model_version", "ix_decisions_reference"):
        op.drop_index(name, table_name="decisions")
