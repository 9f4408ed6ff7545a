"""Durable before answered: a process SIGKILLed while recording loses no decision it had been
told was recorded. Every id the recorder printed (after `record_sync` returned) must be in the
store afterwards; ids in flight at the kill may or may not be, and nothing is half-written."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from loan_default.services.decisions import DecisionStore

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]


def run_and_kill(url: str, synchronous: str, want: int, threads: int = 16) -> list[str]:
    """Start the recorder, SIGKILL it once `want` ids are printed; every complete line."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.services.decisions.recorder", url, synchronous, str(threads)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    buf = b""
    deadline = time.monotonic() + 120
    try:
        while (seen := buf.count(b"\n")) < want:
            assert time.monotonic() < deadline, f"recorder printed {seen} ids in 120 s"
            assert proc.poll() is None, "recorder exited early"
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            if ready:
                buf += os.read(proc.stdout.fileno(), 65536)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        buf += proc.stdout.read()  # lines written before the kill are still in the pipe
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    return buf.decode().split("\n")[:-1]  # the part after the last newline is incomplete


@pytest.mark.parametrize(
    ("kind", "synchronous"),
    [("sqlite", "FULL"), ("sqlite", "NORMAL"), ("postgresql", "FULL")],
)
def test_every_acknowledged_record_survives_sigkill(
    kind: str, synchronous: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'decisions.db'}"
    else:
        url = request.getfixturevalue("pg_database")[0]
    DecisionStore.from_url(url).close()  # migrated before the clock starts
    printed = run_and_kill(url, synchronous, want=400)
    assert len(printed) >= 400
    store = DecisionStore.from_url(url)
    try:
        missing = [did for did in printed if store.get(did) is None]
        with store.engine.connect() as conn:
            stored = conn.execute(sa.text("SELECT count(*) FROM decisions")).scalar_one()
    finally:
        store.close()
    assert missing == [], f"{len(missing)} acknowledged decisions lost"
    assert stored >= len(printed)
