"""Property tests (hypothesis) for pure code not covered by properties elsewhere: PSI, CSV parsing.

Feature engineering, threshold selection and calibration monotonicity have theirs in
tests/features and tests/training.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from loan_default.core.errors import InvalidInput
from loan_default.services import batch as bs
from loan_default.services.drift import bin_proportions, psi

pytestmark = pytest.mark.unit


# --- PSI -------------------------------------------------------------------------------------
@st.composite
def proportions(draw: st.DrawFn, k: int) -> np.ndarray:
    weights = draw(st.lists(st.floats(0, 1), min_size=k, max_size=k))
    w = np.asarray(weights) + 1e-12
    return w / w.sum()


@given(data=st.data(), k=st.integers(2, 20))
def test_psi_non_negative_zero_on_identity_and_symmetric(data: st.DataObject, k: int) -> None:
    e = data.draw(proportions(k))
    a = data.draw(proportions(k))
    assert psi(e, a) >= 0
    assert psi(e, e) == 0
    assert psi(a, e) == pytest.approx(psi(e, a), rel=1e-9, abs=1e-12)


def _normal_cdf(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def _shifted_bins(edges: np.ndarray, shift: float) -> np.ndarray:
    """Exact proportions of N(shift, 1) in the bins (no sampling noise)."""
    cdf = np.array([_normal_cdf(x - shift) if np.isfinite(x) else float(x > 0) for x in edges])
    return np.diff(cdf)


EDGES = np.array([-np.inf, *[-2 + 0.5 * i for i in range(9)], np.inf])  # 10 bins, symmetric


@given(st.floats(0, 3), st.floats(0.01, 3))
def test_psi_grows_with_the_shift_and_is_symmetric_in_its_direction(
    small: float, step: float
) -> None:
    ref = _shifted_bins(EDGES, 0.0)
    near, far = _shifted_bins(EDGES, small), _shifted_bins(EDGES, small + step)
    assert psi(ref, far) > psi(ref, near)
    # a shift to the left costs what the same shift to the right does (symmetric bins)
    assert psi(ref, _shifted_bins(EDGES, -small)) == pytest.approx(psi(ref, near), abs=1e-9)


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=200))
def test_bin_proportions_is_a_distribution(values: list[float]) -> None:
    p = bin_proportions(values, EDGES.tolist())
    assert p.shape == (len(EDGES) - 1,)
    assert (p >= 0).all()
    assert p.sum() == pytest.approx(1.0)
    assert psi(p, p) == 0


# --- CSV parsing of batch uploads ----------------------------------------------------------
valid_row = st.tuples(
    st.integers(0, 1),
    st.floats(0, 1e12, allow_nan=False),
    st.floats(1, 1e12, allow_nan=False),  # the row contract: salary >= 1
)
bad_cell = st.sampled_from(
    [
        ("employed", "2"),
        ("employed", "0.5"),
        ("employed", "yes"),
        ("bank_balance", "-1"),
        ("bank_balance", "nan"),
        ("bank_balance", "1e13"),
        ("annual_salary", "0"),
        ("annual_salary", ""),
        ("annual_salary", "inf"),
    ]
)
NAMINGS = [
    ("Employed", "Bank Balance", "Annual Salary"),
    ("employed", "bank_balance", "annual_salary"),
    ("EMPLOYED", " bank balance ", "Annual_Salary"),
]
FIELDS = ("employed", "bank_balance", "annual_salary")


def _render(header: list[str], rows: list[list[str]]) -> bytes:
    return ("\n".join(",".join(r) for r in [header, *rows]) + "\n").encode()


# --- the CSV reader's byte-level fast path ----------------------------------------------------
#: Cells near the grammar's edges: signs, dots, leading zeros, exponents, letters, padding.
grammar_cell = st.one_of(
    st.text(alphabet="0123456789.-+eE xinfaN", min_size=0, max_size=7),
    st.from_regex(r"\A-?(0|[1-9][0-9]{0,5})(\.[0-9]{1,4})?\Z"),
    st.sampled_from(["01", "-01", "00", ".5", "5.", "-.5", "+1", "1.e5", "1e5", "inf", "-0"]),
)


@settings(max_examples=300, deadline=None)
@given(
    cells=st.lists(grammar_cell, min_size=1, max_size=12),
    cut=st.integers(0, 12),
    integer=st.booleans(),
)
def test_the_byte_level_check_accepts_only_what_the_regex_accepts(
    cells: list[str], cut: int, integer: bool
) -> None:
    """`_plain_literals` (no regex, a few passes over the column's bytes after Arrow's cast)
    never passes a column with a cell the JSON grammar refuses, and passes every column of plain
    literals; chunks and a sliced (offset) chunk, as Arrow's CSV reader hands them over."""
    import re

    import pyarrow as pa
    import pyarrow.compute as pc

    from loan_default.services.batch import csv_input

    whole = pa.array(["pad", *cells], pa.string()).slice(1)  # an offset into the buffers
    cut = min(cut, len(cells))
    column = pa.chunked_array([whole.slice(0, cut), whole.slice(cut)], pa.string())
    try:
        pc.cast(column, pa.float64())
    except pa.ArrowInvalid:
        return  # the fast path is only asked after a clean cast
    grammar = re.compile(csv_input.JSON_INTEGER_RE if integer else csv_input.JSON_NUMBER_RE)
    plain = re.compile(r"\A-?(0|[1-9][0-9]*)\Z" if integer else r"\A-?(0|[1-9][0-9]*)(\.[0-9]+)?\Z")
    fast = csv_input._plain_literals(column, integer=integer)
    if fast:
        assert all(grammar.match(c) for c in cells), cells
    assert fast == all(plain.match(c) for c in cells), cells


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(valid_row, min_size=1, max_size=40),
    naming=st.sampled_from(NAMINGS),
    order=st.permutations([0, 1, 2, 3]),
)
def test_valid_files_round_trip_exactly(
    rows: list[tuple[int, float, float]], naming: tuple[str, str, str], order: list[int]
) -> None:
    """Any column order and naming, an extra id column: values and ids come back unchanged."""
    names = [*naming, "loan_id"]
    header = [names[i] for i in order]
    lines = [
        [[str(e), repr(b), repr(s), f"L{n}"][i] for i in order] for n, (e, b, s) in enumerate(rows)
    ]
    parsed = bs.parse_csv(_render(header, lines), max_rows=100, on_error="reject")
    assert parsed.raw.tolist() == [[float(e), b, s] for e, b, s in rows]
    assert parsed.table.column("loan_id").to_pylist() == [f"L{n}" for n in range(len(rows))]
    assert parsed.bad_rows == 0
    assert parsed.source_rows == len(rows)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(valid_row, min_size=2, max_size=40),
    bad=st.lists(st.tuples(st.integers(0, 39), bad_cell), min_size=1, max_size=10),
)
def test_bad_rows_are_reported_by_number_and_skipped_or_rejected(
    rows: list[tuple[int, float, float]], bad: list[tuple[int, tuple[str, str]]]
) -> None:
    lines = [[str(e), repr(b), repr(s)] for e, b, s in rows]
    broken: dict[int, set[str]] = {}
    for index, (field, value) in bad:
        i = index % len(rows)
        lines[i][FIELDS.index(field)] = value
        broken.setdefault(i, set()).add(field)
    assume(len(broken) < len(rows))  # at least one valid row left
    data = _render(list(NAMINGS[0]), lines)

    with pytest.raises(InvalidInput) as err:
        bs.parse_csv(data, max_rows=100, on_error="reject")
    assert err.value.detail["bad_rows"] == len(broken)

    parsed = bs.parse_csv(data, max_rows=100, on_error="skip")
    assert parsed.bad_rows == len(broken)
    assert parsed.source_rows == len(rows)
    reported = {(e["row"], e["field"]) for e in parsed.row_errors}
    assert reported == {(i + 1, f) for i, fields in broken.items() for f in fields}
    kept = [[float(e), b, s] for i, (e, b, s) in enumerate(rows) if i not in broken]
    assert parsed.raw.tolist() == kept
    # every kept row satisfies the bounds the API applies to a single prediction
    assert ((parsed.raw[:, 0] == 0) | (parsed.raw[:, 0] == 1)).all()
    assert (parsed.raw[:, 1] >= 0).all()
    assert (parsed.raw[:, 2] > 0).all()


