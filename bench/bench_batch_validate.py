"""The JSON batch submit's body validation, in process: the fast read against the model's.

Usage: `.venv/bin/python bench/bench_batch_validate.py [--rows 1000] [--rounds 300]`

Times, side by side in one run, the two ways a 1000-item body becomes the raw matrix:
`json_input.plain_rows` (orjson, C-level passes over its dicts) and the request model's
validation (`batch_body._model_rows`: pydantic from bytes, an object per item, columns read
back), each hot (back to back) and after a 10 ms idle gap (what a client polling every few ms
meets: caches someone else used), plus the whole `validated_rows` the route calls. CPU time of
this thread (`time.thread_time`), medians, and the ratio fast/model.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from batch_stack import json_job_body

from loan_default.api.v1 import batch_body
from loan_default.core.config import Settings
from loan_default.services.batch import json_input


def _median_us(fn: Callable[[], object], rounds: int, idle_s: float) -> float:
    times = []
    for _ in range(rounds):
        if idle_s:
            time.sleep(idle_s)
        start = time.thread_time()
        fn()
        times.append(time.thread_time() - start)
    return statistics.median(times) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=300)
    args = ap.parse_args()
    body = json_job_body(args.rows)
    settings = Settings(environment="test", batch_max_rows=max(1000, args.rows))
    limit = settings.batch_max_rows
    assert json_input.plain_rows(body, limit) is not None
    ways: dict[str, Callable[[], object]] = {
        "fast read": lambda: json_input.plain_rows(body, limit),
        "model validation": lambda: batch_body._model_rows(settings, body, limit),
        "validated_rows (the route's call)": lambda: batch_body.validated_rows(settings, body),
    }
    print(f"JSON batch body of {args.rows} items ({len(body) / 1000:.0f} kB), {args.rounds} rounds")
    figures: dict[tuple[str, str], float] = {}
    for when, idle in (("hot", 0.0), ("after a 10 ms idle", 0.01)):
        for name, fn in ways.items():
            figures[name, when] = _median_us(fn, args.rounds, idle)
            print(f"  {name}, {when}: {figures[name, when]:.0f} us")
        ratio = figures["fast read", when] / figures["model validation", when]
        print(f"  fast read / model validation, {when}: {ratio:.3f}")


if __name__ == "__main__":
    main()
