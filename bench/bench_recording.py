"""Predict throughput with the decision record on vs off, side by side in one run.

Usage: `.venv/bin/python bench/bench_recording.py [--duration 10] [--connections 16] [--rounds 2]`

Starts `loan-default serve` (1 uvicorn worker, ENVIRONMENT=production) on the repo's MLflow store
(`make model`) once per mode: DECISION_RECORDING=off, SQLite (FULL and NORMAL), and PostgreSQL on
127.0.0.1:5432 (a database of its own, dropped afterwards; skipped if nothing answers), all with
the default writer child process; `--modes` may add `sqlite-thread` and `postgresql-thread`
(DECISION_WRITER=thread) for the side-by-side comparison. wrk drives
each with one thread at 16 connections; the modes alternate for `--rounds` rounds. The best
round of each is kept, and each round's ratio to the `off` run of the same round is printed with
their median. Half the bodies are adverse (reasons computed and recorded), half not.
Prints req/s, p50/p99 and each mode's ratio to `off` (target: >= 75 %, p99 <= 15 ms).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

import httpx
from batch_stack import free_port
from bench_api import KEY, run_wrk, serve_command, server

# two applicants, one adverse (high card balance): wrk alternates them per request
LUA = """
local bodies = {
  '{"employed": 1, "bank_balance": 8754.36, "annual_salary": 532339.56}',
  '{"employed": 1, "bank_balance": 26000.0, "annual_salary": 30000.0}',
}
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-Key"] = "%s"
request = function()
  i = i + 1
  return wrk.format(nil, nil, nil, bodies[(i %% 2) + 1])
end
"""


ADVERSE = b'{"employed": 1, "bank_balance": 26000.0, "annual_salary": 30000.0}'


def _pg_database() -> tuple[str, str] | None:
    try:
        import sqlalchemy as sa

        admin = sa.create_engine(
            "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres",
            isolation_level="AUTOCOMMIT",
            connect_args={"connect_timeout": 3},
        )
        name = f"bench_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        return f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}", name
    except Exception as exc:
        print(f"PostgreSQL skipped: {type(exc).__name__}")
        return None


def _drop(name: str) -> None:
    import sqlalchemy as sa

    admin = sa.create_engine(
        "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--adverse",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="alternate an adverse body (reasons computed) with a plain one (default), or not",
    )
    parser.add_argument("--modes", default="off,sqlite-full,sqlite-normal,postgresql")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install wrk")
    tmp = Path(tempfile.mkdtemp(prefix="bench-recording-"))
    script = tmp / "post.lua"
    script.write_text(
        LUA % KEY
        if args.adverse
        else LUA.replace('26000.0, "annual_salary": 30000.0', '8754.36, "annual_salary": 532339.56')
        % KEY
    )
    base_env = {
        **os.environ,
        "ENVIRONMENT": "production",
        "API_KEYS": KEY,
        "RATE_LIMIT_PER_MINUTE": "1000000000",
        "LOG_LEVEL": "WARNING",
    }
    base_env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    modes: dict[str, dict[str, str]] = {
        "off": {"DECISION_RECORDING": "off"},
        "sqlite-full": {
            "DECISION_STORE_URL": f"sqlite:///{tmp / 'full.db'}",
            "DECISION_SQLITE_SYNCHRONOUS": "FULL",
        },
        "sqlite-normal": {
            "DECISION_STORE_URL": f"sqlite:///{tmp / 'normal.db'}",
            "DECISION_SQLITE_SYNCHRONOUS": "NORMAL",
        },
        # the group commits on a thread of the API process instead of the writer child
        "sqlite-thread": {
            "DECISION_STORE_URL": f"sqlite:///{tmp / 'thread.db'}",
            "DECISION_SQLITE_SYNCHRONOUS": "FULL",
            "DECISION_WRITER": "thread",
        },
    }
    wanted = set(args.modes.split(","))
    modes = {k: v for k, v in modes.items() if k in wanted}
    pg = _pg_database() if wanted & {"postgresql", "postgresql-thread"} else None
    if pg is not None:
        modes["postgresql"] = {"DECISION_STORE_URL": pg[0]}
        if "postgresql-thread" in wanted:
            modes["postgresql-thread"] = {"DECISION_STORE_URL": pg[0], "DECISION_WRITER": "thread"}
    best: dict[str, dict[str, float]] = {}
    every: dict[str, list[dict[str, float]]] = {name: [] for name in modes}
    try:
        for _ in range(args.rounds):
            for name, extra in modes.items():
                port = free_port()
                url = f"http://127.0.0.1:{port}"
                with server(
                    serve_command(port), {**base_env, **extra}, f"{url}/readyz", tmp / f"{name}.log"
                ):
                    r = httpx.post(
                        f"{url}/api/v1/predict",
                        content=ADVERSE,
                        headers={"X-API-Key": KEY, "Content-Type": "application/json"},
                    )
                    assert r.status_code == 200, r.text
                    assert (r.json()["data"]["decision_id"] is None) == (name == "off")
                    assert r.json()["data"]["reasons"], "the adverse body carries reasons"
                    assert r.json()["data"]["prediction"] == 1
                    run_wrk(
                        f"{url}/api/v1/predict",
                        duration=2,
                        connections=args.connections,
                        script=script,
                    )
                    res = run_wrk(
                        f"{url}/api/v1/predict",
                        duration=args.duration,
                        connections=args.connections,
                        script=script,
                    )
                every[name].append(res)
                if name not in best or res["rps"] > best[name]["rps"]:
                    best[name] = res
    finally:
        if pg is not None:
            _drop(pg[1])
        shutil.rmtree(tmp, ignore_errors=True)
    off = best["off"]["rps"]
    print(
        f"\n== predict, recording on vs off: wrk -t1 -c{args.connections} -d{args.duration}s, "
        f"1 uvicorn worker, best of {args.rounds} alternating rounds, "
        f"{'half the bodies adverse' if args.adverse else 'no adverse body'}"
    )
    print(f"{'mode':<18}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}{'vs off':>9}")
    for name, res in best.items():
        print(
            f"{name:<18}{res['rps']:>9.0f}{res.get('p50_ms', 0):>9.2f}{res.get('p99_ms', 0):>9.2f}"
            f"{res['non_2xx']:>9.0f}{res['rps'] / off:>9.1%}"
        )
    if "off" in every and args.rounds > 1:
        # each round against the `off` run of the same round: what a single comparison would see
        print(f"\nper round, each mode vs the same round's off (median of {args.rounds}):")
        for name, runs in every.items():
            if name == "off":
                continue
            ratios = [r["rps"] / o["rps"] for r, o in zip(runs, every["off"], strict=True)]
            p99s = [r.get("p99_ms", 0) for r in runs]
            cells = " ".join(f"{x:6.1%}" for x in ratios)
            p99_cells = " ".join(f"{x:.1f}" for x in p99s)
            print(
                f"{name:<18}{cells}   median {statistics.median(ratios):6.1%}   p99 ms {p99_cells}"
            )
    print("target: recording >= 75 % of off, p99 <= 15 ms")


if __name__ == "__main__":
    sys.exit(main())