@given(st.binary(max_size=300))
def test_arbitrary_bytes_parse_or_are_refused_as_invalid_input(data: bytes) -> None:
    """Whatever is uploaded, the parser answers with rows or InvalidInput (a 422), never crashes."""
    try:
        parsed = bs.parse_csv(data, max_rows=50, on_error="skip")
    except InvalidInput:
        return
    assert parsed.raw.shape[1] == 3
    assert np.isfinite(parsed.raw).all()


# --- JSON batch bodies: the byte scan that counts items before anything is parsed -------------
json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=8),
    st.sampled_from(['"', "\\", ",", "[", "]", "{", "}", '\\"', "predictions"]),
)
json_value = st.recursive(
    json_scalar,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=6) | st.just("predictions"), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(
    items=st.lists(json_value, max_size=12),
    extra=st.dictionaries(st.text(max_size=6), json_value, max_size=3),
    ascii_only=st.booleans(),
    indent=st.sampled_from([None, 1]),
)
def test_json_shape_counts_the_items_an_actual_parser_sees(
    items: list[object], extra: dict[str, object], ascii_only: bool, indent: int | None
) -> None:
    import json

    from loan_default.services.batch.json_input import json_shape

    doc = {**{k: v for k, v in extra.items() if k != "predictions"}, "predictions": items}
    body = json.dumps(doc, ensure_ascii=ascii_only, indent=indent).encode()
    shape = json_shape(body)
    assert shape.items == len(json.loads(body)["predictions"])
    assert shape.values >= len(items)


