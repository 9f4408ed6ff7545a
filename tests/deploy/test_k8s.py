"""Kubernetes manifests: OpenAPI schemas (kubernetes-validate, strict), checkov, and the
properties the issue asks for (security context, probes, scaling, network isolation)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from loan_default.core.config import Settings
from tests.deploy.conftest import (
    K8S,
    REPO,
    TOOLS,
    k8s_manifest_files,
    k8s_objects,
    load_yaml_docs,
    pod_spec,
    run,
    tool,
)

pytestmark = pytest.mark.integration

OBJECTS = list(k8s_objects())
#: Oldest still-common minor and the newest the validator knows.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())


def _by(kind: str, name: str) -> dict[str, Any]:
    return next(o for _, o in OBJECTS if o["kind"] == kind and o["metadata"]["name"] == name)


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(
    ("path", "obj"),
    OBJECTS,
    ids=[f"{p.name}:{o['kind']}/{o['metadata']['name']}" for p, o in OBJECTS],
)
def test_openapi_schema_strict(path: Path, obj: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(obj, version, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    resources = set(kustomization["resources"])
    for res in resources:
        assert (K8S / res).is_file(), res
    # Everything at the top level is deployed, except the Secret template (no real secret is
    # committed) and kustomization.yaml itself. Jobs (k8s/jobs/) are created on demand.
    top_level = {p.name for p in K8S.glob("*.yaml")} - {
        "kustomization.yaml",
        "secret.template.yaml",
    }
    assert resources == top_level
    for gen in kustomization["configMapGenerator"]:
        for f in gen["files"]:
            assert (K8S / f).is_file(), f
    assert kustomization["namespace"] == "loan-default"


def test_every_object_is_namespaced_and_labelled() -> None:
    for path, obj in OBJECTS:
        if obj["kind"] == "Namespace":
            continue
        assert obj["metadata"]["namespace"] == "loan-default", path


def test_secret_template_holds_no_secret() -> None:
    (secret,) = load_yaml_docs(K8S / "secret.template.yaml")
    assert secret["kind"] == "Secret"
    for key, value in secret["stringData"].items():
        assert value in {"", "REPLACE-ME"}, f"{key} looks like a real value"


def test_configmap_keys_are_settings_or_known_runtime_variables() -> None:
    fields = {f.upper() for f in Settings.model_fields}
    data = _by("ConfigMap", "loan-default-config")["data"]
    unknown = set(data) - fields - {"HOME", "MPLCONFIGDIR"}
    assert not unknown, f"not Settings fields (typo or removed?): {unknown}"
    assert data["ENVIRONMENT"] == "production"


def test_pod_security() -> None:
    checked = 0
    for path, obj in OBJECTS:
        spec = pod_spec(obj)
        if spec is None:
            continue
        checked += 1
        where = f"{path.name}:{obj['metadata']['name']}"
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True, where
        assert psc["seccompProfile"]["type"] == "RuntimeDefault", where
        assert spec["automountServiceAccountToken"] is False, where
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), where
            assert {"cpu", "memory"} <= set(c["resources"]["limits"]), where
    assert checked == 6


def test_app_pods_run_as_uid_1000_with_writable_tmp() -> None:
    for name in ("api", "worker", "mlflow"):
        spec = _by("Deployment", name)["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsUser"] == 1000
        mounts = {m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
        assert "/tmp" in mounts
    api = _by("Deployment", "api")["spec"]["template"]["spec"]
    mounts = {m["mountPath"] for m in api["containers"][0]["volumeMounts"]}
    assert "/tmp/prometheus" in mounts


def test_metrics_dir_only_for_the_api_and_artifact_root_accepted_by_the_server() -> None:
    """Issue 10: a metrics directory in the shared ConfigMap crashed the pods without that mount;
    an `mlflow-artifacts://host` root is refused by the server (the train Job failed)."""
    data = _by("ConfigMap", "loan-default-config")["data"]
    assert "PROMETHEUS_MULTIPROC_DIR" not in data
    assert "mlflow-artifacts://" not in data["MLFLOW_ARTIFACT_ROOT"]
    (api,) = _by("Deployment", "api")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in api["env"]}
    assert env["PROMETHEUS_MULTIPROC_DIR"] == "/tmp/prometheus"


def test_api_probes() -> None:
    (c,) = _by("Deployment", "api")["spec"]["template"]["spec"]["containers"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120


def test_autoscaling_and_disruption_budgets() -> None:
    api = _by("HorizontalPodAutoscaler", "api")["spec"]
    assert (api["minReplicas"], api["maxReplicas"]) == (3, 10)
    assert api["metrics"][0]["resource"]["name"] == "cpu"
    worker = _by("HorizontalPodAutoscaler", "worker")["spec"]
    assert worker["scaleTargetRef"]["name"] == "worker"
    assert {o["metadata"]["name"] for _, o in OBJECTS if o["kind"] == "PodDisruptionBudget"} == {
        "api",
        "worker",
    }


def test_network_policies_isolate_everything_but_the_api() -> None:
    policies = {
        o["metadata"]["name"]: o["spec"] for _, o in OBJECTS if o["kind"] == "NetworkPolicy"
    }
    deny = policies["default-deny-ingress"]
    assert deny["podSelector"] == {}
    assert "ingress" not in deny
    # Only the api admits traffic from another namespace besides monitoring.
    for name, spec in policies.items():
        for rule in spec.get("ingress", []):
            for peer in rule["from"]:
                ns = peer.get("namespaceSelector", {}).get("matchLabels", {})
                if ns.get("kubernetes.io/metadata.name") == "ingress-nginx":
                    assert name == "api-ingress"
    ingress = _by("Ingress", "api")["spec"]
    assert ingress["tls"][0]["secretName"]
    backends = {
        p["backend"]["service"]["name"] for r in ingress["rules"] for p in r["http"]["paths"]
    }
    assert backends == {"api"}


def test_checkov_policies_pass_with_explained_skips() -> None:
    checkov = tool(TOOLS / "checkov" / "bin" / "checkov")
    result = run(
        [
            checkov,
            "-d",
            K8S,
            "--framework",
            "kubernetes",
            "secrets",
            "--skip-download",
            "-o",
            "json",
        ]
    )
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = [f for r in reports for f in r["results"]["failed_checks"]]
    assert not failed, [(f["check_id"], f["resource"], f["file_path"]) for f in failed]
    k8s_report = next(r for r in reports if r["check_type"] == "kubernetes")
    assert k8s_report["summary"]["passed"] > 200
    for skipped in k8s_report["results"]["skipped_checks"]:
        reason = skipped["check_result"].get("suppress_comment", "")
        assert len(reason) > 20, f"{skipped['check_id']} skipped without a reason"


def test_every_manifest_file_is_yaml_with_objects() -> None:
    files = k8s_manifest_files()
    assert len(files) >= 14
    assert REPO / "k8s" / "jobs" / "train-job.yaml" in files
