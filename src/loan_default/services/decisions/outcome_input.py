"""Untrusted outcome uploads: one cell grammar for JSON items and CSV rows, checked before storing.

The same rules as the JSON route's item schema, applied to whole Arrow columns (no row loop on
the usual path): a decision id is a canonical version 7 or 8 UUID (any case); a `reference`
follows the predict field's rule; exactly one of the two per row; `defaulted` is 0, 1, true or
false; `observed_at` is ISO 8601, read as UTC when it carries no offset. A file with any bad row
is refused whole (422 listing the first rows), since an upload is recorded all or nothing.

The CSV's header is read and bounded first (`batch.csv_input.read_header`: width and length on
the first bytes, before Arrow allocates a builder per column), as for batch files, and columns
the upload does not know are refused by name, as unknown JSON fields are.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]

from loan_default.core.clock import parse_utc
from loan_default.core.errors import InvalidInput
from loan_default.features import REFERENCE, REFERENCE_MAX_LENGTH, REFERENCE_PATTERN
from loan_default.services.batch.csv_input import CsvLimits, read_header, read_table
from loan_default.services.decisions.outcomes import OutcomeColumns

DECISION_ID: Final = "decision_id"
DEFAULTED: Final = "defaulted"
OBSERVED_AT: Final = "observed_at"
COLUMNS: Final = (DECISION_ID, REFERENCE, DEFAULTED, OBSERVED_AT)
#: A decision id as clients may send it: a version 7 or 8 UUID, hyphenated, in any case.
ID_PATTERN: Final = (
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[78][0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}$"
)
_US: Final = datetime.resolution
_TRUE: Final = ("1", "true")
_FALSE: Final = ("0", "false")
#: The ISO 8601 forms Arrow's vectorised cast reads (with and without an offset); anything else
#: goes to `parse_utc` row by row, which has the last word either way.
_AWARE_RE: Final = (
    r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?([zZ]|[+-]\d{2}(:?\d{2})?)$"
)
_NAIVE_RE: Final = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?$"

ID_REASON: Final = "decision_id is not a decision id (a version 7 or 8 UUID)"
REFERENCE_REASON: Final = (
    f"{REFERENCE} must be 1 to {REFERENCE_MAX_LENGTH} printable ASCII characters, "
    "no space at either end"
)
ONE_OF_REASON: Final = "give exactly one of decision_id and reference"
DEFAULTED_REASON: Final = "defaulted must be 0, 1, true or false"
TIME_REASON: Final = "observed_at must be an ISO 8601 date or time (e.g. 2026-01-31T12:00Z)"


def _mask(values: Any) -> npt.NDArray[np.bool_]:
    return np.asarray(pc.fill_null(values, False).to_numpy(zero_copy_only=False), dtype=bool)


def _blank_to_null(column: Any) -> Any:
    text = pc.utf8_trim_whitespace(column)
    return pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)


def parse_times(text: Any) -> tuple[npt.NDArray[np.datetime64], npt.NDArray[np.bool_]]:
    """ISO 8601 cells as `datetime64[us]` UTC, and the mask of cells that are not (or empty).

    Arrow casts the common forms in C++; a subset it refuses, and any other form, is read by
    `parse_utc` cell by cell, so the accepted grammar is that of the JSON route."""
    text = _blank_to_null(text)
    n = len(text)
    out = np.zeros(n, np.int64)
    todo = _mask(pc.is_valid(text))
    missing = ~todo
    for pattern, arrow_type in (
        (_AWARE_RE, pa.timestamp("us", tz="UTC")),
        (_NAIVE_RE, pa.timestamp("us")),
    ):
        idx = np.flatnonzero(_mask(pc.match_substring_regex(text, pattern)) & todo)
        if not idx.size:
            continue
        try:
            values = pc.cast(text.take(pa.array(idx)), arrow_type).cast(pa.int64())
        except pa.ArrowInvalid:
            continue  # e.g. month 13: parse_utc below names the row
        out[idx] = values.to_numpy(zero_copy_only=False)
        todo[idx] = False
    bad = missing.copy()
    for i in np.flatnonzero(todo).tolist():
        try:
            moment = parse_utc(text[i].as_py())
        except ValueError:
            bad[i] = True
            continue
        out[i] = (moment - datetime(1970, 1, 1, tzinfo=UTC)) // _US
    return out.astype("datetime64[us]"), bad


def _column_indexes(names: list[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    unknown = []
    for i, name in enumerate(names):
        key = name.strip().lower()
        if key not in COLUMNS:
            unknown.append(name)
        elif key in found:
            raise InvalidInput(
                f"the file has two {key} columns", detail={"duplicate": key, "columns": names[:50]}
            )
        else:
            found[key] = i
    if unknown:
        raise InvalidInput(
            f"unknown column(s) {', '.join(repr(u) for u in unknown[:10])}",
            detail={"unknown": unknown[:50], "accepted": list(COLUMNS)},
        )
    missing = [c for c in (DEFAULTED, OBSERVED_AT) if c not in found]
    if DECISION_ID not in found and REFERENCE not in found:
        missing.insert(0, f"{DECISION_ID} or {REFERENCE}")
    if missing:
        raise InvalidInput(
            "the file lacks required columns",
            detail={"missing": missing, "accepted": list(COLUMNS), "found": names[:50]},
        )
    return found


def parse_outcomes_csv(
    source: IO[bytes] | bytes | Path,
    *,
    max_rows: int,
    max_columns: int = 16,
    max_header_bytes: int = 65_536,
    max_errors: int = 100,
) -> OutcomeColumns:
    """An outcomes CSV (`decision_id` and/or `reference`, `defaulted`, `observed_at`) as
    columns, or InvalidInput naming the first bad rows (row 1 is the first data row)."""
    limits = CsvLimits(max_rows, max_columns, max_header_bytes, max_errors)
    names = read_header(source, limits)
    found = _column_indexes(names)
    table = read_table(source, names, [names[i] for i in found.values()])
    n = table.num_rows
    if n == 0:
        raise InvalidInput("the file has no data rows")
    if n > max_rows:
        raise InvalidInput(
            f"the file has {n} rows; at most {max_rows} are accepted per upload",
            detail={"rows": n, "max_rows": max_rows},
        )

    def text(name: str) -> Any:
        if name not in found:
            return pa.nulls(n, pa.string())
        return _blank_to_null(table.column(found[name]).combine_chunks().cast(pa.string()))

    ids = text(DECISION_ID)
    # a reference is taken as sent (the predict rule refuses spaces at its ends), blank = none
    raw_refs = (
        table.column(found[REFERENCE]).combine_chunks().cast(pa.string())
        if REFERENCE in found
        else pa.nulls(n, pa.string())
    )
    refs = pc.if_else(pc.equal(raw_refs, ""), pa.scalar(None, pa.string()), raw_refs)
    ref_ok = pc.and_(
        pc.match_substring_regex(refs, REFERENCE_PATTERN),
        pc.less_equal(pc.utf8_length(refs), REFERENCE_MAX_LENGTH),
    )
    checks: list[tuple[npt.NDArray[np.bool_], str, str]] = [
        (
            ~_mask(pc.match_substring_regex(ids, ID_PATTERN)) & _mask(pc.is_valid(ids)),
            DECISION_ID,
            ID_REASON,
        ),
        (~_mask(ref_ok) & _mask(pc.is_valid(refs)), REFERENCE, REFERENCE_REASON),
    ]
    one_of = _mask(pc.is_valid(ids)) == _mask(pc.is_valid(refs))
    checks.append((one_of, f"{DECISION_ID}/{REFERENCE}", ONE_OF_REASON))
    flag = pc.utf8_lower(text(DEFAULTED))
    is_true = _mask(pc.is_in(flag, pa.array(_TRUE)))
    is_false = _mask(pc.is_in(flag, pa.array(_FALSE)))
    checks.append((~(is_true | is_false), DEFAULTED, DEFAULTED_REASON))
    observed, bad_time = parse_times(text(OBSERVED_AT))
    checks.append((bad_time, OBSERVED_AT, TIME_REASON))
    bad = np.zeros(n, dtype=bool)
    for mask, _, _ in checks:
        bad |= mask
    if bad.any():
        raise InvalidInput(
            f"{int(bad.sum())} of {n} rows are invalid; nothing was recorded",
            detail={"bad_rows": int(bad.sum()), "rows": _row_errors(bad, checks, max_errors)},
        )
    return OutcomeColumns(
        decision_ids=pc.utf8_lower(ids).to_pylist(),
        references=refs.to_pylist(),
        defaulted=is_true,
        observed_at=observed,
    )


def _row_errors(
    bad: npt.NDArray[np.bool_],
    checks: Sequence[tuple[npt.NDArray[np.bool_], str, str]],
    max_errors: int,
) -> list[dict[str, Any]]:
    errors: list[dict[str, Any]] = []
    for i in np.flatnonzero(bad).tolist():
        errors.extend(
            {"row": i + 1, "field": name, "reason": reason}
            for mask, name, reason in checks
            if mask[i]
        )
        if len(errors) >= max_errors:
            return errors[:max_errors]
    return errors
