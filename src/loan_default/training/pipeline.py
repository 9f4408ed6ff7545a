"""End-to-end training: validate data -> compare families -> calibrate -> threshold -> gate.

The 2000-row test split is touched only after every choice (hyper-parameters, calibration,
threshold) has been made on the 8000 training rows, and then only for the report and the gate.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess  # nosec B404 - only fixed argv lists are run, never a shell
import tempfile
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import numpy.typing as npt
import pandas as pd
from mlflow.models import infer_signature
from sklearn.model_selection import train_test_split

from loan_default.core.config import Settings
from loan_default.data.dataset import TrainingData, load_training_csv
from loan_default.features import ENGINEERED_FEATURES, FEATURE_NAMES, RAW_FEATURES, build_matrix
from loan_default.model import reasons as reasons_mod
from loan_default.model.bundle import (
    PARITY_TOLERANCE,
    ModelBundle,
    export_onnx,
    save_bundle,
)
from loan_default.model.card import SCORE_EDGES, FeatureDistribution, ModelCard, RiskBands
from loan_default.registry.client import Registry
from loan_default.training import candidates as candidates_mod
from loan_default.training.gate import decide_promotion
from loan_default.training.metrics import evaluate
from loan_default.training.plots import write_plots

TRAIN_SIZE, TEST_SIZE, SPLIT_SEED = 8000, 2000, 42
FAMILIES = ("xgb_smote", "xgb_weighted", "logreg")
DRIFT_BINS = 10


def split(data: TrainingData) -> tuple[Any, Any, Any, Any]:
    """The fixed split of the reference design (on raw columns, stratified)."""
    n = len(data.y)
    if n < 50:
        raise ValueError(f"need at least 50 rows to train, got {n}")
    train_size: int | float = TRAIN_SIZE if n >= TRAIN_SIZE + TEST_SIZE else 0.8
    test_size: int | float = TEST_SIZE if n >= TRAIN_SIZE + TEST_SIZE else 0.2
    parts: tuple[Any, Any, Any, Any] = train_test_split(
        data.X,
        data.y,
        train_size=train_size,
        test_size=test_size,
        random_state=SPLIT_SEED,
        stratify=data.y,
    )
    return parts


def score_distribution(probabilities: npt.NDArray[np.floating[Any]]) -> FeatureDistribution:
    """The training rows' calibrated probabilities over `SCORE_EDGES`, for the report's
    "scores now vs training" (the served model's own scores, not the labels)."""
    counts, _ = np.histogram(np.clip(probabilities, 0.0, 1.0), bins=np.asarray(SCORE_EDGES))
    return FeatureDistribution(
        edges=list(SCORE_EDGES), proportions=(counts / max(1, counts.sum())).tolist()
    )


def feature_distribution(matrix: npt.NDArray[np.float32]) -> dict[str, FeatureDistribution]:
    """Training histogram per feature: decile edges (2 bins for the binary `employed`)."""
    out: dict[str, FeatureDistribution] = {}
    for j, name in enumerate(FEATURE_NAMES):
        col = matrix[:, j].astype(np.float64)
        if name == "employed":
            edges = np.array([0.0, 0.5, 1.0])
        else:
            edges = np.unique(np.quantile(col, np.linspace(0, 1, DRIFT_BINS + 1)))
        counts = np.bincount(
            np.searchsorted(edges[1:-1], col, side="right"), minlength=len(edges) - 1
        )
        out[name] = FeatureDistribution(
            edges=[float(e) for e in edges],
            proportions=[float(c) for c in counts / counts.sum()],
        )
    return out


def git_commit() -> str:
    try:
        res = subprocess.run(  # nosec B603 B607 - fixed argv, no shell, no user input; git from PATH is intended (commit id for the run record)
            ["git", "rev-parse", "HEAD"],  # noqa: S607 - git from PATH is intended
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return res.stdout.strip() if res.returncode == 0 else "unknown"


def _pyfunc_code_path() -> str:
    spec = importlib.util.find_spec("loan_default.registry.pyfunc_model")
    assert spec is not None  # nosec B101 - type narrowing for mypy on an invariant, not input validation
    assert spec.origin is not None  # nosec B101 - type narrowing for mypy on an invariant, not input validation
    return spec.origin


def log_bundle_model(bundle_dir: Path, example_rows: Any) -> Any:
    """Log a bundle directory as the active run's pyfunc model `model` (returns MLflow's ModelInfo).

    The one place a bundle becomes a registrable MLflow model: training and `model import` both
    call it, so an imported version has exactly the layout of a trained one.
    """
    example = pd.DataFrame(example_rows, columns=list(RAW_FEATURES))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="mlflow")
        signature = infer_signature(
            example,
            pd.DataFrame({"probability": [0.1], "prediction": [0], "default_risk": ["Low"]}),
        )
    pkg_dir = str(Path(_pyfunc_code_path()).parents[1])
    with warnings.catch_warnings():
        # MLflow hints about type-hint signatures; ours is explicit (infer_signature).
        warnings.filterwarnings("ignore", category=UserWarning, module="mlflow")
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=_pyfunc_code_path(),
            artifacts={"bundle": str(bundle_dir)},
            code_paths=[pkg_dir],
            signature=signature,
            input_example=example,
        )


