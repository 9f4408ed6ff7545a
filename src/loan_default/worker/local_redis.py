"""The private Redis of `loan-default run`: the production broker and job store, on one box.

When CELERY_BROKER_URL is empty, `run` starts `redis-server` bound to 127.0.0.1 on a free port,
with its append-only file under RUN_REDIS_DIR (queued jobs and finished results survive a
restart), and hands its URL to the API and the worker it starts. So local use runs exactly the
broker and job store code production runs, and a 1000-row job takes milliseconds instead of the
second the former embedded SQLite transport took (it polled).
"""

from __future__ import annotations

import shutil
import socket
import subprocess  # nosec B404 - fixed argv of the redis-server binary, never a shell
import time
from pathlib import Path

from loan_default.worker.supervise import child_options

#: Seconds to wait for the server to answer PING after it started.
START_TIMEOUT_S = 10.0


class RedisNotInstalled(RuntimeError):
    """No `redis-server` binary on PATH."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class PrivateRedis:
    """A `redis-server` child process; `url(db)` addresses it. Use as a context manager."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> PrivateRedis:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisNotInstalled(
                "`loan-default run` needs redis-server for its batch queue: install it "
                "(Debian/Ubuntu: apt-get install redis-server; `make run` does as root), "
                "or set CELERY_BROKER_URL to a Redis you run"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        argv = [
            binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data_dir.resolve()),
            "--appendonly", "yes",
            "--save", "",
            "--daemonize", "no",
            "--logfile", "redis.log",
        ]  # fmt: skip
        # Out of the terminal's process group: Ctrl-C reaches `run`, which stops Redis last.
        self.proc = subprocess.Popen(argv, **child_options())  # noqa: S603 # nosec B603 - fixed argv, no shell
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _pong(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                log = self.data_dir / "redis.log"
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise RuntimeError(f"the private redis-server did not start:\n{tail}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: redis flushes the append-only file and exits
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> PrivateRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
