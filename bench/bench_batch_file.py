"""End-to-end throughput of a 1,000,000-row CSV: upload -> SUCCESS -> results.csv downloaded.

Usage: `.venv/bin/python bench/bench_batch_file.py [--rows 1000000] [--workers 2] [--store DIR]
[--decisions sqlite|postgresql]`

Starts a private redis-server, a temp trained MLflow store (unless --store), the API and two
Celery worker processes (`loan-default worker --pool solo`, one per core), writes a portfolio CSV
with an id column, then times the upload (202), the scoring (polling every 50 ms) and the
streamed download of results.csv, checks the output row count and ids, and prints rows/s and the
peak RSS of each worker and of the API. Target: >= 100,000 rows/s end to end.
`--decisions postgresql` records every row in a fresh PostgreSQL database (issue 13's target).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from batch_stack import Stack, peak_rss_mib


def write_portfolio(path: Path, n: int) -> None:
    rng = np.random.default_rng(42)
    table = pa.table(
        {
            "loan_id": pa.array(np.arange(n)),
            "Employed": pa.array(rng.integers(0, 2, n)),
            "Bank Balance": pa.array(np.round(rng.uniform(0, 30_000, n), 2)),
            "Annual Salary": pa.array(np.round(rng.uniform(5_000, 90_000, n), 2)),
        }
    )
    pacsv.write_csv(table, str(path), pacsv.WriteOptions(quoting_style="needed"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--chunk-size", type=int, default=50_000)
    ap.add_argument("--store", type=Path, help="an MLflow store dir with a promoted model")
    ap.add_argument(
        "--decisions",
        choices=["sqlite", "postgresql"],
        default="sqlite",
        help="where every row's decision is recorded: a SQLite file of the run's own, or a fresh "
        "PostgreSQL database on --pg-url (dropped afterwards)",
    )
    ap.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = ap.parse_args()
    with contextlib.ExitStack() as resources:
        decisions = None
        if args.decisions == "postgresql":
            # imported here: the module needs issue 13's package, which `compare.py
            # --same-script` runs against older trees without
            from bench_decision_store import pg_database

            decisions = resources.enter_context(pg_database(args.pg_url))
            if decisions is None:
                raise SystemExit(f"PostgreSQL does not answer at {args.pg_url}")
        run(args, decisions)


def run(args: argparse.Namespace, decisions: str | None) -> None:
    with Stack(
        workers=args.workers,
        chunk_size=args.chunk_size,
        store=args.store,
        decision_store_url=decisions,
    ) as stack:
        src = stack.tmp / "portfolio.csv"
        write_portfolio(src, args.rows)
        out = stack.tmp / "results.csv"
        with stack.client() as client:
            # warm-up: a small file, so both workers have scored once
            small = stack.tmp / "small.csv"
            write_portfolio(small, 200_000)
            with small.open("rb") as fh:
                job = client.post(
                    "/api/v1/predict/batch/file", files={"file": ("s.csv", fh, "text/csv")}
                ).json()["data"]["job_id"]
            while client.get(f"/api/v1/predict/batch/{job}?limit=1").json()["data"][
                "status"
            ] not in {"SUCCESS", "FAILURE"}:
                time.sleep(0.05)

            t0 = time.perf_counter()
            with src.open("rb") as fh:
                r = client.post(
                    "/api/v1/predict/batch/file", files={"file": ("p.csv", fh, "text/csv")}
                )
            t_upload = time.perf_counter() - t0
            assert r.status_code == 202, r.text
            job = r.json()["data"]["job_id"]
            while True:
                data = client.get(f"/api/v1/predict/batch/{job}?limit=1").json()["data"]
                if data["status"] in {"SUCCESS", "FAILURE"}:
                    break
                time.sleep(0.05)
            assert data["status"] == "SUCCESS", data
            t_scored = time.perf_counter() - t0
            with (
                client.stream("GET", f"/api/v1/predict/batch/{job}/results.csv") as resp,
                out.open("wb") as fh,
            ):
                assert resp.status_code == 200
                for block in resp.iter_bytes(1 << 20):
                    fh.write(block)
            total = time.perf_counter() - t0
        rss = [peak_rss_mib(w.pid) for w in stack.workers]
        api_rss = peak_rss_mib(stack.api.pid)
        ids = pacsv.read_csv(str(out)).column("loan_id").to_numpy()
        assert len(ids) == args.rows
        assert (ids == np.arange(args.rows)).all()
        size_mb = src.stat().st_size / 1e6
        out_mb = out.stat().st_size / 1e6
    n = args.rows
    print(
        f"batch file: {n:,} rows ({size_mb:.0f} MB CSV), {args.workers} worker processes, "
        f"chunks of {args.chunk_size:,}, Redis broker, "
        + (
            "decisions not recorded (DECISION_RECORDING=off)"
            if os.environ.get("DECISION_RECORDING", "").lower() == "off"
            else f"every row recorded ({args.decisions})"
        )
    )
    print(f"  upload, parse, validate, enqueue (until accepted)  {t_upload:5.2f} s")
    print(f"  scored (SUCCESS observed)                  {t_scored - t_upload:6.2f} s")
    print(
        f"  results.csv streamed                       {total - t_scored:6.2f} s ({out_mb:.0f} MB)"
    )
    print(
        f"  end to end                                 {total:6.2f} s  ->  {n / total:,.0f} rows/s"
    )
    print(
        f"  worker peak RSS: {', '.join(f'{r:.0f} MiB' for r in rss)}; "
        f"API peak RSS {api_rss:.0f} MiB"
    )
    print(f"  target >= 100,000 rows/s: {'MET' if n / total >= 100_000 else 'MISSED'}")


if __name__ == "__main__":
    main()
