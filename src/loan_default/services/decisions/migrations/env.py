"""Alembic environment: the caller hands in a connection (see `migrate.upgrade`), so the URL,
the locking and the transaction are decided in one place, in code."""

from __future__ import annotations

from alembic import context

from loan_default.services.decisions.schema import VERSION_TABLE, metadata


def run_migrations() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None or context.is_offline_mode():
        raise RuntimeError("run decision-store migrations through migrate.upgrade(url)")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
