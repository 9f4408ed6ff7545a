"""What the batch benchmarks start: a private redis-server, a temp trained MLflow store, the API
(`loan-default serve`) and Celery workers (`loan-default worker`), all on 127.0.0.1.

Imported by bench_batch_*.py, which Python runs with this directory on sys.path.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx
import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
KEY = "bench-key-0123456789abcdef"
CLI = [sys.executable, "-m", "loan_default.cli"]


def json_job_body(rows: int, seed: int = 0) -> bytes:
    """A JSON batch submit of `rows` random, valid applicants (the same bytes for one seed)."""
    rng = np.random.default_rng(seed)
    return orjson.dumps(
        {
            "predictions": [
                {
                    "employed": int(rng.integers(0, 2)),
                    "bank_balance": round(float(rng.uniform(0, 30_000)), 2),
                    "annual_salary": round(float(rng.uniform(5_000, 90_000)), 2),
                }
                for _ in range(rows)
            ]
        }
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def peak_rss_mib(pid: int) -> float:
    """VmHWM (peak resident set) of a live process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def tree_pids(pid: int) -> list[int]:
    out = [pid]
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return out
    for k in kids:
        out += tree_pids(int(k))
    return out


class Stack:
    def __init__(
        self,
        *,
        workers: int,
        chunk_size: int = 50_000,
        store: Path | None = None,
        decision_store_url: str | None = None,
    ):
        self.tmp = Path(tempfile.mkdtemp(prefix="loan-batch-bench-"))
        #: Where every scored row is recorded (default: a SQLite file of this run's own).
        self.decision_store_url = decision_store_url or f"sqlite:///{self.tmp / 'decisions.db'}"
        self.workers_n = workers
        self.chunk_size = chunk_size
        self.store = store
        self.procs: list[subprocess.Popen[bytes]] = []
        self.workers: list[subprocess.Popen[bytes]] = []
        self.port = free_port()
        self.redis_port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        store = self.store or self.tmp / "mlflow"
        env = dict(os.environ)
        env.update(
            {
                "ENVIRONMENT": "test",
                "LOG_LEVEL": "WARNING",
                "API_KEYS": KEY,
                "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}",
                "MLFLOW_ARTIFACT_ROOT": str(store / "artifacts"),
                "MODEL_CACHE_DIR": str(self.tmp / "cache"),
                "DATA_PATH": str(ROOT / "training" / "Default_Fin.csv"),
                "CELERY_BROKER_URL": f"redis://127.0.0.1:{self.redis_port}/0",
                "RATE_LIMIT_PER_MINUTE": "10000000",
                "BATCH_CHUNK_SIZE": str(self.chunk_size),
                "MAX_UPLOAD_BYTES": str(200_000_000),
                "PYTHONUNBUFFERED": "1",
                "DECISION_STORE_URL": self.decision_store_url,
            }
        )
        return env

    def _spawn(self, argv: list[str], log: str, **env: str) -> subprocess.Popen[bytes]:
        fh = (self.tmp / log).open("ab")
        p = subprocess.Popen(argv, env={**self.env(), **env}, stdout=fh, stderr=subprocess.STDOUT)
        fh.close()
        self.procs.append(p)
        return p

    def __enter__(self) -> Stack:
        if self.store is None:
            print("training a model into a temp MLflow store (~30 s) ...", flush=True)
            subprocess.run([*CLI, "train"], env=self.env(), check=True, stdout=subprocess.DEVNULL)
        self._spawn(
            [
                "redis-server",
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.tmp),
            ],
            "redis.log",
        )
        self.api = self._spawn([*CLI, "serve", "--port", str(self.port)], "api.log")
        for i in range(self.workers_n):
            w = self._spawn(
                [
                    *CLI,
                    "worker",
                    "--pool",
                    "solo",
                    "--loglevel",
                    "WARNING",
                    "--hostname",
                    f"w{i}@%h",
                ],
                f"worker-{i}.log",
                LOG_LEVEL="INFO",  # the readiness line; Celery's per-task lines stay off
            )
            self.workers.append(w)
        try:
            self._wait_ready()
        except BaseException:
            self.__exit__(SystemExit, None, None)
            raise
        return self

    def _wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                api_ok = httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                api_ok = False
            logs_ok = all(
                "batch worker ready" in (self.tmp / f"worker-{i}.log").read_text(errors="replace")
                for i in range(self.workers_n)
            )
            if api_ok and logs_ok:
                return
            for p in self.procs:
                if p.poll() is not None:
                    raise SystemExit(f"{p.args} exited; logs in {self.tmp}")
            time.sleep(0.2)
        raise SystemExit(f"stack not ready in {timeout}s; logs in {self.tmp}")

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"X-API-Key": KEY}, timeout=120)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        if exc_type is None:
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            print(f"logs kept in {self.tmp}", file=sys.stderr)
