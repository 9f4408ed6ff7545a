"""What a chunk's blobs hold, in one format: Arrow IPC streams.

* `in-<i>`: the chunk's raw features, float64 columns in RAW_FEATURES order (what was validated);
* `x-<i>` (file jobs): every column of the uploaded rows, so extra columns reach results.csv;
* `out-<i>`: the scores: probability float64, prediction int8, risk_code uint8, and `reasons`
  (each row's adverse-action reasons as a JSON list of {code, text}, `[]` when none; a
  dictionary column, since a chunk has only a handful of distinct lists);
* `csv-<i>` (file jobs): the chunk's part of results.csv, rendered once by the worker;
* `ref-<i>` (when the job gave any): each row's `reference`, recorded with its decision;
* `rows-<i>` (JSON jobs, for RENDERED_ROWS_TTL_S): each result row's JSON as the status page
  shows it, rendered once by the worker (`encode_rows`).

Arrow rather than raw numpy bytes: the blobs are self-describing (names, types, row count), so
a blob of another layout is an error instead of silently misread numbers, and one reader serves
inputs, scores and the uploaded columns. Encoding and decoding are zero-copy: an encoded blob is
a view of the buffer Arrow wrote (the Redis client sends a memoryview as it is), so a 1M-row
upload's 56 MB of blobs are not copied once more into `bytes` (~10 ms per 32 MB).
"""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.csv as pacsv  # type: ignore[import-untyped]

from loan_default.features import FEATURE_NAMES, RAW_FEATURES, RISK_LABELS, saving_rate
from loan_default.features.contract import REFERENCE
from loan_default.model.bundle import Scores
from loan_default.services.batch.csv_input import escape_formulas
from loan_default.services.batch.stores import Blob

#: Below this many bytes of column data a table is written in one pass (see `table_to_ipc`).
_PRESIZE_FROM = 1 << 20


def table_to_ipc(table: Any) -> memoryview:
    """The table as one Arrow IPC stream, written into a buffer allocated at its final size.

    A growing `BufferOutputStream` reallocates (and copies) as it doubles; in the API process,
    whose allocator hands fresh pages to each upload, that was ~40 ms of a 1M-row upload. The
    size comes from a dry run into a `MockOutputStream`, which copies no data. A small table
    (a 1000-row JSON job's blobs are ~25 kB) is written in one pass: there the dry run's second
    writer was the larger cost (11 -> 6 us a blob).
    """
    if table.nbytes < _PRESIZE_FROM:
        sink = pa.BufferOutputStream()
        _write_stream(sink, table)
        return memoryview(sink.getvalue())
    size = pa.MockOutputStream()
    _write_stream(size, table)
    buffer = pa.allocate_buffer(size.size())
    _write_stream(pa.FixedSizeBufferWriter(buffer), table)
    return memoryview(buffer)


def _write_stream(sink: Any, table: Any) -> None:
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)


def table_from_ipc(data: Blob) -> Any:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


# --- inputs ----------------------------------------------------------------------------------
# An n-row raw-feature stream is a head that depends on n alone (schema, record-batch header),
# the three float64 columns one after the other, and the end-of-stream marker. pyarrow writes
# each n's head once (`_raw_head`); after that, encoding copies the matrix in behind it and
# decoding is a view of the blob, with no Arrow call. Why: in the live server the first Arrow
# calls after an idle gap run on cold caches, ~0.15-0.25 ms for a 1000-row blob against ~0.02
# hot (bench/bench_batch_latency.py polls every 5 ms, as a client does). A blob whose head is not
# the one expected (another writer, a pyarrow that lays it out otherwise) is read by pyarrow.
_EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"
_RAW_ROW_BYTES = 8 * len(RAW_FEATURES)


def _raw_ipc(raw: npt.NDArray[np.float64]) -> memoryview:
    """pyarrow's own encoding (zero-copy into Arrow when `raw` is column-major)."""
    return table_to_ipc(pa.table({name: raw[:, j] for j, name in enumerate(RAW_FEATURES)}))