def train(
    settings: Settings, *, data_path: Path | None = None, report_path: Path | None = None
) -> dict[str, Any]:
    """Run the whole pipeline; returns (and optionally writes) the JSON report.

    Raises DataValidationError before any MLflow run is created if the data are unusable.
    """
    started = time.perf_counter()
    path = data_path or settings.data_file
    data = load_training_csv(path)
    X_tr_raw, X_te_raw, y_tr, y_te = split(data)
    X_tr, X_te = build_matrix(X_tr_raw), build_matrix(X_te_raw)
    registry = Registry(settings)
    experiment_id = registry.ensure_experiment()
    commit = git_commit()
    constraints = candidates_mod.monotone_constraints(settings.monotone_constraints)

    with mlflow.start_run(experiment_id=experiment_id, run_name="train") as parent:
        mlflow.set_tags(
            {"data_sha256": data.sha256, "git_commit": commit, "candidate": settings.candidate}
        )
        mlflow.log_params(
            {
                "data_path": str(path),
                "data_sha256": data.sha256,
                "git_commit": commit,
                "n_rows": len(data.y),
                "train_size": len(y_tr),
                "test_size": len(y_te),
                "split_seed": SPLIT_SEED,
                "candidate": settings.candidate,
                "calibration_method": settings.calibration_method,
                "threshold_objective": settings.threshold_objective,
                "features": ",".join(FEATURE_NAMES),
                "monotone_constraints": json.dumps(constraints),
                "reasons_version": reasons_mod.REASONS_VERSION,
            }
        )
        results: dict[str, dict[str, Any]] = {}
        chosen: candidates_mod.FamilyResult | None = None
        for family in FAMILIES:
            t0 = time.perf_counter()
            fr = candidates_mod.fit_and_evaluate(settings, family, X_tr, y_tr, X_te, y_te)
            with mlflow.start_run(experiment_id=experiment_id, run_name=family, nested=True):
                mlflow.log_params(dict(fr.res.params.items()))
                mlflow.log_params({"family": family, "calibration": fr.calibration.method})
                mlflow.log_metrics({f"test_{k}": v for k, v in fr.test_metrics.items()})
                mlflow.log_metrics(fr.cv)
                mlflow.log_metric("fit_seconds", time.perf_counter() - t0)
            results[family] = {
                "test_metrics": fr.test_metrics,
                "cv_metrics": fr.cv,
                "params": fr.res.params,
            }
            if family == settings.candidate:
                chosen = fr
        assert chosen is not None  # nosec B101 - settings.candidate is one of FAMILIES (Literal)
        mlflow.log_metrics(
            {
                f"{fam}_test_{k}": v
                for fam, r in results.items()
                for k, v in r["test_metrics"].items()
                if k in {"roc_auc", "pr_auc", "brier", "f1"}
            }
        )

        booster = chosen.res.booster
        onnx_model = export_onnx(booster)
        full = build_matrix(data.X)
        card = ModelCard(
            model_type=f"{settings.candidate} (XGBoost, {settings.calibration_method} calibrated)",
            features=list(FEATURE_NAMES),
            raw_features=list(RAW_FEATURES),
            engineered_features=list(ENGINEERED_FEATURES),
            calibration=chosen.calibration,
            threshold=chosen.threshold,
            threshold_objective=settings.threshold_objective,
            risk_bands=RiskBands(medium=settings.risk_band_medium, high=settings.risk_band_high),
            test_metrics=chosen.test_metrics,
            cv_metrics=chosen.cv,
            training_distribution=feature_distribution(X_tr),
            score_distribution=score_distribution(
                chosen.calibration.apply(np.asarray(booster.inplace_predict(X_tr), np.float64))
            ),
            trained_at=datetime.now(UTC).isoformat(timespec="seconds"),
            data_sha256=data.sha256,
            git_commit=commit,
            params={
                k: v
                for k, v in chosen.res.params.items()
                if isinstance(v, str | int | float | bool) or v is None
            },
            monotone_constraints=constraints,
            reasons=reasons_mod.build_table(constraints),
        )
        with tempfile.TemporaryDirectory() as tmp:
            bundle_dir = save_bundle(
                Path(tmp) / "bundle", booster=booster, onnx_model=onnx_model, card=card
            )
            bundle = ModelBundle.load(bundle_dir, name=settings.model_name)
            # Parity on every row of the data set, not just the probe rows checked at load.
            parity = bundle.check_parity(full)
            served = bundle.score(X_te)
            mlflow.log_metric("onnx_max_abs_diff", parity)
            plot_paths = write_plots(
                Path(tmp) / "plots",
                y=y_te,
                p=chosen.p_test,
                threshold=chosen.threshold,
                importance={  # gain is one float per feature (lists are for vector leaves)
                    k: v
                    for k, v in booster.get_score(importance_type="gain").items()
                    if isinstance(v, float)
                },
            )
            for pp in plot_paths:
                mlflow.log_artifact(str(pp), artifact_path="plots")
            mlflow.log_dict(json.loads(card.model_dump_json()), "model_card.json")
            mlflow.log_metrics({f"test_{k}": v for k, v in chosen.test_metrics.items()})
            mlflow.log_metrics(chosen.cv)
            info = log_bundle_model(bundle_dir, data.X[:5])
        mv = mlflow.register_model(info.model_uri, settings.model_name)
        version = str(mv.version)
        client = registry.client
        for k, v in {
            "data_sha256": data.sha256,
            "git_commit": commit,
            "run_id": parent.info.run_id,
            "onnx_max_abs_diff": f"{parity:.3e}",
        }.items():
            client.set_model_version_tag(settings.model_name, version, k, v)
        # The gate measures the candidate through the serving kernel (ONNX + the card), the code
        # path the API and the workers answer with, not through the training estimator.
        gate_metrics = evaluate(y_te, served.probability, threshold=chosen.threshold)
        decision = decide_promotion(settings, registry, version, gate_metrics, X_te, y_te)
        mlflow.set_tags(
            {
                "model_version": version,
                "promoted": str(decision.promoted).lower(),
                "gate_reason": decision.reason,
            }
        )
        elapsed = time.perf_counter() - started
        mlflow.log_metric("training_seconds", elapsed)

    report: dict[str, Any] = {
        "model_name": settings.model_name,
        "model_version": version,
        "alias": settings.model_alias,
        "promoted": decision.promoted,
        "reason": decision.reason,
        "production_version_before": decision.production_version,
        "production_metrics_on_same_test_set": decision.production_metrics,
        "candidate": settings.candidate,
        "test_metrics": chosen.test_metrics,
        "cv_metrics": chosen.cv,
        "threshold": chosen.threshold,
        "comparison": {f: r["test_metrics"] for f, r in results.items()},
        "onnx_max_abs_diff": parity,
        "onnx_parity_tolerance": PARITY_TOLERANCE,
        "data_sha256": data.sha256,
        "run_id": parent.info.run_id,
        "training_seconds": round(elapsed, 2),
    }
    if report_path is not None:
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.write_text(json.dumps(report, indent=2))
    return report
