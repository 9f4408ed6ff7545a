"""Outcome upload throughput, SQLite and PostgreSQL side by side, in one run.

Usage: `.venv/bin/python bench/bench_outcomes.py [--rows 1000000] [--reference-rows 100000]
[--pg-url postgresql://postgres@127.0.0.1:5432/postgres]`

For each store: `--rows` batch decisions are recorded first (not timed: `record_batch`), then
outcomes for all of them are recorded in one `record_outcomes` call (the path a 1M-row CSV
upload takes once parsed), by decision id; then the same upload again (every item `unchanged`);
then `--reference-rows` outcomes by `reference` on a fresh store (each resolves to the latest
decision with that reference). Rows/s is items over the wall time of the call, which includes
staging, the look-ups, the insert and the conflict join. The columns are built before the
clock starts. Also the read side: `outcomes_joined` over all of them, rows/s; and first, once,
the parse of a `--rows`-row CSV upload (`parse_outcomes_csv`), which the file route adds.

PostgreSQL runs in a fresh database `dec_bench_<hex>` (dropped afterwards); it is skipped when
nothing answers at `--pg-url`. SQLite runs in a temp directory with synchronous=FULL.

`--http`: end to end instead, the way a lender sends a month: a `--rows`-row CSV by decision id
posted to `POST /api/v1/outcomes/file` of a real `loan-default serve` (1 worker, ENVIRONMENT=
production, a `--rows`-decision SQLite store seeded first, not timed); upload to 200, rows/s.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from bench_decision_store import columnar, pg_database

from loan_default.services.decisions import DecisionStore, batch_decision_ids
from loan_default.services.decisions.outcome_input import parse_outcomes_csv
from loan_default.services.decisions.outcomes import OutcomeColumns

CHUNK = 100_000


def fill(store: DecisionStore, job_id: str, n: int, created: datetime) -> None:
    for start in range(0, n, CHUNK):
        store.record_batch(columnar(job_id, start, min(CHUNK, n - start), created))


def by_id(job_id: str, n: int, created: datetime) -> OutcomeColumns:
    rng = np.random.default_rng(7)
    ids = batch_decision_ids(job_id, created, 0, n)
    observed = np.datetime64("2026-06-30T00:00:00", "us")
    return OutcomeColumns(
        decision_ids=ids,
        references=[None] * n,
        defaulted=rng.random(n) < 0.03,
        observed_at=np.full(n, observed),
    )


def by_reference(n: int) -> OutcomeColumns:
    observed = np.datetime64("2026-06-30T00:00:00", "us")
    return OutcomeColumns(
        decision_ids=[None] * n,
        references=[f"loan-{i}" for i in range(n)],
        defaulted=np.zeros(n, dtype=np.bool_),
        observed_at=np.full(n, observed),
    )


def timed(label: str, n: int, call):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    result = call()
    dt = time.perf_counter() - t0
    print(f"  {label:<34} {n:>9,} rows {dt:8.2f} s {n / dt:>12,.0f} rows/s")
    return result


def run(name: str, url_for: str, rows: int, reference_rows: int) -> None:
    print(f"{name}:")
    created = datetime(2026, 5, 12, 9, 30, tzinfo=UTC)
    store = DecisionStore.from_url(url_for)
    try:
        fill(store, "bench-outcomes", rows, created)
        columns = by_id("bench-outcomes", rows, created)
        r = timed(
            "record_outcomes by id (new)", rows, lambda: store.record_outcomes(columns, key_id="k")
        )
        assert r.inserted == rows, r
        r = timed(
            "record_outcomes by id (re-sent)",
            rows,
            lambda: store.record_outcomes(columns, key_id="k"),
        )
        assert r.unchanged == rows, r
        start, end = created - timedelta(days=1), created + timedelta(days=1)
        joined = timed("outcomes_joined (read)", rows, lambda: store.outcomes_joined(start, end))
        assert len(joined) == rows
        assert (joined.defaulted >= 0).all()
        refs = by_reference(reference_rows)
        fill(store, "bench-outcomes-2", reference_rows, created + timedelta(hours=1))
        r = timed(
            "record_outcomes by reference",
            reference_rows,
            lambda: store.record_outcomes(refs, key_id="k"),
        )
        # every reference now names the second job's decision, which has no outcome yet
        assert r.inserted == reference_rows, r
    finally:
        store.close()


def parse_csv(rows: int) -> None:
    """The upload's parse alone: a `rows`-row CSV by id through Arrow and the checks."""
    created = datetime(2026, 5, 12, 9, 30, tzinfo=UTC)
    ids = batch_decision_ids("bench-outcomes", created, 0, rows)
    body = "decision_id,defaulted,observed_at\n" + "".join(
        f"{d},{i % 2},2026-06-30T12:00:00Z\n" for i, d in enumerate(ids)
    )
    data = body.encode()
    print(f"CSV parse ({len(data) / 1e6:.0f} MB):")
    parsed = timed("parse_outcomes_csv", rows, lambda: parse_outcomes_csv(data, max_rows=rows))
    assert len(parsed) == rows


