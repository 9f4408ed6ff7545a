"""The decisions table (partitioned by month of decided_at on PostgreSQL).

Revision ID: 0001
Revises:
Create Date: 2026-11-27

A frozen snapshot: later schema changes are new revisions, never edits here.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    uuid = sa.String(36).with_variant(postgresql.UUID(as_uuid=False), "postgresql")
    json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    op.create_table(
        "decisions",
        sa.Column("decision_id", uuid, nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_id", sa.Text()),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("reference", sa.String(64)),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("job_id", sa.String(64)),
        sa.Column("row", sa.Integer()),
        sa.Column("employed", sa.Double(), nullable=False),
        sa.Column("bank_balance", sa.Double(), nullable=False),
        sa.Column("annual_salary", sa.Double(), nullable=False),
        sa.Column("saving_rate", sa.Double(), nullable=False),
        sa.Column("model_name", sa.Text(), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("model_alias", sa.Text()),
        sa.Column("probability", sa.Double(), nullable=False),
        sa.Column("threshold", sa.Double(), nullable=False),
        sa.Column("prediction", sa.SmallInteger(), nullable=False),
        sa.Column("risk_band", sa.String(16), nullable=False),
        sa.Column("reason_codes", json, nullable=False),
        sa.Column("challenger_version", sa.String(64)),
        sa.Column("challenger_probability", sa.Double()),
        sa.PrimaryKeyConstraint("decision_id", "decided_at", name="pk_decisions"),
        postgresql_partition_by="RANGE (decided_at)",
    )


def downgrade() -> None:
    op.drop_table("decisions")
