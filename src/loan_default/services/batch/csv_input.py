"""Untrusted batch input: limits checked before the expensive parse, one cell grammar, escaping.

Everything here runs on what a client sent, so each step is bounded *before* the costly one:

* JSON bodies: the item count is read off a byte scan of the body before pydantic validates a
  single item, and the error list is capped; duplicate feature keys are refused (the JSON parsers
  keep the last value silently, a row would be scored on a value the client may not have meant).
* CSV uploads: the header is located and its width and length checked on the first bytes of the
  file, before Arrow allocates a column builder per header cell (100,003 columns cost 1.1 GB).
  The feature cells are read as text and must be JSON number literals, so a CSV row is refused
  exactly when the same row sent as JSON would be (`1.0` for `employed`, `0x10`, `+1`, `.5`).
* Echoed text cells of results.csv are neutralised against spreadsheet formula injection.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
import pyarrow.csv as pacsv  # type: ignore[import-untyped]

from loan_default.core.errors import InvalidInput
from loan_default.core.json_keys import RepeatedKeys
from loan_default.features import (
    BOUNDS,
    RAW_COLUMNS,
    RAW_FEATURES,
    REFERENCE,
    REFERENCE_MAX_LENGTH,
    REFERENCE_PATTERN,
)

OnError = Literal["reject", "skip"]

#: JSON's number grammar (RFC 8259), optionally padded with whitespace as JSON allows.
JSON_NUMBER_RE: Final = r"^\s*-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?\s*$"
#: A JSON integer literal: what a strict `int` field accepts (no `1.0`, no `1e0`).
JSON_INTEGER_RE: Final = r"^\s*-?(0|[1-9][0-9]*)\s*$"
#: Values a batch body may hold per allowed item (containers and separators): an item with the
#: three features and a `reference` uses 5. The slack lets an item with a few unknown fields be
#: answered with the 422 naming them rather than with this count.
MAX_JSON_VALUES_PER_ITEM: Final = 32
#: Cells a spreadsheet would evaluate (OWASP CSV injection: = + - @ tab CR, and LF).
FORMULA_START_RE: Final = r"^[=+\-@\t\r\n]"


# --- JSON bodies ---------------------------------------------------------------------------------
def too_many_errors(total: int, listed: int, loc: Sequence[str | int]) -> dict[str, Any]:
    """The last entry of a capped error list: says how many were left out (FastAPI's shape)."""
    return {
        "type": "too_many_errors",
        "loc": list(loc),
        "msg": f"{total - listed} more errors not listed (BATCH_MAX_REPORTED_ERRORS={listed})",
    }


@dataclass(frozen=True, slots=True)
class JsonShape:
    items: int | None
    """Items of the top-level array (the last one, as JSON parsers keep), or None."""
    values: int
    """Upper bound of the JSON values in the body (containers + separators + 1)."""


#: The bytes that shape a JSON document outside its strings: brackets, braces and commas.
_STRUCTURE = np.zeros(256, dtype=bool)
_STRUCTURE[list(b"[]{},")] = True


def json_shape(body: bytes, key: str = "predictions") -> JsonShape:
    """Count the items of the top-level array `key` without building a single Python object.

    A vectorised scan (numpy, which releases the GIL on arrays this size): quotes not escaped
    delimit strings; outside them `[ {` open and `] }` close, and commas at depth 2 inside the
    array separate its items. Parsing 2 MB of `{}` items with orjson or pydantic
    holds the GIL for 50-150 ms (the event loop with it); this takes ~10-20 ms, GIL released.
    Two passes over the bytes find the quotes and the structural bytes; the rest runs on those
    positions only (about one byte in eight of a batch body: 0.84 -> ~0.45 ms for 1000 items).
    Invalid JSON gives meaningless counts; pydantic then reports it.
    """
    b = np.frombuffer(body, dtype=np.uint8)
    quote_at = b == ord('"')
    if b"\\" in body:
        at = np.flatnonzero(quote_at)
        idx = np.arange(b.size)
        last_plain = np.maximum.accumulate(np.where(b == ord("\\"), -1, idx))
        run = at - 1 - last_plain[np.maximum(at - 1, 0)]
        run[at == 0] = 0
        quote_at[at[(run & 1) == 1]] = False  # escaped: preceded by an odd run of backslashes
    pos = np.flatnonzero(quote_at | _STRUCTURE[b])  # every index below is into `pos`
    ch = b[pos]
    quote = quote_at[pos]
    outside = (np.cumsum(quote, dtype=np.int64) & 1) == 0
    opens = ((ch == ord("[")) | (ch == ord("{"))) & outside
    closes = ((ch == ord("]")) | (ch == ord("}"))) & outside
    commas = (ch == ord(",")) & outside
    values = int(np.count_nonzero(opens)) + int(np.count_nonzero(commas)) + 1
    depth = np.cumsum(opens.view(np.int8) - closes.view(np.int8), dtype=np.int64)
    arrays = np.flatnonzero(opens & (ch == ord("[")) & (depth == 2))
    quotes = np.flatnonzero(quote)
    for start in arrays[::-1].tolist():
        k = int(np.searchsorted(quotes, start)) - 1
        opened, named = int(pos[start]), int(pos[quotes[k]]) if k >= 0 else -1
        if k < 1 or body[named + 1 : opened].strip(b" \t\r\n:"):
            continue  # not `"key": [`
        name = body[int(pos[quotes[k - 1]]) : named + 1]
        if name != f'"{key}"'.encode() and not (b"\\" in name and _decodes_to(name, key)):
            continue
        ends = np.flatnonzero(depth[start:] == 1)
        end = start + int(ends[0]) if ends.size else pos.size
        inner = body[opened + 1 : int(pos[end]) if ends.size else b.size]
        n = int(np.count_nonzero(commas[start:end] & (depth[start:end] == 2)))
        return JsonShape(items=n + 1 if inner.strip(b" \t\r\n") else 0, values=values)
    return JsonShape(items=None, values=values)


def _decodes_to(name: bytes, key: str) -> bool:
    try:
        return bool(json.loads(name) == key)
    except ValueError:
        return False


#: Keys repeated inside one batch item are refused, as on the single predict (unknown keys are
#: refused by the item schema, repeated or not).
_REPEATS: Final = RepeatedKeys((*RAW_FEATURES, REFERENCE))


def _items(doc: Any) -> list[Any]:
    items = doc.get("predictions") if isinstance(doc, dict) else None
    return items if isinstance(items, list) else []


def duplicate_feature_key(body: bytes, n_items: int) -> tuple[int, str] | None:
    """(item index, key) of the first key (a feature or `reference`) repeated inside one batch
    item, else None.

    `body` is a validated batch (every item holds each feature once unless it repeats one).
    """
    try:
        return _REPEATS.find(body, objects=n_items, pick=_items)
    except (ValueError, RecursionError):
        raise InvalidInput(
            "the body could not be checked for duplicate keys (nested too deeply)",
            detail=[{"type": "json_invalid", "loc": ["body"], "msg": "nested too deeply"}],
        ) from None


# --- CSV uploads: header first -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CsvLimits:
    max_rows: int
    max_columns: int = 256
    max_header_bytes: int = 65_536
    max_errors: int = 100


def _head(source: IO[bytes] | bytes | Path, n: int) -> bytes:
    if isinstance(source, bytes):
        return source[:n]
    if isinstance(source, Path):
        with source.open("rb") as fh:
            return fh.read(n)
    pos = source.tell()
    try:
        return source.read(n)
    finally:
        source.seek(pos)


def read_header(source: IO[bytes] | bytes | Path, limits: CsvLimits) -> list[str]:
    """Column names of the file, refused (422 naming the limit) when too long or too wide.

    Reads at most BATCH_CSV_MAX_HEADER_BYTES + 1 bytes: the header ends at the first line break
    outside quotes (quote parity), so a quoted line break inside a name does not end it.
    """
    head = _head(source, limits.max_header_bytes + 1)
    buf = np.frombuffer(head, dtype=np.uint8)
    quoted = (np.cumsum(buf == ord('"')) & 1).astype(bool)
    breaks = np.flatnonzero(((buf == ord("\n")) | (buf == ord("\r"))) & ~quoted)
    end = int(breaks[0]) if breaks.size else len(head)
    if end > limits.max_header_bytes:
        raise InvalidInput(
            f"the CSV header is longer than {limits.max_header_bytes} bytes",
            detail={"limit": "BATCH_CSV_MAX_HEADER_BYTES", "max": limits.max_header_bytes},
        )
    columns = 1 + int(np.count_nonzero((buf[:end] == ord(",")) & ~quoted[:end]))
    if columns > limits.max_columns:
        raise InvalidInput(
            f"the CSV has {columns} columns; at most {limits.max_columns} are accepted",
            detail={
                "limit": "BATCH_CSV_MAX_COLUMNS",
                "max": limits.max_columns,
                "columns": columns,
            },
        )
    try:
        text = head[:end].decode("utf-8-sig")
        names = next(csv.reader(io.StringIO(text, newline="")), [])
    except (UnicodeDecodeError, csv.Error) as exc:
        reason = "the header is not UTF-8" if isinstance(exc, UnicodeDecodeError) else str(exc)
        raise InvalidInput("the file is not a readable CSV", detail={"reason": reason}) from exc
    return [n.replace("\x00", "") for n in names] or [""]


# --- CSV uploads: rows ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ParsedFile:
    raw: npt.NDArray[np.float64]
    table: Any  # pyarrow.Table of the kept rows, every column of the file
    row_errors: list[dict[str, Any]]
    bad_rows: int
    source_rows: int


_COLUMN_ALIASES: Final = {
    **{c.lower(): f for c, f in zip(RAW_COLUMNS, RAW_FEATURES, strict=True)},
    **{f: f for f in RAW_FEATURES},
}


def _normalise(name: str) -> str:
    n = name.strip().lower()
    return _COLUMN_ALIASES.get(n, _COLUMN_ALIASES.get(n.replace("_", " "), n))


def _feature_columns(names: list[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for i, name in enumerate(names):
        key = _normalise(name)
        if key in RAW_FEATURES:
            if key in found:
                raise InvalidInput(
                    f"the file has two {key} columns ({names[found[key]]!r} and {name!r})",
                    detail={"duplicate": key, "columns": [names[found[key]], name]},
                )
            found[key] = i
    missing = [f for f in RAW_FEATURES if f not in found]
    if missing:
        raise InvalidInput(
            "the file lacks required columns",
            detail={
                "missing": missing,
                "accepted": [list(RAW_COLUMNS), list(RAW_FEATURES)],
                "found": names[:50],
            },
        )
    return found


def read_table(source: IO[bytes] | bytes | Path, names: list[str], text_cols: list[str]) -> Any:
    src: Any = pa.py_buffer(source) if isinstance(source, bytes) else source
    if isinstance(source, Path):
        src = str(source)
    # Column names come from our own header parse (checked above), Arrow skips that row; the
    # feature columns are read as text so the JSON grammar decides, not Arrow's looser parsers
    # (hex, leading `+`, `1.`).
    unique = [f"c{i}" for i in range(len(names))]
    try:
        table = pacsv.read_csv(
            src,
            read_options=pacsv.ReadOptions(block_size=8 << 20, column_names=unique, skip_rows=1),
            convert_options=pacsv.ConvertOptions(
                strings_can_be_null=True,
                column_types={unique[names.index(n)]: pa.string() for n in text_cols},
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise InvalidInput("the file is not a readable CSV", detail={"reason": first}) from exc
    return table.rename_columns(names)


def parse_csv(
    source: IO[bytes] | bytes | Path,
    *,
    max_rows: int,
    on_error: OnError,
    max_columns: int = 256,
    max_header_bytes: int = 65_536,
    max_errors: int = 100,
) -> ParsedFile:
    """Parse and validate a portfolio CSV with Arrow's multithreaded C++ reader (no row loop).

    Rows are numbered from 1 (the first data row; the header is line 1 of the file, so row r is
    line r + 1 when no field spans lines). Raises InvalidInput for a too wide or too long header,
    a missing or repeated feature column, an empty or too long file, and (with
    `on_error="reject"`) any bad row. Kept rows' feature columns are replaced by the numbers
    scored, so results.csv shows exactly what the model saw.
    """
    limits = CsvLimits(max_rows, max_columns, max_header_bytes, max_errors)
    names = read_header(source, limits)
    found = _feature_columns(names)
    table = read_table(source, names, [names[found[f]] for f in RAW_FEATURES])
    n = table.num_rows
    if n == 0:
        raise InvalidInput("the file has no data rows")
    if n > max_rows:
        raise InvalidInput(
            f"the file has {n} rows; at most {max_rows} are accepted per job",
            detail={"rows": n, "max_rows": max_rows},
        )
    raw = np.empty((n, len(RAW_FEATURES)), dtype=np.float64)
    bad = np.zeros(n, dtype=bool)
    reasons: list[tuple[npt.NDArray[np.bool_], str, str]] = []
    for j, b in enumerate(BOUNDS):
        name = b.name
        text = table.column(found[name])
        number = pc.fill_null(pc.match_substring_regex(text, JSON_NUMBER_RE), False)
        values = (
            pc.cast(pc.if_else(number, pc.utf8_trim_whitespace(text), None), pa.float64())
            .to_numpy(zero_copy_only=False)
            .astype(np.float64)
        )
        raw[:, j] = values
        nan = ~np.isfinite(values)
        reasons.append((nan, name, f"{name} is missing, not a number or not finite"))
        out = b.violations(values)  # the row contract's range, as the request schema applies it
        if b.integer:
            # a JSON integer literal, as a strict int field wants: `1.0` and `1e0` are not
            literal = pc.fill_null(pc.match_substring_regex(text, JSON_INTEGER_RE), False)
            out |= ~np.asarray(literal.to_numpy(zero_copy_only=False), dtype=bool)
        reasons.append((out & ~nan, name, b.reason()))
        bad |= nan | reasons[-1][0]
    if REFERENCE in names:
        # the single predict's rule: 1-64 printable ASCII, no space at either end (or empty)
        ref = pc.cast(table.column(names.index(REFERENCE)), pa.string())
        ok = pc.and_(
            pc.match_substring_regex(ref, REFERENCE_PATTERN),
            pc.less_equal(pc.utf8_length(ref), REFERENCE_MAX_LENGTH),
        )
        ok = pc.or_(pc.fill_null(ok, True), pc.equal(ref, ""))
        wrong = ~np.asarray(pc.fill_null(ok, True).to_numpy(zero_copy_only=False), dtype=bool)
        reasons.append(
            (
                wrong,
                REFERENCE,
                f"{REFERENCE} must be 1 to {REFERENCE_MAX_LENGTH} printable ASCII characters, "
                "no space at either end",
            )
        )
        bad |= wrong
    bad_idx = np.flatnonzero(bad)
    errors: list[dict[str, Any]] = []
    for i in bad_idx.tolist():
        errors.extend(
            {"row": i + 1, "field": name, "reason": reason}
            for mask, name, reason in reasons
            if mask[i]
        )
        if len(errors) >= max_errors:
            errors = errors[:max_errors]
            break
    if bad_idx.size and on_error == "reject":
        raise InvalidInput(
            f"{bad_idx.size} of {n} rows are invalid; nothing was scored "
            "(send on_error=skip to score the valid rows)",
            detail={"bad_rows": int(bad_idx.size), "rows": errors},
        )
    if bad_idx.size == n:
        raise InvalidInput("no valid rows in the file", detail={"bad_rows": n, "rows": errors})
    if bad_idx.size:
        keep = ~bad
        raw = raw[keep]
        table = table.filter(pa.array(keep))
    raw = np.ascontiguousarray(raw)
    for j, name in enumerate(RAW_FEATURES):
        column = raw[:, j].astype(np.int64) if j == 0 else raw[:, j]
        table = table.set_column(found[name], names[found[name]], pa.array(column))
    return ParsedFile(
        raw=raw,
        table=table,
        row_errors=errors,
        bad_rows=int(bad_idx.size),
        source_rows=n,
    )


# --- results.csv ---------------------------------------------------------------------------------
def escape_formulas(table: Any) -> Any:
    """Text cells and header names a spreadsheet would run as formulas get a leading `'`.

    Only text columns are touched: numbers (the model's outputs, the scored features, numeric
    extra columns) cannot be formulas, and `-0.5` must stay a number for machine readers.
    """
    columns = []
    for col in table.columns:
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            risky = pc.fill_null(pc.match_substring_regex(col, FORMULA_START_RE), False)
            col = pc.if_else(risky, pc.binary_join_element_wise("'", col, ""), col)
        columns.append(col)
    names = [f"'{n}" if n[:1] in "=+-@\t\r\n" and n else n for n in table.column_names]
    return pa.table(columns, names=names)
