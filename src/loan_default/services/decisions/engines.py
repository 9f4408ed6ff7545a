"""Store URLs to SQLAlchemy engines, with the connection settings durability depends on.

SQLite (the embedded default) gets WAL and an explicit `synchronous` on every connection:

* WAL lets readers (queries, exports, /readyz) run while the writer commits, and makes a commit
  one append to the log instead of rewriting pages.
* `synchronous=FULL` (the default) fsyncs the log at every commit, so a committed record
  survives power loss and a kernel crash. `NORMAL` skips that fsync (the log is synced only at
  checkpoints): a commit still survives the *process* being killed (SIGKILL, OOM) because the
  bytes are already in the operating system's page cache, but the last commits before a power
  loss can roll back (the database stays consistent). "Durable before answered" is the promise,
  and group commit pays one fsync per group, not per record, so FULL is the default; NORMAL is
  for disks whose fsync costs milliseconds and deployments that accept that window.
* `wal_autocheckpoint=0`: no commit checkpoints the log itself; `checkpoint.WalCheckpointer`
  does it on a thread of its own, so a checkpoint's copy and fsync never hold up a group of
  waiting predictions.
* `busy_timeout`: several processes (uvicorn workers, batch workers) share one file and take
  turns at the write lock; a writer waits this long before the store reports itself unavailable.

PostgreSQL URLs are normalised to psycopg2 (`postgresql://` means psycopg 3 to SQLAlchemy 2.1,
which is not installed), sessions run in UTC, and connects and unacknowledged sends are bounded so
a vanished server turns into an error within seconds rather than a hung writer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final, Literal

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine

StoreType = Literal["sqlite", "postgresql"]
Synchronous = Literal["FULL", "NORMAL"]

DEFAULT_BUSY_TIMEOUT_S: Final = 10.0
DEFAULT_CONNECT_TIMEOUT_S: Final = 5


def normalize_url(url: str) -> URL:
    """A SQLAlchemy URL for a `sqlite:///path` or `postgresql://...` decision store URL."""
    parsed = sa.make_url(url)
    backend = parsed.get_backend_name()
    if backend in {"postgresql", "postgres"}:
        return parsed.set(drivername="postgresql+psycopg2")
    if backend == "sqlite":
        if parsed.get_driver_name() not in {"pysqlite", ""} and "+" in parsed.drivername:
            raise ValueError("the SQLite decision store uses the standard sqlite3 driver")
        if not parsed.database or parsed.database == ":memory:":
            raise ValueError("the SQLite decision store needs a file: sqlite:///var/decisions.db")
        return parsed.set(drivername="sqlite")
    raise ValueError(f"DECISION_STORE_URL must be sqlite:/// or postgresql://, not {backend}://")


def store_type(url: URL) -> StoreType:
    return "postgresql" if url.get_backend_name() == "postgresql" else "sqlite"


def autocommit_connection(engine: Engine) -> Any:
    """A driver connection of its own, out of the pool (`detach`: never handed back to it in
    autocommit), whose statements commit themselves: the group-commit writer's and the WAL
    checkpointer's."""
    fairy = engine.raw_connection()
    db: Any = fairy.dbapi_connection
    fairy.detach()
    if store_type(engine.url) == "sqlite":
        db.isolation_level = None
    else:
        db.autocommit = True
    return db


def create_store_engine(
    url: str | URL,
    *,
    synchronous: Synchronous = "FULL",
    busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
    connect_timeout_s: int = DEFAULT_CONNECT_TIMEOUT_S,
    pool_size: int = 4,
) -> Engine:
    """An engine for the store; SQLite's parent directory is created (`var/` on a fresh box)."""
    sa_url = normalize_url(url) if isinstance(url, str) else url
    if store_type(sa_url) == "sqlite":
        return _sqlite_engine(sa_url, synchronous=synchronous, busy_timeout_s=busy_timeout_s)
    connect_args: dict[str, Any] = {
        "connect_timeout": connect_timeout_s,
        "options": "-c timezone=UTC",
        "application_name": "loan-default-decisions",
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
        "tcp_user_timeout": connect_timeout_s * 4000,
    }
    return sa.create_engine(
        sa_url,
        connect_args=connect_args,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=connect_timeout_s,
        pool_pre_ping=True,
    )


def _sqlite_engine(url: URL, *, synchronous: Synchronous, busy_timeout_s: float) -> Engine:
    if synchronous not in ("FULL", "NORMAL"):
        raise ValueError("synchronous must be FULL or NORMAL")
    if url.database is None:
        raise ValueError("a SQLite decision store URL needs a file path (sqlite:///path)")
    Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(
        url, connect_args={"timeout": busy_timeout_s, "check_same_thread": False}
    )

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={synchronous}")
            cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
            cur.execute("PRAGMA wal_autocheckpoint=0")  # checkpoint.WalCheckpointer does it
        finally:
            cur.close()

    return engine


def sqlite_path(engine: Engine) -> Path:
    """The database file of a SQLite engine."""
    if engine.url.database is None:
        raise ValueError("a SQLite decision store URL needs a file path (sqlite:///path)")
    return Path(engine.url.database).expanduser()
