"""Contract fuzzing with schemathesis against a live server's own `/openapi.json`.

`fuzz(base_url, ...)` walks every operation of the document, generating positive (schema-valid)
and negative (schema-violating) cases with hypothesis, sends each one with a valid API key and
without any, and checks every answer: no 5xx, the status code is documented for the operation,
the content type and body match what the document declares, and negative data is refused with a
4xx. Failures are collected (not raised, so hypothesis does not spend minutes shrinking) and
returned with a curl line to reproduce each.

`fuzz_stateful(base_url, ...)` then chains calls through the document's OpenAPI links (a batch
submit's 202 carries the job id to the status and results.csv operations): hypothesis builds
sequences of calls, each linked call uses the id the previous answer returned, so the status and
CSV operations are fuzzed on real jobs instead of answering 404 to random ids.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import hypothesis.errors
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, Verbosity, given
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.generation.stateful.state_machine import StepInput, StepOutput
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def _statuses(counts: Counter[int]) -> str:
    return ", ".join(f"{s}: {n}" for s, n in sorted(counts.items()))


@dataclass
class FuzzReport:
    operations: list[str] = field(default_factory=list)
    requests: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    per_operation: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    unsatisfiable: list[str] = field(default_factory=list)
    keyless_api: Counter[int] = field(default_factory=Counter)
    """Statuses of the requests to /api/v1 sent without a key."""

    def summary(self) -> str:
        return (
            f"{len(self.operations)} operations, {self.requests} requests "
            f"({_statuses(self.by_status)}); {len(self.failures)} failures"
        )


def fuzz(
    base_url: str,
    *,
    api_key: str,
    max_examples: int,
    modes: tuple[GenerationMode, ...] = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE),
) -> FuzzReport:
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", timeout=10)
    schema.config.update(base_url=base_url)
    report = FuzzReport()
    session = requests.Session()
    settings = hypothesis.settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
        verbosity=Verbosity.quiet,
    )
    for result in schema.get_all_operations():
        operation = result.ok()
        label = operation.label
        report.operations.append(label)
        for mode in modes:
            for keyed in (True, False):
                _run_one(operation, mode, keyed, api_key, session, settings, report)
    return report


def _run_one(
    operation: Any,
    mode: GenerationMode,
    keyed: bool,
    api_key: str,
    session: requests.Session,
    settings: hypothesis.settings,
    report: FuzzReport,
) -> None:
    label = operation.label
    headers = {"X-API-Key": api_key} if keyed else {}
    checks = [*CHECKS, negative_data_rejection] if mode.is_negative else CHECKS

    @settings
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        if not keyed:
            # a generated header spelled like ours must not sneak a key in
            for name in list(case.headers or {}):
                if name.lower() == "x-api-key":
                    del case.headers[name]
        response = case.call(session=session, headers=headers, timeout=15)
        report.requests += 1
        report.by_status[response.status_code] += 1
        report.per_operation[label] += 1
        if not keyed and operation.path.startswith("/api/v1"):
            report.keyless_api[response.status_code] += 1
        try:
            case.validate_response(response, checks=checks, headers=headers)
        except (Exception, BaseExceptionGroup) as exc:  # collected, reported at the end
            curl = case.as_curl_command(headers=headers)
            report.failures.append(
                f"{label} [{mode.value}, key={keyed}] -> {response.status_code}: "
                f"{str(exc)[:600]}\n    {curl[:400]}"
            )

    try:
        run()
    except hypothesis.errors.Unsatisfiable:
        # nothing to negate (an operation without parameters or body): no negative cases
        report.unsatisfiable.append(f"{label} [{mode.value}]")


@dataclass
class StatefulReport:
    scenarios: int = 0
    steps: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    per_operation: Counter[str] = field(default_factory=Counter)
    linked: Counter[str] = field(default_factory=Counter)
    """Steps made through a link with the id substituted, per operation and status."""
    failures: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.scenarios} scenarios, {self.steps} calls ({_statuses(self.by_status)}), "
            f"{sum(self.linked.values())} through links; {len(self.failures)} failures"
        )


def fuzz_stateful(
    base_url: str, *, api_key: str, max_examples: int, step_count: int = 6
) -> StatefulReport:
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", timeout=10)
    schema.config.update(base_url=base_url)
    report = StatefulReport()
    session = requests.Session()
    headers = {"X-API-Key": api_key}
    base: Any = schema.as_state_machine()

    class Machine(base):  # type: ignore[misc, valid-type]
        def setup(self) -> None:
            report.scenarios += 1

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"session": session, "headers": headers, "timeout": 15}

        def step(self, input: StepInput) -> StepOutput:
            output = super().step(input)
            status = output.response.status_code
            label = input.case.operation.label
            report.steps += 1
            report.by_status[status] += 1
            report.per_operation[label] += 1
            if input.transition is not None and input.is_applied:
                report.linked[f"{label} -> {status}"] += 1
            return output

        def validate_response(
            self,
            response: Any,
            case: Any,
            additional_checks: Any = None,
            **kwargs: Any,
        ) -> None:
            try:
                case.validate_response(response, checks=CHECKS, headers=headers)
            except (Exception, BaseExceptionGroup) as exc:  # collected, reported at the end
                report.failures.append(
                    f"{case.operation.label} [stateful] -> {response.status_code}: "
                    f"{str(exc)[:600]}\n    {case.as_curl_command(headers=headers)[:400]}"
                )

    Machine.run(
        settings=hypothesis.settings(
            max_examples=max_examples,
            stateful_step_count=step_count,
            # the same sequences on every run: with random ones, 25 scenarios sometimes chained
            # no submit into a status call (the test then proves nothing and fails)
            derandomize=True,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
            print_blob=False,
            verbosity=Verbosity.quiet,
        )
    )
    return report


# --- query strings of every route -------------------------------------------------------------
#: Values that broke query parsing elsewhere: huge and negative numbers, float spellings,
#: invalid or truncated percent escapes, NUL, non-UTF-8 bytes, booleans' cousins, empties.
_NASTY_VALUES = (
    "",
    "-1",
    "0",
    "99999999999999999999999",
    "-99999999999999999999999",
    "1e400",
    "NaN",
    "inf",
    "1.5",
    "0x10",
    "%ff",
    "%",
    "%zz",
    "%00",
    "%C0%AF",
    "true",
    "yes",
    "null",
    "[]",
    "{}",
    "%7Bx%7D",
    "a" * 5000,
)


@dataclass
class QueryReport:
    requests: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    per_route: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{len(self.per_route)} routes, {self.requests} requests "
            f"({_statuses(self.by_status)}); {len(self.failures)} failures"
        )


def _query_strategy(declared: list[str]) -> Any:
    """Raw query strings: declared and random names, repeated, with nasty or random values.
    Percent escapes are kept raw (http.client sends the target as given), so invalid ones reach
    the server."""
    from urllib.parse import quote

    from hypothesis import strategies as st

    text = st.text(max_size=30).map(lambda t: quote(t, safe=""))
    name = st.sampled_from(declared) | text if declared else text
    value = st.sampled_from(_NASTY_VALUES) | text | st.integers().map(str)
    pair = st.tuples(name, value).map(lambda kv: f"{kv[0]}={kv[1]}")
    bare = name  # a key without `=`
    return st.lists(pair | bare, max_size=6).map("&".join)


def fuzz_query(
    base_url: str,
    *,
    api_key: str,
    max_examples: int,
    bodies: dict[str, tuple[bytes, str]],
    path_values: dict[str, str],
) -> QueryReport:
    """Every operation of the document called with generated query strings (declared
    parameters or not) and otherwise valid requests (`bodies`: a valid body and content type per
    path; `path_values`: a real value per path parameter), so query handling is what is tested.
    A 5xx, a non-JSON error or a refusal without the error envelope is a failure."""
    from urllib.parse import urlsplit

    doc = requests.get(f"{base_url}/openapi.json", timeout=10).json()
    netloc = urlsplit(base_url)
    report = QueryReport()
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            declared = [p["name"] for p in op.get("parameters", []) if p["in"] == "query"]
            target = path
            for key, val in path_values.items():
                target = target.replace("{" + key + "}", val)
            body, ctype = bodies.get(f"{method.upper()} {path}", (b"", ""))
            _fuzz_operation_query(
                (netloc.hostname or "127.0.0.1", netloc.port or 80),
                method.upper(),
                target,
                label=f"{method.upper()} {path}",
                declared=declared,
                body=body,
                headers={"X-API-Key": api_key, **({"Content-Type": ctype} if ctype else {})},
                max_examples=max_examples,
                report=report,
            )
    return report


def _fuzz_operation_query(
    address: tuple[str, int],
    method: str,
    target: str,
    *,
    label: str,
    declared: list[str],
    body: bytes,
    headers: dict[str, str],
    max_examples: int,
    report: QueryReport,
) -> None:
    import http.client

    from hypothesis import strategies as st

    @hypothesis.settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
    )
    @given(query=_query_strategy(declared) | st.sampled_from(["", "&&", "=", "==&=x"]))
    def run(query: str) -> None:
        conn = http.client.HTTPConnection(*address, timeout=15)
        try:
            conn.request(method, f"{target}?{query}", body=body or None, headers=headers)
            response = conn.getresponse()
            status, data = response.status, response.read()
            content_type = response.getheader("content-type", "")
        finally:
            conn.close()
        report.requests += 1
        report.by_status[status] += 1
        report.per_route[label] += 1
        problem = ""
        if status >= 500:
            problem = "server error"
        elif status >= 400:
            if "json" not in content_type:
                problem = "refusal is not JSON"
            elif b'"success":false' not in data:
                problem = "refusal without the error envelope"
        if problem:
            report.failures.append(f"{label}?{query[:300]} -> {status} ({problem}): {data[:300]!r}")

    run()
