"""Batch scoring jobs: records, chunked inputs and results, idempotency, paging and CSV.

Protocol-neutral: the FastAPI routes and the Celery tasks both use this module and neither
imports the other. A job is stored as

* a record (`JobRecord`: kind, row count, chunk sizes, expiry) written *before* any task is
  published, so an id we never issued is a 404 (Celery alone reports every unknown id PENDING);
* one input blob per chunk (`in-<i>`: float64 (n, 3) raw features; file jobs also `x-<i>`, the
  chunk's original columns as Arrow IPC so extra columns reach the output CSV);
* one result blob per chunk (`out-<i>`), plus `csv-<i>` for file jobs, and a `done` map
  chunk -> "rows:model_version". Writing a chunk's result is a pure overwrite of the same bytes
  followed by an idempotent map insert, so a chunk scored twice (at-least-once delivery) still
  counts once. Status and progress are derived from that map, never from Celery.

Two stores implement the same small interface: Redis (production, shared by all API pods and
workers) and a directory (the embedded, server-less mode of `make run`). Every key expires after
`BATCH_RESULT_TTL_S`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.csv as pacsv  # type: ignore[import-untyped]
from pydantic import BaseModel, Field

from loan_default.core.config import Settings
from loan_default.core.errors import (
    LoanDefaultError,
    NotFound,
    ServiceUnavailable,
)
from loan_default.features import RAW_FEATURES, build_matrix
from loan_default.services.batch_input import FieldBounds as FieldBounds
from loan_default.services.batch_input import OnError as OnError
from loan_default.services.batch_input import ParsedFile, escape_formulas
from loan_default.services.batch_input import parse_csv as parse_csv
from loan_default.services.model import BatchScores

JobStatus = Literal["PENDING", "PROGRESS", "SUCCESS", "FAILURE"]

#: Risk labels by the code stored in result blobs.
RISK_LABELS: Final = ("Low", "Medium", "High")


class PayloadTooLarge(LoanDefaultError):
    status_code = 413
    code = "payload_too_large"


class IdempotencyConflict(LoanDefaultError):
    """The Idempotency-Key was already used with a different body."""

    status_code = 409
    code = "idempotency_conflict"


class StoreUnavailable(ServiceUnavailable):
    """The job store (Redis) cannot be reached."""


# --- records ---------------------------------------------------------------------------------
class JobRecord(BaseModel):
    job_id: str
    kind: Literal["json", "file"]
    total: int
    chunk_sizes: list[int]
    created_at: float
    expires_at: float
    skipped: int = 0
    row_errors: list[dict[str, Any]] = Field(default_factory=list)
    filename: str | None = None
    owner: str | None = None
    """Key id (digest prefix) of the API key that submitted the job; only it may read the job.
    Records written before owners were recorded have none and are readable by no key."""

    @property
    def n_chunks(self) -> int:
        return len(self.chunk_sizes)

    @property
    def chunk_starts(self) -> npt.NDArray[np.int64]:
        return np.concatenate([[0], np.cumsum(self.chunk_sizes, dtype=np.int64)])


@dataclass(frozen=True, slots=True)
class JobState:
    """A record plus what the workers have written so far."""

    record: JobRecord
    done: dict[int, str]
    failure: str | None
    started: dict[int, str] = field(default_factory=dict)
    """chunk -> "unix time:worker id" of the last worker that began scoring it."""

    @property
    def completed(self) -> int:
        return sum(self.record.chunk_sizes[i] for i in self.done)

    @property
    def status(self) -> JobStatus:
        if self.failure is not None:
            return "FAILURE"
        if len(self.done) >= self.record.n_chunks:
            return "SUCCESS"
        return "PROGRESS" if self.done else "PENDING"

    @property
    def progress(self) -> int:
        """0-100; 100 only once every chunk is stored."""
        if self.status == "SUCCESS":
            return 100
        return min(99, math.floor(100 * self.completed / max(1, self.record.total)))

    @property
    def model_version(self) -> str | None:
        """Version that scored the rows; several (comma-joined) only if the alias moved mid-job."""
        versions = sorted({m.partition(":")[2] for m in self.done.values()}, key=_version_key)
        return ",".join(versions) if versions else None


def _version_key(v: str) -> tuple[int, str]:
    return (int(v), v) if v.isdigit() else (0, v)


# --- stores ----------------------------------------------------------------------------------
class JobStore(Protocol):
    def create(self, record: JobRecord, blobs: Mapping[str, bytes]) -> None: ...
    def delete(self, job_id: str) -> None: ...
    def record(self, job_id: str) -> JobRecord | None: ...
    def state(self, job_id: str) -> JobState | None: ...
    def blobs(self, job_id: str, names: Sequence[str]) -> list[bytes | None]: ...
    def is_done(self, job_id: str, index: int) -> bool: ...
    def put_chunk(
        self, record: JobRecord, index: int, blobs: Mapping[str, bytes], marker: str
    ) -> int: ...
    def set_failed(self, record: JobRecord, message: str) -> None: ...
    def mark_started(self, record: JobRecord, index: int, marker: str) -> None: ...
    def beat(self, worker_id: str, ttl_s: int) -> None: ...
    def alive(self, worker_ids: Sequence[str]) -> set[str]: ...
    def claim(self, key: str, value: str, ttl_s: int) -> str | None: ...
    def release(self, key: str) -> None: ...
    def ping(self) -> None: ...
    def close(self) -> None: ...


class RedisJobStore:
    """Job store in Redis: `<prefix><job>:rec|:done|:fail|:b:<name>`, all with the job's TTL."""

    def __init__(self, url: str, *, prefix: str) -> None:
        import redis

        self._redis = redis
        self.client = redis.Redis.from_url(
            url, socket_timeout=5, socket_connect_timeout=2, health_check_interval=10
        )
        self.prefix = prefix

    def _k(self, job_id: str, suffix: str) -> str:
        return f"{self.prefix}{job_id}:{suffix}"

    def _call(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except (self._redis.ConnectionError, self._redis.TimeoutError) as exc:
            raise StoreUnavailable(
                "the batch job store is unavailable; retry shortly",
                detail={"store": "redis"},
            ) from exc

    def create(self, record: JobRecord, blobs: Mapping[str, bytes]) -> None:
        ttl = _ttl(record)

        def run() -> None:
            pipe = self.client.pipeline(transaction=True)
            for name, data in blobs.items():
                pipe.set(self._k(record.job_id, f"b:{name}"), data, ex=ttl)
            pipe.set(self._k(record.job_id, "rec"), record.model_dump_json(), ex=ttl)
            pipe.execute()

        self._call(run)

    def delete(self, job_id: str) -> None:
        def run() -> None:
            keys = list(self.client.scan_iter(match=self._k(job_id, "*"), count=1000))
            if keys:
                self.client.delete(*keys)

        self._call(run)

    def record(self, job_id: str) -> JobRecord | None:
        raw = self._call(lambda: self.client.get(self._k(job_id, "rec")))
        return None if raw is None else JobRecord.model_validate_json(raw)

    def state(self, job_id: str) -> JobState | None:
        def run() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            pipe.get(self._k(job_id, "rec"))
            pipe.hgetall(self._k(job_id, "done"))
            pipe.get(self._k(job_id, "fail"))
            pipe.hgetall(self._k(job_id, "run"))
            return list(pipe.execute())

        rec, done, fail, run_map = self._call(run)
        if rec is None:
            return None
        return JobState(
            record=JobRecord.model_validate_json(rec),
            done={int(k): v.decode() for k, v in done.items()},
            failure=None if fail is None else fail.decode(),
            started={int(k): v.decode() for k, v in run_map.items()},
        )

    def blobs(self, job_id: str, names: Sequence[str]) -> list[bytes | None]:
        keys = [self._k(job_id, f"b:{n}") for n in names]
        return list(self._call(lambda: self.client.mget(keys))) if keys else []

    def is_done(self, job_id: str, index: int) -> bool:
        return bool(self._call(lambda: self.client.hexists(self._k(job_id, "done"), str(index))))

    def put_chunk(
        self, record: JobRecord, index: int, blobs: Mapping[str, bytes], marker: str
    ) -> int:
        ttl = _ttl(record)
        done_key = self._k(record.job_id, "done")

        def run() -> int:
            pipe = self.client.pipeline(transaction=True)
            for name, data in blobs.items():
                pipe.set(self._k(record.job_id, f"b:{name}"), data, ex=ttl)
            pipe.hset(done_key, str(index), marker)
            pipe.expire(done_key, ttl)
            pipe.hlen(done_key)
            return int(pipe.execute()[-1])

        result: int = self._call(run)
        return result

    def set_failed(self, record: JobRecord, message: str) -> None:
        self._call(
            lambda: self.client.set(self._k(record.job_id, "fail"), message, ex=_ttl(record))
        )

    def mark_started(self, record: JobRecord, index: int, marker: str) -> None:
        key = self._k(record.job_id, "run")

        def run() -> None:
            pipe = self.client.pipeline(transaction=False)
            pipe.hset(key, str(index), marker)
            pipe.expire(key, _ttl(record))
            pipe.execute()

        self._call(run)

    def beat(self, worker_id: str, ttl_s: int) -> None:
        self._call(lambda: self.client.set(f"{self.prefix}worker:{worker_id}", b"1", ex=ttl_s))

    def alive(self, worker_ids: Sequence[str]) -> set[str]:
        ids = list(worker_ids)
        if not ids:
            return set()
        found = self._call(lambda: self.client.mget([f"{self.prefix}worker:{w}" for w in ids]))
        return {w for w, v in zip(ids, found, strict=True) if v is not None}

    def claim(self, key: str, value: str, ttl_s: int) -> str | None:
        k = f"{self.prefix}idem:{key}"

        def run() -> str | None:
            if self.client.set(k, value, nx=True, ex=ttl_s):
                return None
            existing = self.client.get(k)
            return None if existing is None else _text(existing)

        result: str | None = self._call(run)
        return result

    def release(self, key: str) -> None:
        self._call(lambda: self.client.delete(f"{self.prefix}idem:{key}"))

    def ping(self) -> None:
        self._call(self.client.ping)

    def close(self) -> None:
        self.client.close()


class FileJobStore:
    """Job store in a directory (embedded mode): one directory per job, atomic file writes.

    Expired jobs are treated as missing and swept at most once a minute.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "jobs").mkdir(parents=True, exist_ok=True)
        (root / "idem").mkdir(parents=True, exist_ok=True)
        self._last_sweep = 0.0

    def _dir(self, job_id: str) -> Path:
        return self.root / "jobs" / job_id

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def create(self, record: JobRecord, blobs: Mapping[str, bytes]) -> None:
        self._sweep()
        d = self._dir(record.job_id)
        (d / "done").mkdir(parents=True, exist_ok=True)
        for name, data in blobs.items():
            self._write(d / f"b-{name}", data)
        self._write(d / "record.json", record.model_dump_json().encode())

    def delete(self, job_id: str) -> None:
        shutil.rmtree(self._dir(job_id), ignore_errors=True)

    def record(self, job_id: str) -> JobRecord | None:
        try:
            rec = JobRecord.model_validate_json((self._dir(job_id) / "record.json").read_bytes())
        except FileNotFoundError:
            return None
        return None if rec.expires_at < time.time() else rec

    def state(self, job_id: str) -> JobState | None:
        rec = self.record(job_id)
        if rec is None:
            return None
        d = self._dir(job_id)
        done: dict[int, str] = {}
        for p in (d / "done").iterdir():
            if p.name.isdigit():
                done[int(p.name)] = p.read_text()
        try:
            failure: str | None = (d / "fail").read_text()
        except FileNotFoundError:
            failure = None
        started: dict[int, str] = {}
        if (d / "run").is_dir():
            for p in (d / "run").iterdir():
                if p.name.isdigit():
                    started[int(p.name)] = p.read_text()
        return JobState(record=rec, done=done, failure=failure, started=started)

    def blobs(self, job_id: str, names: Sequence[str]) -> list[bytes | None]:
        out: list[bytes | None] = []
        for n in names:
            try:
                out.append((self._dir(job_id) / f"b-{n}").read_bytes())
            except FileNotFoundError:
                out.append(None)
        return out

    def is_done(self, job_id: str, index: int) -> bool:
        return (self._dir(job_id) / "done" / str(index)).exists()

    def put_chunk(
        self, record: JobRecord, index: int, blobs: Mapping[str, bytes], marker: str
    ) -> int:
        d = self._dir(record.job_id)
        for name, data in blobs.items():
            self._write(d / f"b-{name}", data)
        self._write(d / "done" / str(index), marker.encode())
        return sum(1 for p in (d / "done").iterdir() if p.name.isdigit())

    def set_failed(self, record: JobRecord, message: str) -> None:
        self._write(self._dir(record.job_id) / "fail", message.encode())

    def mark_started(self, record: JobRecord, index: int, marker: str) -> None:
        (self._dir(record.job_id) / "run").mkdir(exist_ok=True)
        self._write(self._dir(record.job_id) / "run" / str(index), marker.encode())

    def beat(self, worker_id: str, ttl_s: int) -> None:
        (self.root / "workers").mkdir(exist_ok=True)
        self._write(self.root / "workers" / worker_id, str(time.time() + ttl_s).encode())

    def alive(self, worker_ids: Sequence[str]) -> set[str]:
        out = set()
        for w in worker_ids:
            try:
                if float((self.root / "workers" / w).read_text()) > time.time():
                    out.add(w)
            except (OSError, ValueError):
                continue
        return out

    def claim(self, key: str, value: str, ttl_s: int) -> str | None:
        path = self.root / "idem" / hashlib.sha256(key.encode()).hexdigest()
        for _ in range(2):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                try:
                    if path.stat().st_mtime + ttl_s < time.time():
                        path.unlink(missing_ok=True)
                        continue
                    return path.read_text()
                except FileNotFoundError:
                    continue
            with os.fdopen(fd, "w") as fh:
                fh.write(value)
            return None
        return None

    def release(self, key: str) -> None:
        (self.root / "idem" / hashlib.sha256(key.encode()).hexdigest()).unlink(missing_ok=True)

    def ping(self) -> None:
        if not (self.root / "jobs").is_dir():
            raise StoreUnavailable("the batch job directory is missing")

    def close(self) -> None:
        return None

    def _sweep(self) -> None:
        now = time.time()
        if now - self._last_sweep < 60:
            return
        self._last_sweep = now
        for d in (self.root / "jobs").iterdir():
            try:
                rec = JobRecord.model_validate_json((d / "record.json").read_bytes())
            except (OSError, ValueError):
                continue
            if rec.expires_at < now:
                shutil.rmtree(d, ignore_errors=True)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _ttl(record: JobRecord) -> int:
    return max(1, math.ceil(record.expires_at - time.time()))


def is_redis_url(url: str) -> bool:
    return url.startswith(("redis://", "rediss://", "unix://"))


def store_from_settings(settings: Settings) -> JobStore:
    """BATCH_STORE_URL, else the broker's Redis, else a directory under CELERY_DATA_DIR."""
    url = settings.batch_store_url or (
        settings.celery_broker_url if is_redis_url(settings.celery_broker_url) else ""
    )
    if url:
        return RedisJobStore(url, prefix=settings.batch_key_prefix)
    return FileJobStore(Path(settings.celery_data_dir))


# --- encoding --------------------------------------------------------------------------------
def encode_raw(raw: npt.NDArray[np.float64]) -> bytes:
    return np.ascontiguousarray(raw, dtype=np.float64).tobytes()


def decode_raw(data: bytes) -> npt.NDArray[np.float64]:
    return np.frombuffer(data, dtype=np.float64).reshape(-1, len(RAW_FEATURES))


def encode_scores(scores: BatchScores) -> bytes:
    """probability float64 | prediction int8 | risk code uint8 (row-count implied by length)."""
    codes = (scores.default_risk == "High").astype(np.uint8) * 2 + (
        scores.default_risk == "Medium"
    ).astype(np.uint8)
    return b"".join(
        (
            np.ascontiguousarray(scores.probability, dtype=np.float64).tobytes(),
            np.ascontiguousarray(scores.prediction, dtype=np.int8).tobytes(),
            codes.tobytes(),
        )
    )


@dataclass(frozen=True, slots=True)
class DecodedScores:
    probability: npt.NDArray[np.float64]
    prediction: npt.NDArray[np.int8]
    risk_code: npt.NDArray[np.uint8]


def decode_scores(data: bytes) -> DecodedScores:
    n = len(data) // 10
    return DecodedScores(
        probability=np.frombuffer(data, dtype=np.float64, count=n),
        prediction=np.frombuffer(data, dtype=np.int8, count=n, offset=8 * n),
        risk_code=np.frombuffer(data, dtype=np.uint8, count=n, offset=9 * n),
    )


def result_items(raw: npt.NDArray[np.float64], scores: DecodedScores) -> list[dict[str, Any]]:
    """Result items shaped exactly like the single predict's data (minus model_version)."""
    employed, balance, salary = (raw[:, i].tolist() for i in range(3))
    rate = (raw[:, 1] / raw[:, 2]).tolist()
    risk = [RISK_LABELS[c] for c in scores.risk_code.tolist()]
    return [
        {
            "prediction": pred,
            "probability": prob,
            "default_risk": rk,
            "features_used": {
                "employed": e,
                "bank_balance": b,
                "annual_salary": s,
                "saving_rate": r,
            },
        }
        for pred, prob, rk, e, b, s, r in zip(
            scores.prediction.tolist(),
            scores.probability.tolist(),
            risk,
            employed,
            balance,
            salary,
            rate,
            strict=True,
        )
    ]


def chunk_csv(
    *, columns: Any, scores: DecodedScores, header: bool, escape: bool = True
) -> bytes:  # columns: pyarrow.Table
    """One chunk of results.csv: the input columns (extra ones carried through) + the scores.

    `escape` (BATCH_CSV_ESCAPE_FORMULAS) neutralises text cells a spreadsheet would evaluate;
    the appended score columns are ours and numeric or fixed labels, never escaped.
    """
    if escape:
        columns = escape_formulas(columns)

    risk = pa.DictionaryArray.from_arrays(
        pa.array(scores.risk_code.astype(np.int8)), pa.array(list(RISK_LABELS))
    ).cast(pa.string())
    table = (
        columns.append_column("prediction", pa.array(scores.prediction))
        .append_column("probability", pa.array(scores.probability))
        .append_column("default_risk", risk)
    )
    buf = io.BytesIO()
    pacsv.write_csv(table, buf, pacsv.WriteOptions(include_header=header, quoting_style="needed"))
    return buf.getvalue()


def raw_table(raw: npt.NDArray[np.float64]) -> Any:

    return pa.table(
        {
            "employed": pa.array(raw[:, 0].astype(np.int64)),
            "bank_balance": pa.array(raw[:, 1]),
            "annual_salary": pa.array(raw[:, 2]),
        }
    )


def table_to_ipc(table: Any) -> bytes:

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def table_from_ipc(data: bytes) -> Any:

    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


# --- the service -----------------------------------------------------------------------------
class Dispatcher(Protocol):
    """Publishes one scoring task per chunk (the Celery app in production)."""

    def dispatch(self, job_id: str, n_chunks: int) -> None: ...


class DriftSink(Protocol):
    def observe_matrix(
        self, matrix: npt.NDArray[np.floating], *, sampling_rate: float | None = None
    ) -> int: ...


@dataclass(frozen=True, slots=True)
class Submitted:
    job_id: str
    total: int
    replayed: bool = False
    skipped: int = 0
    row_errors: list[dict[str, Any]] = field(default_factory=list)


def new_job_id() -> str:
    return str(uuid.uuid4())


def valid_job_id(job_id: str) -> bool:
    try:
        return str(uuid.UUID(job_id)) == job_id.lower() and len(job_id) == 36
    except ValueError:
        return False


class BatchService:
    """Submits jobs (record first, then tasks) and reads their state back."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: JobStore,
        dispatcher: Dispatcher,
        drift: Callable[[], DriftSink | None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.dispatcher = dispatcher
        self._drift = drift

    # --- submitting ----------------------------------------------------------------------
    def submit_rows(
        self,
        *,
        raw: npt.NDArray[np.float64],
        idempotency_key: str | None = None,
        owner: str | None = None,
    ) -> Submitted:
        """A JSON job: `raw` (n, 3) float64 in RAW_FEATURES order, already validated."""
        raw = np.ascontiguousarray(raw, dtype=np.float64)
        digest = hashlib.sha256(b"json\0" + raw.tobytes()).hexdigest()
        return self._submit(
            kind="json",
            raw=raw,
            table=None,
            digest=digest,
            idempotency_key=idempotency_key,
            owner=owner,
        )

    def submit_file(
        self,
        *,
        parsed: ParsedFile,
        digest: str,
        idempotency_key: str | None = None,
        filename: str | None = None,
        owner: str | None = None,
    ) -> Submitted:
        return self._submit(
            kind="file",
            raw=parsed.raw,
            table=parsed.table,
            digest=digest,
            idempotency_key=idempotency_key,
            skipped=parsed.bad_rows,
            row_errors=parsed.row_errors,
            filename=filename,
            owner=owner,
        )

    def _submit(
        self,
        *,
        kind: Literal["json", "file"],
        raw: npt.NDArray[np.float64],
        table: Any,
        digest: str,
        idempotency_key: str | None,
        skipped: int = 0,
        row_errors: list[dict[str, Any]] | None = None,
        filename: str | None = None,
        owner: str | None = None,
    ) -> Submitted:
        job_id = new_job_id()
        ttl = self.settings.batch_result_ttl_s
        idem = None
        if idempotency_key is not None:
            idem = hashlib.sha256(idempotency_key.encode()).hexdigest()
            existing = self.store.claim(idem, f"{digest}:{job_id}", ttl)
            if existing is not None:
                old_digest, _, old_job = existing.partition(":")
                if old_digest != digest:
                    raise IdempotencyConflict(
                        "this Idempotency-Key was used with a different request body"
                    )
                rec = self.store.record(old_job)
                return Submitted(
                    job_id=old_job,
                    total=rec.total if rec else int(raw.shape[0]),
                    replayed=True,
                    skipped=rec.skipped if rec else skipped,
                    row_errors=rec.row_errors if rec else (row_errors or []),
                )
        n = int(raw.shape[0])
        size = self.settings.batch_chunk_size
        starts = list(range(0, n, size))
        now = time.time()
        record = JobRecord(
            job_id=job_id,
            kind=kind,
            total=n,
            chunk_sizes=[min(size, n - s) for s in starts],
            created_at=now,
            expires_at=now + ttl,
            skipped=skipped,
            row_errors=row_errors or [],
            filename=filename,
            owner=owner,
        )
        blobs: dict[str, bytes] = {}
        for i, s in enumerate(starts):
            blobs[f"in-{i}"] = encode_raw(raw[s : s + size])
            if table is not None:
                blobs[f"x-{i}"] = table_to_ipc(table.slice(s, size))
        try:
            self.store.create(record, blobs)
            try:
                self.dispatcher.dispatch(job_id, record.n_chunks)
            except Exception as exc:
                self.store.delete(job_id)
                raise ServiceUnavailable(
                    "the batch broker is unavailable; retry shortly",
                    detail={"broker": "unreachable"},
                ) from exc
        except ServiceUnavailable:
            if idem is not None:
                with contextlib.suppress(ServiceUnavailable):
                    self.store.release(idem)
            raise
        self._sample_drift(raw)
        return Submitted(job_id=job_id, total=n, skipped=skipped, row_errors=record.row_errors)

    def _sample_drift(self, raw: npt.NDArray[np.float64]) -> None:
        """Batch rows reach the API's PSI window at DRIFT_BATCH_SAMPLING_RATE, at submit time."""
        sink = self._drift() if self._drift is not None else None
        if sink is None or self.settings.drift_batch_sampling_rate <= 0:
            return
        sink.observe_matrix(
            build_matrix(raw), sampling_rate=self.settings.drift_batch_sampling_rate
        )

    # --- reading -------------------------------------------------------------------------
    def state(self, job_id: str, *, owner: str | None) -> JobState:
        """The job if `owner` (the caller's key id) submitted it; any other caller gets the
        same 404 as for an unknown id, so a job id cannot be probed with another key."""
        state = self.store.state(job_id) if valid_job_id(job_id) else None
        if state is None or owner is None or state.record.owner != owner:
            raise NotFound(f"no batch job {job_id!r} (unknown, or its results expired)")
        return state

    def status(
        self, job_id: str, *, owner: str | None, offset: int = 0, limit: int | None = None
    ) -> dict[str, Any]:
        state = self.state(job_id, owner=owner)
        rec = state.record
        status = state.status
        data: dict[str, Any] = {
            "job_id": rec.job_id,
            "status": status,
            "progress": state.progress,
            "total": rec.total,
            "completed": state.completed,
            "model_version": state.model_version,
            "created_at": rec.created_at,
            "expires_at": rec.expires_at,
        }
        if rec.kind == "file":
            data["skipped"] = rec.skipped
            data["row_errors"] = rec.row_errors
        if status == "FAILURE":
            data["error"] = state.failure
        elif status != "SUCCESS" and (waiting := self._awaiting_redelivery(state)):
            data["awaiting_redelivery"] = waiting
        if status == "SUCCESS":
            limit = self.settings.batch_page_max_rows if limit is None else limit
            data["offset"] = offset
            data["limit"] = limit
            data["results"] = self.results(state, offset=offset, limit=limit)
            end = offset + len(data["results"])
            data["next_offset"] = end if end < rec.total else None
            data["results_csv"] = f"/api/v1/predict/batch/{rec.job_id}/results.csv"
        return data

    def results(self, state: JobState, *, offset: int, limit: int) -> list[dict[str, Any]]:
        rec = state.record
        if offset >= rec.total or limit <= 0:
            return []
        starts = rec.chunk_starts
        end = min(rec.total, offset + limit)
        first = int(np.searchsorted(starts, offset, side="right") - 1)
        last = int(np.searchsorted(starts, end - 1, side="right") - 1)
        names: list[str] = []
        for i in range(first, last + 1):
            names += [f"in-{i}", f"out-{i}"]
        blobs = self.store.blobs(rec.job_id, names)
        items: list[dict[str, Any]] = []
        for k, i in enumerate(range(first, last + 1)):
            raw_b, out_b = blobs[2 * k], blobs[2 * k + 1]
            if raw_b is None or out_b is None:
                raise NotFound(f"the results of batch job {rec.job_id!r} expired")
            lo = max(offset, int(starts[i])) - int(starts[i])
            hi = min(end, int(starts[i + 1])) - int(starts[i])
            scores = decode_scores(out_b)
            items += result_items(
                decode_raw(raw_b)[lo:hi],
                DecodedScores(
                    scores.probability[lo:hi], scores.prediction[lo:hi], scores.risk_code[lo:hi]
                ),
            )
        return items

    def _awaiting_redelivery(self, state: JobState) -> dict[str, Any] | None:
        """Chunks begun by a worker that has stopped beating (SIGKILLed, host lost).

        Redis hands such a chunk to another worker only once CELERY_VISIBILITY_TIMEOUT_S has
        passed since it was delivered; the embedded broker, when a worker next starts.
        """
        begun = {
            i: (float(ts), worker)
            for i, (ts, _, worker) in ((i, m.partition(":")) for i, m in state.started.items())
            if i not in state.done
        }
        if not begun:
            return None
        alive = self.store.alive(sorted({w for _, w in begun.values()}))
        lost = [ts for ts, w in begun.values() if w not in alive]
        if not lost:
            return None
        redis_broker = is_redis_url(self.settings.celery_broker_url)
        return {
            "chunks": len(lost),
            "expected_at": (
                max(lost) + self.settings.celery_visibility_timeout_s if redis_broker else None
            ),
            "reason": "the worker scoring these chunks stopped; "
            + (
                "the broker redelivers them once CELERY_VISIBILITY_TIMEOUT_S has passed"
                if redis_broker
                else "they are re-dispatched when a worker starts"
            ),
        }

    def csv_chunks(self, job_id: str, *, owner: str | None) -> Iterator[bytes]:
        """results.csv of a finished job, one chunk at a time (the caller streams it)."""
        state = self.state(job_id, owner=owner)
        if state.status != "SUCCESS":
            raise NotFound(
                f"batch job {job_id} has no results yet (status {state.status})",
                detail={"status": state.status},
            )
        return self._iter_csv(state.record)

    def _iter_csv(self, rec: JobRecord) -> Iterator[bytes]:
        for i in range(rec.n_chunks):
            if rec.kind == "file":
                (data,) = self.store.blobs(rec.job_id, [f"csv-{i}"])
                if data is None:
                    return
                yield data
            else:
                raw_b, out_b = self.store.blobs(rec.job_id, [f"in-{i}", f"out-{i}"])
                if raw_b is None or out_b is None:
                    return
                yield chunk_csv(
                    columns=raw_table(decode_raw(raw_b)),
                    scores=decode_scores(out_b),
                    header=i == 0,
                )


# --- the worker's side -----------------------------------------------------------------------
def score_chunk(
    *,
    store: JobStore,
    job_id: str,
    index: int,
    predict: Callable[[npt.NDArray[np.float32]], BatchScores],
    worker_id: str | None = None,
    escape_formulas: bool = True,
) -> str:
    """Score chunk `index` of `job_id` and store its result; safe to run more than once.

    `worker_id` marks the chunk as begun by this worker (its heartbeat tells the API whether
    the chunk is still being scored). Returns what happened: `scored`, `already-done`,
    `failed-job` or `expired`.
    """
    record = store.record(job_id)
    if record is None:
        return "expired"
    if store.is_done(job_id, index):
        return "already-done"
    names = [f"in-{index}"] + ([f"x-{index}"] if record.kind == "file" else [])
    blobs = store.blobs(job_id, names)
    if blobs[0] is None:
        return "expired"
    if worker_id is not None:
        store.mark_started(record, index, f"{time.time()}:{worker_id}")
    raw = decode_raw(blobs[0])
    scores = predict(build_matrix(raw))
    out: dict[str, bytes] = {f"out-{index}": encode_scores(scores)}
    if record.kind == "file" and blobs[1] is not None:
        out[f"csv-{index}"] = chunk_csv(
            columns=table_from_ipc(blobs[1]),
            scores=decode_scores(out[f"out-{index}"]),
            header=index == 0,
            escape=escape_formulas,
        )
    store.put_chunk(record, index, out, f"{raw.shape[0]}:{scores.model_version}")
    return "scored"


def fail_job(*, store: JobStore, job_id: str, message: str) -> None:
    record = store.record(job_id)
    if record is not None:
        store.set_failed(record, message)
