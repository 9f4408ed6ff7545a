"""`loan-default worker` (the Celery worker) and `loan-default run` (API + worker, `make run`)."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess  # nosec B404 - only fixed argv lists are run, never a shell
import sys
import time
from pathlib import Path
from types import FrameType

#: Seconds `run` waits for its children to stop after forwarding a signal, before killing them.
STOP_GRACE_S = 20.0


def worker_argv(args: argparse.Namespace, *, concurrency: int, queue: str) -> list[str]:
    """Arguments of `celery -A loan_default.worker.celery_app worker` for these options."""
    argv = [
        "worker",
        f"--loglevel={args.loglevel}",
        f"--pool={args.pool}",
        f"--queues={queue}",
        "--without-gossip",
        "--without-mingle",
    ]
    if args.pool in {"prefork", "threads"}:
        argv.append(f"--concurrency={concurrency}")
    if args.hostname:
        argv.append(f"--hostname={args.hostname}")
    if args.max_memory_per_child:
        argv.append(f"--max-memory-per-child={args.max_memory_per_child}")
    return argv


def cmd_worker(args: argparse.Namespace) -> int:
    from loan_default.core.config import settings_or_exit as _settings
    from loan_default.core.logging import configure_logging
    from loan_default.worker.celery_app import BrokerNotConfigured, default_app

    settings = _settings()
    configure_logging(settings)
    try:
        app = default_app()
    except BrokerNotConfigured as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    concurrency = args.concurrency or settings.worker_concurrency or os.cpu_count() or 1
    app.worker_main(worker_argv(args, concurrency=concurrency, queue=settings.celery_queue))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Start the batch worker and the API as child processes; stop both on a signal or when
    either exits (so a crash is visible instead of a half-working service). Without a
    CELERY_BROKER_URL a private Redis is started first and given to both."""
    from loan_default.core.config import settings_or_exit as _settings
    from loan_default.worker.local_redis import PrivateRedis, RedisNotInstalled

    settings = _settings()
    if settings.celery_broker_url:
        return _run_children(args, env=None)
    try:
        with PrivateRedis(Path(settings.run_redis_dir)) as redis:
            print(f"batch broker: private redis-server on {redis.url()} (data in {redis.data_dir})")
            env = {**os.environ, "CELERY_BROKER_URL": redis.url(0)}
            return _run_children(args, env=env)
    except RedisNotInstalled as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run_children(args: argparse.Namespace, *, env: dict[str, str] | None) -> int:
    from loan_default.worker.supervise import child_options

    exe = [sys.executable, "-m", "loan_default.cli"]
    worker_cmd = [*exe, "worker", "--loglevel", args.loglevel]
    if args.concurrency:
        worker_cmd += ["--concurrency", str(args.concurrency)]
    serve_cmd = [*exe, "serve", "--port", str(args.port)]
    if args.host:
        serve_cmd += ["--host", args.host]
    options = child_options()  # own process groups: `forward` is their only signal
    children = [
        subprocess.Popen(worker_cmd, env=env, **options),  # noqa: S603 # nosec B603 - our own interpreter and module, fixed argv, no shell
        subprocess.Popen(serve_cmd, env=env, **options),  # noqa: S603 # nosec B603 - our own interpreter and module, fixed argv, no shell
    ]
    stopping: list[int] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM if signum == signal.SIGTERM else signal.SIGINT)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while all(c.poll() is None for c in children) and not stopping:
            time.sleep(0.2)
        if not stopping:
            forward(signal.SIGTERM, None)
        deadline = time.monotonic() + STOP_GRACE_S
        for child in children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    if stopping:
        return 0
    return max(abs(c.returncode or 0) for c in children) or 1


def add_worker_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `worker` and `run`."""
    p = sub.add_parser(
        "worker", help="run a batch scoring worker (celery -A loan_default.worker.celery_app)"
    )
    _worker_options(p)
    p.add_argument(
        "--pool",
        choices=("prefork", "solo", "threads"),
        default="prefork",
        help="prefork: one process per --concurrency (default); solo: score in this process",
    )
    p.add_argument("--hostname", help="Celery node name (default celery@<host>)")
    p.add_argument(
        "--max-memory-per-child",
        type=int,
        default=0,
        help="KiB; replace a pool process that grew beyond this (0: never)",
    )
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("run", help="serve the API (port 8005) and a batch worker together")
    _worker_options(p)
    p.add_argument("--port", type=int, default=8005, help="API port (default 8005)")
    p.add_argument("--host", help="API bind address (default: HOST)")
    p.set_defaults(func=cmd_run)


def _worker_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--concurrency",
        type=int,
        default=0,
        help="worker processes (default WORKER_CONCURRENCY, else one per CPU)",
    )
    p.add_argument("--loglevel", default="INFO", help="Celery log level (default INFO)")