def http_upload(rows: int) -> None:
    """POST a `rows`-row outcome CSV to a real server and time it to the 200."""
    import os

    import httpx
    from batch_stack import free_port
    from bench_api import KEY, serve_command, server

    created = datetime(2026, 5, 12, 9, 30, tzinfo=UTC)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'd.db'}"
        store = DecisionStore.from_url(url)
        fill(store, "bench-outcomes", rows, created)
        store.close()
        ids = batch_decision_ids("bench-outcomes", created, 0, rows)
        body = (
            "decision_id,defaulted,observed_at\n"
            + "".join(f"{d},{i % 2},2026-06-30T12:00:00Z\n" for i, d in enumerate(ids))
        ).encode()
        port = free_port()
        env = {
            **os.environ,
            "ENVIRONMENT": "production",
            "API_KEYS": f"{KEY}:outcomes",
            "DECISION_STORE_URL": url,
            "RATE_LIMIT_PER_MINUTE": "1000000",
            "LOG_LEVEL": "WARNING",
        }
        base = f"http://127.0.0.1:{port}"
        cmd = serve_command(port)
        with server(cmd, env, f"{base}/healthz", Path(tmp) / "server.log"):
            t0 = time.perf_counter()
            r = httpx.post(
                f"{base}/api/v1/outcomes/file",
                files={"file": ("june.csv", body, "text/csv")},
                headers={"X-API-Key": KEY},
                timeout=600,
            )
            dt = time.perf_counter() - t0
        assert r.status_code == 200, r.text[:500]
        assert r.json()["data"]["inserted"] == rows, r.json()
        print(
            f"HTTP: POST /api/v1/outcomes/file, {rows:,} rows ({len(body) / 1e6:.0f} MB) -> 200 "
            f"in {dt:.2f} s, {rows / dt:,.0f} rows/s (SQLite, 1 uvicorn worker)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reference-rows", type=int, default=100_000)
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--only", choices=["sqlite", "postgresql"])
    parser.add_argument("--http", action="store_true", help="end to end through a real server")
    args = parser.parse_args()
    if args.http:
        http_upload(args.rows)
        return
    parse_csv(args.rows)
    if args.only != "postgresql":
        with tempfile.TemporaryDirectory() as tmp:
            run(
                "SQLite (synchronous=FULL)",
                f"sqlite:///{Path(tmp) / 'd.db'}",
                args.rows,
                args.reference_rows,
            )
    if args.only != "sqlite":
        with pg_database(args.pg_url) as url:
            if url is None:
                print("PostgreSQL: skipped (nothing answers)")
            else:
                run("PostgreSQL", url, args.rows, args.reference_rows)


if __name__ == "__main__":
    main()
