"""Instructions the API server executes per request, counted by valgrind's callgrind.

Usage: `.venv/bin/python bench/bench_instructions.py [--requests 1000] [--connections 4]`
Side by side with an older commit:
`.venv/bin/python bench/compare.py --base REF --rounds 1 --same-script -- bench_instructions.py`

Why this exists beside bench_api.py: wrk's req/s on a shared 2-core machine scatters by several
per cent between rounds of the same commit, more than the differences worth chasing on the hot
path. Callgrind counts the instructions the server process executes in user space; for the same
code and requests the count repeats to within about half a per cent (how the event loop batches
the four connections' reads varies a little) whatever else the machine is doing. It does
not see kernel time (socket reads and writes, the same for both sides of a comparison) and an
instruction is not a fixed number of nanoseconds, so it complements req/s rather than
replacing it.

How: `loan-default serve` (one worker, ENVIRONMENT=production, as bench_api.py runs it, decisions
off) starts under callgrind with instrumentation off, so start-up runs at near native speed. After
a warm-up, instrumentation is switched on, `--requests` predicts are sent over `--connections`
kept-alive connections, the counts are dumped and divided by the number of requests. Then the
same for `GET /healthz`, the floor every request pays (server, middleware, routing).
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import subprocess  # nosec B404 - fixed argv lists: valgrind, callgrind_control, our entry point
import tempfile
import threading
from pathlib import Path

from batch_stack import free_port
from bench_api import BODY, KEY, serve_command, server

HEADERS = {"X-API-Key": KEY, "Content-Type": "application/json"}


def request(conn: http.client.HTTPConnection, method: str, path: str) -> int:
    body = BODY if method == "POST" else None
    conn.request(method, path, body=body, headers=HEADERS)
    response = conn.getresponse()
    response.read()
    return response.status


def drive(port: int, method: str, path: str, *, total: int, connections: int) -> None:
    """`total` requests over `connections` kept-alive connections; every answer must be 200."""
    failures: list[int] = []

    def worker(count: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for _ in range(count):
            status = request(conn, method, path)
            if status != 200:
                failures.append(status)
        conn.close()

    share, extra = divmod(total, connections)
    threads = [
        threading.Thread(target=worker, args=(share + (1 if i < extra else 0),))
        for i in range(connections)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise SystemExit(f"{len(failures)} of {total} {method} {path} did not answer 200")


def counted(
    pid: int, out: Path, port: int, method: str, path: str, *, total: int, connections: int
) -> int:
    """Instructions the server executed while answering `total` requests."""
    for part in out.parent.glob(out.name + ".*"):
        part.unlink()
    for command in (["-i", "on"], ["-z"]):  # instrument, and count from zero
        subprocess.run(["callgrind_control", *command, str(pid)], check=True, capture_output=True)
    drive(port, method, path, total=total, connections=connections)
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
    subprocess.run(["callgrind_control", "-i", "off", str(pid)], check=True, capture_output=True)
    (dump,) = out.parent.glob(out.name + ".*")
    for line in dump.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise SystemExit(f"no totals in {dump}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--startup-timeout", type=float, default=300.0)
    args = parser.parse_args()
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: apt-get install valgrind")
    tmp = Path(tempfile.mkdtemp(prefix="bench-instr-"))
    out = tmp / "callgrind.out"
    env = {
        **os.environ,
        "ENVIRONMENT": "production",
        "API_KEYS": KEY,
        "RATE_LIMIT_PER_MINUTE": "1000000000",
        "MODEL_RELOAD_INTERVAL_S": "3600",  # no reload inside the counted window
        "DECISION_RECORDING": "off",  # the service path alone, as in bench_api.py
        "PYTHONHASHSEED": "0",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    port = free_port()
    cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    cmd += serve_command(port)
    ready = f"http://127.0.0.1:{port}/readyz"
    with server(cmd, env, ready, tmp / "server.log", timeout=args.startup_timeout) as proc:
        drive(port, "POST", "/api/v1/predict", total=200, connections=args.connections)
        drive(port, "GET", "/healthz", total=200, connections=args.connections)
        n = args.requests
        predict = counted(
            proc.pid, out, port, "POST", "/api/v1/predict", total=n, connections=args.connections
        )
        health = counted(
            proc.pid, out, port, "GET", "/healthz", total=n, connections=args.connections
        )
    print(f"== callgrind, {n} requests over {args.connections} kept-alive connections, 1 worker")
    print(f"instructions per predict request: {predict / n:.0f}")
    print(f"instructions per healthz request: {health / n:.0f}")
    print(f"predict above the healthz floor: {(predict - health) / n:.0f}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
