"""Cost of reason codes: `ModelBundle.reasons` on 1 row and on 10,000 rows, and `reasons_row`.

Usage: `.venv/bin/python bench/bench_reasons.py [--store DIR] [--rounds 200]`

Loads the promoted bundle of an MLflow store (`--store`, a directory with `mlflow.db` and
`artifacts/`), or trains one into a temp store first (~30 s). Prints the median time per call:
the contributions (the stump table) beside XGBoost's `pred_contribs` on the same rows, and, for
comparison, `score` on the same rows (the kernel every decision already pays for).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from loan_default.core.config import Settings
from loan_default.features import build_matrix, feature_row
from loan_default.registry.client import Registry
from loan_default.training.pipeline import train

ROOT = Path(__file__).resolve().parents[1]


def settings_for(store: Path) -> Settings:
    return Settings(
        _env_file=None,
        mlflow_tracking_uri=f"sqlite:///{store / 'mlflow.db'}",
        mlflow_artifact_root=str(store / "artifacts"),
        data_path=str(ROOT / "training" / "Default_Fin.csv"),
    )


def median_us(fn: Callable[[], Any], rounds: int) -> float:
    fn()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, help="an MLflow store dir with a promoted model")
    ap.add_argument("--rounds", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = args.store
        if store is None:
            print("training a model into a temp MLflow store (~30 s) ...", flush=True)
            store = Path(tmp)
            train(settings_for(store))
        bundle = Registry(settings_for(store)).load_alias()
        assert bundle is not None, f"no promoted model in {store}"

    rng = np.random.default_rng(0)
    n = 10_000
    raw = np.column_stack(
        [rng.integers(0, 2, n), rng.uniform(0, 32_000, n), rng.uniform(1e4, 9e5, n)]
    )
    big = build_matrix(raw)
    one = big[:1]
    row = feature_row(*raw[0])
    few = max(args.rounds // 20, 5)
    print(f"reasons 1 row: {median_us(lambda: bundle.reasons(one), args.rounds):.1f} us")
    print(f"reasons_row 1 row: {median_us(lambda: bundle.reasons_row(row), args.rounds):.1f} us")
    print(f"score_row 1 row: {median_us(lambda: bundle.score_row(row), args.rounds):.1f} us")
    t_big = median_us(lambda: bundle.reasons(big), few)
    print(f"reasons {n} rows: {t_big / 1e3:.2f} ms ({t_big / n:.2f} us per row)")
    t_contribs = median_us(lambda: bundle.contribs(big), few)
    t_shap = median_us(lambda: bundle.tree_shap(big), few)
    table = "stump table" if bundle._stumps is not None else "pred_contribs (not all stumps)"
    print(f"of which contributions ({table}) {n} rows: {t_contribs / 1e3:.2f} ms")
    print(f"XGBoost pred_contribs {n} rows: {t_shap / 1e3:.2f} ms ({t_shap / t_contribs:.0f}x)")
    t_one, t_one_shap = (
        median_us(lambda: bundle.contribs(one), args.rounds),
        median_us(lambda: bundle.tree_shap(one), args.rounds),
    )
    print(
        f"contributions 1 row: {t_one:.1f} us; pred_contribs 1 row: {t_one_shap:.1f} us "
        f"({t_one_shap / t_one:.0f}x)"
    )
    print(f"score {n} rows: {median_us(lambda: bundle.score(big), few) / 1e3:.2f} ms")


if __name__ == "__main__":
    main()
