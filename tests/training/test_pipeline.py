"""Training against real MLflow stores (SQLite here, PostgreSQL below)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from loan_default.cli import main as cli_main
from loan_default.registry.client import Registry, configure_tracking
from loan_default.training.gate import GateDecision, gate
from loan_default.training.pipeline import train
from tests.conftest import make_settings

pytestmark = pytest.mark.integration

TARGETS = {"roc_auc": 0.945, "pr_auc": 0.45, "precision_at_recall_0_8": 0.28, "f1": 0.45}


def test_first_training_meets_targets_and_is_promoted(trained_store: Path) -> None:
    report = json.loads((trained_store / "report.json").read_text())
    tm = report["test_metrics"]
    for name, minimum in TARGETS.items():
        assert tm[name] >= minimum, (name, tm[name])
    assert tm["brier"] <= 0.024
    assert report["promoted"] is True
    assert report["model_version"] == "1"
    assert report["onnx_max_abs_diff"] <= 1e-5
    assert report["training_seconds"] > 0  # measured and reported, not asserted (load-dependent)
    assert set(report["comparison"]) == {"xgb_smote", "xgb_weighted", "logreg"}
    assert 0.0 < report["threshold"] < 1.0
    assert report["cv_metrics"]["cv_roc_auc_std"] > 0


def test_run_logs_params_metrics_plots_and_children(trained_store: Path) -> None:
    settings = make_settings(trained_store)
    client = MlflowClient(settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)
    exp = client.get_experiment_by_name(settings.mlflow_experiment)
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.info.run_name == "train"]
    children = {r.info.run_name for r in runs if r.info.run_name != "train"}
    assert children == {"xgb_smote", "xgb_weighted", "logreg"}
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert len(parent.data.params["data_sha256"]) == 64
    assert "git_commit" in parent.data.params
    assert parent.data.metrics["test_roc_auc"] >= 0.945
    arts = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert arts == {
        f"plots/{n}.png" for n in ("roc_curve", "pr_curve", "calibration_curve", "confusion_matrix")
    } | {"plots/feature_importance.png"}
    mv = client.get_model_version(settings.model_name, "1")
    assert mv.tags["promoted"] == "true"
    assert str(client.get_model_version_by_alias(settings.model_name, "production").version) == "1"


def test_pyfunc_flavour_scores_like_the_bundle(trained_store: Path, bundle) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(trained_store)
    configure_tracking(settings)
    model = mlflow.pyfunc.load_model(f"models:/{settings.model_name}@production")
    df = pd.DataFrame(
        {
            "employed": [1, 0],
            "bank_balance": [8754.36, 25000.0],
            "annual_salary": [532339.56, 90000],
        }
    )
    out = model.predict(df)
    for i, row in df.iterrows():
        one = bundle.score_one(row.employed, row.bank_balance, row.annual_salary)
        assert out["probability"][i] == pytest.approx(one.probability, abs=1e-6)
        assert out["prediction"][i] == one.prediction
        assert out["default_risk"][i] == one.default_risk


def test_retraining_not_better_is_registered_not_promoted_then_promote_and_rollback(
    fresh_store: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    quick_training: int,
) -> None:
    settings = make_settings(fresh_store)
    report = train(settings)
    assert report["model_version"] == "2"
    assert report["promoted"] is False
    assert report["reason"].startswith("not better than production")
    registry = Registry(settings)
    assert registry.alias_version() == "1"
    assert registry.version_tags("2")["promoted"] == "false"

    for key, value in {
        "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
        "API_KEYS": "k",
        "ENVIRONMENT": "test",
    }.items():
        monkeypatch.setenv(key, value)
    assert cli_main(["model", "promote", "2"]) == 0
    assert registry.alias_version() == "2"
    assert cli_main(["model", "list"]) == 0
    assert "v2" in capsys.readouterr().out
    assert cli_main(["model", "rollback"]) == 0
    assert registry.alias_version() == "1"
    assert cli_main(["model", "rollback"]) == 1  # nothing earlier than v1
    assert "no earlier" in capsys.readouterr().err
    assert cli_main(["model", "promote", "99"]) == 1


def test_gate_minimums_block_promotion(
    fresh_store: Path, tmp_path: Path, quick_training: int
) -> None:
    settings = make_settings(fresh_store, gate_min_roc_auc=0.999)
    report = train(settings, report_path=tmp_path / "r.json")
    assert report["promoted"] is False
    assert "below minimums: ROC-AUC" in report["reason"]
    assert json.loads((tmp_path / "r.json").read_text())["model_version"] == "2"
    assert Registry(settings).alias_version() == "1"
    assert "below minimums" in Registry(settings).version_tags("2")["gate_reason"]


def test_rejected_file_registers_nothing(
    fresh_store: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("Index,Employed,Bank Balance,Annual Salary,Defaulted?\n1,3,-1,0,0\n2,1,1,1,1\n")
    settings = make_settings(fresh_store)
    client = MlflowClient(settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)
    runs_before = len(
        client.search_runs([client.get_experiment_by_name("loan-default").experiment_id])
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", settings.mlflow_tracking_uri)
    monkeypatch.setenv("API_KEYS", "k")
    assert cli_main(["train", "--data", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "column 'Employed': 1 rows break: employed must be an integer" in err
    assert "column 'Annual Salary': 1 rows break: annual_salary must be a number >= 1" in err
    runs_after = client.search_runs([client.get_experiment_by_name("loan-default").experiment_id])
    assert len(runs_after) == runs_before
    assert all(r.info.status == "FINISHED" for r in runs_after)
    assert [v.version for v in Registry(settings).list_versions()] == ["1"]


class _FakeRegistry:
    """Stands in for the registry in the pure gate-logic tests."""

    def __init__(self, prod_version: str | None, bundle: object | None) -> None:
        self._v, self._b = prod_version, bundle

    def alias_version(self) -> str | None:
        return self._v

    def load_bundle(self, version: str) -> object:
        return self._b


@pytest.mark.unit
def test_gate_logic_both_ways(bundle) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(Path("/nonexistent"))
    rng = np.random.default_rng(0)
    from loan_default.features import build_matrix

    x = build_matrix(
        np.column_stack(
            [rng.integers(0, 2, 400), rng.uniform(0, 30000, 400), rng.uniform(10000, 700000, 400)]
        )
    )
    p = bundle.score(x).probability
    y = (rng.random(400) < p).astype(int)
    from loan_default.training.metrics import evaluate

    prod = evaluate(y, p, threshold=bundle.card.threshold)
    good = {**prod, "roc_auc": 0.99, "pr_auc": 0.9, "brier": 0.001, "f1": 0.9}

    first: GateDecision = gate(settings, _FakeRegistry(None, None), good, x, y)  # type: ignore[arg-type]
    assert first.promoted
    better = gate(
        settings,
        _FakeRegistry("1", bundle),
        {**good, "roc_auc": prod["roc_auc"] + 0.01, "brier": prod["brier"]},
        x,
        y,
    )  # type: ignore[arg-type]
    low = {**good, "roc_auc": 0.5}
    assert gate(settings, _FakeRegistry("1", bundle), low, x, y).promoted is False  # type: ignore[arg-type]
    worse_brier = {**good, "roc_auc": prod["roc_auc"] + 0.01, "brier": prod["brier"] + 0.001}
    if worse_brier["brier"] <= settings.gate_max_brier and prod["roc_auc"] + 0.01 >= 0.945:
        d = gate(settings, _FakeRegistry("1", bundle), worse_brier, x, y)  # type: ignore[arg-type]
        assert d.promoted is False
        assert d.reason.startswith("worse than production")
    if prod["roc_auc"] + 0.01 >= 0.945 and prod["brier"] <= settings.gate_max_brier:
        assert better.promoted, better.reason
        same = gate(
            settings,
            _FakeRegistry("1", bundle),
            {**good, "roc_auc": prod["roc_auc"], "brier": prod["brier"]},
            x,
            y,
        )  # type: ignore[arg-type]
        assert same.promoted is False
        assert same.reason.startswith("not better")


@pytest.mark.slow
def test_training_against_postgresql_backend(tmp_path: Path, quick_training: int) -> None:
    psycopg2 = pytest.importorskip("psycopg2")
    dbname = f"mlflow_test_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="test")
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{dbname}"')
    try:
        uri = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{dbname}"
        settings = make_settings(
            tmp_path, mlflow_tracking_uri=uri, mlflow_artifact_root=str(tmp_path / "artifacts")
        )
        report = train(settings)
        assert report["promoted"] is True
        registry = Registry(settings)
        assert registry.alias_version() == "1"
        loaded = registry.load_alias()
        assert loaded is not None
        assert loaded.card.test_metrics["roc_auc"] == pytest.approx(
            report["test_metrics"]["roc_auc"]
        )
    finally:
        mlflow.set_tracking_uri("")
        import sqlalchemy

        # MLflow keeps pooled connections open; drop them before dropping the database.
        sqlalchemy.pool.clear_managers() if hasattr(sqlalchemy.pool, "clear_managers") else None
        admin.cursor().execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (dbname,)
        )
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{dbname}"')
        admin.close()
