"""WAL checkpoints: commits leave the log alone, the thread copies it back, close empties it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from loan_default.services.decisions.checkpoint import WalCheckpointer
from loan_default.services.decisions.engines import create_store_engine

pytestmark = pytest.mark.integration


def _engine(path: Path) -> sa.Engine:
    engine = create_store_engine(f"sqlite:///{path}", synchronous="NORMAL", busy_timeout_s=5)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, pad TEXT)")
    return engine


def _write_pages(engine: sa.Engine, commits: int) -> None:
    """`commits` transactions of ~16 kB each: well past SQLite's default 1,000-page trigger."""
    with engine.connect() as conn:
        for _ in range(commits):
            conn.exec_driver_sql("INSERT INTO t (pad) VALUES (?)", ("x" * 16_000,))
            conn.commit()


def _log_state(engine: sa.Engine) -> tuple[int, int]:
    """(frames in the log, frames copied into the database) from a PASSIVE checkpoint."""
    with engine.connect() as conn:
        _busy, log, copied = conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
    return int(log), int(copied)


def test_commits_do_not_checkpoint_and_the_thread_does(tmp_path: Path) -> None:
    engine = _engine(tmp_path / "d.db")
    wal = tmp_path / "d.db-wal"
    try:
        _write_pages(engine, 300)  # ~1,200 pages: an automatic checkpoint would have run
        log, copied = _log_state(engine)
        assert log > 1_000, "no commit checkpointed (and so restarted) the log"
        assert log == copied  # that PASSIVE checkpoint (the observation) copied it all

        _write_pages(engine, 20)
        checkpointer = WalCheckpointer(engine, interval_s=0.05)
        try:
            deadline = time.monotonic() + 10
            while checkpointer.checkpoints == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert checkpointer.checkpoints >= 1
            log, copied = _log_state(engine)
            assert log == copied, "every frame is back in the database file"

            # writes go on while it runs, and are copied back too
            _write_pages(engine, 20)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                log, copied = _log_state(engine)
                if log == copied:
                    break
                time.sleep(0.02)
            assert log == copied
        finally:
            checkpointer.close()
        assert wal.stat().st_size == 0, "close empties the log (TRUNCATE)"
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == 340
    finally:
        engine.dispose()


def test_close_is_idempotent_and_a_bad_interval_is_refused(tmp_path: Path) -> None:
    engine = _engine(tmp_path / "d.db")
    try:
        with pytest.raises(ValueError, match="interval_s"):
            WalCheckpointer(engine, interval_s=0)
        checkpointer = WalCheckpointer(engine, interval_s=0.05)
        checkpointer.close()
        checkpointer.close()
    finally:
        engine.dispose()
