"""What the guarded uvicorn protocol (api/protocol.py) costs: the ceiling app (bench/ceiling_app.py)
served by uvicorn's plain httptools protocol and by the guarded one, alternately, under wrk.

Usage: `.venv/bin/python bench/bench_protocol.py [--duration 5] [--rounds 3]`

The ceiling app does almost nothing, so the protocol's share of a request is as large as it can
be here; rounds alternate so that a noisy neighbour on a shared CPU hits both sides alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from batch_stack import free_port
from bench_api import BODY, KEY, LUA, run_wrk, server

ROOT = Path(__file__).resolve().parents[1]
SERVE = """
import sys, uvicorn
from loan_default.api.protocol import protocol_factory
from loan_default.core.config import Settings
http = protocol_factory(Settings(api_keys="x")) if sys.argv[2] == "guarded" else "httptools"
uvicorn.run("ceiling_app:app", app_dir={bench!r}, port=int(sys.argv[1]), http=http,
            log_level="warning", access_log=False)
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-protocol-"))
    script = tmp / "post.lua"
    script.write_text(LUA % (BODY.decode(), KEY))
    launcher = tmp / "serve.py"
    launcher.write_text(SERVE.format(bench=str(ROOT / "bench")))
    results: dict[str, list[dict[str, float]]] = {"httptools": [], "guarded": []}
    for _ in range(args.rounds):
        for kind in results:
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            cmd = [sys.executable, str(launcher), str(port), kind]
            with server(cmd, dict(os.environ), f"{base}/docs", tmp / f"{kind}.log"):
                run_wrk(f"{base}/api/v1/predict", duration=1, connections=16, script=script)
                results[kind].append(
                    run_wrk(
                        f"{base}/api/v1/predict",
                        duration=args.duration,
                        connections=args.connections,
                        script=script,
                    )
                )
    print(f"\n== ceiling app, wrk -t1 -c{args.connections} -d{args.duration}s x {args.rounds}")
    print(f"{'protocol':<12}{'req/s (median)':>16}{'p50 ms':>9}{'p99 ms':>9}   per round req/s")
    for kind, runs in results.items():
        rps = [r["rps"] for r in runs]
        print(
            f"{kind:<12}{statistics.median(rps):>16.0f}"
            f"{statistics.median(r['p50_ms'] for r in runs):>9.2f}"
            f"{statistics.median(r['p99_ms'] for r in runs):>9.2f}   "
            + ", ".join(f"{x:.0f}" for x in rps)
        )
    ratio = statistics.median(r["rps"] for r in results["guarded"]) / statistics.median(
        r["rps"] for r in results["httptools"]
    )
    print(f"guarded / httptools: {ratio:.1%}")


if __name__ == "__main__":
    main()
