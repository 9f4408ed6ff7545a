"""Regenerate EXAMPLES.md from a real server: every endpoint, success and error cases.

Usage: `.venv/bin/python scripts/make_examples.py [--output EXAMPLES.md]`

Trains a model into a temporary MLflow store (about 20 s; the repository's `mlflow/` is not
touched), starts `loan-default run` (API, worker, private Redis) on it with a small rate limit,
sends each request and writes the request and the response it really got. Volatile values
(request ids, timestamps) are left as they came.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
KEY = "example-key-0123456789"
#: A second key with the `audit` scope (reads every decision), built from the first.
AUDIT_KEY = "auditor-" + KEY.split("-", 1)[1]
SHOWN_HEADERS = (
    "content-type",
    "x-request-id",
    "retry-after",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def train_store(store: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "ENVIRONMENT": "development",
        "API_KEYS": f"{KEY},{AUDIT_KEY}:audit",
        "DECISION_STORE_URL": f"sqlite:///{store / 'decisions.db'}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}",
        "MLFLOW_ARTIFACT_ROOT": str(store / "artifacts"),
        "DATA_PATH": str(ROOT / "training" / "Default_Fin.csv"),
        "RATE_LIMIT_PER_MINUTE": "60",
        "DRIFT_SAMPLING_RATE": "1",
        "DRIFT_MIN_SAMPLES": "10",
        "DRIFT_WINDOW_SIZE": "100",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    cli = str(Path(sys.executable).parent / "loan-default")
    subprocess.run(  # noqa: S603 - our own console script
        [cli, "train"], env=env, cwd=store, check=True, capture_output=True
    )
    return env


class Recorder:
    def __init__(self, base: str) -> None:
        self.base = base
        self.client = httpx.Client(base_url=base, timeout=30)
        self.sections: list[str] = []

    def heading(self, text: str, note: str = "") -> None:
        self.sections.append(f"\n## {text}\n" + (f"\n{note}\n" if note else ""))

    def call(
        self,
        title: str,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        body_note: str | None = None,
        show_body: bool = True,
        max_chars: int = 1500,
    ) -> httpx.Response:
        r = self.client.request(method, path, headers=headers or {}, content=body)
        shown_req_headers = "".join(f"{k}: {v}\n" for k, v in (headers or {}).items())
        if body is None:
            req_body = ""
        else:
            req_body = "\n" + (body_note or body.decode(errors="replace")) + "\n"
        resp_headers = "".join(f"{k}: {r.headers[k]}\n" for k in SHOWN_HEADERS if k in r.headers)
        text = r.text
        if show_body and r.headers.get("content-type", "").startswith("application/json"):
            text = json.dumps(r.json(), indent=2)
        if len(text) > max_chars:
            text = text[:max_chars] + "\n... (truncated)"
        self.sections.append(
            f"\n### {title}\n\n```http\n{method} {path} HTTP/1.1\n"
            f"{shown_req_headers}{req_body}```\n"
            f"\n```http\nHTTP/1.1 {r.status_code} {r.reason_phrase}\n{resp_headers}\n"
            f"{text if show_body else '(body omitted)'}\n```\n"
        )
        return r


def record(base: str) -> str:
    rec = Recorder(base)
    j = {"X-API-Key": KEY, "Content-Type": "application/json"}
    good = b'{"employed": 1, "bank_balance": 8754.36, "annual_salary": 532339.56}'

    rec.heading("Probes (no key)")
    rec.call("Liveness", "GET", "/healthz")
    rec.call("Readiness", "GET", "/readyz")

    rec.heading("Prediction", "`POST /api/v1/predict` with the `X-API-Key` header.")
    rec.call("Low risk applicant", "POST", "/api/v1/predict", headers=j, body=good)
    rec.call(
        "Higher risk applicant, with `?explain=true` (XGBoost contributions, log-odds)",
        "POST",
        "/api/v1/predict?explain=true",
        headers=j,
        body=b'{"employed": 0, "bank_balance": 24000.0, "annual_salary": 90000.0}',
    )
    rec.call("Model information", "GET", "/api/v1/model/info", headers={"X-API-Key": KEY})

    rec.heading(
        "Audit and adverse action",
        "Every decision is recorded before it is answered. A decision to default carries its "
        "principal reasons; the record is read back by id or by your `reference`.",
    )
    declined = rec.call(
        "A declined applicant, with the lender's reference",
        "POST",
        "/api/v1/predict",
        headers=j,
        body=b'{"employed": 1, "bank_balance": 22000.0, "annual_salary": 41000.0, '
        b'"reference": "APP-2026-000417"}',
    )
    decision_id = declined.json()["data"]["decision_id"]
    audit = {"X-API-Key": AUDIT_KEY}
    rec.call(
        "The decision record (an `audit` key reads any decision)",
        "GET",
        f"/api/v1/decisions/{decision_id}",
        headers=audit,
    )
    rec.call(
        "Decisions by reference",
        "GET",
        "/api/v1/decisions?reference=APP-2026-000417",
        headers=audit,
    )
    rec.call(
        "Predicting with an `audit`-only key (403, the missing scope named)",
        "POST",
        "/api/v1/predict",
        headers={**j, "X-API-Key": AUDIT_KEY},
        body=good,
    )
    rec.call(
        "A misspelt field is refused, never dropped (422)",
        "POST",
        "/api/v1/predict",
        headers=j,
        body=b'{"employed": 1, "bank_balance": 100.0, "annual_salary": 41000.0, '
        b'"referense": "APP-2026-000418"}',
    )

    rec.heading(
        "Outcomes and performance",
        "Months later you learn who defaulted: report it, and the service measures the model on "
        "what really happened (realized) and, for decisions still waiting, estimates it.",
    )
    aj = {**audit, "Content-Type": "application/json"}
    rec.call(
        "Reporting an outcome by reference (and one for an unknown application)",
        "POST",
        "/api/v1/outcomes",
        headers=aj,
        body=b'{"outcomes": [{"reference": "APP-2026-000417", "defaulted": true, '
        b'"observed_at": "2026-11-30"}, {"reference": "APP-1999-000001", "defaulted": false, '
        b'"observed_at": "2026-11-30"}]}',
    )
    rec.call(
        "A contradicting outcome (409, nothing recorded)",
        "POST",
        "/api/v1/outcomes",
        headers=aj,
        body=b'{"outcomes": [{"reference": "APP-2026-000417", "defaulted": false, '
        b'"observed_at": "2026-12-01"}]}',
    )
    rec.call(
        "Realized and estimated performance",
        "GET",
        "/api/v1/monitoring/performance",
        headers=audit,
        max_chars=2500,
    )

    rec.heading("Errors", "Always the envelope `success/error/message/detail`; never a 500.")
    rec.call(
        "Missing key (401)",
        "POST",
        "/api/v1/predict",
        headers={"Content-Type": "application/json"},
        body=good,
    )
    rec.call(
        "Wrong key (403)", "POST", "/api/v1/predict", headers={**j, "X-API-Key": "wrong"}, body=good
    )
    rec.call(
        "String, null and NaN values (422 naming each field)",
        "POST",
        "/api/v1/predict",
        headers=j,
        body=b'{"employed": "1", "bank_balance": null, "annual_salary": NaN}',
    )
    rec.call(
        "Overflowing number 1e400 (422)",
        "POST",
        "/api/v1/predict",
        headers=j,
        body=b'{"employed": 1, "bank_balance": 1e400, "annual_salary": 50000}',
    )
    rec.call("Not JSON (422)", "POST", "/api/v1/predict", headers=j, body=b"employed=1")
    rec.call(
        "Wrong content type (415)",
        "POST",
        "/api/v1/predict",
        headers={"X-API-Key": KEY, "Content-Type": "text/plain"},
        body=good,
    )
    big = b'{"employed": 1, "pad": "' + b"x" * 2_100_000 + b'"}'
    rec.call(
        "Body over MAX_BODY_BYTES (413)",
        "POST",
        "/api/v1/predict",
        headers=j,
        body=big,
        body_note='{"employed": 1, "pad": "xxxx... (2.1 MB)"}',
    )
    rec.call("Unknown path (404)", "GET", "/api/v1/unknown", headers={"X-API-Key": KEY})

    # drift: feed shifted traffic until the window has enough samples
    for i in range(15):
        rec.client.post(
            "/api/v1/predict",
            headers=j,
            content=json.dumps(
                {"employed": 0, "bank_balance": 30000.0 + i, "annual_salary": 12000.0}
            ).encode(),
        )
    rec.heading(
        "Monitoring",
        "After 15 requests of poor applicants with large balances (DRIFT_SAMPLING_RATE=1, "
        "DRIFT_MIN_SAMPLES=10 for this example).",
    )
    rec.call("Drift report", "GET", "/api/v1/monitoring/drift", headers={"X-API-Key": KEY})
    r = rec.client.get("/metrics")
    lines = [
        ln
        for ln in r.text.splitlines()
        if ln.startswith(
            (
                "loan_predictions_total",
                "loan_prediction_result_total",
                "loan_model_drift",
                "loan_model_info",
                'http_requests_total{handler="/api/v1/predict"',
            )
        )
    ]
    rec.sections.append(
        "\n### Prometheus metrics (excerpt)\n\n```http\nGET /metrics HTTP/1.1\n```\n\n```text\n"
        + "\n".join(lines)
        + "\n```\n"
    )
    rec.call("OpenAPI document", "GET", "/openapi.json", show_body=False)
    rec.call("Interactive docs", "GET", "/docs", show_body=False)

    rec.heading("Rate limit", "RATE_LIMIT_PER_MINUTE=60 for this example; per key, else per IP.")
    last = None
    for _ in range(40):
        last = rec.client.post("/api/v1/predict", headers=j, content=good)
        if last.status_code == 429:
            break
    rec.call("Over the limit (429)", "POST", "/api/v1/predict", headers=j, body=good)
    _ = last
    return "".join(rec.sections)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=str(ROOT / "EXAMPLES.md"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="loan-examples-") as tmp:
        store = Path(tmp)
        print("training a model into a temporary store ...", file=sys.stderr)
        env = train_store(store)
        port = free_port()
        cli = str(Path(sys.executable).parent / "loan-default")
        log = (store / "server.log").open("wb")
        proc = subprocess.Popen(  # noqa: S603 - our own console script
            [cli, "run", "--port", str(port), "--concurrency", "1"],
            env={**env, "RUN_REDIS_DIR": str(store / "redis")},
            cwd=store,
            stdout=log,
            stderr=log,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{base}/readyz").status_code == 200:
                        break
                time.sleep(0.2)
            body = record(base)
        finally:
            proc.terminate()
            proc.wait(timeout=15)
            log.close()
    header = (
        "# API examples\n\n"
        "Generated by `scripts/make_examples.py` from a running server (`loan-default run`)\n"
        "on a freshly trained model: every request below was sent and every response is the\n"
        "one that came back. Regenerate with `.venv/bin/python scripts/make_examples.py`.\n"
        "Only a few response headers are shown; every response also carries security headers\n"
        "(`X-Content-Type-Options`, `X-Frame-Options`, `Referrer-Policy`, `Cache-Control`).\n"
    )
    Path(args.output).write_text(header + body)
    print(f"wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