@functools.lru_cache(maxsize=256)  # ~0.5 kB a head; JSON jobs have any n up to 1000
def _raw_head(n: int) -> bytes | None:
    """The bytes pyarrow writes before an n-row matrix's columns, or None if its stream is not
    head + columns + end marker (checked on distinct values, so a moved buffer would show)."""
    probe = np.arange(n * len(RAW_FEATURES), dtype=np.float64).reshape(n, -1)
    blob = bytes(_raw_ipc(probe))
    size = len(blob) - n * _RAW_ROW_BYTES - len(_EOS)
    if size <= 0 or blob[size:] != probe.tobytes(order="F") + _EOS:
        return None
    return blob[:size]


def encode_raw(raw: npt.NDArray[np.float64]) -> memoryview:
    """The raw features as an Arrow IPC stream of float64 columns in RAW_FEATURES order."""
    raw = np.asarray(raw, dtype=np.float64)
    n = int(raw.shape[0])
    head = _raw_head(n) if n > 0 else None
    if head is None:
        return _raw_ipc(raw)
    out = bytearray(len(head) + n * _RAW_ROW_BYTES + len(_EOS))
    out[: len(head)] = head
    columns = np.frombuffer(out, np.float64, count=n * len(RAW_FEATURES), offset=len(head))
    columns.reshape(len(RAW_FEATURES), n)[:] = raw.T  # one copy, whatever `raw`'s order
    out[-len(_EOS) :] = _EOS
    return memoryview(out)


def decode_raw(data: Blob) -> npt.NDArray[np.float64]:
    """The (n, 3) matrix of a raw-feature blob (a read-only view of `data` when it has the head
    `encode_raw` writes)."""
    head_1 = _raw_head(1)
    if head_1 is not None:
        n, rest = divmod(len(data) - len(head_1) - len(_EOS), _RAW_ROW_BYTES)
        head = _raw_head(n) if n > 0 and rest == 0 else None
        if head is not None and data[: len(head)] == head and data[-len(_EOS) :] == _EOS:
            columns = np.frombuffer(data, np.float64, count=n * len(RAW_FEATURES), offset=len(head))
            return columns.reshape(len(RAW_FEATURES), n).T
    table = table_from_ipc(data)
    if table.column_names != list(RAW_FEATURES):
        raise ValueError(f"not a raw-feature blob: columns {table.column_names}")
    return np.column_stack(
        [table.column(n).to_numpy().astype(np.float64, copy=False) for n in RAW_FEATURES]
    ).reshape(-1, len(RAW_FEATURES))


def raw_table(raw: npt.NDArray[np.float64]) -> Any:
    """The raw features as results.csv shows them (`employed` as an integer)."""
    return pa.table(
        {
            "employed": pa.array(raw[:, 0].astype(np.int64)),
            "bank_balance": pa.array(raw[:, 1]),
            "annual_salary": pa.array(raw[:, 2]),
        }
    )


# --- references ------------------------------------------------------------------------------
def encode_references(references: Sequence[str | None]) -> memoryview:
    return table_to_ipc(pa.table({REFERENCE: pa.array(list(references), pa.string())}))


def decode_references(data: Blob) -> list[str | None]:
    table = table_from_ipc(data)
    if table.column_names != [REFERENCE]:
        raise ValueError(f"not a references blob: columns {table.column_names}")
    return [None if v is None else str(v) for v in table.column(REFERENCE).to_pylist()]


def references_column(table: Any) -> list[str | None] | None:
    """An uploaded file's `reference` column (validated by the CSV parser), if it has one."""
    if table is None or REFERENCE not in table.column_names:
        return None
    return [None if v in (None, "") else str(v) for v in table.column(REFERENCE).to_pylist()]


# --- scores ----------------------------------------------------------------------------------
_SCORE_COLUMNS = ("probability", "prediction", "risk_code")
REASONS_COLUMN = "reasons"
_NO_REASONS = "[]"


