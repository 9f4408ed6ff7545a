"""Alert rules (promtool check + unit tests) and the Grafana dashboard's metric names."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.deploy.conftest import K8S, REPO, TOOLS, run, tool

pytestmark = pytest.mark.integration

RULES = K8S / "monitoring" / "alert-rules.yaml"
DASHBOARD = K8S / "monitoring" / "grafana-dashboard.json"
#: Exported by others: redis_exporter (queue backlog; k8s/redis.yaml sidecar).
EXTERNAL_METRICS = {"redis_key_size"}
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "rate", "by", "le", "histogram_quantile", "clamp_min", "absent",
    "or", "and", "ignoring", "group_left", "on", "count", "without", "unless",
}  # fmt: skip


def _promtool() -> str:
    return str(tool(TOOLS / "prometheus" / "usr" / "bin" / "promtool"))


def _service_metrics() -> set[str]:
    """Names declared in services/metrics.py (the one place every Prometheus object lives)."""
    source = (REPO / "src" / "loan_default" / "services" / "metrics.py").read_text()
    return set(re.findall(r'^\s+"((?:loan|http)_[a-z_]+)",$', source, re.MULTILINE))


def _metric_names(expr: str) -> set[str]:
    expr = re.sub(r'"[^"]*"', '""', expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)  # matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(by|without|ignoring|on|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set(re.findall(r"\b[a-z_][a-z0-9_]*\b", expr)) - PROMQL_WORDS
    names = {n for n in names if "_" in n}
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}


def _dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p["targets"]]


def _rule_exprs() -> list[str]:
    return [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def test_promtool_check_rules() -> None:
    result = run([_promtool(), "check", "rules", RULES])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests() -> None:
    result = run(
        [_promtool(), "test", "rules", REPO / "tests" / "deploy" / "alert-rules.test.yaml"]
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_required_alerts_exist() -> None:
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    assert {
        "LoanModelDriftDetected",
        "LoanApiHighErrorRate",
        "LoanApiHighLatencyP99",
        "LoanWorkerQueueBacklog",
    } <= alerts


def test_queries_use_metrics_the_service_exports() -> None:
    exported = _service_metrics()
    assert {"loan_predictions_total", "loan_model_drift_psi", "http_request_duration_seconds"} <= (
        exported
    )
    for expr in _rule_exprs() + _dashboard_exprs():
        unknown = _metric_names(expr) - exported - EXTERNAL_METRICS
        assert not unknown, f"{expr}: unknown metrics {unknown}"


def test_dashboard_is_importable_json() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "loan-default"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) >= 8
    for p in dash["panels"]:
        assert p["datasource"]["uid"] == "${datasource}"
        assert p["targets"]