FEATURE_PAIRS = [("employed", "1"), ("bank_balance", "5.5"), ("annual_salary", "100")]


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 6),
    repeat=st.one_of(st.none(), st.tuples(st.integers(0, 5), st.integers(0, 2))),
    note=st.sampled_from(["", "employed", '\\"employed\\"']),
    escape_key=st.booleans(),
)
def test_a_repeated_feature_key_is_found_exactly(
    n: int, repeat: tuple[int, int] | None, note: str, escape_key: bool
) -> None:
    from loan_default.services.batch.json_input import duplicate_feature_key

    items = []
    for i in range(n):
        pairs = [f'"{k}": {v}' for k, v in FEATURE_PAIRS]
        pairs.append(f'"note": "{note}"')
        if repeat is not None and repeat[0] % n == i:
            key = FEATURE_PAIRS[repeat[1]][0]
            spelled = key.replace("e", "\\u0065", 1) if escape_key else key
            pairs.append(f'"{spelled}": 0')
        items.append("{" + ", ".join(pairs) + "}")
    body = ('{"predictions": [' + ", ".join(items) + "]}").encode()
    expected = None if repeat is None else (repeat[0] % n, FEATURE_PAIRS[repeat[1]][0])
    assert duplicate_feature_key(body, n) == expected


