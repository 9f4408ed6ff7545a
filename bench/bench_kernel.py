"""Single-row scoring cost: `ModelBundle.score_one` and `ModelService.predict_one`, in-process.

Usage: `.venv/bin/python bench/bench_kernel.py [--calls 5000] [--repeat 40]`
Side by side with an older commit (this script runs on both trees' code, so `--same-script`):
`.venv/bin/python bench/compare.py --base 23fd9bc --rounds 6 --same-script -- bench_kernel.py`

Why a second estimator beside bench_api's median: on a shared 2-core VM a neighbour's burst
lasts seconds and lands on whole rounds, so the median of five 20,000-call rounds moved by 1.5x
between identical runs (21-36 us for the same commit). Many short rounds and their *best* (the
round no neighbour disturbed) repeat within a few percent; the median is printed beside it. Only
the public API both old and new trees share is used: `Registry(settings).load_alias()`,
`score_one(employed, bank_balance, annual_salary)` and `ModelService.predict_one(...)`.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from typing import Any

from bench_api import runs_us

from loan_default.core.config import Settings
from loan_default.registry.client import Registry
from loan_default.services.model import ModelService

ROW = (1, 8754.36, 532339.56)  # the bench_api body: not adverse, so no reason codes
ADVERSE = (1, 25000.0, 20000.0)  # adverse: predict_one ranks its reason codes too


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=5000, help="calls per round")
    ap.add_argument("--repeat", type=int, default=40, help="rounds per figure")
    ns = ap.parse_args()
    settings = Settings(environment="development", decision_recording="off")
    bundle = Registry(settings).load_alias()
    if bundle is None:
        raise SystemExit("no promoted model in the MLflow store: run `make model`")
    service = ModelService(settings=settings, bundle=bundle)
    cases: dict[str, Callable[[], Any]] = {
        "score_one": lambda: bundle.score_one(*ROW),
        "predict_one": lambda: service.predict_one(
            employed=ROW[0], bank_balance=ROW[1], annual_salary=ROW[2]
        ),
        "score_one adverse": lambda: bundle.score_one(*ADVERSE),
    }
    print(f"== in-process, us per call: best and median of {ns.repeat} rounds of {ns.calls}")
    for name, fn in cases.items():
        runs = runs_us(fn, ns.calls, ns.repeat)
        print(f"{name} best {min(runs):.2f} us")
        print(f"{name} median {statistics.median(runs):.2f} us")


if __name__ == "__main__":
    main()
