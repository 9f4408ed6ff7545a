"""DecisionBatch: a chunk's decisions as columns, equal to the same decisions as records."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from loan_default.services.decisions import batch_decision_id, codec
from tests.services.decisions.conftest import make_batch, now_ms

pytestmark = pytest.mark.unit


def test_records_match_the_columns_and_derive_the_ids() -> None:
    created = now_ms()
    batch = make_batch("job-1", created, 100, 20)
    recs = batch.records()
    assert [r.row for r in recs] == list(range(100, 120))
    assert [r.decision_id for r in recs] == [
        batch_decision_id("job-1", r, created) for r in range(100, 120)
    ]
    assert all(r.decided_at == created and r.source == "batch" for r in recs)
    assert recs[1].reference == "loan-101"
    assert recs[2].reference is None
    assert recs[0].reason_codes == ("BAL_HIGH",)
    assert recs[1].reason_codes == ()


def test_rows_need_not_be_contiguous() -> None:
    created = now_ms()
    batch = make_batch("job-1", created, 0, 4)
    gappy = replace(batch, rows=np.array([0, 2, 5, 9]))
    assert gappy.decision_ids() == [batch_decision_id("job-1", r, created) for r in (0, 2, 5, 9)]


def test_both_write_paths_produce_the_same_rows() -> None:
    """The columnar path and the record path cannot drift: same tuples, same COPY text."""
    batch = make_batch("job-1", now_ms(), 0, 50)
    for dialect in ("sqlite", "postgresql"):
        assert codec.batch_rows(batch, dialect) == codec.rows(batch.records(), dialect)
    assert codec.copy_batch(batch).getvalue() == codec.copy_records(batch.records()).getvalue()


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"rows": np.arange(3)}, "one entry per row"),
        ({"prediction": np.full(4, 3)}, "prediction"),
        ({"references": ["x" * 65, None, None, None]}, "reference"),
        ({"rows": np.array([-1, 0, 1, 2])}, "rows"),
        ({"key_id": ""}, "key_id"),
    ],
)
def test_bad_batches_are_refused(changes: dict[str, object], match: str) -> None:
    batch = make_batch("job-1", now_ms(), 0, 4)
    with pytest.raises(ValueError, match=match):
        replace(batch, **changes)


def test_created_at_must_be_whole_ms_utc() -> None:
    batch = make_batch("job-1", now_ms(), 0, 2)
    with pytest.raises(ValueError, match="created_at"):
        replace(batch, created_at=batch.created_at.replace(microsecond=1))