class Reasons(NamedTuple):
    """Each row's reasons, as the JSON the single predict answers: row i's are `texts[key[i]]`.

    A chunk has a handful of distinct code lists (at most 4 codes from a small table), so each
    is encoded, parsed or joined once (per-row `json.dumps` was ~1/4 of a chunk's time), and the
    scores blob holds an Arrow dictionary column: 4 bytes a row instead of the repeated JSON
    (~2 MB of a 50,000-row chunk, written to and read back from Redis).
    """

    key: npt.NDArray[np.int32]
    texts: list[str]

    def slice(self, lo: int, hi: int) -> Reasons:
        return Reasons(self.key[lo:hi], self.texts)


def no_reasons(n: int) -> Reasons:
    return Reasons(np.zeros(n, dtype=np.int32), [_NO_REASONS])


def reasons_json(codes: Sequence[tuple[str, ...]], text: Any, n: int) -> Reasons:
    """Each row's reasons (`text(code)` gives the words of the deciding model's reason table);
    rows without codes share one `[]`."""
    if not codes:
        return no_reasons(n)
    position: dict[tuple[str, ...], int] = {(): 0}
    texts = [_NO_REASONS]
    index: list[int] = []
    append = index.append
    for row in codes:
        key = tuple(row)
        k = position.get(key)
        if k is None:
            k = position[key] = len(texts)
            texts.append(json.dumps([{"code": c, "text": text(c)} for c in key]))
        append(k)
    return Reasons(np.array(index, dtype=np.int32), texts)


def _parse_reasons(why: str) -> list[Any]:
    return [] if why == _NO_REASONS else json.loads(why)


def _joined_codes(why: str) -> str:
    return ";".join(r["code"] for r in _parse_reasons(why))


def _dictionary(reasons: Reasons, texts: Sequence[str]) -> Any:
    return pa.DictionaryArray.from_arrays(pa.array(reasons.key), pa.array(texts, pa.string()))


def encode_scores(scores: Scores, reasons: Reasons | None = None) -> memoryview:
    columns: dict[str, Any] = {
        "probability": np.asarray(scores.probability, dtype=np.float64),
        "prediction": np.asarray(scores.prediction, dtype=np.int8),
        "risk_code": np.asarray(scores.risk_code, dtype=np.uint8),
    }
    if reasons is not None:
        columns[REASONS_COLUMN] = _dictionary(reasons, reasons.texts)
    return table_to_ipc(pa.table(columns))


def decode_results(data: Blob) -> tuple[Scores, Reasons]:
    """A scores blob, read once: the scores and each row's reasons (`[]` for every row of a blob
    written before reasons)."""
    table = table_from_ipc(data)
    if tuple(table.column_names[:3]) != _SCORE_COLUMNS:
        raise ValueError(f"not a scores blob: columns {table.column_names}")
    scores = Scores(*(table.column(n).to_numpy() for n in _SCORE_COLUMNS))
    if REASONS_COLUMN not in table.column_names:
        return scores, no_reasons(table.num_rows)
    column = table.column(REASONS_COLUMN).combine_chunks()
    if pa.types.is_dictionary(column.type):
        index = column.indices.to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
        return scores, Reasons(index, [str(v) for v in column.dictionary.to_pylist()])
    # a blob of the plain string column an earlier version wrote
    texts = [str(v) for v in column.to_pylist()]
    return scores, Reasons(np.arange(len(texts), dtype=np.int32), texts)


# --- rendering -------------------------------------------------------------------------------
def result_items(
    raw: npt.NDArray[np.float64],
    scores: Scores,
    reasons: Reasons,
    decision_ids: Sequence[str | None],
) -> list[dict[str, Any]]:
    """Result items shaped exactly like the single predict's data (minus model_version), each
    with its decision id (None where decisions are not recorded)."""
    # Column lists and dict displays, not per-row zips into dict(): this loop is half of a
    # finished job's status response (a 1000-row page: 1.29 -> 0.64 ms, same machine and run).
    employed, balance, salary = (raw[:, j].tolist() for j in range(3))
    rate = saving_rate(raw[:, 1], raw[:, 2]).tolist()
    f_emp, f_bal, f_sal, f_rate = FEATURE_NAMES
    labels = RISK_LABELS
    parsed = [_parse_reasons(t) for t in reasons.texts]  # rows share one (read-only) list
    return [
        {
            "prediction": pred,
            "probability": prob,
            "default_risk": labels[code],
            "features_used": {f_emp: e, f_bal: b, f_sal: a, f_rate: r},
            "reasons": parsed[why],
            "decision_id": decision_id,
        }
        for pred, prob, code, e, b, a, r, why, decision_id in zip(
            scores.prediction.tolist(),
            scores.probability.tolist(),
            scores.risk_code.tolist(),
            employed,
            balance,
            salary,
            rate,
            reasons.key.tolist(),
            decision_ids,
            strict=True,
        )
    ]


