"""Security checks: dependency audit, bandit, secrets, CORS, headers, where keys are accepted."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from loan_default.api.app import create_app
from loan_default.core.config import Settings
from loan_default.services.model import ModelService
from tests.api.conftest import GOOD, running, store_env
from tests.conftest import (
    REPO_ROOT,
    TEST_API_KEY,
    RecordingDispatcher,
    make_settings,
    queued_batch,
)

BIN = Path(sys.executable).parent
AUDIT_IGNORE = REPO_ROOT / ".ci" / "pip-audit-ignore.txt"
SECRETS_ALLOWLIST = REPO_ROOT / ".ci" / "secrets-allowlist.txt"
#: The static checks read the repository itself (src/, .ci/, git). The image's test stage holds only
#: the installed package and tests/ (docker compose --profile test); `make test` runs them.
needs_checkout = pytest.mark.skipif(
    not (REPO_ROOT / "src").is_dir() or not (REPO_ROOT / ".ci").is_dir(),
    reason="needs the repository checkout (src/, .ci/, git), not present in the test image",
)


def _listed(path: Path) -> list[list[str]]:
    """Non-comment lines of a `a | b | ... | reason` file, split on `|`."""
    rows = []
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            rows.append([part.strip() for part in line.split("|")])
    return rows


# --- static checks ----------------------------------------------------------------------
@needs_checkout
@pytest.mark.integration
def test_pip_audit_requirements() -> None:
    """Every pinned requirement is audited against PyPI's vulnerability data.

    An ignored vulnerability needs a line `ID | reason` in .ci/pip-audit-ignore.txt. When the
    service cannot be asked about some packages the test fails; when it cannot be asked about
    any (no vulnerability service reachable at all) it is skipped with that reason.
    """
    ignored = _listed(AUDIT_IGNORE)
    assert all(len(row) == 2 and row[1] for row in ignored), "each ignore needs `ID | reason`"
    argv = [
        str(BIN / "pip-audit"),
        "-r",
        str(REPO_ROOT / "requirements.txt"),
        "--no-deps",  # every line is pinned with ==: audit exactly those versions
        "--disable-pip",
        "--progress-spinner",
        "off",
        "--format",
        "json",
    ]
    for vuln_id, _ in ignored:
        argv += ["--ignore-vuln", vuln_id]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    assert done.stdout.strip(), f"pip-audit produced no report:\n{done.stderr[-2000:]}"
    report = json.loads(done.stdout)
    deps = report["dependencies"]
    skipped = [d["name"] for d in deps if d.get("skip_reason")]
    print(f"\npip-audit: {len(deps)} pinned packages, {len(skipped)} not auditable")
    if deps and len(skipped) == len(deps):
        # Nothing could be asked: this machine's PyPI mirror serves the simple index and project
        # JSON but 404s the per-version JSON pip-audit reads, and OSV is out of reach. Reported
        # as a skip with the reason (the audit did not run), not as a pass.
        pytest.skip(
            f"pip-audit could not reach a vulnerability service for any of {len(deps)} pinned "
            f"packages ({next(d['skip_reason'] for d in deps if d.get('skip_reason'))})"
        )
    assert not skipped, (
        f"pip-audit could not audit {len(skipped)} of {len(deps)} packages (first: "
        f"{skipped[:3]}): the vulnerability service (PyPI's per-version JSON API, "
        f"https://pypi.org/pypi/<name>/<version>/json) is not reachable from here. "
        f"Reason given: {next(d['skip_reason'] for d in deps if d.get('skip_reason'))}"
    )
    found = [
        f"{d['name']}=={d.get('version')}: {v['id']} (fixed in {v.get('fix_versions')})"
        for d in deps
        for v in d.get("vulns", [])
    ]
    assert not found, "known vulnerabilities:\n" + "\n".join(found)


@needs_checkout
@pytest.mark.unit
def test_bandit_clean() -> None:
    """Clean, or each finding justified inline with `# nosec BXXX - reason`."""
    done = subprocess.run(
        [str(BIN / "bandit"), "-r", str(REPO_ROOT / "src"), "-q", "-f", "json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    report = json.loads(done.stdout)
    issues = [
        f"{r['test_id']} {r['filename']}:{r['line_number']} {r['issue_text']}"
        for r in report["results"]
    ]
    assert not issues, "\n".join(issues)
    assert not report["errors"], report["errors"]
    # a bare `# nosec` (no test id, no reason) does not count as a justification
    for path in (REPO_ROOT / "src").rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if "# nosec" in line:
                tail = line.split("# nosec", 1)[1]
                assert tail.strip().startswith("B"), f"{path}:{n}: {line}"
                assert " - " in tail, f"{path}:{n}: no reason given"


@needs_checkout
@pytest.mark.unit
def test_no_secret_in_tracked_files() -> None:
    files = subprocess.run(
        ["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert files
    risky = [
        f
        for f in files
        if Path(f).name in {".env", "id_rsa", "id_ed25519", ".pypirc", ".netrc"}
        or f.endswith((".pem", ".key", ".p12", ".pfx", ".jks"))
    ]
    assert not risky, f"credential-like files are tracked: {risky}"
    # Not measured by coverage (not our code): once, under coverage's subprocess patch, one of
    # detect-secrets' pool processes died and the scan waited for it until the timeout.
    unmeasured = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}
    done = subprocess.run(
        [str(BIN / "detect-secrets"), "scan", "--no-verify", *files],
        cwd=REPO_ROOT,
        env=unmeasured,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    allowed = {(row[0], row[1], row[2]) for row in _listed(SECRETS_ALLOWLIST)}
    assert all(len(row) == 4 and row[3] for row in _listed(SECRETS_ALLOWLIST))
    findings = [
        (path, r["type"], r["hashed_secret"], r["line_number"])
        for path, results in json.loads(done.stdout)["results"].items()
        for r in results
    ]
    unexplained = [f for f in findings if f[:3] not in allowed]
    assert not unexplained, (
        "possible secrets (remove them, or explain each in .ci/secrets-allowlist.txt):\n"
        + "\n".join(f"{p}:{n} {t} {h}" for p, t, h, n in unexplained)
    )


# --- in-process app: CORS and headers --------------------------------------------------
def _app(settings: Settings, bundle: Any) -> Any:
    return create_app(
        settings,
        model_service=ModelService(settings=settings, bundle=bundle),
        dispatcher=RecordingDispatcher(),
    )


def _requests(app: Any, calls: list[tuple[str, str, dict[str, Any]]]) -> list[httpx.Response]:
    async def run() -> list[httpx.Response]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                return [await client.request(m, p, **kw) for m, p, kw in calls]

    return asyncio.run(run())


def _preflight(origin: str) -> tuple[str, str, dict[str, Any]]:
    return (
        "OPTIONS",
        "/api/v1/predict",
        {
            "headers": {
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "x-api-key,content-type",
            }
        },
    )


def _post(origin: str) -> tuple[str, str, dict[str, Any]]:
    headers = {"Origin": origin, "X-API-Key": TEST_API_KEY}
    return ("POST", "/api/v1/predict", {"json": GOOD, "headers": headers})


@pytest.mark.integration
def test_cors_closed_unless_configured(trained_store: Path, tmp_path: Path, bundle: Any) -> None:
    settings = make_settings(trained_store, **queued_batch())
    assert settings.cors_origins == ""
    pre, post = _requests(
        _app(settings, bundle), [_preflight("https://evil.example"), _post("https://evil.example")]
    )
    assert pre.status_code in {401, 405}, pre.text  # no CORS layer answers the preflight
    assert post.status_code == 200
    for r in (pre, post):
        assert not any(h.startswith("access-control-") for h in r.headers), r.headers


@pytest.mark.integration
def test_cors_open_to_configured_origins_only(
    trained_store: Path, tmp_path: Path, bundle: Any
) -> None:
    ok = "https://app.example"
    settings = make_settings(trained_store, cors_origins=ok, **queued_batch())
    pre_ok, post_ok, pre_bad, post_bad = _requests(
        _app(settings, bundle),
        [
            _preflight(ok),
            _post(ok),
            _preflight("https://evil.example"),
            _post("https://evil.example"),
        ],
    )
    assert pre_ok.status_code == 200
    assert pre_ok.headers["access-control-allow-origin"] == ok
    assert "x-api-key" in pre_ok.headers["access-control-allow-headers"].lower()
    assert post_ok.headers["access-control-allow-origin"] == ok
    assert "access-control-allow-credentials" not in post_ok.headers
    assert pre_bad.status_code == 400
    assert "access-control-allow-origin" not in pre_bad.headers
    assert "access-control-allow-origin" not in post_bad.headers


@pytest.mark.integration
def test_security_headers_on_every_kind_of_answer(
    trained_store: Path, tmp_path: Path, bundle: Any
) -> None:
    settings = make_settings(trained_store, **queued_batch())
    key = {"X-API-Key": TEST_API_KEY}
    responses = _requests(
        _app(settings, bundle),
        [
            ("GET", "/healthz", {}),
            ("POST", "/api/v1/predict", {"json": GOOD, "headers": key}),
            ("POST", "/api/v1/predict", {"json": GOOD}),  # 401
            ("POST", "/api/v1/predict", {"json": {"employed": 3}, "headers": key}),  # 422
            ("GET", "/nope", {}),  # 404
            ("POST", "/api/v1/predict", {"content": b"x" * 3_000_000, "headers": key}),  # 413
            ("GET", "/docs", {}),
        ],
    )
    assert [r.status_code for r in responses] == [200, 200, 401, 422, 404, 413, 200]
    for r in responses:
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["referrer-policy"] == "no-referrer"
        assert r.headers["cache-control"] == "no-store"
        assert r.headers["x-request-id"]
        assert "server" not in r.headers
    for r in responses[:-1]:  # API answers load nothing; the docs page needs its CDN script
        assert r.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"


# --- a real server: where keys are accepted, hashed keys, logs ----------------------------
@pytest.mark.integration
def test_keys_only_in_header_hashed_keys_and_no_key_in_logs(
    trained_store: Path, tmp_path: Path
) -> None:
    secret = "s3cret-key-only-its-hash-is-configured"
    digest = hashlib.sha256(secret.encode()).hexdigest()
    env = store_env(
        trained_store,
        environment="production",  # JSON logs; the example key is refused, hashes suffice
        api_keys="",
        api_key_hashes=f"{'0' * 64},{digest.upper()}",
        rate_limit_per_minute=1_000_000,
    )
    assert secret not in json.dumps(env)
    with running(env, tmp_path / "srv") as server, server.client() as client:
        url = "/api/v1/predict"
        assert client.post(url, json=GOOD, headers={"X-API-Key": secret}).status_code == 200
        assert client.get("/api/v1/model/info", headers={"x-api-key": secret}).status_code == 200
        # the digest itself is not a key, nor is the old test key
        for wrong in (digest, TEST_API_KEY):
            r = client.post(url, json=GOOD, headers={"X-API-Key": wrong})
            assert r.status_code == 403
            assert r.json()["error"] == "forbidden"
        # a key anywhere but the X-API-Key header does not authenticate
        for params in ({"api_key": secret}, {"X-API-Key": secret}, {"key": secret}):
            r = client.post(url, json=GOOD, params=params)
            assert r.status_code == 401, params
            assert r.json()["error"] == "unauthorized"
        for headers in (
            {"Authorization": f"Bearer {secret}"},
            {"Cookie": f"X-API-Key={secret}"},
            {"Api-Key": secret},
        ):
            assert client.post(url, json=GOOD, headers=headers).status_code == 401
        r = client.post(url, json=GOOD)
        assert r.headers["www-authenticate"] == 'ApiKey header="X-API-Key"'
        # the access line is written after the response is sent: wait for the last one
        deadline = time.monotonic() + 10
        while True:
            logs = server.logs()
            lines = [json.loads(ln) for ln in logs.splitlines() if ln.startswith("{")]
            logged = sum(ln.get("path") == url for ln in lines)
            if logged >= 10 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    assert logged >= 10, "one line per request is logged"
    assert secret not in logs, "the key (from a header or a query string) reached the logs"
    assert digest not in logs.lower()


# --- inputs the contract fuzz found answering 500 (kept as regressions) -----------------------
@pytest.mark.integration
def test_fuzz_findings_answer_4xx_or_200(trained_store: Path, tmp_path: Path, bundle: Any) -> None:
    settings = make_settings(trained_store, **queued_batch())
    key = {"X-API-Key": TEST_API_KEY}
    # a positive salary so small that saving_rate overflowed (500 from explain, null from
    # predict) is refused; the extreme accepted values score, saving_rate finite
    tiny = {"employed": 1, "bank_balance": 1e12, "annual_salary": 5e-324}
    extreme = {"employed": 1, "bank_balance": 1e12, "annual_salary": 1.0}
    huge_int = b'{"predictions": [{"employed": 123456789012345678901234567890}]}'
    refused, explain, batch = _requests(
        _app(settings, bundle),
        [
            ("POST", "/api/v1/predict", {"json": tiny, "headers": key}),
            ("POST", "/api/v1/predict?explain=true", {"json": extreme, "headers": key}),
            (
                "POST",
                "/api/v1/predict/batch",
                {"content": huge_int, "headers": {**key, "Content-Type": "application/json"}},
            ),
        ],
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"][0]["loc"] == ["body", "annual_salary"]
    assert explain.status_code == 200, explain.text
    assert explain.json()["data"]["features_used"]["saving_rate"] == 1e12
    assert set(explain.json()["data"]["contributions"]) >= {"saving_rate", "bias"}
    assert batch.status_code == 422, batch.text
    assert batch.json()["detail"][0]["loc"] == ["body", "predictions", 0, "employed"]
