"""Decision ids: UUIDv7 for predictions, deterministic v8 for batch rows, time inside both."""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from loan_default.services.decisions import ids

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 5, 10, 11, 12, 345_678, tzinfo=UTC)


def test_new_ids_are_rfc_9562_version_7_with_their_millisecond() -> None:
    did = ids.new_decision_id(T0)
    u = uuid.UUID(did)
    assert str(u) == did
    assert u.version == 7
    assert u.variant == uuid.RFC_4122
    assert ids.decided_at_of(did) == T0.replace(microsecond=345_000)
    assert ids.valid_decision_id(did)


def test_ids_sort_in_creation_order_as_text() -> None:
    made = [ids.new_decision_id() for _ in range(2000)]
    assert made == sorted(made)
    assert len(set(made)) == len(made)
    later = [ids.new_decision_id(T0 + timedelta(microseconds=k * 250)) for k in range(8)]
    assert later == sorted(later)


def test_batch_ids_are_deterministic_version_8_in_row_order() -> None:
    a = ids.batch_decision_id("job-1", 7, T0.replace(microsecond=0))
    assert a == ids.batch_decision_id("job-1", 7, T0.replace(microsecond=0))
    u = uuid.UUID(a)
    assert u.version == 8
    assert u.variant == uuid.RFC_4122
    assert ids.decided_at_of(a) == T0.replace(microsecond=0)
    assert ids.batch_decision_id("job-2", 7, T0.replace(microsecond=0)) != a
    rows = [ids.batch_decision_id("job-1", r, T0) for r in (0, 1, 2, 255, 256, 70_000)]
    assert rows == sorted(rows)
    assert ids.batch_decision_ids("job-1", T0, 250, 260) == [
        ids.batch_decision_id("job-1", r, T0) for r in range(250, 260)
    ]


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        ids.new_decision_id(datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="row"):
        ids.batch_decision_id("j", -1, T0)
    with pytest.raises(ValueError, match="row"):
        ids.batch_decision_id("j", 1 << 31, T0)
    with pytest.raises(ValueError):
        ids.decided_at_of(str(uuid.uuid4()))
    assert not ids.valid_decision_id(str(uuid.uuid4()))
    assert not ids.valid_decision_id(ids.new_decision_id().upper())
    assert not ids.valid_decision_id("x" * 36)


@pytest.mark.integration
def test_the_package_exports_lazily_and_completely() -> None:
    """`loan-default` imports `decisions.commands` through the package for every command line:
    that must not load the store (SQLAlchemy, Arrow), and every exported name must resolve."""
    code = (
        "import sys, loan_default.services.decisions.commands\n"
        "assert 'loan_default.services.decisions.store' not in sys.modules\n"
        "assert 'sqlalchemy' not in sys.modules\n"
        "import loan_default.services.decisions as d\n"
        "for name in d.__all__: getattr(d, name)\n"
        "assert set(d.__all__) == set(d._HOMES)\n"
        "try:\n    d.missing\nexcept AttributeError:\n    pass\nelse:\n    raise SystemExit(1)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
