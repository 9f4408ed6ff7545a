"""Micro-benchmark of the per-request key check: `authorize` (sha256, a constant-time compare
against every configured digest, the rate-limit hit) and the scope check, plus the predict body
parse (strict schema, unknown fields refused, optional `reference`).

Usage: `.venv/bin/python bench/bench_auth.py [--keys 1 10 100] [--n 20000]`

In-process on one core, no sockets and no model: it isolates what issue 13's scopes and
`extra="forbid"` add to the predict hot path (bench_api.py measures the whole request). Each
figure is the best of `--repeat` timed runs: on a shared machine the fastest run is the one a
neighbour disturbed least, which is what a before/after comparison of a few microseconds needs.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench_api import runs_us
from starlette.requests import Request

KEY = "bench-key-0123456789abcdef"
BODY = b'{"employed": 1, "bank_balance": 8754.36, "annual_salary": 532339.56}'
BODY_REF = BODY[:-1] + b', "reference": "APP-2024-000123"}'


def best_us(fn: Callable[[], Any], n: int, repeat: int) -> float:
    return min(runs_us(fn, n, repeat))


def abest_us(fn: Callable[[], Awaitable[Any]], n: int, repeat: int) -> float:
    async def timed() -> float:
        for _ in range(min(n, 2000)):
            await fn()
        runs = []
        for _ in range(repeat):
            t0 = time.perf_counter_ns()
            for _ in range(n):
                await fn()
            runs.append((time.perf_counter_ns() - t0) / n / 1000)
        return min(runs)

    return asyncio.run(timed())


def request_for(app: Any) -> Request:
    """A request as the predict route sees it (the same object each call: headers parsed once,
    as they are once per real request)."""
    scope = {
        "type": "http",
        "app": app,
        "method": "POST",
        "path": "/api/v1/predict",
        "headers": [(b"content-type", b"application/json"), (b"x-api-key", KEY.encode())],
        "client": ("127.0.0.1", 5000),
        "query_string": b"",
    }
    return Request(scope)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--n", type=int, default=5_000, help="calls per timed run")
    parser.add_argument("--repeat", type=int, default=20, help="timed runs (the best is shown)")
    args = parser.parse_args()

    from loan_default.api import deps
    from loan_default.api.app import create_app
    from loan_default.api.v1.predict import parse_body
    from loan_default.core.config import Settings

    rows: list[tuple[str, float]] = []
    for n_keys in args.keys:
        others = [f"other-key-{i:04d}-0123456789:score+audit" for i in range(n_keys - 1)]
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            environment="test",
            api_keys=",".join([*others, KEY]),  # the caller's key last: the worst case
            rate_limit_per_minute=10**9,
        )
        app = create_app(settings)
        request = request_for(app)

        async def auth(request: Request = request) -> None:
            await deps.authorize(request)

        async def auth_scope(request: Request = request) -> None:
            deps.check_scope(await deps.authorize(request), "score")

        rows.append((f"authorize, {n_keys} key(s) configured", abest_us(auth, args.n, args.repeat)))
        rows.append(
            (f"authorize + check_scope, {n_keys} key(s)", abest_us(auth_scope, args.n, args.repeat))
        )
    hit = functools.partial(app.state.limiter.hit, "key:bench")
    rows.append(
        ("(of authorize: the rate-limit hit, memory://)", abest_us(hit, args.n, args.repeat))
    )
    rows.append(("parse_body (3 fields)", best_us(lambda: parse_body(BODY), args.n, args.repeat)))
    rows.append(
        (
            "parse_body (3 fields + reference)",
            best_us(lambda: parse_body(BODY_REF), args.n, args.repeat),
        )
    )
    print("== in-process, best-of-runs time per call (one core)")
    for name, us in rows:
        print(f"{name:<46}{us:>8.2f} us")


if __name__ == "__main__":
    main()
