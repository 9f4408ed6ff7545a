"""Batch job logic without Celery: parsing, chunking, idempotent writes, paging, CSV, parity."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pytest

from loan_default.core.clock import utc_iso
from loan_default.core.config import Settings
from loan_default.core.errors import InvalidInput, NotFound, ServiceUnavailable
from loan_default.model.bundle import Scores
from loan_default.services import batch as bs
from loan_default.services.batch import codec
from loan_default.services.batch.records import RENDERED_ROWS_TTL_S
from loan_default.services.challenger import Challenger, sampled
from loan_default.services.decisions import DecisionStore, batch_decision_ids
from loan_default.services.decisions.ids import from_unix_s
from loan_default.services.decisions.recorder import DecisionRecorder
from loan_default.services.model import ModelService
from tests.conftest import make_settings
from tests.worker.conftest import PrivateRedis, csv_bytes

OWNER = "key-id-of-a"


def _rows(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack(
        [rng.integers(0, 2, n), rng.uniform(0, 30_000, n), rng.uniform(1_000, 90_000, n)]
    ).astype(np.float64)


class InlineDispatcher:
    """Runs each chunk right away through the same function the Celery task calls."""

    def __init__(
        self,
        store: bs.JobStore,
        model: ModelService,
        *,
        repeat: int = 1,
        decisions: DecisionRecorder | None = None,
        shadow: Challenger | None = None,
    ) -> None:
        self.store, self.model, self.repeat, self.decisions = store, model, repeat, decisions
        self.shadow = shadow
        self.decision_ids = True  # as the worker's task passes: DECISION_RECORDING is not off
        self.sent: list[tuple[str, int]] = []

    def dispatch(self, job_id: str, n_chunks: int) -> None:
        for i in range(n_chunks):
            self.sent.append((job_id, i))
            for _ in range(self.repeat):
                bs.score_chunk(
                    store=self.store,
                    job_id=job_id,
                    index=i,
                    predict=self.model.predict_matrix,
                    decisions=self.decisions,
                    shadow=self.shadow.score_batch if self.shadow is not None else None,
                    decision_ids=self.decision_ids,
                )


@pytest.fixture
def model(bundle: Any, trained_settings: Settings) -> ModelService:
    return ModelService(settings=trained_settings, bundle=bundle)


def _service(
    store: bs.RedisJobStore, model: ModelService, trained_store: Path, **kw: Any
) -> tuple[bs.BatchService, InlineDispatcher]:
    settings = make_settings(trained_store, **kw)
    dispatcher = InlineDispatcher(store, model)
    return bs.BatchService(settings=settings, store=store, dispatcher=dispatcher), dispatcher


def _results(data: dict[str, Any]) -> list[dict[str, Any]]:
    """A status page's results (a JSON fragment, which the route's response embeds as it is)."""
    items: list[dict[str, Any]] = orjson.loads(orjson.dumps(data))["results"]
    return items


def _overwrite_record(store: bs.RedisJobStore, rec: bs.JobRecord) -> None:
    store.client.set(store._k(rec.job_id, "rec"), rec.model_dump_json())


# --- parsing -----------------------------------------------------------------------------------
@pytest.mark.unit
def test_parse_csv_accepts_both_namings_and_keeps_extra_columns() -> None:
    for header in (
        "id,Employed,Bank Balance,Annual Salary",
        "id,employed,bank_balance,annual_salary",
    ):
        parsed = bs.parse_csv(
            csv_bytes([(7, 1, 100.5, 2000), (8, 0, 0, 1.5)], header),
            max_rows=10,
            on_error="reject",
        )
        assert parsed.raw.tolist() == [[1, 100.5, 2000], [0, 0, 1.5]]
        assert parsed.table.column("id").to_pylist() == [7, 8]
        assert parsed.bad_rows == 0


@pytest.mark.unit
def test_parse_csv_reports_bad_rows_by_number_and_reason() -> None:
    data = csv_bytes(
        [(1, 100, 2000), ("x", 100, 2000), (1, -5, 2000), (2, 100, 2000), (1, 100, 0), (0, "", 5)],
        "Employed,Bank Balance,Annual Salary",
    )
    with pytest.raises(InvalidInput) as err:
        bs.parse_csv(data, max_rows=100, on_error="reject")
    detail = err.value.detail
    assert detail["bad_rows"] == 5
    by_row = {(e["row"], e["field"]) for e in detail["rows"]}
    assert by_row == {
        (2, "employed"),
        (3, "bank_balance"),
        (4, "employed"),
        (5, "annual_salary"),
        (6, "bank_balance"),
    }
    skipped = bs.parse_csv(data, max_rows=100, on_error="skip")
    assert skipped.raw.tolist() == [[1, 100, 2000]]
    assert skipped.bad_rows == 5
    assert skipped.source_rows == 6


@pytest.mark.unit
@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"a,b,c\n1,2,3\n", "lacks required columns"),
        (b"Employed,Bank Balance,Annual Salary\n", "no data rows"),
        (b"Employed,Bank Balance,Annual Salary\n" + b"1,2,3\n" * 11, "at most 10"),
        (b"Employed,Bank Balance,Annual Salary\n1,nan,3\n1,inf,3\n", "2 of 2 rows"),
    ],
)
def test_parse_csv_refuses_unusable_files(data: bytes, needle: str) -> None:
    with pytest.raises(InvalidInput) as err:
        bs.parse_csv(data, max_rows=10, on_error="reject")
    assert needle in err.value.message


# --- state -----------------------------------------------------------------------------------
@pytest.mark.unit
def test_job_state_derives_status_progress_and_versions() -> None:
    rec = bs.JobRecord(
        job_id="j", kind="json", total=250, chunk_sizes=[100, 100, 50], created_at=0, expires_at=1
    )
    assert bs.JobState(rec, {}, None).status == "PENDING"
    s = bs.JobState(rec, {0: "100:3"}, None)
    assert (s.status, s.completed, s.progress, s.model_version) == ("PROGRESS", 100, 40, "3")
    s = bs.JobState(rec, {0: "100:3", 1: "100:10", 2: "50:3"}, None)
    assert (s.status, s.progress, s.model_version) == ("SUCCESS", 100, "3,10")
    assert bs.JobState(rec, {0: "100:3"}, "boom").status == "FAILURE"


@pytest.mark.integration
@pytest.mark.parametrize(
    "job_id", ["", "x", "../../etc", "00000000-0000-0000-0000-00000000000g", "a" * 36]
)
def test_malformed_ids_are_not_found(
    store: bs.RedisJobStore, job_id: str, trained_store: Path
) -> None:
    settings = make_settings(trained_store)
    svc = bs.BatchService(
        settings=settings,
        store=store,
        dispatcher=InlineDispatcher.__new__(InlineDispatcher),
    )
    with pytest.raises(NotFound):
        svc.status(job_id, owner=OWNER)


# --- end to end through the service (inline dispatch) -----------------------------------------
@pytest.mark.integration
def test_batch_items_equal_single_predictions(
    store: bs.RedisJobStore, model: ModelService, trained_store: Path
) -> None:
    svc, _ = _service(store, model, trained_store)
    raw = _rows(500)
    raw[0] = [1, 0.0, 1.0]
    raw[1] = [0, 123456.78, 0.01]
    sub = svc.submit_rows(owner=OWNER, raw=raw)
    data = svc.status(sub.job_id, owner=OWNER)
    assert data["status"] == "SUCCESS"
    assert data["model_version"] == model.require().version
    for (e, b, s), item in zip(raw.tolist(), _results(data), strict=True):
        single = model.predict_one(employed=int(e), bank_balance=b, annual_salary=s).as_dict()
        single.pop("model_version")
        assert item.pop("decision_id") is not None
        assert item == single


@pytest.mark.integration
def test_chunks_page_and_csv_keep_input_order_when_scored_twice(
    store: bs.RedisJobStore, model: ModelService, trained_store: Path
) -> None:
    svc, dispatcher = _service(store, model, trained_store, batch_chunk_size=100)
    dispatcher.repeat = 2  # at-least-once: every chunk delivered twice
    raw = _rows(1234, seed=1)
    sub = svc.submit_rows(owner=OWNER, raw=raw)
    assert len(dispatcher.sent) == 13
    state = svc.state(sub.job_id, owner=OWNER)
    assert state.status == "SUCCESS"
    assert state.completed == 1234
    page = svc.status(sub.job_id, owner=OWNER, offset=95, limit=210)
    assert page["next_offset"] == 305
    assert [r["features_used"]["bank_balance"] for r in _results(page)] == raw[95:305, 1].tolist()
    assert svc.status(sub.job_id, owner=OWNER, offset=1200, limit=1000)["next_offset"] is None
    assert _results(svc.status(sub.job_id, owner=OWNER, offset=5000)) == []
    rows = list(
        csv.DictReader(io.StringIO(b"".join(svc.csv_chunks(sub.job_id, owner=OWNER)).decode()))
    )
    assert len(rows) == 1234
    assert [float(r["bank_balance"]) for r in rows] == raw[:, 1].tolist()
    full = _results(svc.status(sub.job_id, owner=OWNER, limit=1000)) + _results(
        svc.status(sub.job_id, owner=OWNER, offset=1000, limit=1000)
    )
    assert [float(r["probability"]) for r in rows] == [x["probability"] for x in full]
    assert [r["default_risk"] for r in rows] == [x["default_risk"] for x in full]


@pytest.mark.integration
@pytest.mark.parametrize("recording", ["required", "off"])
def test_pages_are_the_same_bytes_from_the_workers_rendering_and_from_the_scores(
    store: bs.RedisJobStore, model: ModelService, trained_store: Path, recording: str
) -> None:
    """A JSON job's pages are slices of the rows its worker rendered; once those expire, the
    API renders the same bytes from the input and scores (any offset and limit)."""
    svc, dispatcher = _service(
        store, model, trained_store, batch_chunk_size=100, decision_recording=recording
    )
    dispatcher.decision_ids = recording != "off"
    raw = _rows(250, seed=8)
    raw[:30, 1] = np.linspace(18_000, 30_000, 30)  # adverse rows, with reasons
    sub = svc.submit_rows(owner=OWNER, raw=raw)
    pages = [(0, None), (0, 100), (95, 210), (99, 2), (100, 1), (200, 1000), (249, 5), (250, 9)]

    def read() -> list[bytes]:
        return [
            orjson.dumps(svc.status(sub.job_id, owner=OWNER, offset=o, limit=n)) for o, n in pages
        ]

    rendered = read()
    names = [f"rows-{i}" for i in range(3)]
    assert None not in store.blobs(sub.job_id, names)
    assert 0 < store.client.ttl(store._k(sub.job_id, "b:rows-0")) <= RENDERED_ROWS_TTL_S
    store.client.delete(*(store._k(sub.job_id, f"b:{name}") for name in names))
    assert read() == rendered
    items = orjson.loads(rendered[0])["results"]
    assert len(items) == 250
    assert sum(1 for item in items if item["reasons"]) >= 5
    assert all((item["decision_id"] is None) == (recording == "off") for item in items)


@pytest.mark.integration
def test_a_finished_json_jobs_first_page_is_read_with_its_state(
    store: bs.RedisJobStore,
    model: ModelService,
    trained_store: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first chunk's rendered rows come in the state's round trip; other pages (and a
    first page longer than the first chunk) fetch what the state did not bring."""
    svc, _ = _service(store, model, trained_store, batch_chunk_size=100)
    sub = svc.submit_rows(owner=OWNER, raw=_rows(150, seed=4))
    fetched: list[list[str]] = []
    blobs = store.blobs
    monkeypatch.setattr(
        store, "blobs", lambda job, names: fetched.append(list(names)) or blobs(job, names)
    )
    whole = _results(svc.status(sub.job_id, owner=OWNER, limit=1000))
    first = _results(svc.status(sub.job_id, owner=OWNER, limit=100))
    later = _results(svc.status(sub.job_id, owner=OWNER, offset=5, limit=10))
    assert fetched == [["rows-1", "in-1", "out-1"], ["rows-0", "in-0", "out-0"]]
    assert first == whole[:100]
    assert later == whole[5:15]


