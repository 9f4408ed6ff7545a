"""`loan-default serve`: uvicorn on the app factory, one or several worker processes.

With several workers, Prometheus multiprocess mode is switched on *before* any worker imports
prometheus-client (the workers are spawned and inherit the environment): the directory is
`PROMETHEUS_MULTIPROC_DIR` (or a fresh temp dir), emptied at start so counters of a previous run
do not leak into this one.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from loan_default.core.config import settings_or_report

APP_FACTORY = "loan_default.wiring:create_service_app"


def prepare_multiprocess_dir(configured: str) -> Path:
    """Create (or empty) the metrics directory and export it for the worker processes."""
    directory = Path(configured) if configured else Path(tempfile.mkdtemp(prefix="loan-prom-"))
    if directory.exists():
        for child in directory.iterdir():
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()
    directory.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    return directory


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from loan_default.api.protocol import protocol_factory
    from loan_default.core.logging import configure_logging

    settings = settings_or_report()
    if settings is None:
        return 2
    workers = args.workers or settings.web_concurrency
    multiproc = settings.prometheus_multiproc_dir or os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    if workers > 1 or multiproc:
        prepare_multiprocess_dir(multiproc)
    configure_logging(settings)
    uvicorn.run(
        APP_FACTORY,
        factory=True,
        host=args.host or settings.host,
        port=args.port or settings.port,
        workers=workers,
        access_log=False,  # the app logs one structured line per request itself
        log_level=settings.log_level.lower(),
        log_config=None,  # keep the loguru set-up (configure_logging) in every worker
        server_header=False,
        proxy_headers=args.proxy_headers,
        forwarded_allow_ips=args.forwarded_allow_ips,
        timeout_graceful_shutdown=10,
        # uvicorn kills a worker that does not answer its supervisor's ping within this; the
        # default 5 s is shorter than a worker's start-up (imports) on a busy 2-core container,
        # where the API then restarted its workers forever and never became healthy.
        timeout_worker_healthcheck=60,
        # idle keep-alive sockets are closed; a slow body is cut by the middleware's deadline
        timeout_keep_alive=settings.http_keep_alive_timeout_s,
        # httptools plus the head size / head time / connection limits (api/protocol.py)
        http=protocol_factory(settings),
    )
    return 0


def add_serve_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run the HTTP API (uvicorn, port 8005 by default)")
    p.add_argument("--host", help="bind address (default: HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: PORT, 8005)")
    p.add_argument("--workers", type=int, help="worker processes (default: WEB_CONCURRENCY, 1)")
    p.add_argument(
        "--proxy-headers",
        action="store_true",
        help="trust X-Forwarded-For from --forwarded-allow-ips (behind a load balancer)",
    )
    p.add_argument("--forwarded-allow-ips", default="127.0.0.1")
    p.set_defaults(func=cmd_serve)
