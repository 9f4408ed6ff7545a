"""`loan-default run` (`make run`) stops cleanly on a terminal's Ctrl-C and leaves nothing
behind when it is killed (worker/supervise.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, pid_alive
from tests.worker.conftest import CLI, HEADERS, batch_settings, settings_env, wait_ready

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ITEM = {"employed": 1, "bank_balance": 8754.36, "annual_salary": 532339.56}


def descendants(pid: int) -> set[int]:
    """Every live process below `pid`, from /proc (children, grandchildren, ...)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def wait_gone(pids: set[int], timeout: float) -> set[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = {p for p in pids if pid_alive(p)}
        if not left:
            return left
        time.sleep(0.1)
    return {p for p in pids if pid_alive(p)}


def start_run(trained_store: Path, tmp_path: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    """`loan-default run` with a private Redis, in a session of its own (like a shell's job)."""
    settings = batch_settings(trained_store, tmp_path, celery_broker_url="", batch_store_url="")
    env = settings_env(settings)
    env.pop("CELERY_BROKER_URL", None)
    env["RUN_REDIS_DIR"] = str(tmp_path / "redis")
    port = free_port()
    log = tmp_path / "run.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [*CLI, "run", "--port", str(port), "--concurrency", "1"],
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    return proc, url, log


def test_ctrl_c_to_the_process_group_stops_everything_gracefully(
    trained_store: Path, tmp_path: Path
) -> None:
    """A terminal's Ctrl-C signals the whole foreground group. Each child gets one SIGINT (from
    `run`): the API runs its lifespan shutdown, the worker a warm shutdown, Redis stops last;
    `run` exits 0 and no process is left."""
    proc, url, log = start_run(trained_store, tmp_path)
    try:
        with httpx.Client(base_url=url, headers=HEADERS, timeout=30) as client:
            assert client.post("/api/v1/predict", json=ITEM).status_code == 200
        below = descendants(proc.pid)
        assert len(below) >= 4, below  # API, its writer child, worker (+ pool), redis-server
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        assert wait_gone(below, 10) == set()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text(errors="replace")
    assert "Application shutdown complete" in text, text[-3000:]
    assert "Warm shutdown" in text, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert "CancelledError" not in text, text[-3000:]


def test_a_killed_run_takes_its_children_with_it(trained_store: Path, tmp_path: Path) -> None:
    """SIGKILL on `run` alone (it can forward nothing): the kernel's parent-death signal stops
    the API, the worker and Redis, so nothing keeps the port or the queue."""
    proc, url, _ = start_run(trained_store, tmp_path)
    below = descendants(proc.pid)
    try:
        proc.kill()
        proc.wait(timeout=10)
        assert wait_gone(below, 30) == set()
        with pytest.raises(httpx.TransportError):
            httpx.get(url + "/healthz", timeout=2)
    finally:
        for pid in below:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
