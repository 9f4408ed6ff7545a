"""Shared paths and tool lookup for the deployment checks.

The validators are installed by `make deploy-tools` (tests/deploy/install-tools.sh), a prerequisite
of `make test`. A missing tool is a failure, never a skip: CI must run every check.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / ".tools"
VENV_BIN = Path(sys.executable).parent
K8S = REPO / "k8s"
COMPOSE_FILE = REPO / "docker-compose.yml"


def tool(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make deploy-tools` (make test does)", pytrace=False)
    return path


def venv_tool(name: str) -> Path:
    found = VENV_BIN / name
    if not found.exists():
        which = shutil.which(name)
        found = Path(which) if which else found
    return tool(found)


def run(cmd: list[str | Path], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=300, cwd=REPO, **kwargs
    )


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    with path.open() as fh:
        return [d for d in yaml.safe_load_all(fh) if d]


def k8s_manifest_files() -> list[Path]:
    """Every Kubernetes object file (kustomization.yaml and monitoring/ are not objects)."""
    return sorted([*K8S.glob("*.yaml"), *K8S.glob("jobs/*.yaml")])


def k8s_objects() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in k8s_manifest_files():
        if path.name == "kustomization.yaml":
            continue
        for doc in load_yaml_docs(path):
            yield path, doc


def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    if obj["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
        spec: dict[str, Any] = obj["spec"]["template"]["spec"]
        return spec
    return None
