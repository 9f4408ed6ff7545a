"""The one settings class. Every variable is documented in `.env.example` and the README.

Variable names carry no prefix because clients and operators already use the names in the
API contract (`API_KEYS`, `MLFLOW_TRACKING_URI`, `RATE_LIMIT_PER_MINUTE`, ...).
"""

from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import (
    Field,
    ValidationError,
    ValidationInfo,
    computed_field,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from loan_default.core import keys

#: The key shipped in `.env.example`; refused when ENVIRONMENT=production.
EXAMPLE_API_KEY = "dev-key-change-me"


class Settings(BaseSettings):
    """Runtime configuration for training, the API and the batch worker."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    environment: Literal["development", "test", "production"] = "development"
    """`production` switches logs to JSON lines and refuses the example API key."""
    log_level: str = "INFO"

    # --- auth -------------------------------------------------------------------------------
    api_keys: str = EXAMPLE_API_KEY
    """Comma-separated accepted keys, each with optional scopes after its last `:`
    (`key1,key2:score+audit`; scopes `score`, `audit`, `outcomes`, `admin`; none given:
    `score`). Several keys so one can be rotated without downtime."""
    api_key: str | None = None
    """A single extra accepted key, scopes as in API_KEYS (kept for single-key deployments)."""
    api_key_hashes: str = ""
    """Comma-separated sha256 hex digests of accepted keys, scopes as in API_KEYS
    (`<sha256hex>:score+audit`), so plain keys need not sit in env."""

    # --- MLflow -----------------------------------------------------------------------------
    mlflow_tracking_uri: str = "sqlite:///mlflow/mlflow.db"
    """Tracking + registry store; SQLite needs no server, any MLflow URI works."""
    mlflow_artifact_root: str = "mlflow/artifacts"
    """Where new experiments keep artifacts: a local path, or a URI (s3://, mlflow-artifacts:/)
    passed as given; empty uses the tracking server's default. Read when creating the experiment."""
    mlflow_experiment: str = "loan-default"
    model_name: str = "loan-default"
    model_alias: str = "production"
    model_reload_interval_s: float = Field(default=30.0, gt=0)
    model_load_retry_max_s: float = Field(default=30.0, gt=0)
    """Upper bound of the exponential back-off while no model could be loaded."""
    model_startup_wait_s: float = Field(default=30.0, ge=0)
    """How long a starting API worker waits for its first model load before it accepts
    requests (so no worker of a ready pod answers `model_not_ready`); past it, it serves 503
    with a reason and keeps retrying in the background."""
    challenger_alias: str = "challenger"
    """Registry alias of a shadow model scored beside production on sampled decisions (its
    probability goes to the decision record, never into the answer); empty disables it. No such
    alias, or the same version as production, means no challenger."""
    challenger_sampling_rate: float = Field(default=1.0, ge=0, le=1)
    """Share of decisions the challenger scores (chosen from the decision id, so deterministic)."""
    challenger_min_outcomes: int = Field(default=1000, ge=1)
    """`model promote challenger --if-better` gates on live outcomes (the challenger and production
    on the same decided-and-observed applications) once at least this many exist; with fewer, on
    the held-out test set as training does."""

    # --- training ---------------------------------------------------------------------------
    data_path: str = "training/Default_Fin.csv"
    candidate: Literal["xgb_smote", "xgb_weighted"] = "xgb_smote"
    """Which XGBoost family is registered (the logistic baseline is only compared)."""
    threshold_objective: str = "f1"
    """`f1`, `recall>=R` (e.g. `recall>=0.8`) or `cost` (uses the two costs below)."""
    cost_false_negative: float = Field(default=10.0, gt=0)
    cost_false_positive: float = Field(default=1.0, gt=0)
    calibration_method: Literal["isotonic", "sigmoid"] = "sigmoid"
    monotone_constraints: bool = True
    """Train XGBoost with monotone constraints (a higher card balance, alone or relative to
    income, never lowers risk); false trains unconstrained, and reason codes then state no
    direction. Recorded in the model card."""
    risk_band_medium: float = Field(default=0.3, gt=0, lt=1)
    """Probabilities >= this are Medium risk."""
    risk_band_high: float = Field(default=0.7, gt=0, lt=1)
    """Probabilities >= this are High risk."""
    gate_min_roc_auc: float = 0.945
    gate_min_pr_auc: float = 0.45
    gate_max_brier: float = 0.024
    gate_min_f1: float = 0.45
    gate_min_improvement: float = 0.0
    """A candidate must beat production by more than this on ROC-AUC or Brier to be promoted."""
    random_seed: int = 42

    # --- API --------------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(default=8005, ge=1, le=65535)
    web_concurrency: int = Field(default=1, ge=1)
    rate_limit_per_minute: int = Field(default=100, ge=1)
    rate_limit_storage_uri: str = "memory://"
    """`memory://` (per process) or `redis://host:port/db`, shared by every worker and pod."""
    rate_limit_key_prefix: str = "loan-default-rl"
    """Prefix of the rate-limit counters in shared storage (lets deployments share a Redis)."""
    rate_limit_storage_timeout_s: float = Field(default=0.25, gt=0, le=10)
    """Bound on one call to the shared rate-limit storage; past it (or on any error) the process
    limits in its own memory and retries the storage every few seconds (a hung Redis must not
    add seconds to every request)."""
    max_body_bytes: int = Field(default=2_000_000, ge=1024)
    """Requests with larger bodies are refused with 413 before they are parsed."""
    max_upload_bytes: int = Field(default=100_000_000, ge=1024)
    body_read_timeout_s: float = Field(default=30.0, gt=0)
    """A request body must arrive within this (408 and the connection closed otherwise), so slow
    clients cannot hold connections; upload routes get it scaled by their larger size limit, and
    it is the grace period before BODY_MIN_RATE_BYTES_S applies."""
    body_min_rate_bytes_s: int = Field(default=1000, ge=1)
    """Rate floor of a body after the BODY_READ_TIMEOUT_S grace: its byte n must have arrived
    n / this seconds after the grace ends (408 otherwise). Cuts a trickled upload long before its
    total budget (1,500 s for 100 MB), while a slow but steady client keeps going."""
    max_header_bytes: int = Field(default=16_384, ge=1024)
    """Request line plus header names and values; larger heads get 431 before the rest is read
    (the API needs well under 1 kB; proxies add a few headers)."""
    header_read_timeout_s: float = Field(default=10.0, gt=0)
    """The request line and headers must be complete this long after the connection opens (or
    after a kept-alive connection starts its next request): 408 and closed otherwise."""
    max_connections: int = Field(default=1000, ge=1)
    """Open connections per worker process; a new one beyond this gets 503 and is closed at once,
    before anything is read (bounds sockets and memory held by idle or slow clients)."""
    max_error_detail_bytes: int = Field(default=65_536, ge=1024)
    """Cap on a 422 answer's `detail` list (serialized bytes): beyond it the list is cut and
    `detail_truncated` says how many errors were left out; `message` names the first fields."""
    http_keep_alive_timeout_s: int = Field(default=5, ge=1)
    """Idle keep-alive connections are closed after this many seconds (uvicorn)."""
    cors_origins: str = ""
    """Comma-separated allowed origins; empty keeps CORS closed."""

    # --- drift ------------------------------------------------------------------------------
    drift_window_size: int = Field(default=1000, ge=10)
    drift_sampling_rate: float = Field(default=0.1, ge=0, le=1)
    drift_batch_sampling_rate: float = Field(default=0.05, ge=0, le=1)
    drift_psi_threshold: float = Field(default=0.15, gt=0)
    drift_min_samples: int = Field(default=100, ge=1)
    """PSI is not reported (nor alerted on) before the window holds this many samples."""
    drift_interval_s: float = Field(default=5.0, gt=0)

    # --- batch ------------------------------------------------------------------------------
    celery_broker_url: str = ""
    """Redis URL of the batch broker. Empty: `loan-default run` starts a private Redis (under
    `run_redis_dir`); `serve` alone then answers batch routes with 503."""
    celery_result_backend: str = ""
    run_redis_dir: str = "var/redis"
    """Data directory (append-only file) of the private Redis `loan-default run` starts when
    CELERY_BROKER_URL is empty: queued jobs survive a restart."""
    celery_queue: str = "loan-default-batch"
    """Queue of the chunk tasks; a separate name isolates deployments sharing one Redis."""
    celery_visibility_timeout_s: int = Field(default=300, ge=1)
    """Seconds before Redis redelivers a message held by a dead worker; keep > longest chunk."""
    batch_max_rows: int = Field(default=1000, ge=1, le=100_000)
    """Most items in one JSON batch request; counted on the raw body (a byte scan) before anything
    is parsed or validated, so an oversized list is refused in milliseconds (it once took 22 s)."""
    batch_max_reported_errors: int = Field(default=100, ge=1, le=10_000)
    """At most this many errors are listed in a batch 422 or a job's `row_errors` (the count of
    bad rows stays exact), so one bad request cannot produce a huge error body."""
    batch_file_max_rows: int = Field(default=1_000_000, ge=1)
    batch_csv_max_columns: int = Field(default=256, ge=3, le=100_000)
    """Most columns in an uploaded CSV, checked on its header before Arrow parses the file
    (each column costs a parser buffer: 100,003 columns took 1.1 GB of API memory)."""
    batch_csv_max_header_bytes: int = Field(default=65_536, ge=64)
    """Longest header line of an uploaded CSV, read before the file is parsed."""
    batch_csv_escape_formulas: bool = True
    """Prefix `'` to text cells (and header names) of results.csv that start with = + - @ tab
    CR or LF, so spreadsheets do not run them (OWASP CSV injection); false for machine readers
    that want the uploaded text verbatim. Read by the workers, which write results.csv."""
    batch_chunk_size: int = Field(default=50_000, ge=100)
    batch_result_ttl_s: int = Field(default=86_400, ge=60)
    batch_store_url: str = ""
    """Redis URL for job records/results; empty uses the broker's Redis."""
    batch_key_prefix: str = "loan-default:batch:"
    """Prefix of every job-store key in Redis (lets several deployments share one Redis)."""
    batch_page_max_rows: int = Field(default=1000, ge=1, le=100_000)
    """Default and largest `limit` of one page of results in the job status response."""
    batch_task_time_limit_s: int = Field(default=120, ge=1)
    """Hard time limit of one chunk task (a 50,000-row chunk takes well under a second)."""
    batch_stall_s: float = Field(default=60.0, gt=0)
    """A job with no chunk begun for this long while the queue is empty has lost a chunk message
    (a worker killed as it took it); the workers send its unscored chunks again."""
    batch_task_max_retries: int = Field(default=5, ge=0)
    """Retries (exponential back-off) for transient errors: model not loaded yet, store down."""
    worker_concurrency: int = Field(default=0, ge=0)
    """Worker processes per `loan-default worker`; 0 means one per CPU."""

    # --- decision record ----------------------------------------------------------------
    decision_store_url: str = "sqlite:///var/decisions.db"
    """Where every decision is recorded: `sqlite:///path` (embedded, WAL, no server; the
    directory is created) or `postgresql://HOST/DB` with the usual credentials (partitioned by
    month)."""
    decision_recording: Literal["required", "best_effort", "off"] = "required"
    """`required`: a prediction is answered only after its record is committed, and predict
    answers 503 while the store is down. `best_effort`: serve anyway and count each lost record
    in a metric. `off`: record nothing."""
    decision_retention_months: int = Field(default=25, ge=1)
    """Months a decision record is kept before the purge removes it (25: the ECOA / Regulation B
    record-retention period, 12 CFR 1002.12(b)(1)); PostgreSQL drops whole monthly partitions."""
    decision_flush_interval_ms: float = Field(default=0.0, ge=0, le=1000)
    """How long the group-commit writer waits for more records before committing a group; 0
    commits as soon as the previous commit is done (records that arrive meanwhile still share
    the next one)."""
    decision_max_batch: int = Field(default=500, ge=1, le=100_000)
    """Most records committed in one group-commit transaction."""
    decision_writer: Literal["process", "thread"] = "process"
    """Where the API writes its group commits: `process`, a writer child process per API worker
    (the event loop never shares its GIL with the database driver; see DESIGN.md), or `thread`,
    a thread of the worker itself."""
    outcomes_max_items: int = Field(default=10_000, ge=1, le=1_000_000)
    """Most outcomes in one JSON `POST /api/v1/outcomes` (counted on the raw body before it is
    parsed); larger uploads go to `/api/v1/outcomes/file`."""
    outcomes_file_max_rows: int = Field(default=1_000_000, ge=1)
    """Most rows in one outcomes CSV upload (`/api/v1/outcomes/file`), recorded all or nothing
    in one transaction (its size is bounded by MAX_UPLOAD_BYTES too)."""
    performance_window_days: int = Field(default=365, ge=1, le=3650)
    """Trailing window of decision time over which the `loan_model_realized_*`/`estimated_*`
    gauges are computed (the monitoring route takes its own `from`/`to`)."""
    performance_refresh_s: float = Field(default=300.0, ge=0)
    """Seconds between recomputations of the performance gauges by the API (0: only when
    `GET /api/v1/monitoring/performance` is called)."""
    performance_min_outcomes: int = Field(default=2000, ge=1)
    """Fewest decisions (with outcomes, or pending for the estimate) before a performance
    alert may fire: at a 3.3 % default rate the observed/expected band needs ~2,000 rows."""
    performance_oe_band_low: float = Field(default=0.8, gt=0)
    """Observed/expected default ratio below this fires `observed_expected_out_of_band`."""
    performance_oe_band_high: float = Field(default=1.25, gt=0)
    """Observed/expected default ratio above this fires `observed_expected_out_of_band`."""
    decision_sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    """SQLite only. `FULL` fsyncs every commit (records survive power loss); `NORMAL` survives a
    killed process but may lose the last commits on power loss."""

    prometheus_multiproc_dir: str = ""

    @field_validator("threshold_objective")
    @classmethod
    def _check_objective(cls, v: str) -> str:
        v = v.strip().replace(" ", "")
        if v in {"f1", "cost"}:
            return v
        if v.startswith("recall>="):
            try:
                r = float(v.removeprefix("recall>="))
            except ValueError as exc:
                raise ValueError("THRESHOLD_OBJECTIVE recall>=R needs a number R") from exc
            if not 0 < r <= 1:
                raise ValueError("THRESHOLD_OBJECTIVE recall>=R needs 0 < R <= 1")
            return v
        raise ValueError("THRESHOLD_OBJECTIVE must be 'f1', 'cost' or 'recall>=R'")

    @field_validator("api_keys", "api_key", "api_key_hashes")
    @classmethod
    def _check_keys(cls, v: str | None, info: ValidationInfo) -> str | None:
        """Scope syntax, known scope names and digest format, per variable (named in errors)."""
        assert info.field_name is not None  # nosec B101 - always set for a field validator
        keys.parse_entries(
            v, variable=info.field_name.upper(), hashed=info.field_name == "api_key_hashes"
        )
        return v

    @model_validator(mode="after")
    def _check_cross_field(self) -> Settings:
        if self.celery_visibility_timeout_s <= self.batch_task_time_limit_s:
            raise ValueError(
                "CELERY_VISIBILITY_TIMEOUT_S must exceed BATCH_TASK_TIME_LIMIT_S, or Redis "
                "redelivers chunks that are still being scored"
            )
        if self.risk_band_medium >= self.risk_band_high:
            raise ValueError("RISK_BAND_MEDIUM must be below RISK_BAND_HIGH")
        scopes = self.key_scopes  # refuses a key listed twice with different scopes
        if not scopes:
            raise ValueError("no API key configured: set API_KEYS or API_KEY_HASHES")
        if self.environment == "production" and keys.sha256_hex(EXAMPLE_API_KEY) in scopes:
            raise ValueError(
                "refusing to start in production with the example API key; set API_KEYS"
            )
        return self

    @computed_field  # type: ignore[prop-decorator]
    @property
    def accepted_keys(self) -> tuple[str, ...]:
        """The plain keys of API_KEYS and API_KEY, scope suffixes removed."""
        found = [
            keys.split_entry(e, source=name)[0]
            for name, text in (("API_KEYS", self.api_keys), ("API_KEY", self.api_key or ""))
            for e in text.split(",")
            if e.strip()
        ]
        return tuple(dict.fromkeys(found))

    @property
    def key_scopes(self) -> dict[str, frozenset[str]]:
        """sha256 digest of every accepted key (plain and hashed) -> its scopes: auth compares
        digests. Raises ValueError for a key listed twice with different scopes."""
        return keys.scopes_by_digest(
            [
                *keys.parse_entries(self.api_keys, variable="API_KEYS", hashed=False),
                *keys.parse_entries(self.api_key, variable="API_KEY", hashed=False),
                *keys.parse_entries(self.api_key_hashes, variable="API_KEY_HASHES", hashed=True),
            ]
        )

    @property
    def json_logs(self) -> bool:
        return self.environment == "production"

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    @property
    def data_file(self) -> Path:
        return Path(self.data_path)


@lru_cache
def get_settings() -> Settings:
    """Process-wide settings; tests build their own `Settings(...)` instead of patching env."""
    return Settings()


def settings_or_report() -> Settings | None:
    """Settings from the environment, or None after printing each bad variable by name.

    For command-line entry points: a typo in `.env` should read as one line per variable, not as
    a pydantic traceback.
    """
    try:
        return Settings()
    except ValidationError as exc:
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "settings"
            print(f"configuration error: {field.upper()}: {err['msg']}", file=sys.stderr)
        return None


def settings_or_exit() -> Settings:
    """For CLI commands: the settings, or exit 2 after `settings_or_report` named the problems."""
    settings = settings_or_report()
    if settings is None:
        raise SystemExit(2)
    return settings