@pytest.mark.integration
def test_file_job_carries_extra_columns_and_skips_bad_rows(
    store: bs.RedisJobStore, model: ModelService, trained_store: Path
) -> None:
    svc, _ = _service(store, model, trained_store, batch_chunk_size=100)
    rows = [(f"L{i}", i % 2, 100.0 * i, 1000 + i) for i in range(250)]
    rows[17] = ("L17", 1, -1, 1000)
    data = csv_bytes(rows, "loan_id,Employed,Bank Balance,Annual Salary")
    parsed = bs.parse_csv(data, max_rows=1000, on_error="skip")
    sub = svc.submit_file(owner=OWNER, parsed=parsed, digest="d")
    assert sub.total == 249
    assert sub.skipped == 1
    assert sub.row_errors[0]["row"] == 18
    assert store.blobs(sub.job_id, ["rows-0"]) == [None]  # file jobs' pages are rendered on read
    out = list(
        csv.DictReader(io.StringIO(b"".join(svc.csv_chunks(sub.job_id, owner=OWNER)).decode()))
    )
    assert [r["loan_id"] for r in out] == [r[0] for r in rows if r[0] != "L17"]
    assert set(out[0]) == {
        "loan_id",
        "Employed",
        "Bank Balance",
        "Annual Salary",
        "prediction",
        "probability",
        "default_risk",
        "reason_codes",
    }


