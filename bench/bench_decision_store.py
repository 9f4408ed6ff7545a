"""Decision store throughput, SQLite and PostgreSQL side by side, in one run.

Usage: `.venv/bin/python bench/bench_decision_store.py [--rows 1000000] [--writers 2]
[--callers 16] [--per-caller 250] [--pg-url postgresql://postgres@127.0.0.1:5432/test]`

1. Bulk, the batch worker's path: `--writers` processes each write their share of `--rows` in
   chunks of `--chunk` rows (one transaction a chunk), all starting together; rows/s is total
   rows over the wall time from the start signal to the last commit. `record_batch` takes a
   chunk as columns (`DecisionBatch`), `record_many` as `DecisionRecord` objects (fewer rows by
   default: building the objects is the slow part). The data is built before the clock starts
   (its cost is printed separately), and the CPU each writer and its PostgreSQL backend used is
   printed per row: on a busy machine wall time measures the neighbours too, CPU time much less.
   A second pass writes the same rows again (a redelivered job): nothing is new, timed too.
   Target: >= 100,000 rows/s into PostgreSQL for 1M rows with 2 writers.
2. Single records (`record`, the predict path): `--callers` asyncio tasks each await
   `--per-caller` records one after another (nothing else to do in between, so this measures
   the commit path alone), with group commit (the defaults), with a 2 ms linger, with SQLite's
   synchronous=NORMAL, and with one commit per record (`max_batch=1`, otherwise identical);
   records/s, records per commit and p99 latency.

PostgreSQL runs in a fresh database `dec_bench_<hex>` (dropped afterwards); it is skipped when
nothing answers at `--pg-url`. SQLite runs in a temp directory with the default synchronous=FULL.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from loan_default.services.decisions import (
    DecisionBatch,
    DecisionRecord,
    DecisionStore,
    batch_decision_ids,
    decided_at_of,
    new_decision_id,
)


def batch_records(job_id: str, n: int, created: datetime) -> list[DecisionRecord]:
    ids = batch_decision_ids(job_id, created, 0, n)
    return [
        DecisionRecord(
            decision_id=did,
            decided_at=created,
            request_id=None,
            key_id="0123456789abcdef",
            reference=f"loan-{i}",
            source="batch",
            job_id=job_id,
            row=i,
            employed=float(i % 2),
            bank_balance=1000.0 + i,
            annual_salary=40_000.0 + i,
            saving_rate=(1000.0 + i) / (40_000.0 + i),
            model_name="loan-default",
            model_version="7",
            model_alias="production",
            probability=(i % 1000) / 1000,
            threshold=0.42,
            prediction=int(i % 1000 >= 420),
            risk_band="Low",
            reason_codes=("BALANCE_HIGH", "SAVING_RATE_HIGH") if i % 1000 >= 420 else (),
        )
        for i, did in enumerate(ids)
    ]


def single_record(i: int) -> DecisionRecord:
    did = new_decision_id()
    return DecisionRecord(
        decision_id=did,
        decided_at=decided_at_of(did),
        request_id=uuid.uuid4().hex,
        key_id="0123456789abcdef",
        reference=f"app-{i}",
        source="predict",
        job_id=None,
        row=None,
        employed=1.0,
        bank_balance=1234.5,
        annual_salary=45_000.0,
        saving_rate=1234.5 / 45_000.0,
        model_name="loan-default",
        model_version="7",
        model_alias="production",
        probability=0.031,
        threshold=0.42,
        prediction=0,
        risk_band="Low",
        reason_codes=(),
    )


def columnar(job_id: str, start: int, n: int, created: datetime) -> DecisionBatch:
    """A chunk as the batch worker holds it: numpy columns plus what the job shares."""
    i = np.arange(start, start + n, dtype=np.int64)
    adverse = i % 1000 >= 420
    return DecisionBatch(
        job_id=job_id,
        created_at=created,
        key_id="0123456789abcdef",
        model_name="loan-default",
        model_version="7",
        model_alias="production",
        threshold=0.42,
        rows=i,
        employed=(i % 2).astype(np.float64),
        bank_balance=1000.0 + i,
        annual_salary=40_000.0 + i,
        saving_rate=(1000.0 + i) / (40_000.0 + i),
        probability=(i % 1000) / 1000,
        prediction=adverse.astype(np.int8),
        risk_band=["Low"] * n,
        reason_codes=[("BALANCE_HIGH", "SAVING_RATE_HIGH") if a else () for a in adverse],
        references=[f"loan-{r}" for r in range(start, start + n)],
    )


def _backend_cpu_s(pid: int | None) -> float:
    """CPU seconds a local PostgreSQL backend has used (0 for SQLite, which runs in-process)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _writer(url: str, mode: str, rows: int, chunk: int, ready: Barrier, out: mp.Queue) -> None:  # type: ignore[type-arg]
    created = datetime.now(UTC).replace(microsecond=0)
    job = str(uuid.uuid4())
    t0 = time.perf_counter()
    if mode == "record_batch":
        work: list[Any] = [
            columnar(job, i, min(chunk, rows - i), created) for i in range(0, rows, chunk)
        ]
    else:
        records = batch_records(job, rows, created)
        work = [records[i : i + chunk] for i in range(0, rows, chunk)]
    build_us = (time.perf_counter() - t0) / rows * 1e6
    store = DecisionStore.from_url(url, migrate=False)
    write = store.record_batch if mode == "record_batch" else store.record_many
    pid = None
    if store.type == "postgresql":  # the pool hands this one connection to every write
        with store.engine.connect() as conn:
            pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
    ready.wait()
    cpu0, server0 = time.process_time(), _backend_cpu_s(pid)
    written = sum(write(part) for part in work)
    cpu = (time.process_time() - cpu0, _backend_cpu_s(pid) - server0)
    ready.wait()  # the redelivery pass starts together too
    again = sum(write(part) for part in work)
    second = time.monotonic()
    store.close()
    out.put((written, again, second, build_us, cpu))


