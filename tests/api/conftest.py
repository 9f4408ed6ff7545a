"""The API under test: in process (`api`: create_app + an httpx client over ASGI) for contracts
and error paths, and real uvicorn servers (`loan-default serve` subprocesses on MLflow stores in
tmp dirs) where the process boundary is what is tested."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from loan_default.api.app import create_app
from loan_default.core.config import Settings
from loan_default.services.model import ModelService
from tests.conftest import (
    DATA_FILE,
    TEST_API_KEY,
    RecordingDispatcher,
    free_port,
    make_settings,
    queued_batch,
)

CLI = str(Path(sys.executable).parent / "loan-default")
JSON_HEADERS = {"X-API-Key": TEST_API_KEY, "Content-Type": "application/json"}
GOOD = {"employed": 1, "bank_balance": 8754.36, "annual_salary": 532339.56}


def store_env(store: Path, **overrides: object) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(
        {
            "ENVIRONMENT": "test",
            "API_KEYS": TEST_API_KEY,
            "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}",
            "MLFLOW_ARTIFACT_ROOT": str(store / "artifacts"),
            "DECISION_STORE_URL": f"sqlite:///{store / 'decisions.db'}",
            "MODEL_CACHE_DIR": str(store / "cache"),
            "DATA_PATH": str(DATA_FILE),
            "LOG_LEVEL": "INFO",
            # batch submits are accepted (202) into a queue no worker consumes
            **{k.upper(): v for k, v in queued_batch().items()},
        }
    )
    env.update({k.upper(): str(v) for k, v in overrides.items()})
    return env


def asgi_requests(app: Any, calls: list[tuple[str, str, dict[str, Any]]]) -> list[httpx.Response]:
    """Send `calls` (method, path, httpx kwargs) in order to an in-process app, inside its
    lifespan (one model load, one drift monitor for all of them)."""

    async def run() -> list[httpx.Response]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                return [await client.request(m, p, **kw) for m, p, kw in calls]

    return asyncio.run(run())


class Server:
    """One `loan-default serve` process; its stdout+stderr go to `log` (never a pipe)."""

    def __init__(self, env: dict[str, str], workdir: Path, *, workers: int = 1) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"server-{self.port}.log"
        workdir.mkdir(parents=True, exist_ok=True)
        cmd = [CLI, "serve", "--port", str(self.port), "--workers", str(workers)]
        # cwd = workdir: no `.env` from the repository is read
        self._out = self.log.open("wb")
        self.proc = subprocess.Popen(cmd, env=env, cwd=workdir, stdout=self._out, stderr=self._out)

    def wait(self, path: str = "/readyz", timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}:\n{self.logs()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + path, timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise AssertionError(f"server not answering 200 on {path}:\n{self.logs()[-3000:]}")

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10, **kwargs)  # type: ignore[arg-type]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()


@contextlib.contextmanager
def running(env: dict[str, str], workdir: Path, *, workers: int = 1, wait: str = "/readyz"):  # type: ignore[no-untyped-def]
    server = Server(env, workdir, workers=workers)
    try:
        server.wait(wait)
        yield server
    finally:
        server.stop()


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    """Sum of the samples of `name` whose labels include `labels` in exposition `text`."""
    total, found = 0.0, False
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, label_text = head.partition("{")
        if metric != name:
            continue
        pairs = dict(p.split("=", 1) for p in label_text.rstrip("}").split(",") if "=" in p)
        pairs = {k: v.strip('"') for k, v in pairs.items()}
        if labels and any(pairs.get(k) != v for k, v in labels.items()):
            continue
        total += float(value)
        found = True
    return total if found else None


@pytest.fixture(scope="module")
def api_server(trained_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server on the (read-only) session store, with a limit no contract test reaches."""
    env = store_env(trained_store, rate_limit_per_minute=100_000, drift_interval_s=0.5)
    with running(env, tmp_path_factory.mktemp("api-server")) as server:
        yield server


@pytest.fixture(scope="module")
def api(trained_settings: Settings, bundle: Any) -> Iterator[TestClient]:
    """The app in process with the real promoted model (v1 @production) and its lifespan run.

    starlette's TestClient is an httpx client over the ASGI app (sync, like the tests), so an
    error raises in the test with its traceback instead of surfacing as a server log. Batch
    submits go to a recording dispatcher; the limit is one no contract test reaches.
    """
    settings = trained_settings.model_copy(
        update={"rate_limit_per_minute": 100_000, "drift_interval_s": 0.5}
    )
    app = create_app(
        settings,
        model_service=ModelService(settings=settings, bundle=bundle),
        dispatcher=RecordingDispatcher(),
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="module")
def queued_app(trained_store: Path, bundle: Any) -> Any:
    """The app in process (no lifespan run yet; `asgi_requests` runs it) with the real model,
    batch submits accepted into a queue of the module's own, and no limit a test reaches."""
    settings = make_settings(trained_store, rate_limit_per_minute=1_000_000, **queued_batch())
    return create_app(
        settings,
        model_service=ModelService(settings=settings, bundle=bundle),
        dispatcher=RecordingDispatcher(),
    )
