"""Run the decision-store migrations from code: at start-up, from the CLI and from tests.

Several processes start at once (uvicorn workers, batch workers), and each upgrades before it
writes, so an upgrade is serialised: a PostgreSQL advisory lock held for the whole run, or on
SQLite an exclusive `flock` on a file beside the database (not on the database file itself,
whose POSIX locks belong to SQLite). The second process then finds the schema at head and does
nothing. On PostgreSQL the upgrade also creates the current and next months' partitions.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from loan_default.services.decisions import partitions
from loan_default.services.decisions.engines import create_store_engine, sqlite_path
from loan_default.services.decisions.schema import VERSION_TABLE

MIGRATIONS: Final = Path(__file__).with_name("migrations")
_PG_LOCK_KEY: Final = 0x64656369736D6967  # "decismig"


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("path_separator", "os")
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError("the decision store's migrations have no head revision")
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at; None for a database never migrated."""
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return ctx.get_current_revision()


@contextmanager
def _sqlite_lock(engine: Engine) -> Iterator[None]:
    lock_path = sqlite_path(engine).with_name(sqlite_path(engine).name + ".migrate-lock")
    with lock_path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def upgrade_engine(engine: Engine, revision: str = "head", *, months_ahead: int = 2) -> None:
    """Upgrade the store behind `engine` to `revision` (idempotent, serialised across processes)."""
    cfg = alembic_config()
    if engine.dialect.name == "sqlite":
        with _sqlite_lock(engine), engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
        return
    with engine.connect() as lock_conn:
        lock_conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _PG_LOCK_KEY})
        try:
            with engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
            if current_revision(engine) is not None:
                partitions.ensure_partitions(engine, months_ahead)
        finally:
            lock_conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_KEY})
            lock_conn.commit()


def upgrade(url: str, revision: str = "head") -> None:
    """Upgrade the decision store at `url` (`sqlite:///...` or `postgresql://...`) to `revision`."""
    engine = create_store_engine(url)
    try:
        upgrade_engine(engine, revision)
    finally:
        engine.dispose()