@pytest.mark.integration
def test_idempotency_key_returns_the_same_job(
    store: bs.RedisJobStore, model: ModelService, trained_store: Path
) -> None:
    svc, dispatcher = _service(store, model, trained_store)
    raw = _rows(10)
    first = svc.submit_rows(owner=OWNER, raw=raw, idempotency_key="k1")
    again = svc.submit_rows(owner=OWNER, raw=raw, idempotency_key="k1")
    assert again.job_id == first.job_id
    assert again.replayed
    assert len(dispatcher.sent) == 1
    with pytest.raises(bs.IdempotencyConflict):
        svc.submit_rows(owner=OWNER, raw=_rows(10, seed=9), idempotency_key="k1")
    assert svc.submit_rows(owner=OWNER, raw=raw, idempotency_key="k2").job_id != first.job_id


@pytest.mark.integration
def test_failed_dispatch_leaves_no_job_and_frees_the_key(
    store: bs.RedisJobStore, model: ModelService, trained_store: Path
) -> None:
    svc, _ = _service(store, model, trained_store)

    class Down:
        def dispatch(self, job_id: str, n_chunks: int) -> None:
            raise ConnectionError("broker down")

    svc.dispatcher = Down()
    with pytest.raises(ServiceUnavailable):
        svc.submit_rows(owner=OWNER, raw=_rows(5), idempotency_key="k")
    assert list(store.client.scan_iter(match=store.prefix + "*")) == []
    assert (
        svc.store.claim(__import__("hashlib").sha256(b"k").hexdigest(), "x:y", 60) is None
    )  # the key was released


