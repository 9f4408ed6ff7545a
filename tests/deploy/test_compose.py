"""docker-compose.yml: Compose-spec schema, dclint, and the commands it runs exist in the image.

No Docker engine runs here (the docker client has no compose plugin), so the file is checked by
the Compose specification's JSON schema as shipped in the npm package `dclint` (installed by
tests/deploy/install-tools.sh) and by dclint itself.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import shlex
from importlib import metadata
from typing import Any

import jsonschema
import pytest
import yaml

from loan_default.core.config import Settings
from tests.deploy.conftest import COMPOSE_FILE, REPO, TOOLS, run, tool

pytestmark = pytest.mark.integration

DCLINT_DIR = TOOLS / "npm" / "node_modules" / "dclint"
APP_SERVICES = ("api", "celery-worker", "mlflow")
# Images not built from our Dockerfile: their commands are the images' own.
EXTERNAL_IMAGES = ("redis:", "postgres:")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return doc


def test_matches_compose_spec_schema(compose: dict[str, Any]) -> None:
    schema = json.loads(tool(DCLINT_DIR / "schemas" / "compose.schema.json").read_text())
    assert schema["title"] == "Compose Specification"
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(compose)]
    assert not errors, errors
    # The schema is strict: an unknown key is rejected (proves it really checks).
    broken = json.loads(json.dumps(compose))
    broken["services"]["api"]["healthcheck"]["intervall"] = "5s"
    assert list(validator.iter_errors(broken))


def test_dclint_clean() -> None:
    dclint = tool(TOOLS / "npm" / "node_modules" / ".bin" / "dclint")
    cfg = REPO / "tests" / "deploy" / "dclint.yaml"
    result = run([dclint, "-c", cfg, "--max-warnings", "0", COMPOSE_FILE])
    assert result.returncode == 0, result.stdout + result.stderr


def test_services_ports_and_storage(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"api", "celery-worker", "redis", "mlflow", "postgres"} <= set(services)
    assert services["api"]["ports"] == ["127.0.0.1:${API_PORT:-8005}:8005"]
    assert services["redis"]["ports"] == ["127.0.0.1:${REDIS_HOST_PORT:-6389}:6379"]
    assert services["mlflow"]["ports"] == ["127.0.0.1:${MLFLOW_PORT:-5001}:5000"]
    assert "--appendonly" in services["redis"]["command"]
    assert services["redis"]["command"][services["redis"]["command"].index("--appendonly") + 1]
    assert services["postgres"]["profiles"] == ["postgres"]
    api_cmd = services["api"]["command"]
    assert api_cmd[api_cmd.index("--workers") + 1] != "1"
    assert services["api"]["environment"]["PROMETHEUS_MULTIPROC_DIR"] == "/tmp/prometheus"
    assert any(t.startswith("/tmp/prometheus") for t in services["api"]["tmpfs"])
    assert "journal_mode=WAL" in " ".join(services["mlflow"]["command"])
    declared = set(compose["volumes"])
    for svc in services.values():
        for vol in svc.get("volumes", []):
            source = vol.split(":")[0]
            assert not source.startswith((".", "/")), "named volumes only"
            assert source in declared


def test_healthchecks_and_healthy_dependencies(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, svc in services.items():
        if name == "tests":
            continue
        assert "healthcheck" in svc, name
        for dep, cond in svc.get("depends_on", {}).items():
            assert dep in services
            assert cond["condition"] == "service_healthy", f"{name} -> {dep}"
    for name in APP_SERVICES:
        env_file = services[name]["env_file"]
        assert env_file == [{"path": ".env", "required": False}]


def test_app_environment_names_are_settings_fields(compose: dict[str, Any]) -> None:
    fields = {f.upper() for f in Settings.model_fields}
    for name in ("api", "celery-worker"):
        unknown = set(compose["services"][name]["environment"]) - fields
        assert not unknown, f"{name}: not Settings fields: {unknown}"


def _console_scripts() -> dict[str, str]:
    return {ep.name: ep.value for ep in metadata.entry_points(group="console_scripts")}


def _loan_default_commands() -> set[str]:
    from loan_default.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


def _check_argv(argv: list[str]) -> None:
    """The program is a console script installed by requirements.txt + the package (what the image
    has), a repository script the Dockerfile copies, or a module that exists."""
    scripts = _console_scripts()
    prog, args = argv[0], argv[1:]
    if prog in {"sh", "exec", "exit", "true"}:
        return
    if prog == "python":
        if args[0] == "-c":
            return
        if args[0] == "-m":
            assert importlib.util.find_spec(args[1]) is not None, argv
            return
        assert (REPO / args[0]).is_file(), f"{args[0]} not in the repository"
        assert f"COPY {args[0]}" in (REPO / "Dockerfile").read_text(), f"{args[0]} not copied"
        return
    assert prog in scripts, f"{prog}: no such console script in the environment"
    if prog == "loan-default":
        assert args[0] in _loan_default_commands(), f"`loan-default {args[0]}` does not exist"
    if prog == "celery" and "-A" in args:
        module = args[args.index("-A") + 1]
        assert importlib.util.find_spec(module) is not None, f"celery app {module} not found"


def _argvs(command: list[str] | str) -> list[list[str]]:
    """Split `sh -c "a && exec b"` into its commands."""
    if isinstance(command, str):
        command = shlex.split(command)
    if command[:2] == ["sh", "-c"]:
        lexer = shlex.shlex(command[2], posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        argvs: list[list[str]] = [[]]
        for token in lexer:
            if token in {"&&", "||", ";", "|"}:
                argvs.append([])
            else:
                argvs[-1].append(token)
        return [a for a in argvs if a]
    if command[0] == "CMD-SHELL":
        return _argvs(["sh", "-c", command[1]])
    if command[0] == "CMD":
        return [command[1:]]
    return [command]


def test_every_command_exists_in_the_image(compose: dict[str, Any]) -> None:
    checked = 0
    for _name, svc in compose["services"].items():
        if any(name in svc.get("image", "") for name in EXTERNAL_IMAGES):
            continue
        commands = [svc["command"]]
        if "healthcheck" in svc:
            commands.append(svc["healthcheck"]["test"])
        for command in commands:
            for argv in _argvs(command):
                argv = [a for a in argv if a != "exec"] or argv
                _check_argv(argv)
                checked += 1
    assert checked >= 7


def test_documented_training_command_resolves() -> None:
    # `docker compose run --rm api python training/train.py`
    _check_argv(["python", "training/train.py"])
    assert "train" in _loan_default_commands()


def test_stack_defects_of_issue_10_stay_fixed(compose: dict[str, Any]) -> None:
    """The four reasons the stack never came up (see tests/containers for the live run)."""
    services = compose["services"]
    # 3. the server refuses an mlflow-artifacts URI naming a host; empty = its own default root.
    for name in ("api", "celery-worker"):
        root = services[name]["environment"]["MLFLOW_ARTIFACT_ROOT"]
        assert "mlflow-artifacts://" not in root, name
    # 2. only the API has a Prometheus multiprocess directory (and its tmpfs).
    for name in ("celery-worker", "mlflow"):
        assert "PROMETHEUS_MULTIPROC_DIR" not in services[name].get("environment", {}), name
    # 4. base images are variables with the official defaults, passed to the build.
    assert (
        services["api"]["build"]["args"]["BASE_IMAGE"] == "${BASE_IMAGE:-python:3.11-slim-bookworm}"
    )
    assert services["redis"]["image"] == "${REDIS_IMAGE:-redis:7.2-alpine}"
    # uid 1000 on a read-only root, /tmp a tmpfs.
    for name in APP_SERVICES:
        assert services[name]["user"] == "1000:1000"
        assert services[name]["read_only"] is True
        assert any(t.startswith("/tmp:") for t in services[name]["tmpfs"]), name
    assert "--no-cov" in services["tests"]["command"]


def test_dev_override_mounts_src_and_reloads() -> None:
    dev = yaml.safe_load((REPO / "docker-compose.dev.yml").read_text())
    api = dev["services"]["api"]
    assert api["command"][0] == "uvicorn"
    assert "--reload" in api["command"]
    assert "--factory" in api["command"]
    (mount,) = api["volumes"]
    source, target = mount.split(":")[:2]
    assert source == "./src/loan_default"
    assert api["command"][api["command"].index("--reload-dir") + 1] == target
    assert target.endswith("site-packages/loan_default")
    factory = api["command"][1]
    module, attr = factory.split(":")
    assert hasattr(importlib.import_module(module), attr)
