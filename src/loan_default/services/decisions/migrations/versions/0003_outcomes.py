"""The outcomes table: whether a decision's applicant defaulted, one row per decision.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

A frozen snapshot: later schema changes are new revisions, never edits here. Not partitioned
and without a foreign key to `decisions` (see schema.py for why).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    uuid = sa.String(36).with_variant(postgresql.UUID(as_uuid=False), "postgresql")
    op.create_table(
        "outcomes",
        sa.Column("decision_id", uuid, nullable=False),
        sa.Column("defaulted", sa.Boolean(), nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("decision_id", name="pk_outcomes"),
    )


def downgrade() -> None:
    op.drop_table("outcomes")
