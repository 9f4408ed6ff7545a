"""Store URLs and the connection settings durability depends on."""

from __future__ import annotations

from pathlib import Path

import pytest

from loan_default.services.decisions.engines import create_store_engine, normalize_url


@pytest.mark.unit
@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("postgresql://u:p@db:5432/d", "postgresql+psycopg2"),
        ("postgres://u@db/d", "postgresql+psycopg2"),
        ("postgresql+psycopg2://u@db/d", "postgresql+psycopg2"),
        ("sqlite:///var/decisions.db", "sqlite"),
        ("sqlite+pysqlite:///var/decisions.db", "sqlite"),
    ],
)
def test_urls_are_normalised(url: str, driver: str) -> None:
    assert normalize_url(url).drivername == driver


@pytest.mark.unit
@pytest.mark.parametrize(
    "url", ["sqlite://", "sqlite:///:memory:", "sqlite+aiosqlite:///x.db", "mysql://u@h/d"]
)
def test_unusable_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match=r"decision store|DECISION_STORE_URL|sqlite3"):
        normalize_url(url)


@pytest.mark.integration
@pytest.mark.parametrize(("synchronous", "level"), [("FULL", 2), ("NORMAL", 1)])
def test_sqlite_connections_get_wal_and_the_chosen_synchronous(
    tmp_path: Path, synchronous: str, level: int
) -> None:
    engine = create_store_engine(
        f"sqlite:///{tmp_path / 'new' / 'dir' / 'd.db'}",
        synchronous=synchronous,  # type: ignore[arg-type]
        busy_timeout_s=2.5,
    )
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == level
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 2500
            # commits never checkpoint (checkpoint.WalCheckpointer does, on its own thread)
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
    finally:
        engine.dispose()
    assert (tmp_path / "new" / "dir" / "d.db").exists()
