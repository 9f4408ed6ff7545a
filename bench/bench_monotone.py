"""Test metrics of the registered family with and without monotone constraints, side by side.

Usage: `.venv/bin/python bench/bench_monotone.py [--family xgb_smote] [--data FILE.csv]`

Both runs go through the training pipeline's own functions (`split`, `build_matrix`,
`candidates.fit_and_evaluate`: depth search, calibration and threshold on the 8000 training rows)
on the same split and seed; only MONOTONE_CONSTRAINTS differs. Prints ROC-AUC, PR-AUC, Brier and
F1 on the 2000 test rows, the ratio constrained / unconstrained, and whether the model goals hold.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from loan_default.core.config import Settings
from loan_default.data.dataset import load_training_csv
from loan_default.features import build_matrix
from loan_default.training import candidates
from loan_default.training.pipeline import split

ROOT = Path(__file__).resolve().parents[1]
#: The model goals (issue 13): metric -> (bound, True when it is a minimum).
GOALS = {
    "roc_auc": (0.945, True),
    "pr_auc": (0.45, True),
    "brier": (0.024, False),
    "f1": (0.45, True),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", default="xgb_smote", choices=["xgb_smote", "xgb_weighted"])
    ap.add_argument("--data", type=Path, default=ROOT / "training" / "Default_Fin.csv")
    args = ap.parse_args()

    X_tr_raw, X_te_raw, y_tr, y_te = split(load_training_csv(args.data))
    X_tr, X_te = build_matrix(X_tr_raw), build_matrix(X_te_raw)
    runs = {}
    for constrained in (True, False):
        settings = Settings(_env_file=None, monotone_constraints=constrained)
        runs[constrained] = candidates.fit_and_evaluate(
            settings, args.family, X_tr, y_tr, X_te, y_te
        )
    on, off = runs[True], runs[False]

    print(f"family {args.family}; constraints {on.res.params['monotone_constraints']} vs none")
    print(f"{'metric':<10} {'constrained':>12} {'unconstrained':>14} {'ratio':>8}  goal")
    for name, (bound, is_min) in GOALS.items():
        a, b = on.test_metrics[name], off.test_metrics[name]
        ok = a >= bound if is_min else a <= bound
        goal = f"{'>=' if is_min else '<='} {bound} {'met' if ok else 'MISSED'}"
        print(f"{name:<10} {a:>12.4f} {b:>14.4f} {a / b:>8.4f}  {goal}")
    for label, run in (("constrained", on), ("unconstrained", off)):
        depth = run.res.params["max_depth"]
        search = ", ".join(f"{k[-1]}: {v:.4f}" for k, v in run.res.depth_search.items())
        print(
            f"{label}: depth {depth} (out-of-fold ROC-AUC by depth {search}), "
            f"threshold {run.threshold:.4f}"
        )
    print(f"max |p constrained - p unconstrained| {np.max(np.abs(on.p_test - off.p_test)):.3e}")


if __name__ == "__main__":
    main()
