"""The environment-variable table of README.md, generated from the Settings class.

    .venv/bin/python -m tests.deploy.settings_doc --write   # rewrite the table in README.md

Meaning = the field's docstring in core/config.py; fields without one use FALLBACK below.
tests/deploy/test_docs.py fails when a field is missing from README.md or .env.example.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from loan_default.core.config import Settings

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "src" / "loan_default" / "core" / "config.py"
README = REPO / "README.md"
START, END = "<!-- env-table:start -->", "<!-- env-table:end -->"

FALLBACK: dict[str, str] = {
    "log_level": "Log level (DEBUG, INFO, WARNING, ...).",
    "mlflow_experiment": "MLflow experiment that training runs are logged to.",
    "model_name": "Registered model name in the MLflow registry.",
    "model_alias": "Registry alias that is served (moved by promotion and rollback).",
    "model_reload_interval_s": "Seconds between registry polls for an alias move (hot reload).",
    "data_path": "Training CSV (derived by `loan-default data`).",
    "cost_false_negative": "Cost of a missed default, for THRESHOLD_OBJECTIVE=cost.",
    "cost_false_positive": "Cost of a false alarm, for THRESHOLD_OBJECTIVE=cost.",
    "calibration_method": "Probability calibration fitted on out-of-fold predictions.",
    "gate_min_roc_auc": "Promotion gate: minimum test ROC-AUC.",
    "gate_min_pr_auc": "Promotion gate: minimum test PR-AUC.",
    "gate_max_brier": "Promotion gate: maximum test Brier score.",
    "gate_min_f1": "Promotion gate: minimum test F1 at the chosen threshold.",
    "random_seed": "Seed of every random step in training.",
    "host": "Bind address of `loan-default serve`.",
    "port": "Port of `loan-default serve`.",
    "web_concurrency": "uvicorn worker processes of `loan-default serve`.",
    "rate_limit_per_minute": "Requests per minute per API key (client IP without a key).",
    "max_upload_bytes": "Largest batch CSV upload.",
    "drift_window_size": "Recent requests kept per process for PSI.",
    "drift_sampling_rate": "Share of single predictions sampled into the drift window.",
    "drift_batch_sampling_rate": "Share of batch rows sampled into the drift window.",
    "drift_psi_threshold": "PSI above which a feature counts as drifted.",
    "drift_interval_s": "Seconds between PSI computations (off the request path).",
    "celery_result_backend": "Celery result backend; empty follows the broker.",
    "batch_file_max_rows": "Most rows in one uploaded CSV.",
    "batch_chunk_size": "Rows per Celery chunk task.",
    "batch_result_ttl_s": "Seconds job records and results are kept.",
    "prometheus_multiproc_dir": "Prometheus multiprocess directory (several uvicorn workers); "
    "empty: a fresh temp dir when needed.",
}


def field_docstrings() -> dict[str, str]:
    """Attribute docstrings: a string expression right after an annotated field."""
    tree = ast.parse(CONFIG.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Settings")
    docs: dict[str, str] = {}
    for prev, node in zip(cls.body, cls.body[1:], strict=False):
        if (
            isinstance(prev, ast.AnnAssign)
            and isinstance(prev.target, ast.Name)
            and isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            docs[prev.target.id] = " ".join(node.value.value.split())
    return docs


def _default(value: object) -> str:
    if value is None:
        return "(unset)"
    if value == "":
        return "(empty)"
    return f"`{value}`"


def rows() -> list[tuple[str, str, str]]:
    docs = field_docstrings()
    out = []
    for name, field in Settings.model_fields.items():
        meaning = docs.get(name) or FALLBACK.get(name) or ""
        out.append((name.upper(), meaning.replace("|", "\\|"), _default(field.default)))
    return out


def table() -> str:
    lines = ["| Variable | Meaning | Default |", "| --- | --- | --- |"]
    lines += [f"| `{n}` | {m} | {d} |" for n, m, d in rows()]
    return "\n".join(lines)


def write_readme() -> None:
    text = README.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{START}\n{table()}\n{END}{tail}")


if __name__ == "__main__":
    if "--write" in sys.argv:
        write_readme()
    else:
        print(table())