def bench_bulk(label: str, url: str, mode: str, rows: int, writers: int, chunk: int) -> None:
    DecisionStore.from_url(url).close()  # migrate once, before the writers start
    ctx = mp.get_context("spawn")
    ready, out = ctx.Barrier(writers + 1), ctx.Queue()
    share = rows // writers
    procs = [
        ctx.Process(target=_writer, args=(url, mode, share, chunk, ready, out))
        for _ in range(writers)
    ]
    for p in procs:
        p.start()
    ready.wait()  # every writer has built its data and connected
    t0 = time.monotonic()
    ready.wait()  # every writer has finished the first pass
    t1 = time.monotonic()
    results: list[tuple[int, int, float, float, tuple[float, float]]] = [out.get() for _ in procs]
    for p in procs:
        p.join()
    written = sum(r[0] for r in results)
    again = sum(r[1] for r in results)
    t_second = max(r[2] for r in results) - t1
    total = share * writers
    what = "DecisionBatch columns" if mode == "record_batch" else "DecisionRecord objects"
    took = t1 - t0
    print(
        f"{label} {mode}: {total / took:.0f} rows/s "
        f"({written} of {total} new, {writers} writers, {took:.2f} s)"
    )
    print(f"{label} {mode} redelivered: {total / t_second:.0f} rows/s ({again} new)")
    print(f"{label} {mode} building {what}: {statistics.mean(r[3] for r in results):.2f} us/row")
    client = sum(r[4][0] for r in results) / total * 1e6
    server = sum(r[4][1] for r in results) / total * 1e6
    print(f"{label} {mode} cpu per row: client {client:.2f} us, database {server:.2f} us")


async def _callers(store: DecisionStore, callers: int, per_caller: int) -> list[float]:
    latencies: list[float] = []

    async def caller(c: int) -> None:
        for i in range(per_caller):
            rec = single_record(c * per_caller + i)
            t = time.perf_counter()
            await store.record(rec)
            latencies.append(time.perf_counter() - t)

    await asyncio.gather(*(caller(c) for c in range(callers)))
    return latencies


def bench_single(label: str, url: str, callers: int, per_caller: int) -> None:
    modes: list[tuple[str, dict[str, Any]]] = [
        ("group commit", {}),
        ("group commit, 2 ms linger", {"flush_interval_ms": 2}),
        ("one commit per record", {"max_batch": 1}),
    ]
    if label == "sqlite":
        modes.insert(1, ("group commit, synchronous=NORMAL", {"synchronous": "NORMAL"}))
    for mode, options in modes:
        store = DecisionStore.from_url(url, **options)
        asyncio.run(_callers(store, callers, 5))  # warm-up
        before = store.stats()["commits"]
        t0 = time.perf_counter()
        lat = asyncio.run(_callers(store, callers, per_caller))
        elapsed = time.perf_counter() - t0
        commits = store.stats()["commits"] - before
        store.close()
        n = callers * per_caller
        p99 = statistics.quantiles(lat, n=100)[98] * 1000
        print(
            f"{label} single {mode}: {n / elapsed:.0f} records/s "
            f"({callers} callers, {n / commits:.1f} records/commit, p99 {p99:.2f} ms)"
        )


@contextmanager
def pg_database(admin_url: str) -> Iterator[str | None]:
    """A fresh database `dec_bench_<hex>` (None when nothing answers), dropped afterwards."""
    name = f"dec_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(
        sa.make_url(admin_url).set(drivername="postgresql+psycopg2"), isolation_level="AUTOCOMMIT"
    )
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        print(f"postgresql: skipped, nothing answers at {admin_url} ({type(exc).__name__})")
        yield None
        return
    try:
        yield sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def store_url(kind: str, tmp: Path, pg_admin: str) -> Iterator[str | None]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp / f'{uuid.uuid4().hex}.db'}"
    else:
        with pg_database(pg_admin) as url:
            yield url


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--record-rows", type=int, default=200_000, help="rows for record_many")
    ap.add_argument("--writers", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=50_000)
    ap.add_argument("--callers", type=int, default=16)
    ap.add_argument("--per-caller", type=int, default=250)
    ap.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test")
    ap.add_argument("--only", choices=["sqlite", "postgresql"])
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("sqlite", "postgresql"):
            if args.only and args.only != kind:
                continue
            for mode, rows in (("record_batch", args.rows), ("record_many", args.record_rows)):
                with store_url(kind, Path(tmp), args.pg_url) as url:
                    if url is None:
                        break
                    bench_bulk(kind, url, mode, rows, args.writers, args.chunk)
            with store_url(kind, Path(tmp), args.pg_url) as url:
                if url is not None:
                    bench_single(kind, url, args.callers, args.per_caller)


if __name__ == "__main__":
    main()