# --- CSV uploads through the real route: cells, headers, encodings ----------------------------
@pytest.fixture(scope="module")
def upload_client(trained_store, tmp_path_factory):  # type: ignore[no-untyped-def]
    """The real app in-process (the Redis job store, a recording dispatcher: a 202 queues)."""
    from fastapi.testclient import TestClient

    from loan_default.api.app import create_app
    from tests.conftest import TEST_API_KEY, RecordingDispatcher, make_settings, queued_batch

    app = create_app(
        make_settings(
            trained_store,
            rate_limit_per_minute=1_000_000,
            batch_csv_max_columns=64,
            batch_csv_max_header_bytes=2048,
            **queued_batch(),
        ),
        dispatcher=RecordingDispatcher(),
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        client.headers["X-API-Key"] = TEST_API_KEY
        yield client


padded_number = st.tuples(
    st.sampled_from([" ", "\t", "", "  "]),
    st.one_of(st.integers(0, 10**6).map(str), st.floats(0, 1e6).map(repr)),
    st.sampled_from(["", " ", "\t"]),
).map("".join)
cell_text = st.one_of(
    padded_number,
    st.sampled_from(
        [
            "",
            " ",
            "1",
            "0",
            "-0",
            "1.0",
            "0x10",
            "+1",
            ".5",
            "1.",
            "01",
            "1e400",
            "-1e-400",
            "NaN",
            "inf",
            "-Infinity",
            "1_000",
            " 7 ",
            "1,5",
            "=1+1",
            "@A1",
            "-2+3",
            "\t1",
            "\r1",
            '"',
            '""',
            "\n",
            "\r\n",
            "\x00",
            "\ufeff",
            "\u2028",
            "é",
            "😀",
            "\\",
            "null",
            "true",
        ]
    ),
    st.text(max_size=12),
    st.floats(allow_nan=True).map(repr),
    st.integers(-(2**70), 2**70).map(str),
)
header_text = st.one_of(
    st.sampled_from(
        [
            "employed",
            "Employed",
            "bank_balance",
            "Bank Balance",
            "annual_salary",
            "Annual Salary",
            " EMPLOYED ",
            "bank balance",
            "",
            "=cmd",
            '"q"',
            "a,b",
            "x\ny",
            "\ufeffemployed",
        ]
    ),
    st.text(max_size=10),
)


@st.composite
def csv_uploads(draw: st.DrawFn) -> bytes:
    import csv
    import io

    names = draw(st.lists(header_text, min_size=0, max_size=6))
    if draw(st.booleans()):  # most files name the features, so the rows get parsed
        names += list(draw(st.sampled_from(NAMINGS)))
        names = draw(st.permutations(names))
    width = max(1, len(names))
    rows = draw(
        st.lists(
            st.lists(cell_text, min_size=width - 1, max_size=width + 1), min_size=0, max_size=8
        )
    )
    out = io.StringIO()
    writer = csv.writer(
        out,
        quoting=draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC])),
        lineterminator=draw(st.sampled_from(["\n", "\r\n", "\r"])),
    )
    writer.writerow(names)
    writer.writerows(rows)
    text = out.getvalue()
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "latin-1", "cp1252"]))
    data = bytearray(text.encode(encoding, errors="replace"))
    for _ in range(draw(st.integers(0, 2))):  # a flipped byte now and then
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


#: Derandomized so CI runs the same 200 uploads every time (a red CI blocks everything);
#: FUZZ_RANDOM=1 FUZZ_CSV_EXAMPLES=2000 explores new ones locally.
CSV_FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_CSV_EXAMPLES", "200")),
    deadline=None,
    derandomize=not os.environ.get("FUZZ_RANDOM"),
    database=None,
)


@pytest.mark.integration
@CSV_FUZZ
@given(data=csv_uploads(), on_error=st.sampled_from(["reject", "skip"]))
# found by this test before the fix: a padded number in a text column was a 500 (ArrowInvalid)
@example(data=b"employed,bank_balance,annual_salary\n1, 5,100\n1,abc,100\n", on_error="skip")
@example(data=b'\x00employed"\n" 0"\n', on_error="reject")  # found after: csv.Error on the header
def test_any_csv_upload_is_202_or_a_4xx_naming_why(upload_client, data: bytes, on_error: str):  # type: ignore[no-untyped-def]
    """The real multipart route, parse and validation: never a 500, whatever the bytes."""
    r = upload_client.post(
        "/api/v1/predict/batch/file",
        params={"on_error": on_error},
        files={"file": ("fuzz.csv", data, "text/csv")},
    )
    assert r.status_code in {202, 413, 422}, (r.status_code, r.text[:500], data[:300])
    body = r.json()
    assert body["success"] is (r.status_code == 202)
    if r.status_code == 202:
        assert body["data"]["total_predictions"] >= 1
    else:
        assert body["message"]