def items_json(items: Sequence[dict[str, Any]]) -> bytes:
    """The items as the inside of a JSON array: their JSON joined by commas (orjson writes no
    whitespace, so this is `encode_rows`' text for the same items, byte for byte)."""
    return orjson.dumps(items)[1:-1]


# A JSON job's chunk is rendered once, by the worker that scores it (`rows-<i>`): each row's
# JSON as the status page shows it. A page is then a slice of that text, not 1000 dicts built
# and serialised per request (~1.3 ms of a finished job's status call in the live server).
ROWS_COLUMN = "row_json"


def encode_rows(items: Sequence[dict[str, Any]]) -> memoryview:
    """One binary value a row: the row's JSON followed by the comma that separates it from the
    next (none after the last), so rows lo..hi-1 are one contiguous slice of the data buffer."""
    parts = [orjson.dumps(item) for item in items]
    offsets = np.zeros(len(parts) + 1, dtype=np.int32)
    np.cumsum(np.fromiter(map(len, parts), np.int32, len(parts)) + 1, out=offsets[1:])
    if parts:
        offsets[-1] -= 1  # no comma after the last row
    column = pa.Array.from_buffers(
        pa.binary(), len(parts), [None, pa.py_buffer(offsets), pa.py_buffer(b",".join(parts))]
    )
    return table_to_ipc(pa.table({ROWS_COLUMN: column}))


class RowsJson(NamedTuple):
    """A decoded `rows-<i>` blob: row k's JSON (and comma) is `text[offsets[k]:offsets[k+1]]`."""

    offsets: npt.NDArray[np.int32]
    text: memoryview

    def join(self, lo: int, hi: int) -> bytes:
        """Rows lo..hi-1 as `items_json` writes them (no comma after the last)."""
        text = bytes(self.text[int(self.offsets[lo]) : int(self.offsets[hi])])
        return text[:-1] if hi < len(self.offsets) - 1 else text


def decode_rows(data: Blob) -> RowsJson:
    table = table_from_ipc(data)
    if table.column_names != [ROWS_COLUMN]:
        raise ValueError(f"not a rendered-rows blob: columns {table.column_names}")
    column = table.column(ROWS_COLUMN).combine_chunks()
    _, offsets, text = column.buffers()
    n = len(column)
    return RowsJson(
        np.frombuffer(offsets, np.int32, count=n + 1, offset=4 * column.offset),
        memoryview(text) if text is not None else memoryview(b""),
    )


def chunk_csv(
    *,
    columns: Any,
    scores: Scores,
    header: bool,
    escape: bool = True,
    reasons: Reasons | None = None,
) -> bytes:
    """One chunk of results.csv: the input columns (extra ones carried through) + the scores.

    `escape` (BATCH_CSV_ESCAPE_FORMULAS) neutralises text cells a spreadsheet would evaluate;
    the appended score columns are ours and numeric or fixed labels, never escaped.
    """
    if escape:
        columns = escape_formulas(columns)
    risk = pa.DictionaryArray.from_arrays(
        pa.array(scores.risk_code.astype(np.int8)), pa.array(list(RISK_LABELS))
    ).cast(pa.string())
    table = (
        columns.append_column("prediction", pa.array(scores.prediction))
        .append_column("probability", pa.array(scores.probability))
        .append_column("default_risk", risk)
    )
    if reasons is not None:
        codes = _dictionary(reasons, [_joined_codes(t) for t in reasons.texts])
        table = table.append_column("reason_codes", codes.cast(pa.string()))
    buf = io.BytesIO()
    pacsv.write_csv(table, buf, pacsv.WriteOptions(include_header=header, quoting_style="needed"))
    return buf.getvalue()
