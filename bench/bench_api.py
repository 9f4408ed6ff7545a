"""Benchmark of the real-time API: the full service vs the HTTP stack's ceiling, plus layer costs.

Usage: `.venv/bin/python bench/bench_api.py [--duration 10] [--connections 16]`

1. Starts `loan-default serve` (one uvicorn worker, ENVIRONMENT=production: JSON logs, auth, rate
   limit, validation, model, metrics, drift sampling all on) against the repo's MLflow store
   (`make model` trains one), and a bare FastAPI app that parses the same body and returns a
   constant (bench/ceiling_app.py). Drives each with wrk (Debian package `wrk`) on loopback at
   16 connections, one wrk thread (the other core runs the server), and prints req/s and
   p50/p90/p99 and the ratio.
2. In-process: median cost per call of each layer of a prediction request, and of the whole app
   called through ASGI (no sockets) with layers the design left out (slowapi's decorator,
   prometheus-fastapi-instrumentator) for comparison.
"""

import argparse
import asyncio
import contextlib
import io
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
from batch_stack import free_port

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
KEY = "bench-key-0123456789abcdef"
BODY = b'{"employed": 1, "bank_balance": 8754.36, "annual_salary": 532339.56}'
LUA = """
wrk.method = "POST"
wrk.body = '%s'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-Key"] = "%s"
"""


def wait_ready(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"server at {url} not ready after {timeout} s")


def serve_command(port: int) -> list[str]:
    """`loan-default serve` on `port` with one uvicorn worker, as the HTTP benchmarks run it."""
    return [str(VENV_BIN / "loan-default"), "serve", "--port", str(port), "--workers", "1"]


@contextlib.contextmanager
def server(
    cmd: list[str], env: dict[str, str], ready_url: str, log: Path, *, timeout: float = 60
) -> Iterator[subprocess.Popen[bytes]]:
    """The server process, once `ready_url` answers 200 (within `timeout` s); stopped on exit."""
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=out, cwd=ROOT)
        try:
            wait_ready(ready_url, timeout)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


def run_wrk(url: str, *, duration: int, connections: int, script: Path) -> dict[str, float]:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result: dict[str, float] = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    result["rps"] = float(m.group(1)) if m else 0.0
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if m:
            scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
            result[f"p{pct}_ms"] = float(m.group(1)) * scale
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    result["non_2xx"] = float(m.group(1)) if m else 0.0
    m = re.search(r"Socket errors:.*", out)
    result["socket_errors"] = 1.0 if m else 0.0
    return result


def http_bench(args: argparse.Namespace) -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install wrk")
    tmp = Path(tempfile.mkdtemp(prefix="bench-api-"))
    script = tmp / "post.lua"
    script.write_text(LUA % (BODY.decode(), KEY))
    env = {
        **os.environ,
        "ENVIRONMENT": "production",
        "API_KEYS": KEY,
        "RATE_LIMIT_PER_MINUTE": "1000000000",
        "MODEL_RELOAD_INTERVAL_S": "30",
        # the service path alone (and nothing written into the checkout's var/): what recording
        # costs is bench/bench_recording.py's figure, on vs off side by side
        "DECISION_RECORDING": "off",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    results: dict[str, dict[str, float]] = {}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = serve_command(port)
    with server(cmd, env, f"{base}/readyz", tmp / "service.log"):
        # warm-up, then check the request really is a successful prediction
        r = httpx.post(
            f"{base}/api/v1/predict",
            content=BODY,
            headers={"X-API-Key": KEY, "Content-Type": "application/json"},
        )
        assert r.status_code == 200, r.text
        run_wrk(f"{base}/api/v1/predict", duration=2, connections=args.connections, script=script)
        results["service"] = run_wrk(
            f"{base}/api/v1/predict",
            duration=args.duration,
            connections=args.connections,
            script=script,
        )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "ceiling_app:app",
        "--app-dir",
        str(ROOT / "bench"),
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    with server(cmd, env, f"{base}/docs", tmp / "ceiling.log"):
        run_wrk(f"{base}/api/v1/predict", duration=2, connections=args.connections, script=script)
        results["ceiling"] = run_wrk(
            f"{base}/api/v1/predict",
            duration=args.duration,
            connections=args.connections,
            script=script,
        )
    print(f"\n== HTTP: wrk -t1 -c{args.connections} -d{args.duration}s, loopback, 1 uvicorn worker")
    print(f"{'':<10}{'req/s':>10}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'non-2xx':>9}")
    for name, res in results.items():
        print(
            f"{name:<10}{res['rps']:>10.0f}{res.get('p50_ms', 0):>9.2f}"
            f"{res.get('p90_ms', 0):>9.2f}{res.get('p99_ms', 0):>9.2f}{res['non_2xx']:>9.0f}"
        )
    ratio = results["service"]["rps"] / max(results["ceiling"]["rps"], 1)
    print(f"service / ceiling: {ratio:.1%}  (target >= 45 %, p99 <= 10 ms)")
    shutil.rmtree(tmp, ignore_errors=True)


# --- in-process ------------------------------------------------------------------------------
def runs_us(fn: Callable[[], Any], n: int, repeat: int) -> list[float]:
    """Microseconds per call of `fn`, one figure per round of `n` calls (after a warm-up)."""
    for _ in range(min(n, 2000)):
        fn()
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter_ns() - t0) / n / 1000)
    return runs


