"""Decisions as database rows, and the SQL that writes them idempotently on each dialect.

Writes bypass SQLAlchemy's per-value processing (several microseconds a row): a record becomes
one plain tuple, the time as text and the reason codes as JSON text; PostgreSQL's bulk path goes
further and turns whole columns into `COPY` CSV with Arrow's writer, which formats floats as the
shortest text that reads back as the same double, quotes every non-null string and leaves NULL
as an empty unquoted field (so NULL and "" cannot be confused). Reads go through the `schema`
types; the text formats here are the ones those types read back: SQLite's fixed-width UTC
`YYYY-MM-DD HH:MM:SS.ffffff`, PostgreSQL's ISO 8601 with `+00:00`.

Every insert is `ON CONFLICT (decision_id, decided_at) DO NOTHING` (not SQLite's `OR IGNORE`,
which would also swallow a NOT NULL failure): writing a decision twice writes it once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from itertools import repeat
from typing import Any, Final

import orjson
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.csv as pacsv  # type: ignore[import-untyped]
from sqlalchemy.engine import Dialect

from loan_default.services.decisions.batches import DecisionBatch
from loan_default.services.decisions.records import DecisionRecord
from loan_default.services.decisions.schema import COLUMNS, TABLE

Row = tuple[Any, ...]
_CONFLICT: Final = "ON CONFLICT (decision_id, decided_at) DO NOTHING"
_TEXT, _F64 = pa.string(), pa.float64()
#: Arrow type of each column as written to COPY (times already text), in COLUMNS order.
_COPY_TYPES: Final[dict[str, pa.DataType]] = {
    "row": pa.int64(),
    "employed": _F64,
    "bank_balance": _F64,
    "annual_salary": _F64,
    "saving_rate": _F64,
    "probability": _F64,
    "threshold": _F64,
    "prediction": pa.int8(),
    "challenger_probability": _F64,
}
_COPY_SCHEMA: Final = pa.schema([(c, _COPY_TYPES.get(c, _TEXT)) for c in COLUMNS])
_CSV: Final = pacsv.WriteOptions(include_header=False, quoting_style="needed")


def _sqlite_time(at: datetime) -> str:
    return at.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _pg_time(at: datetime) -> str:
    return at.isoformat(timespec="microseconds")


def time_text(dialect: str) -> Callable[[datetime], str]:
    return _sqlite_time if dialect == "sqlite" else _pg_time


class _Codes(dict[tuple[str, ...], str]):
    """Reason-code tuples to JSON text; a chunk has few distinct tuples, so each is encoded once."""

    def __missing__(self, key: tuple[str, ...]) -> str:
        text = self[key] = orjson.dumps(key).decode()
        return text


def rows(records: Iterable[DecisionRecord], dialect: str) -> list[Row]:
    """One tuple per record, in `schema.COLUMNS` order, ready for the dialect's driver."""
    fmt = time_text(dialect)
    times: dict[datetime, str] = {}
    codes = _Codes()
    out: list[Row] = []
    append = out.append
    for r in records:
        at = times.get(r.decided_at)
        if at is None:
            at = times[r.decided_at] = fmt(r.decided_at)
        append(
            (
                r.decision_id,
                at,
                r.request_id,
                r.key_id,
                r.reference,
                r.source,
                r.job_id,
                r.row,
                r.employed,
                r.bank_balance,
                r.annual_salary,
                r.saving_rate,
                r.model_name,
                r.model_version,
                r.model_alias,
                r.probability,
                r.threshold,
                r.prediction,
                r.risk_band,
                codes[r.reason_codes],
                r.challenger_version,
                r.challenger_probability,
            )
        )
    return out


def batch_rows(batch: DecisionBatch, dialect: str) -> list[Row]:
    """`rows` for a columnar batch, built by `zip` without a per-row object."""
    n = len(batch)
    codes = _Codes()
    chall = batch.challenger_probability
    columns: list[Iterable[Any]] = [
        batch.decision_ids(),
        repeat(time_text(dialect)(batch.created_at), n),
        repeat(batch.request_id, n),
        repeat(batch.key_id, n),
        _plain(batch.references) if batch.references is not None else repeat(None, n),
        repeat("batch", n),
        repeat(batch.job_id, n),
        batch.rows.tolist(),
        batch.employed.tolist(),
        batch.bank_balance.tolist(),
        batch.annual_salary.tolist(),
        batch.saving_rate.tolist(),
        repeat(batch.model_name, n),
        repeat(batch.model_version, n),
        repeat(batch.model_alias, n),
        batch.probability.tolist(),
        repeat(float(batch.threshold), n),
        batch.prediction.tolist(),
        _plain(batch.risk_band),
        [codes[tuple(c)] for c in batch.reason_codes],
        repeat(batch.challenger_version, n),
        chall.tolist() if chall is not None else repeat(None, n),
    ]
    return list(zip(*columns, strict=True))


