"""Exports for auditors: decision records as CSV or Parquet, chosen by the file's suffix.

Both are written page by page (Arrow record batches), so an export of a year of decisions
holds one page in memory, not the year. Parquet keeps the types (UTC timestamps, doubles,
reason codes as a list of strings). CSV writes times as ISO 8601 UTC, floats as the shortest
text that reads back as the same double, and reason codes as a JSON list; its text cells pass
through the batch results' formula escaping (a client `reference` of `=HYPERLINK(...)` must not
run in the auditor's spreadsheet) unless `escape_formulas=False`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import orjson
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.csv as pacsv  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from loan_default.services.batch.csv_input import escape_formulas as escape_table
from loan_default.services.decisions.records import FIELD_NAMES, DecisionRecord, iso_utc

_TEXT = pa.string()
_TYPES: Final[dict[str, pa.DataType]] = {
    "decided_at": pa.timestamp("ms", tz="UTC"),
    "row": pa.int64(),
    "employed": pa.float64(),
    "bank_balance": pa.float64(),
    "annual_salary": pa.float64(),
    "saving_rate": pa.float64(),
    "probability": pa.float64(),
    "threshold": pa.float64(),
    "prediction": pa.int8(),
    "reason_codes": pa.list_(_TEXT),
    "challenger_probability": pa.float64(),
}
#: The Parquet schema: every field of a record, in record order.
SCHEMA: Final = pa.schema([(name, _TYPES.get(name, _TEXT)) for name in FIELD_NAMES])
_CSV_SCHEMA: Final = pa.schema(
    [(f.name, _TEXT if f.name in {"decided_at", "reason_codes"} else f.type) for f in SCHEMA]
)
SUFFIXES: Final = (".csv", ".parquet")


def _columns(page: list[DecisionRecord]) -> dict[str, list[Any]]:
    return {name: [getattr(r, name) for r in page] for name in FIELD_NAMES}


def _parquet_batch(page: list[DecisionRecord]) -> pa.RecordBatch:
    cols = _columns(page)
    cols["reason_codes"] = [list(codes) for codes in cols["reason_codes"]]
    return pa.RecordBatch.from_pydict(cols, schema=SCHEMA)


def _csv_table(page: list[DecisionRecord], escape: bool) -> pa.Table:
    cols = _columns(page)
    cols["decided_at"] = [iso_utc(at) for at in cols["decided_at"]]
    cols["reason_codes"] = [orjson.dumps(codes).decode() for codes in cols["reason_codes"]]
    table = pa.Table.from_pydict(cols, schema=_CSV_SCHEMA)
    return escape_table(table) if escape else table


def write_export(
    pages: Iterable[list[DecisionRecord]], out_path: Path, *, escape_formulas: bool = True
) -> int:
    """Write every record of `pages` to `out_path` (.csv or .parquet); returns the row count.
    The file is written beside the target and renamed into place, so a failed export leaves
    no truncated file behind."""
    suffix = out_path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"export to .csv or .parquet, not {out_path.name!r}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(out_path.name + ".partial")
    rows = 0
    try:
        if suffix == ".parquet":
            with pq.ParquetWriter(partial, SCHEMA, compression="zstd") as writer:
                for page in pages:
                    writer.write_batch(_parquet_batch(page))
                    rows += len(page)
        else:
            options = pacsv.WriteOptions(quoting_style="needed")
            with pacsv.CSVWriter(partial, _CSV_SCHEMA, write_options=options) as writer:
                for page in pages:
                    writer.write_table(_csv_table(page, escape_formulas))
                    rows += len(page)
        partial.replace(out_path)
    finally:
        partial.unlink(missing_ok=True)
    return rows