@pytest.mark.integration
def test_expired_jobs_are_not_found(
    store: bs.RedisJobStore, model: ModelService, trained_store: Path
) -> None:
    svc, _ = _service(store, model, trained_store)
    sub = svc.submit_rows(owner=OWNER, raw=_rows(5))
    rec = svc.store.record(sub.job_id)
    assert rec is not None
    rec.expires_at = 0
    store.client.delete(store._k(sub.job_id, "rec"))  # Redis expired the record
    with pytest.raises(NotFound):
        svc.status(sub.job_id, owner=OWNER)


# --- issue 11: ownership, formula escaping, the one row contract, redelivery ---------------------
@pytest.mark.integration
def test_jobs_belong_to_the_key_that_submitted_them(
    store: bs.RedisJobStore, model: ModelService, trained_store: Path
) -> None:
    """Another key gets the very 404 of an unknown id (no existence oracle); so do jobs written
    before owners were recorded (no owner), for every key."""
    svc, _ = _service(store, model, trained_store)
    sub = svc.submit_rows(owner=OWNER, raw=_rows(5))
    assert svc.status(sub.job_id, owner=OWNER)["status"] == "SUCCESS"
    unknown = "00000000-0000-4000-8000-000000000000"
    for job_id in (sub.job_id, unknown):
        for call in (
            lambda j: svc.status(j, owner="another-key-id"),
            lambda j: list(svc.csv_chunks(j, owner="another-key-id")),
            lambda j: svc.status(j, owner=None),
        ):
            with pytest.raises(NotFound) as err:
                call(job_id)
            assert err.value.message == f"no batch job {job_id!r} (unknown, or its results expired)"
    legacy = svc.store.record(sub.job_id)
    assert legacy is not None
    legacy.owner = None
    _overwrite_record(store, legacy)
    with pytest.raises(NotFound):
        svc.status(sub.job_id, owner=OWNER)


FORMULAS = ['=HYPERLINK("http://x","y")', "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx", "\nx"]


