"""Real processes for the batch tests: Celery workers, uvicorn API servers, a private Redis."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from loan_default.core.config import Settings
from loan_default.services import batch as bs
from tests.conftest import TEST_API_KEY, free_port, make_settings, redis_url

HEADERS = {"X-API-Key": TEST_API_KEY}


def unique_prefix() -> str:
    return f"test-batch-{uuid.uuid4().hex[:10]}:"


@pytest.fixture
def store() -> Iterator[bs.RedisJobStore]:
    """The production job store on the test Redis, under a key prefix of this test's own."""
    s = bs.RedisJobStore(redis_url(4), prefix=unique_prefix())
    yield s
    keys = list(s.client.scan_iter(match=s.prefix + "*", count=1000))
    if keys:
        s.client.delete(*keys)
    s.close()


def batch_settings(store: Path, tmp: Path, **overrides: Any) -> Settings:
    """Settings for one test's API + workers: its own key prefix, queue and data dir."""
    prefix = unique_prefix()
    values: dict[str, Any] = {
        "celery_broker_url": redis_url(5),
        "batch_key_prefix": prefix,
        "celery_queue": prefix + "q",
        "rate_limit_per_minute": 100_000,
        "model_reload_interval_s": 3600.0,
    }
    values.update(overrides)
    return make_settings(store, **values)


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process build these exact settings."""
    env = {k: v for k, v in os.environ.items() if k not in {"PROMETHEUS_MULTIPROC_DIR"}}
    for name in settings.model_fields_set:
        env[name.upper()] = str(getattr(settings, name))
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Proc:
    """A child process logging to a file, with helpers to wait on its log and stop it."""

    def __init__(self, argv: list[str], *, env: dict[str, str], log: Path, cwd: Path) -> None:
        self.argv, self.env, self.log, self.cwd = argv, env, log, cwd
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        fh = self.log.open("ab")
        self.popen = subprocess.Popen(
            self.argv, env=self.env, stdout=fh, stderr=subprocess.STDOUT, cwd=self.cwd
        )
        fh.close()
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_for_log(self, needle: str, timeout: float = 60.0, *, after: int = 0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.text()[after:]:
                return
            assert self.popen is not None
            if self.popen.poll() is not None:
                raise AssertionError(f"{self.argv} exited early:\n{self.text()[-3000:]}")
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} not logged in {timeout}s:\n{self.text()[-3000:]}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(sig)
            self.popen.wait(timeout=30)

    def stop(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


CLI = [sys.executable, "-m", "loan_default.cli"]


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """Factory of processes stopped at teardown: procs("worker"|"api", settings, ...)."""
    started: list[Proc] = []
    counter = iter(range(1000))

    def make(kind: str, settings: Settings, **kw: Any) -> Proc:
        n = next(counter)
        env = settings_env(settings)
        if kind == "worker":
            argv = [*CLI, "worker", "--pool", kw.get("pool", "solo"), "--loglevel", "INFO"]
            if "concurrency" in kw:
                argv += ["--concurrency", str(kw["concurrency"])]
            proc = Proc(argv, env=env, log=tmp_path / f"worker-{n}.log", cwd=tmp_path).start()
            started.append(proc)
            if kw.get("wait", True):
                proc.wait_for_log("batch worker ready", timeout=90)
            return proc
        port = kw.get("port") or free_port()
        argv = [*CLI, "serve", "--port", str(port)]
        proc = Proc(argv, env=env, log=tmp_path / f"api-{n}.log", cwd=tmp_path).start()
        proc.port = port  # type: ignore[attr-defined]
        started.append(proc)
        wait_ready(f"http://127.0.0.1:{port}", proc)
        return proc

    yield make
    for proc in reversed(started):
        proc.stop()


def wait_ready(base: str, proc: Proc | None = None, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc is not None and proc.popen is not None and proc.popen.poll() is not None:
            raise AssertionError(f"API exited early:\n{proc.text()[-3000:]}")
        time.sleep(0.1)
    raise AssertionError(f"API not ready in {timeout}s")


def base_url(proc: Proc) -> str:
    return f"http://127.0.0.1:{proc.port}"  # type: ignore[attr-defined]


def wait_job(
    client: httpx.Client, job_id: str, *, timeout: float = 60.0, **params: Any
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    data: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = client.get(f"/api/v1/predict/batch/{job_id}", params=params)
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        if data["status"] in {"SUCCESS", "FAILURE"}:
            return data
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} not finished in {timeout}s: {data}")


class PrivateRedis:
    """A redis-server of our own (AOF on) that a test may stop and restart."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.port = free_port()
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if shutil.which("redis-server") is None:
            # The image's test stage (docker compose --profile test) has Redis only as a service.
            pytest.skip("redis-server is not installed here; `make test` on the host runs this")
        self.popen = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--dir",
                str(self.dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise AssertionError("private redis-server did not start")

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()  # SIGTERM: redis flushes the AOF and exits
            self.popen.wait(timeout=15)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "redis")
    server.dir.mkdir()
    server.start()
    yield server
    server.stop()


def csv_bytes(rows: list[tuple[Any, ...]], header: str) -> bytes:
    return (header + "\n" + "\n".join(",".join(str(v) for v in r) for r in rows) + "\n").encode()