def median_us(fn: Callable[[], Any], n: int = 20_000, repeat: int = 5) -> float:
    return statistics.median(runs_us(fn, n, repeat))


def amedian_us(
    loop: asyncio.AbstractEventLoop, fn: Callable[[], Any], n: int = 5000, repeat: int = 5
) -> float:
    async def batch(k: int) -> float:
        t0 = time.perf_counter_ns()
        for _ in range(k):
            await fn()
        return (time.perf_counter_ns() - t0) / k / 1000

    loop.run_until_complete(batch(min(n, 500)))
    return statistics.median(loop.run_until_complete(batch(n)) for _ in range(repeat))


def asgi_call(app: Any, path: str, body: bytes, headers: list[tuple[bytes, bytes]]) -> Any:
    """One POST straight into the ASGI app (no sockets, no HTTP parsing)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-length", str(len(body)).encode()), *headers],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8005),
        "state": {},
    }
    status: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    async def call() -> None:
        scope["state"] = {}
        await app(dict(scope), receive, send)
        if status[-1] != 200:
            raise RuntimeError(f"status {status[-1]}")

    return call


def inprocess_bench() -> None:
    from loguru import logger

    from loan_default.api import deps
    from loan_default.api.app import create_app
    from loan_default.api.ratelimit import RateLimiter
    from loan_default.api.schemas import PredictionRequest
    from loan_default.core.config import Settings
    from loan_default.core.logging import configure_logging
    from loan_default.registry.client import Registry
    from loan_default.services import metrics
    from loan_default.services.drift import DriftMonitor
    from loan_default.services.model import ModelService

    settings = Settings(
        environment="production",
        api_keys=KEY,
        rate_limit_per_minute=10**9,
        decision_recording="off",  # one call at a time would wait for one commit each
    )
    configure_logging(settings)
    bundle = Registry(settings).load_alias()
    if bundle is None:
        raise SystemExit("no promoted model in the MLflow store: run `make model`")
    service = ModelService(settings=settings, bundle=bundle)
    payload = orjson.loads(BODY)
    rows: list[tuple[str, float]] = []

    rows.append(
        (
            "ONNX score_one (array, ONNX, calibration, band)",
            median_us(lambda: bundle.score_one(1, 8754.36, 532339.56)),
        )
    )
    rows.append(
        (
            "ModelService.predict_one (+ features_used)",
            median_us(
                lambda: service.predict_one(
                    employed=1, bank_balance=8754.36, annual_salary=532339.56
                )
            ),
        )
    )
    rows.append(
        (
            "  explain=True (XGBoost pred_contribs)",
            median_us(lambda: bundle.contributions(1, 8754.36, 532339.56), n=2000),
        )
    )
    rows.append(
        (
            "pydantic PredictionRequest (strict, from dict)",
            median_us(lambda: PredictionRequest.model_validate(payload)),
        )
    )
    result = service.predict_one(employed=1, bank_balance=8754.36, annual_salary=532339.56)
    rows.append(
        (
            "orjson response body",
            median_us(
                lambda: orjson.dumps({"success": True, "data": result.as_dict(), "message": "x"})
            ),
        )
    )
    rec = metrics.PredictionRecorder()
    rows.append(
        (
            "prediction metrics (counter x2, histogram)",
            median_us(lambda: rec.observe(model_version="1", prediction=0, seconds=0.0001)),
        )
    )
    http = metrics.HttpRecorder()
    rows.append(
        (
            "HTTP metrics (counter, histogram)",
            median_us(
                lambda: http.observe(
                    handler="/api/v1/predict", method="POST", status=200, seconds=0.001
                )
            ),
        )
    )
    drift = DriftMonitor.from_settings(settings)
    rows.append(
        (
            "drift sampling (rate 0.1)",
            median_us(lambda: drift.observe(1.0, 8754.36, 532339.56, 0.0164)),
        )
    )

    def log_line() -> None:
        logger.info(
            "{method} {path} {status} {latency_ms}ms",
            request_id="abc",
            method="POST",
            path="/api/v1/predict",
            route="/api/v1/predict",
            status=200,
            latency_ms=1.234,
            model_version="1",
        )

    sink = io.StringIO()
    real_stderr = sys.stderr
    sys.stderr = sink
    try:
        rows.append(
            (
                "request log line (loguru -> orjson JSON sink)",
                median_us(log_line, n=5000),
            )
        )
        logger.remove()
        logger.add(sys.stderr, serialize=True)
        rows.append(
            (
                "  same line, loguru serialize=True (not used)",
                median_us(log_line, n=5000),
            )
        )
    finally:
        sys.stderr = real_stderr
        import loan_default.core.logging as core_logging

        core_logging._configured = None
        configure_logging(settings)

    loop = asyncio.new_event_loop()
    limiter = RateLimiter(per_minute=10**9, storage_uri="memory://", key_prefix="bench")
    rows.append(("rate limit hit (memory://)", amedian_us(loop, lambda: limiter.hit("key:abc"))))
    rlimiter = RateLimiter(
        per_minute=10**9, storage_uri="redis://127.0.0.1:6379/3", key_prefix="bench-rl"
    )
    with contextlib.suppress(Exception):
        rows.append(
            (
                "rate limit hit (redis://, loopback)",
                amedian_us(loop, lambda: rlimiter.hit("key:abc"), n=2000),
            )
        )

    # whole app through ASGI, and the same with the layers the design left out
    import logging

    logging.disable(logging.INFO)
    app = create_app(settings, model_service=service)
    headers = [(b"content-type", b"application/json"), (b"x-api-key", KEY.encode())]
    sys.stderr = io.StringIO()
    try:

        async def with_lifespan() -> float:
            async with app.router.lifespan_context(app):
                call = asgi_call(app, "/api/v1/predict", BODY, headers)
                for _ in range(500):
                    await call()
                runs = []
                for _ in range(5):
                    t0 = time.perf_counter_ns()
                    for _ in range(3000):
                        await call()
                    runs.append((time.perf_counter_ns() - t0) / 3000 / 1000)
                return statistics.median(runs)

        full_us = loop.run_until_complete(with_lifespan())
    finally:
        sys.stderr = real_stderr
    rows.append(("whole app via ASGI: POST /api/v1/predict (no sockets)", full_us))
    ceiling = _ceiling_app()
    rows.append(
        (
            "ceiling app via ASGI (parse body, constant)",
            amedian_us(loop, asgi_call(ceiling, "/api/v1/predict", BODY, headers), n=3000),
        )
    )
    for name, extra in _alternatives().items():
        rows.append(
            (name, amedian_us(loop, asgi_call(extra, "/api/v1/predict", BODY, headers), n=3000))
        )
    _ = deps
    print("\n== in-process, median per call (one core)")
    for name, us in rows:
        print(f"{name:<58}{us:>10.1f} us")


def _ceiling_app() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("ceiling_app", ROOT / "bench" / "ceiling_app.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.app


def _alternatives() -> dict[str, Any]:
    """The ceiling app plus one rejected layer each, to price it."""
    from fastapi import Depends, FastAPI, Request
    from prometheus_client import CollectorRegistry
    from prometheus_fastapi_instrumentator import Instrumentator
    from pydantic import BaseModel
    from slowapi import Limiter
    from slowapi.util import get_remote_address

    class Body(BaseModel):
        employed: int
        bank_balance: float
        annual_salary: float

    out: dict[str, Any] = {}

    def sync_auth(request: Request) -> None:
        request.headers.get("x-api-key")

    a = FastAPI()

    @a.post("/api/v1/predict", dependencies=[Depends(sync_auth)])
    async def p1(body: Body) -> dict[str, Any]:
        return {"ok": True}

    out["  ceiling + sync `def` auth dependency (threadpool)"] = a

    b = FastAPI()
    limiter = Limiter(key_func=get_remote_address, storage_uri="memory://")
    b.state.limiter = limiter

    @b.post("/api/v1/predict")
    @limiter.limit("1000000000/minute")
    async def p2(request: Request, body: Body) -> dict[str, Any]:
        return {"ok": True}

    out["  ceiling + slowapi @limiter.limit decorator"] = b

    c = FastAPI()
    Instrumentator(registry=CollectorRegistry()).instrument(c)

    @c.post("/api/v1/predict")
    async def p3(body: Body) -> dict[str, Any]:
        return {"ok": True}

    out["  ceiling + prometheus-fastapi-instrumentator"] = c
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--skip-http", action="store_true")
    args = parser.parse_args()
    os.chdir(ROOT)
    inprocess_bench()
    if not args.skip_http:
        http_bench(args)


if __name__ == "__main__":
    main()
