"""The raw-feature blobs: the bytes pyarrow writes, read back without pyarrow when they can be."""

from __future__ import annotations

import numpy as np
import orjson
import pyarrow as pa
import pytest

from loan_default.features import RAW_FEATURES
from loan_default.services.batch import codec

pytestmark = pytest.mark.unit


def _raw(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack(
        [rng.integers(0, 2, n), rng.uniform(0, 30_000, n), rng.uniform(1_000, 90_000, n)]
    ).astype(np.float64)


@pytest.mark.parametrize("n", [1, 2, 7, 1000, 1001, 50_000])
@pytest.mark.parametrize("order", ["C", "F"])
def test_encode_raw_writes_exactly_the_stream_pyarrow_writes(n: int, order: str) -> None:
    raw = np.asarray(_raw(n, seed=n), order=order)
    table = pa.table({name: raw[:, j] for j, name in enumerate(RAW_FEATURES)})
    assert bytes(codec.encode_raw(raw)) == bytes(codec.table_to_ipc(table))


@pytest.mark.parametrize("n", [0, 1, 999, 50_000])
def test_decode_raw_round_trips(n: int) -> None:
    raw = _raw(n, seed=3)
    back = codec.decode_raw(bytes(codec.encode_raw(raw)))
    assert back.shape == (n, 3)
    assert np.array_equal(back, raw)
    assert codec.table_from_ipc(codec.encode_raw(raw)).column_names == list(RAW_FEATURES)


def test_a_stream_laid_out_otherwise_is_read_by_pyarrow() -> None:
    """Two record batches (another writer's choice): not the head `encode_raw` writes, so the
    fast path must not take it, and pyarrow reads the same numbers."""
    raw = _raw(10)
    table = pa.table({name: raw[:, j] for j, name in enumerate(RAW_FEATURES)})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=4):
            writer.write_batch(batch)
    assert np.array_equal(codec.decode_raw(sink.getvalue().to_pybytes()), raw)


def test_a_blob_of_other_columns_is_refused() -> None:
    other = codec.table_to_ipc(pa.table({"a": [1.0], "b": [2.0], "c": [3.0]}))
    with pytest.raises(ValueError, match="not a raw-feature blob"):
        codec.decode_raw(bytes(other))


def test_a_fast_decoded_matrix_is_a_read_only_view() -> None:
    """Callers get the blob's numbers without a copy, and cannot write into Redis's bytes."""
    back = codec.decode_raw(bytes(codec.encode_raw(_raw(5))))
    assert not back.flags.writeable


def _items(n: int) -> list[dict[str, object]]:
    return [
        {"prediction": i % 2, "probability": i / 7, "reasons": [{"code": "X", "text": 'a "q"'}]}
        for i in range(n)
    ]


@pytest.mark.parametrize("n", [1, 2, 5])
def test_rendered_rows_slice_into_the_bytes_of_any_page(n: int) -> None:
    items = _items(n)
    rows = codec.decode_rows(bytes(codec.encode_rows(items)))
    for lo in range(n):
        for hi in range(lo + 1, n + 1):
            assert rows.join(lo, hi) == codec.items_json(items[lo:hi])
    assert orjson.loads(b"[" + rows.join(0, n) + b"]") == items


def test_a_rendered_rows_blob_is_a_table_of_one_binary_column() -> None:
    table = codec.table_from_ipc(codec.encode_rows(_items(3)))
    assert table.column_names == [codec.ROWS_COLUMN]
    assert table.num_rows == 3
    with pytest.raises(ValueError, match="not a rendered-rows blob"):
        codec.decode_rows(codec.encode_raw(_raw(2)))
