"""What one decision record is: the inputs, the model that decided, and what it answered.

A record is immutable and checked once, when it is made, so every store writes the same facts:
the time is aware UTC and equals the time inside `decision_id` (the partitioning key relies on
it, see `ids`), the client reference fits the 64-character column, and batch rows say which job
and row they came from. `key_id` is the digest prefix the API already uses for the caller, never
the key itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from loan_default.services.decisions.ids import unix_ms

Source = Literal["predict", "batch"]
SOURCES: Final = ("predict", "batch")
#: Longest client `reference` (the lender's application id), as the issue and the column fix it.
MAX_REFERENCE_LENGTH: Final = 64


def iso_utc(moment: datetime) -> str:
    """`2026-03-05T10:11:12.345Z`: the API's timestamp format (decision times are whole ms)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """One recorded decision: a single prediction or one row of a batch job."""

    decision_id: str
    decided_at: datetime
    """Aware UTC, whole milliseconds, equal to `ids.decided_at_of(decision_id)`. For batch rows
    it is the job's submission time (the id derives from it: a redelivery writes the same key)."""
    request_id: str | None
    key_id: str
    reference: str | None
    source: Source
    job_id: str | None
    row: int | None
    employed: float
    bank_balance: float
    annual_salary: float
    saving_rate: float
    model_name: str
    model_version: str
    model_alias: str | None
    probability: float
    threshold: float
    prediction: int
    risk_band: str
    reason_codes: tuple[str, ...]
    challenger_version: str | None = None
    challenger_probability: float | None = None

    def __post_init__(self) -> None:
        at = self.decided_at
        if at.tzinfo is not UTC and at.utcoffset() != timedelta(0):
            raise ValueError("decided_at must be an aware UTC datetime")
        if at.microsecond % 1000 or self.decision_id[:13] != _ms_prefix(at):
            raise ValueError("decided_at must equal the time embedded in decision_id")
        if self.source != "predict" and (
            self.source != "batch" or self.job_id is None or self.row is None
        ):
            raise ValueError(f"source must be one of {SOURCES}; a batch one needs job_id and row")
        if self.reference is not None:
            if not 0 < len(self.reference) <= MAX_REFERENCE_LENGTH:
                raise ValueError(f"reference must be 1..{MAX_REFERENCE_LENGTH} characters")
            check_text("reference", self.reference)
        if self.request_id:
            check_text("request_id", self.request_id)
        if self.prediction != 0 and self.prediction != 1:
            raise ValueError("prediction must be 0 or 1")
        if not (self.key_id and self.model_name and self.model_version and self.risk_band):
            empty = [n for n in _REQUIRED_TEXT if not getattr(self, n)]
            raise ValueError(f"{', '.join(empty)} must not be empty")
        if "" in (self.request_id, self.job_id, self.model_alias, self.challenger_version):
            for name in _OPTIONAL_TEXT:
                if getattr(self, name) == "":
                    object.__setattr__(self, name, None)
        if type(self.reason_codes) is not tuple:
            object.__setattr__(self, "reason_codes", tuple(self.reason_codes))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: every field, times as ISO 8601 UTC, reason codes as a list."""
        out = {name: getattr(self, name) for name in FIELD_NAMES}
        out["decided_at"] = iso_utc(self.decided_at)
        out["reason_codes"] = list(self.reason_codes)
        return out

    @classmethod
    def from_mapping(cls, row: Mapping[Any, Any]) -> DecisionRecord:
        """A record from a database row (column names are the field names)."""
        values = {name: row[name] for name in FIELD_NAMES}
        values["decision_id"] = str(values["decision_id"])
        values["reason_codes"] = tuple(values["reason_codes"] or ())
        return cls(**values)


def set_challenger(record: DecisionRecord, version: str, probability: float) -> None:
    """Fill the challenger's two fields of a record no one else holds any more.

    The one write after construction, and only by the group-commit writer thread on records
    submitted to it (their callers wait on a future, never on the record). In place rather than
    `dataclasses.replace`: the copy re-runs `__post_init__`, 6 us a record, which was 4/5 of
    shadow scoring a group of 16 (168 us; 50 us in place, most of it the one ONNX call).
    """
    if not version:
        raise ValueError("challenger_version must not be empty")
    object.__setattr__(record, "challenger_version", version)
    object.__setattr__(record, "challenger_probability", probability)


#: Text fields that must say something, and optional ones where "" means absent (stored NULL):
#: "no alias" has one representation, so a query for it has one form.
_REQUIRED_TEXT: Final = ("key_id", "model_name", "model_version", "risk_band")
_OPTIONAL_TEXT: Final = ("request_id", "job_id", "model_alias", "challenger_version")

#: Field names in declaration order: the column order of the table, exports and bulk loads.
FIELD_NAMES: Final = tuple(f.name for f in fields(DecisionRecord))


def check_text(name: str, value: str) -> None:
    """Client-supplied text must be storable everywhere: PostgreSQL text holds no NUL, and a lone
    surrogate cannot be encoded. Refused here, one record cannot fail a shared commit."""
    if "\x00" in value:
        raise ValueError(f"{name} must not contain NUL")
    try:
        value.encode()
    except UnicodeEncodeError as exc:
        raise ValueError(f"{name} must be valid Unicode text") from exc


def _ms_prefix(at: datetime) -> str:
    """The first 13 characters of every decision id decided at `at` (a batch's rows share one
    time, so the last answer is kept)."""
    global _LAST_PREFIX
    last_at, prefix = _LAST_PREFIX
    if at != last_at:
        h = f"{unix_ms(at):012x}"
        prefix = f"{h[:8]}-{h[8:]}"
        _LAST_PREFIX = (at, prefix)
    return prefix


_LAST_PREFIX: tuple[datetime | None, str] = (None, "")