@pytest.mark.integration
@pytest.mark.parametrize("escape", [True, False])
def test_results_csv_neutralises_formulas_in_echoed_text_only(
    store: bs.RedisJobStore, model: ModelService, trained_store: Path, escape: bool
) -> None:
    svc, _ = _service(store, model, trained_store)

    class Escaping(InlineDispatcher):
        def dispatch(self, job_id: str, n_chunks: int) -> None:
            for i in range(n_chunks):
                bs.score_chunk(
                    store=self.store,
                    job_id=job_id,
                    index=i,
                    predict=self.model.predict_matrix,
                    escape_formulas=escape,
                )

    svc.dispatcher = Escaping(svc.store, model)
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["note", "=HEAD", "delta", "Employed", "Bank Balance", "Annual Salary"])
    for i, text in enumerate(FORMULAS):
        w.writerow([text, "plain", -0.5 - i, 1, 0, 5000 + i])
    parsed = bs.parse_csv(out.getvalue().encode(), max_rows=100, on_error="reject")
    sub = svc.submit_file(owner=OWNER, parsed=parsed, digest="d")
    body = b"".join(svc.csv_chunks(sub.job_id, owner=OWNER)).decode()
    rows = list(csv.reader(io.StringIO(body, newline="")))
    header, cells = rows[0], rows[1:]
    assert header[1] == ("'=HEAD" if escape else "=HEAD")
    assert [r[0] for r in cells] == [("'" + t if escape else t) for t in FORMULAS]
    # numbers are not text: a negative extra column and our own outputs stay numbers
    assert [float(r[2]) for r in cells] == [-0.5 - i for i in range(len(FORMULAS))]
    assert all(0 <= float(r[header.index("probability")]) <= 1 for r in cells)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("field", "cell"),
    [
        ("employed", "1.0"),
        ("employed", "1e0"),
        ("employed", "0x1"),
        ("employed", "+1"),
        ("employed", "true"),
        ("bank_balance", "0x10"),
        ("bank_balance", "1."),
        ("bank_balance", ".5"),
        ("bank_balance", "01"),
        ("bank_balance", "+5"),
        ("bank_balance", "1_000"),
        ("bank_balance", "Infinity"),
        ("annual_salary", "NaN"),
        ("annual_salary", "1e400"),
        ("annual_salary", "5000,"),
    ],
)
def test_csv_refuses_what_json_refuses(field: str, cell: str, bundle: Any) -> None:
    """One row contract: each refused CSV cell is refused by the JSON schema too, naming the
    same field (checked against PredictionRequest itself, not restated)."""
    from pydantic import ValidationError

    from loan_default.api.schemas import PredictionRequest

    row = {"employed": "1", "bank_balance": "100", "annual_salary": "5000"}
    row[field] = cell
    cells = f'{row["employed"]},{row["bank_balance"]},"{row["annual_salary"]}"'
    data = f"employed,bank_balance,annual_salary\n{cells}\n"
    with pytest.raises(InvalidInput) as err:
        bs.parse_csv(data.encode(), max_rows=10, on_error="reject")
    assert {e["field"] for e in err.value.detail["rows"]} == {field}
    as_json = "{" + ", ".join(f'"{k}": {v}' for k, v in row.items()) + "}"
    with pytest.raises(ValidationError) as jerr:
        PredictionRequest.model_validate_json(as_json)
    errors = jerr.value.errors()
    assert all(e["type"] == "json_invalid" or e["loc"] == (field,) for e in errors)


@pytest.mark.unit
def test_csv_accepts_what_json_accepts() -> None:
    data = b"employed,bank_balance,annual_salary\n 1 ,-0,1E3\n0,1.5e2, 2.25 \n-0,0,1\n"
    parsed = bs.parse_csv(data, max_rows=10, on_error="reject")
    assert parsed.raw.tolist() == [[1, 0, 1000], [0, 150, 2.25], [0, 0, 1]]


