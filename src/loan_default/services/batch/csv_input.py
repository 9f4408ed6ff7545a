"""Untrusted CSV input: limits checked before the expensive parse, one cell grammar, escaping.

Everything here runs on what a client sent, so each step is bounded *before* the costly one
(JSON bodies: `json_input`):

* CSV uploads: the header is located and its width and length checked on the first bytes of the
  file, before Arrow allocates a column builder per header cell (100,003 columns cost 1.1 GB).
  The feature cells are read as text and must be JSON number literals, so a CSV row is refused
  exactly when the same row sent as JSON would be (`1.0` for `employed`, `0x10`, `+1`, `.5`).
* Echoed text cells of results.csv are neutralised against spreadsheet formula injection.
"""

from __future__ import annotations

import contextlib
import csv
import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
import pyarrow.csv as pacsv  # type: ignore[import-untyped]

from loan_default.core.errors import InvalidInput
from loan_default.features import (
    BOUNDS,
    RAW_COLUMNS,
    RAW_FEATURES,
    REFERENCE,
    REFERENCE_MAX_LENGTH,
    REFERENCE_PATTERN,
    Bound,
)

OnError = Literal["reject", "skip"]

#: JSON's number grammar (RFC 8259), optionally padded with whitespace as JSON allows.
JSON_NUMBER_RE: Final = r"^\s*-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?\s*$"
#: A JSON integer literal: what a strict `int` field accepts (no `1.0`, no `1e0`).
JSON_INTEGER_RE: Final = r"^\s*-?(0|[1-9][0-9]*)\s*$"
#: Cells a spreadsheet would evaluate (OWASP CSV injection: = + - @ tab CR, and LF).
FORMULA_START_RE: Final = r"^[=+\-@\t\r\n]"


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


#: From this many rows, the feature columns are checked on parallel threads (fewer: the thread
#: start costs more than it saves).
_PARALLEL_ROWS: Final = 20_000


def _matches(text: Any, pattern: str) -> npt.NDArray[np.bool_]:
    found = pc.fill_null(pc.match_substring_regex(text, pattern), False)
    return np.asarray(found.to_numpy(zero_copy_only=False), dtype=bool)


def _plain_chunk(chunk: Any, integer: bool) -> bool:
    """See `_plain_literals`; one Arrow string array, read through its offsets and bytes."""
    n = len(chunk)
    if n == 0:
        return True
    if chunk.null_count or chunk.type != pa.string():
        return False
    _, offset_buf, data_buf = chunk.buffers()
    offsets = np.frombuffer(offset_buf, dtype=np.int32, count=n + 1, offset=chunk.offset * 4)
    base = int(offsets[0])
    if data_buf is None or int(offsets[-1]) == base:
        return False
    data = np.frombuffer(data_buf, dtype=np.uint8, count=int(offsets[-1]) - base, offset=base)
    if data.size == n:  # one byte a cell (`employed`; an empty one failed the cast): a digit
        return bool(((data - np.uint8(ord("0"))) < 10).all())
    starts, ends = offsets[:-1], offsets[1:]
    if base:
        starts, ends = starts - base, ends - base
    if data.max() > ord("9") or not (starts < ends).all():
        return False  # letters (`1e5`, `inf`, `0x10`) or an empty cell: the exact path decides
    lead = np.take(data, starts)
    first = starts + (lead == ord("-"))  # the first digit, after an optional minus
    if not (first < ends).all():
        return False
    digit0 = np.take(data, first) - np.uint8(ord("0"))
    if not (digit0 < 10).all():
        return False  # `+1`, `.5`, `-.5`
    zero = first[(digit0 == 0) & (first + 1 < ends)]
    if zero.size and (np.take(data, zero + 1) - np.uint8(ord("0")) < 10).any():
        return False  # `01`
    if integer:  # every byte below `0` is one leading minus: no `.`
        return int(np.count_nonzero(data < ord("0"))) == int(np.count_nonzero(lead == ord("-")))
    return not (np.take(data, ends - 1) == ord(".")).any()  # `5.`


