"""DecisionRecord: checked once when made, so every store writes the same facts."""

from __future__ import annotations

from datetime import timedelta

import orjson
import pytest

from loan_default.services.decisions import records, schema
from tests.services.decisions.conftest import make_record

pytestmark = pytest.mark.unit


def test_fields_are_the_table_columns_in_order() -> None:
    assert records.FIELD_NAMES == schema.COLUMNS


def test_as_dict_is_json_with_iso_utc_times() -> None:
    rec = make_record(1)
    out = rec.as_dict()
    assert out["decided_at"].endswith("Z")
    assert len(out["decided_at"]) == 24
    assert out["reason_codes"] == ["BAL_HIGH", "SR_HIGH"]
    assert orjson.loads(orjson.dumps(out))["probability"] == rec.probability
    assert list(out) == list(records.FIELD_NAMES)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"reference": "x" * 65}, "reference"),
        ({"reference": ""}, "reference"),
        ({"reference": "a\x00b"}, "NUL"),
        ({"reference": "\ud800"}, "Unicode"),
        ({"source": "api"}, "source"),
        ({"source": "batch"}, "job_id"),
        ({"prediction": 2}, "prediction"),
        ({"key_id": ""}, "key_id"),
        ({"model_version": ""}, "model_version"),
    ],
)
def test_bad_records_are_refused(changes: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_record(**changes)


def test_time_must_be_the_ids_time_in_utc() -> None:
    rec = make_record()
    with pytest.raises(ValueError, match="embedded"):
        make_record(decision_id=rec.decision_id, decided_at=rec.decided_at + timedelta(seconds=1))
    with pytest.raises(ValueError, match="UTC"):
        make_record(decision_id=rec.decision_id, decided_at=rec.decided_at.replace(tzinfo=None))


def test_empty_optional_text_means_absent_and_lists_become_tuples() -> None:
    rec = make_record(request_id="", model_alias="", reason_codes=["A", "B"])
    assert rec.request_id is None
    assert rec.model_alias is None
    assert rec.reason_codes == ("A", "B")
    assert make_record(reference="r" * 64).reference == "r" * 64
