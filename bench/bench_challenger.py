"""Predict throughput with a challenger scored in shadow at 100 % sampling vs no challenger.

Usage: `.venv/bin/python bench/bench_challenger.py [--store mlflow] [--duration 10]
[--connections 16] [--rounds 2] [--rate 1.0]`

Copies the MLflow store (`make model`; read only, the copy is what changes) into a temporary
directory, registers a second version of the production model's artifacts there and points the
`challenger` alias at it. Then starts `loan-default serve` (1 uvicorn worker, ENVIRONMENT=
production, the decision record on SQLite FULL, as deployed) once per mode on that copy:
`without` (CHALLENGER_ALIAS empty) and `with` (CHALLENGER_ALIAS=challenger at --rate). Before
measuring, the `with` server must show a recorded decision carrying the challenger (the alias
loaded). wrk drives each with one thread; the modes alternate for `--rounds` rounds and the best
round of each is kept. Half the bodies are adverse (reasons computed), as in bench_recording.
Prints req/s, p50/p99 and the ratio with/without (target: >= 80 %).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx
from batch_stack import free_port
from bench_api import KEY, ROOT, VENV_BIN, run_wrk, server
from bench_recording import ADVERSE, LUA


def _with_challenger(store: Path) -> tuple[str, str]:
    """Register a copy of the production version in `store` and alias it `challenger`."""
    from loan_default.core.config import Settings
    from loan_default.registry.client import Registry

    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        mlflow_tracking_uri=f"sqlite:///{store / 'mlflow.db'}",
        mlflow_artifact_root=str(store / "artifacts"),
    )
    registry = Registry(settings)
    production = registry.alias_version()
    if production is None:
        raise SystemExit(f"no @production model in {store}: run `make model` first")
    source = registry.client.get_model_version(registry.name, production)
    mv = registry.client.create_model_version(registry.name, source.source, run_id=source.run_id)
    registry.client.set_registered_model_alias(registry.name, "challenger", str(mv.version))
    return production, str(mv.version)


def _wait_for_challenger(url: str, version: str, timeout: float = 60.0) -> None:
    headers = {"X-API-Key": KEY, "Content-Type": "application/json"}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = httpx.post(f"{url}/api/v1/predict", content=ADVERSE, headers=headers)
        did = r.json()["data"]["decision_id"]
        rec = httpx.get(f"{url}/api/v1/decisions/{did}", headers=headers).json()["data"]
        if rec["challenger_version"] == version:
            return
        time.sleep(0.2)
    raise SystemExit(f"challenger v{version} not scoring after {timeout} s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", type=Path, default=ROOT / "mlflow")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rate", type=float, default=1.0)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install wrk")
    tmp = Path(tempfile.mkdtemp(prefix="bench-challenger-"))
    store = tmp / "mlflow"
    shutil.copytree(args.store, store)
    production, challenger = _with_challenger(store)
    script = tmp / "post.lua"
    script.write_text(LUA % KEY)
    base_env = {
        **os.environ,
        "ENVIRONMENT": "production",
        "API_KEYS": f"{KEY}:score+audit",
        "RATE_LIMIT_PER_MINUTE": "1000000000",
        "LOG_LEVEL": "WARNING",
        "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}",
        "MLFLOW_ARTIFACT_ROOT": str(store / "artifacts"),
        "DECISION_SQLITE_SYNCHRONOUS": "FULL",
        "CHALLENGER_SAMPLING_RATE": str(args.rate),
    }
    base_env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    modes = {
        "without": {"CHALLENGER_ALIAS": ""},
        "with": {"CHALLENGER_ALIAS": "challenger"},
    }
    best: dict[str, dict[str, float]] = {}
    scored: dict[str, str] = {}
    try:
        for round_ in range(args.rounds):
            for name, extra in modes.items():
                port = free_port()
                url = f"http://127.0.0.1:{port}"
                env = {
                    **base_env,
                    **extra,
                    "DECISION_STORE_URL": f"sqlite:///{tmp / f'{name}-{round_}.db'}",
                }
                cmd = [str(VENV_BIN / "loan-default"), "serve", "--port", str(port)]
                cmd += ["--workers", "1"]
                with server(cmd, env, f"{url}/readyz", tmp / f"{name}.log"):
                    if name == "with":
                        _wait_for_challenger(url, challenger)
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
                    metrics = httpx.get(f"{url}/metrics").text
                    scored[name] = next(
                        (
                            line.rsplit(" ", 1)[1]
                            for line in metrics.splitlines()
                            if line.startswith('loan_challenger_scored_total{source="predict"}')
                        ),
                        "0",
                    )
                if name not in best or res["rps"] > best[name]["rps"]:
                    best[name] = res
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base = best["without"]["rps"]
    print(
        f"\n== predict, challenger v{challenger} in shadow of v{production} at "
        f"{args.rate:.0%} sampling vs none: wrk -t1 -c{args.connections} -d{args.duration}s, "
        f"1 uvicorn worker, SQLite FULL record, best of {args.rounds} alternating rounds"
    )
    heads = ("req/s", "p50 ms", "p99 ms", "non-2xx")
    print(f"{'mode':<10}" + "".join(f"{h:>9}" for h in heads) + f"{'shadow':>10}{'ratio':>9}")
    for name, res in best.items():
        print(
            f"{name:<10}{res['rps']:>9.0f}{res.get('p50_ms', 0):>9.2f}{res.get('p99_ms', 0):>9.2f}"
            f"{res['non_2xx']:>9.0f}{scored.get(name, '0'):>10}{res['rps'] / base:>9.1%}"
        )
    print("target: with >= 80 % of without (shadow = challenger-scored decisions, last round)")


if __name__ == "__main__":
    sys.exit(main())