def _plain_literals(text: Any, *, integer: bool) -> bool:
    """True when every cell is a plain JSON number literal, `-?(0|[1-9][0-9]*)(\\.[0-9]+)?`
    (for an integer, without the fraction): the usual file, told in a few vectorised passes over
    the column's bytes instead of a regex per cell (1M cells: 38 -> 9 ms; 22 -> 0.3 ms for
    one-byte cells).

    It relies on Arrow having cast the same column to float64 without error: that parser
    refuses every malformed shape (`1.2.3`, `1-2`, `--1`, ` 1`, `1e`) and accepts only these
    beyond JSON's grammar, each of which is looked for here: a leading `+` or `.`, a leading
    zero, a `.` ending the cell, and letters (`inf`, `nan`; an exponent goes to the exact path
    too). False is not a verdict on any cell: the regex then decides, cell by cell.
    `tests/hardening/test_properties.py` holds it to the regex on generated cells.
    """
    return all(_plain_chunk(chunk, integer) for chunk in text.chunks)


def _check_column(
    text: Any, bound: Bound
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """One feature column read as text -> (values, not-a-number mask, out-of-range mask).

    A cell is a number when it is a JSON number literal (a strict int field's literal for an
    integer feature), then the row contract's range applies, as the request schema applies it.
    The usual file is all clean numbers, so the work is arranged for it: a column Arrow casts
    whole and whose bytes show only plain literals (`_plain_literals`) needs no regex; any other
    column is matched cell by cell (an integer column against the integer grammar first, the
    number grammar only if some cell failed it), and one with blanks, padding or junk is trimmed
    and masked before the cast.
    """
    cast: Any = None
    if text.null_count == 0:
        with contextlib.suppress(pa.ArrowInvalid):  # junk or padding: the exact path below
            cast = pc.cast(text, pa.float64())
    literal: npt.NDArray[np.bool_] | None = None
    if cast is None or not _plain_literals(text, integer=bound.integer):
        if bound.integer:
            literal = _matches(text, JSON_INTEGER_RE)
            number = literal if literal.all() else literal | _matches(text, JSON_NUMBER_RE)
        else:
            number = _matches(text, JSON_NUMBER_RE)
        if not number.all():
            keep = pa.array(number)  # Arrow aligns it with the text's chunks
            cast = pc.cast(pc.if_else(keep, pc.utf8_trim_whitespace(text), None), pa.float64())
        elif cast is None:  # numbers padded with whitespace
            cast = pc.cast(pc.utf8_trim_whitespace(text), pa.float64())
    values = np.asarray(cast.to_numpy(zero_copy_only=False), dtype=np.float64)
    nan = ~np.isfinite(values)
    out = bound.violations(values)
    if literal is not None:
        out |= ~literal  # `1.0` and `1e0` are numbers, not integer literals
    return values, nan, out & ~nan


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
    # column-major: each feature's values are one contiguous run, written here and handed to
    # Arrow (results.csv's columns, the chunk blobs) without a copy
    raw = np.empty((len(RAW_FEATURES), n), dtype=np.float64).T
    bad = np.zeros(n, dtype=bool)
    reasons: list[tuple[npt.NDArray[np.bool_], str, str]] = []
    columns = [table.column(found[b.name]) for b in BOUNDS]
    if n >= _PARALLEL_ROWS:  # Arrow's kernels let go of the GIL: one column per core
        with ThreadPoolExecutor(max_workers=len(BOUNDS)) as pool:
            checked = list(pool.map(_check_column, columns, BOUNDS))
    else:
        checked = [_check_column(text, b) for text, b in zip(columns, BOUNDS, strict=True)]
    for j, (b, (values, nan, out)) in enumerate(zip(BOUNDS, checked, strict=True)):
        raw[:, j] = values
        reasons.append((nan, b.name, f"{b.name} is missing, not a number or not finite"))
        reasons.append((out, b.name, b.reason()))
        bad |= nan | out
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