@pytest.mark.unit
@pytest.mark.parametrize("dirty", [False, True], ids=["clean", "dirty"])
def test_large_files_are_checked_column_parallel_with_the_same_verdicts(
    dirty: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From _PARALLEL_ROWS rows the feature columns are checked on threads, a clean column is
    cast without the trim: rows, values and errors are exactly the one-thread path's."""
    from loan_default.services.batch import csv_input

    n = csv_input._PARALLEL_ROWS + 1000
    rng = np.random.default_rng(7)
    rows: list[list[Any]] = [
        [int(rng.integers(0, 2)), round(float(rng.uniform(0, 3e4)), 2), int(rng.integers(1, 9e4))]
        for _ in range(n)
    ]
    if dirty:  # every kind of refusal, and padding the general path must trim
        for i, (j, cell) in enumerate(
            [(0, "1.0"), (0, "2"), (0, ""), (1, " 12.5 "), (1, "0x10"), (1, "-1"), (2, "1e400")]
            * 20
        ):
            rows[int(rng.integers(0, n))][j] = cell if i % 7 else f'"{cell}"'
    data = csv_bytes([tuple(r) for r in rows], "Employed,Bank Balance,Annual Salary")
    parallel = bs.parse_csv(data, max_rows=n, on_error="skip", max_errors=10_000)
    monkeypatch.setattr(csv_input, "_PARALLEL_ROWS", n + 1)
    serial = bs.parse_csv(data, max_rows=n, on_error="skip", max_errors=10_000)
    assert parallel.raw.tobytes() == serial.raw.tobytes()
    assert parallel.row_errors == serial.row_errors
    assert parallel.bad_rows == serial.bad_rows
    assert (parallel.bad_rows > 0) == dirty
    assert parallel.source_rows == n


@pytest.mark.unit
def test_a_repeated_feature_column_is_refused_by_name() -> None:
    data = b"Employed,employed,bank_balance,annual_salary\n1,0,5,100\n"
    with pytest.raises(InvalidInput) as err:
        bs.parse_csv(data, max_rows=10, on_error="reject")
    assert err.value.detail["duplicate"] == "employed"


@pytest.mark.integration
def test_chunk_reads_and_writes_survive_redis_losing_its_scripts(
    private_redis: PrivateRedis,
) -> None:
    """After a Redis restart forgets the Lua scripts, the chunk transactions load them and are
    sent again (EVALSHA, no SCRIPT EXISTS round trip), with the same result. A private Redis:
    SCRIPT FLUSH is server-wide."""
    import time

    store = bs.RedisJobStore(private_redis.url, prefix="t:")
    now = time.time()
    record = bs.JobRecord(
        job_id=bs.new_job_id(),
        kind="json",
        total=200,
        chunk_sizes=[100, 100],
        created_at=now,
        expires_at=now + 3600,
    )
    store.create(record, {"in-0": b"rows-0", "in-1": b"rows-1"})
    for index in (0, 1):
        store.client.script_flush()
        begun = store.begin_chunk(record.job_id, index, [f"in-{index}"], f"{now}:host:1")
        assert (begun.done, begun.blobs) == (False, [f"rows-{index}".encode()])
        store.client.script_flush()
        assert store.put_chunk(record, index, {f"out-{index}": b"scores"}, "100:1")
    assert not store.put_chunk(record, 0, {"out-0": b"scores"}, "100:1")  # not new twice
    assert store.begin_chunk(record.job_id, 0, ["in-0"], None).done
    assert store.blobs(record.job_id, ["out-0", "out-1"]) == [b"scores", b"scores"]
    store.close()


@pytest.mark.integration
def test_status_reports_chunks_begun_by_a_worker_that_stopped(
    store: bs.RedisJobStore, model: ModelService, trained_store: Path
) -> None:
    settings = make_settings(trained_store, batch_chunk_size=100)

    class Nothing:
        def dispatch(self, job_id: str, n_chunks: int) -> None:
            return None

    svc = bs.BatchService(settings=settings, store=store, dispatcher=Nothing())
    sub = svc.submit_rows(owner=OWNER, raw=_rows(300))
    assert "awaiting_redelivery" not in svc.status(sub.job_id, owner=OWNER)
    rec = store.record(sub.job_id)
    assert rec is not None
    store.beat("host:1", 60)  # alive: its chunk is being scored
    store.begin_chunk(rec.job_id, 0, ["in-0"], "1000.5:host:1")
    store.begin_chunk(rec.job_id, 1, ["in-1"], "1000.5:host:2")  # never beat, or stopped beating
    data = svc.status(sub.job_id, owner=OWNER)
    assert data["awaiting_redelivery"]["chunks"] == 1
    # Redis redelivers once the visibility timeout has passed since the chunk was begun
    assert data["awaiting_redelivery"]["expected_at"] == utc_iso(
        1000.5 + settings.celery_visibility_timeout_s
    )
    # a chunk begun moments ago cannot be judged yet (its worker's key outlives the begin by
    # seconds), so no key is read for it, dead worker or not
    store.begin_chunk(rec.job_id, 2, ["in-2"], f"{time.time()}:host:3")
    assert svc.status(sub.job_id, owner=OWNER)["awaiting_redelivery"]["chunks"] == 1
    alive = store.alive
    store.alive = lambda ids: pytest.fail(f"worker keys read for {ids}")  # type: ignore[method-assign]
    bs.score_chunk(store=store, job_id=sub.job_id, index=0, predict=model.predict_matrix)
    store.begin_chunk(rec.job_id, 1, ["in-1"], f"{time.time()}:host:2")  # redelivered, just now
    assert "awaiting_redelivery" not in svc.status(sub.job_id, owner=OWNER)
    store.alive = alive  # type: ignore[method-assign]
    bs.score_chunk(store=store, job_id=sub.job_id, index=1, predict=model.predict_matrix)
    assert "awaiting_redelivery" not in svc.status(sub.job_id, owner=OWNER)


@pytest.mark.unit
def test_header_limits_count_a_quoted_comma_as_text() -> None:
    """Item 2: the header is measured before Arrow parses anything; a comma inside a quoted
    name is part of the name, not a new column. (Line breaks inside values are refused by
    Arrow's parser as before, a 422.)"""
    data = b'"a,b","x y",employed,bank_balance,annual_salary\n' + b"k,l,1,5,100\n"
    parsed = bs.parse_csv(data, max_rows=10, on_error="reject", max_columns=5)
    assert parsed.table.column_names[:2] == ["a,b", "x y"]
    with pytest.raises(InvalidInput) as err:
        bs.parse_csv(data, max_rows=10, on_error="reject", max_columns=4)
    assert err.value.detail == {"limit": "BATCH_CSV_MAX_COLUMNS", "max": 4, "columns": 5}
    with pytest.raises(InvalidInput) as err:
        bs.parse_csv(data, max_rows=10, on_error="reject", max_header_bytes=40)
    assert err.value.detail == {"limit": "BATCH_CSV_MAX_HEADER_BYTES", "max": 40}


@pytest.mark.integration
def test_every_batch_row_is_recorded_once_with_its_single_predictions_reasons(
    store: bs.RedisJobStore, model: ModelService, trained_store: Path, tmp_path: Path
) -> None:
    """Each chunk delivered twice: every row recorded exactly once, under an id derived from the
    job and the row, with the probability and reason codes its single prediction gets."""
    decisions = DecisionRecorder(
        DecisionStore.from_url(f"sqlite:///{tmp_path / 'decisions.db'}"), "required"
    )
    svc, dispatcher = _service(store, model, trained_store, batch_chunk_size=100)
    dispatcher.repeat, dispatcher.decisions = 2, decisions
    raw = _rows(230, seed=3)
    raw[:40, 1] = np.linspace(18_000, 30_000, 40)  # high balances: adverse rows with reasons
    sub = svc.submit_rows(owner=OWNER, raw=raw)
    assert decisions.store is not None
    records, cursor = decisions.store.query(limit=1000)
    assert cursor is None
    rec = svc.state(sub.job_id, owner=OWNER).record
    assert [r.decision_id for r in records] == batch_decision_ids(
        sub.job_id, from_unix_s(rec.created_at), 0, 230
    )
    items = _results(svc.status(sub.job_id, owner=OWNER, limit=1000))
    adverse = 0
    for (e, b, sal), r, item in zip(raw.tolist(), records, items, strict=True):
        single = model.predict_one(employed=int(e), bank_balance=b, annual_salary=sal)
        assert r.probability == single.probability
        assert r.reason_codes == single.reason_codes
        assert (r.employed, r.bank_balance, r.annual_salary) == (e, b, sal)
        assert r.saving_rate == single.features_used["saving_rate"]
        assert r.key_id == OWNER
        assert r.source == "batch"
        assert r.job_id == sub.job_id
        assert item["reasons"] == single.as_dict()["reasons"]
        assert item["decision_id"] == r.decision_id
        adverse += single.prediction
    assert adverse >= 5
    decisions.close()


@pytest.mark.integration
def test_references_reach_the_decision_record_from_json_items_and_csv_columns(
    store: bs.RedisJobStore, model: ModelService, trained_store: Path, tmp_path: Path
) -> None:
    decisions = DecisionRecorder(
        DecisionStore.from_url(f"sqlite:///{tmp_path / 'decisions.db'}"), "required"
    )
    svc, dispatcher = _service(store, model, trained_store, batch_chunk_size=100)
    dispatcher.decisions = decisions
    raw = _rows(150, seed=4)
    refs: list[str | None] = [f"APP-{i}" if i % 3 else None for i in range(150)]
    json_job = svc.submit_rows(owner=OWNER, raw=raw, references=refs)
    rows = [(f"CSV-{i}" if i != 7 else " padded", 1, 100.0 * i, 5000 + i) for i in range(120)]
    rows[9] = ("", 1, 900.0, 5009)  # an empty reference is no reference
    parsed = bs.parse_csv(
        csv_bytes(rows, "reference,Employed,Bank Balance,Annual Salary"),
        max_rows=1000,
        on_error="skip",
    )
    assert parsed.row_errors == [
        {
            "row": 8,
            "field": "reference",
            "reason": "reference must be 1 to 64 printable ASCII characters, no space at either "
            "end",
        }
    ]
    file_job = svc.submit_file(owner=OWNER, parsed=parsed, digest="refs")
    assert decisions.store is not None
    records, _ = decisions.store.query(limit=1000)
    by_job: dict[str, list[str | None]] = {}
    for r in records:
        by_job.setdefault(str(r.job_id), []).append(r.reference)
    assert by_job[json_job.job_id] == refs
    expected = [r[0] or None for i, r in enumerate(rows) if i != 7]
    assert by_job[file_job.job_id] == expected
    found, _ = decisions.store.query(reference="APP-1")
    assert [(r.job_id, r.row) for r in found] == [(json_job.job_id, 1)]
    decisions.close()


class _Renamed:
    """The served model under another version number: a challenger that is not production."""

    def __init__(self, bundle: Any, version: str) -> None:
        self.bundle, self.version = bundle, version

    def score(self, matrix: np.ndarray) -> Any:
        return self.bundle.score(matrix)


@pytest.mark.parametrize("rate", [1.0, 0.3])
def test_batch_rows_record_the_challengers_probability(
    store: bs.RedisJobStore,
    model: ModelService,
    bundle: Any,
    trained_store: Path,
    tmp_path: Path,
    rate: float,
) -> None:
    """The worker scores the chunk with the challenger too: each sampled row's record carries
    the challenger's version and its probability for that row; the results are production's."""
    decisions = DecisionRecorder(
        DecisionStore.from_url(f"sqlite:///{tmp_path / 'decisions.db'}"), "required"
    )
    settings = make_settings(trained_store)
    shadow = Challenger(
        service=ModelService(settings=settings, bundle=_Renamed(bundle, "7")),  # type: ignore[arg-type]
        production=model,
        rate=rate,
    )
    svc, dispatcher = _service(store, model, trained_store, batch_chunk_size=100)
    dispatcher.decisions, dispatcher.shadow = decisions, shadow
    raw = _rows(250, seed=5)
    sub = svc.submit_rows(owner=OWNER, raw=raw)
    assert decisions.store is not None
    records, _ = decisions.store.query(limit=1000)
    assert len(records) == 250
    chosen = sampled([r.decision_id for r in records], rate)
    expected = bundle.score_raw(raw).probability
    for r, want, is_sampled in zip(records, expected.tolist(), chosen, strict=True):
        assert r.probability == want  # production's answer, untouched
        if is_sampled:
            assert r.challenger_version == "7"
            assert r.challenger_probability == want
        else:
            assert r.challenger_probability is None
    assert chosen.all() if rate == 1.0 else 0 < chosen.sum() < 250
    items = _results(svc.status(sub.job_id, owner=OWNER, limit=1000))
    assert [i["probability"] for i in items] == expected.tolist()
    decisions.close()


@pytest.mark.unit
def test_reasons_are_encoded_once_per_distinct_list_and_read_back_per_row() -> None:
    """The codec encodes each distinct code list once per chunk; every row still gets exactly
    its own reasons, in the JSON result items and in results.csv (the per-row forms)."""
    texts = {"A": "a text", "B": "b text", "C": "c text"}
    codes = [("A", "B"), (), ("A", "B"), ("C",), (), ("B", "A")]
    n = len(codes)
    reasons = codec.reasons_json(codes, texts.__getitem__, n)
    per_row = [reasons.texts[k] for k in reasons.key.tolist()]
    assert per_row == [
        json.dumps([{"code": c, "text": texts[c]} for c in row]) if row else "[]" for row in codes
    ]
    assert len(reasons.texts) == 4  # [], A;B, C, B;A: each encoded once
    none = codec.reasons_json([], texts.__getitem__, 3)
    assert [none.texts[k] for k in none.key.tolist()] == ["[]"] * 3

    scores = Scores(
        probability=np.linspace(0.1, 0.9, n),
        prediction=np.array([1, 0, 1, 1, 0, 1], dtype=np.int8),
        risk_code=np.zeros(n, dtype=np.uint8),
    )
    # the scores blob holds them as a dictionary column, and they read back row for row
    blob = codec.encode_scores(scores, reasons)
    assert pa.types.is_dictionary(codec.table_from_ipc(blob).schema.field("reasons").type)
    back = codec.decode_results(blob)[1]
    assert [back.texts[k] for k in back.key.tolist()] == per_row
    assert [back.texts[k] for k in back.slice(2, 4).key.tolist()] == per_row[2:4]
    # a blob an earlier version wrote (a plain string column) still reads
    older = codec.table_to_ipc(
        pa.table(
            {
                "probability": scores.probability,
                "prediction": scores.prediction,
                "risk_code": scores.risk_code,
                "reasons": per_row,
            }
        )
    )
    old_back = codec.decode_results(older)[1]
    assert [old_back.texts[k] for k in old_back.key.tolist()] == per_row
    raw = np.column_stack([np.ones(n), np.full(n, 1000.0), np.full(n, 20_000.0)])
    items = codec.result_items(raw, scores, reasons, [None] * n)
    assert [[r["code"] for r in it["reasons"]] for it in items] == [list(c) for c in codes]
    columns = pa.table({"loan_id": [f"L{i}" for i in range(n)]})
    text = codec.chunk_csv(columns=columns, scores=scores, header=True, reasons=reasons).decode()
    got = [row["reason_codes"] for row in csv.DictReader(io.StringIO(text))]
    assert got == [";".join(c) for c in codes]