def _plain(values: Sequence[Any]) -> Sequence[Any]:
    """Python objects for the SQLite driver (a numpy array of str holds numpy scalars)."""
    tolist = getattr(values, "tolist", None)
    return tolist() if tolist is not None else values


def copy_csv(data: Sequence[Row]) -> bytes:
    """COPY CSV of `rows(..., "postgresql")` (transposed into Arrow columns, written in C)."""
    columns: list[Sequence[Any]] = list(zip(*data, strict=True)) if data else [()] * len(COLUMNS)
    table = pa.Table.from_arrays(
        [pa.array(col, type=f.type) for col, f in zip(columns, _COPY_SCHEMA, strict=True)],
        schema=_COPY_SCHEMA,
    )
    return _write(table)


def batch_copy_csv(batch: DecisionBatch) -> bytes:
    """COPY CSV of a columnar batch, straight from its numpy columns."""
    n = len(batch)

    def const(value: Any, type_: pa.DataType = _TEXT) -> pa.Array:
        return pa.nulls(n, type_) if value is None else pa.repeat(pa.scalar(value, type_), n)

    codes = _Codes()
    chall = batch.challenger_probability
    arrays = [
        pa.array(batch.decision_ids(), _TEXT),
        const(_pg_time(batch.created_at)),
        const(batch.request_id),
        const(batch.key_id),
        pa.array(batch.references, _TEXT) if batch.references is not None else const(None),
        const("batch"),
        const(batch.job_id),
        pa.array(batch.rows, pa.int64()),
        pa.array(batch.employed, _F64),
        pa.array(batch.bank_balance, _F64),
        pa.array(batch.annual_salary, _F64),
        pa.array(batch.saving_rate, _F64),
        const(batch.model_name),
        const(batch.model_version),
        const(batch.model_alias),
        pa.array(batch.probability, _F64),
        const(float(batch.threshold), _F64),
        pa.array(batch.prediction, pa.int8()),
        pa.array(batch.risk_band, _TEXT),
        pa.array([codes[tuple(c)] for c in batch.reason_codes], _TEXT),
        const(batch.challenger_version),
        pa.array(chall, _F64) if chall is not None else const(None, _F64),
    ]
    return _write(pa.Table.from_arrays(arrays, schema=_COPY_SCHEMA))


def _write(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pacsv.write_csv(table, sink, _CSV)
    return bytes(sink.getvalue().to_pybytes())


def column_list(dialect: Dialect) -> str:
    """The quoted column list (`row` is a keyword in both dialects)."""
    quote = dialect.identifier_preparer.quote
    return ", ".join(quote(c) for c in COLUMNS)


def sqlite_insert(dialect: Dialect) -> str:
    marks = ", ".join("?" for _ in COLUMNS)
    # constants and quoted column names only; values are bound
    return f"INSERT INTO {TABLE} ({column_list(dialect)}) VALUES ({marks}) {_CONFLICT}"  # noqa: S608


def pg_insert_values(dialect: Dialect) -> str:
    """For psycopg2's `execute_values` (one statement for the whole group)."""
    return f"INSERT INTO {TABLE} ({column_list(dialect)}) VALUES %s {_CONFLICT}"  # noqa: S608


def pg_copy(dialect: Dialect) -> str:
    return f"COPY {TABLE} ({column_list(dialect)}) FROM STDIN WITH (FORMAT csv)"


#: The idempotent bulk path: COPY into a session-private table (not WAL-logged, dropped at
#: commit), then one INSERT ... SELECT ... ON CONFLICT DO NOTHING.
STAGE: Final = "decisions_stage"


def pg_staged(dialect: Dialect) -> tuple[str, str, str]:
    cols = column_list(dialect)
    return (
        f"CREATE TEMP TABLE {STAGE} (LIKE {TABLE}) ON COMMIT DROP",
        f"COPY {STAGE} ({cols}) FROM STDIN WITH (FORMAT csv)",
        f"INSERT INTO {TABLE} ({cols}) SELECT {cols} FROM {STAGE} {_CONFLICT}",  # noqa: S608
    )
