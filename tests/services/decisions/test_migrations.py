"""Migrations apply to an empty database and to every earlier schema, on both back ends, and
leave exactly the tables `schema.py` defines."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from loan_default.services.decisions import DecisionStore, migrate, partitions
from loan_default.services.decisions.engines import create_store_engine
from loan_default.services.decisions.schema import VERSION_TABLE, metadata
from tests.services.decisions.conftest import make_record

pytestmark = pytest.mark.integration

REVISIONS = [
    s.revision
    for s in reversed(list(ScriptDirectory.from_config(migrate.alembic_config()).walk_revisions()))
]


def test_revisions_are_a_single_line() -> None:
    assert REVISIONS == ["0001", "0002", "0003"]
    assert migrate.head_revision() == REVISIONS[-1]


def _only_ours(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    # monthly partitions are made at run time, not by the schema
    return not (type_ == "table" and name is not None and name.startswith("decisions_p"))


def schema_drift(engine: sa.Engine) -> list[Any]:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn,
            opts={
                "version_table": VERSION_TABLE,
                "include_object": _only_ours,
                "compare_type": True,
            },
        )
        return list(compare_metadata(ctx, metadata))


def test_empty_database_to_head_matches_the_schema(store_url: str) -> None:
    migrate.upgrade(store_url)
    engine = create_store_engine(store_url)
    try:
        assert migrate.current_revision(engine) == migrate.head_revision()
        assert schema_drift(engine) == []
        indexes = {ix["name"] for ix in sa.inspect(engine).get_indexes("decisions")}
        assert {
            "ix_decisions_reference",
            "ix_decisions_model_version",
            "ix_decisions_key_id",
        } <= indexes
        pk = sa.inspect(engine).get_pk_constraint("outcomes")
        assert pk["constrained_columns"] == ["decision_id"]  # one outcome per decision
        if engine.dialect.name == "postgresql":
            assert len(partitions.list_partitions(engine)) == 3  # this month and two ahead
        else:
            with engine.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        migrate.upgrade(store_url)  # a second start finds head and does nothing
        assert migrate.current_revision(engine) == migrate.head_revision()
    finally:
        engine.dispose()


@pytest.mark.parametrize("revision", REVISIONS[:-1])
def test_each_earlier_schema_upgrades_to_head_keeping_its_rows(
    store_url: str, revision: str
) -> None:
    engine = create_store_engine(store_url)
    try:
        migrate.upgrade_engine(engine, revision)
        assert migrate.current_revision(engine) == revision
        rec = make_record(1)
        with DecisionStore(engine) as old:  # writing needs only the table, which 0001 makes
            old.record_sync(rec)
        migrate.upgrade_engine(engine)
        assert migrate.current_revision(engine) == migrate.head_revision()
        assert schema_drift(engine) == []
        with DecisionStore(engine) as new:
            assert new.get(rec.decision_id) == rec
    finally:
        engine.dispose()


def test_downgrade_to_base_and_up_again(store_url: str) -> None:
    engine = create_store_engine(store_url)
    try:
        migrate.upgrade_engine(engine)
        with engine.begin() as conn:
            cfg = migrate.alembic_config()
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "base")
        assert migrate.current_revision(engine) is None
        assert not sa.inspect(engine).has_table("decisions")
        assert not sa.inspect(engine).has_table("outcomes")
        migrate.upgrade_engine(engine)
        assert migrate.current_revision(engine) == migrate.head_revision()
    finally:
        engine.dispose()


def test_processes_starting_together_migrate_once(store_url: str) -> None:
    errors: list[BaseException] = []

    def start() -> None:
        try:
            migrate.upgrade(store_url)
        except BaseException as exc:  # collected and re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    engine = create_store_engine(store_url)
    try:
        assert migrate.current_revision(engine) == migrate.head_revision()
    finally:
        engine.dispose()
