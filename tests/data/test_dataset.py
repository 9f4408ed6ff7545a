from __future__ import annotations

from pathlib import Path

import pytest

from loan_default.data import dataset as ds
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.unit

HEADER = "Index,Employed,Bank Balance,Annual Salary,Defaulted?"
GOOD_ROWS = ["1,1,8754.36,532339.56,0", "2,0,9806.16,145273.56,1", "3,1,12882.6,381205.68,0"]


def write(tmp_path: Path, text: str, name: str = "d.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def islp_wheel() -> Path:
    # Cached beside the repo so repeated runs do not hit PyPI; CI's fresh clone downloads once.
    return ds.download_wheel(REPO_ROOT / "var" / "cache")


@pytest.mark.integration
def test_derivation_is_byte_identical_to_the_original(islp_wheel: Path, data_file: Path) -> None:
    source = ds.read_wheel_member(islp_wheel)
    assert ds.sha256_bytes(source) == ds.SOURCE_SHA256
    derived = ds.derive(source)
    assert ds.sha256_bytes(derived) == ds.DERIVED_SHA256
    assert derived == data_file.read_bytes()
    assert derived.startswith(
        b"Index,Employed,Bank Balance,Annual Salary,Defaulted?\r\n1,1,8754.36,"
    )
    shared = REPO_ROOT.parent / "shared" / "data" / "Default_Fin.csv"
    if shared.exists():  # the original, beside the checkout for comparison only
        assert derived == shared.read_bytes()


@pytest.mark.integration
def test_tampered_source_fails_loudly(islp_wheel: Path) -> None:
    source = ds.read_wheel_member(islp_wheel)
    with pytest.raises(ds.DataIntegrityError, match="sha256"):
        ds.derive(source.replace(b"No,No,729.", b"No,No,728.", 1))


@pytest.mark.integration
def test_ensure_dataset_creates_and_reuses(islp_wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "sub" / "Default_Fin.csv"
    ds.ensure_dataset(target, cache_dir=islp_wheel.parent)
    assert ds.sha256_file(target) == ds.DERIVED_SHA256
    mtime = target.stat().st_mtime_ns
    ds.ensure_dataset(target, cache_dir=islp_wheel.parent)
    assert target.stat().st_mtime_ns == mtime
    target.write_text("corrupt")
    ds.ensure_dataset(target, cache_dir=islp_wheel.parent)
    assert ds.sha256_file(target) == ds.DERIVED_SHA256


def test_shortest_number_form() -> None:
    assert ds._shortest(6351.0) == "6351"
    assert ds._shortest(12882.6) == "12882.6"
    assert ds._shortest(729.53 * 12) == "8754.36"


def test_valid_file_loads(tmp_path: Path) -> None:
    data = ds.load_training_csv(write(tmp_path, "\n".join([HEADER, *GOOD_ROWS]) + "\n"))
    assert data.X.shape == (3, 3)
    assert data.y.tolist() == [0, 1, 0]
    assert data.X[0].tolist() == [1.0, 8754.36, 532339.56]


def test_crlf_and_bom_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "crlf.csv"
    path.write_bytes(("\ufeff" + "\r\n".join([HEADER, *GOOD_ROWS]) + "\r\n").encode())
    assert ds.load_training_csv(path).X.shape == (3, 3)


@pytest.mark.parametrize(
    ("rows", "header", "expected"),
    [
        (GOOD_ROWS, "Index,Employed,Bank Balance,Defaulted?", "missing column 'Annual Salary'"),
        (GOOD_ROWS, "Index,Employed,Bank Balance,Annual Salary", "missing column 'Defaulted?'"),
        (
            [r + ",0" for r in GOOD_ROWS],
            HEADER + ",Employed",
            "duplicate header column 'Employed'",
        ),
        (
            ["1,1,abc,532339.56,0", "2,0,x,145273.56,1", *GOOD_ROWS],
            HEADER,
            "column 'Bank Balance': 2 rows are not numeric",
        ),
        (["1,1,,532339.56,0", *GOOD_ROWS], HEADER, "column 'Bank Balance': 1 rows are empty/NaN"),
        (
            ["1,1,NaN,532339.56,0", *GOOD_ROWS],
            HEADER,
            "column 'Bank Balance': 1 rows are empty/NaN",
        ),
        (
            ["1,1,-5,532339.56,0", *GOOD_ROWS],
            HEADER,
            "column 'Bank Balance': 1 rows break: bank_balance must be a number >= 0",
        ),
        (
            ["1,1,5,0,0", "2,1,5,-3,1", *GOOD_ROWS],
            HEADER,
            "column 'Annual Salary': 2 rows break: annual_salary must be a number >= 1",
        ),
        (
            ["1,2,5,10,0", *GOOD_ROWS],
            HEADER,
            "column 'Employed': 1 rows break: employed must be an integer >= 0 and <= 1",
        ),
        (
            ["1,1,2e12,10,0", *GOOD_ROWS],
            HEADER,
            "column 'Bank Balance': 1 rows break: bank_balance must be a number >= 0 and <= 1e+12",
        ),
        (["1,1,5,10,0.5", *GOOD_ROWS], HEADER, "column 'Defaulted?': 1 rows are not 0 or 1"),
        (["1,1,inf,10,0", *GOOD_ROWS], HEADER, "column 'Bank Balance': 1 rows are infinite"),
        (
            ["1,1,5,10,0", "2,0,6,20,0"],
            HEADER,
            "column 'Defaulted?': only one class (0) present",
        ),
        ([], HEADER, "file has no data rows"),
    ],
)
def test_validation_errors_name_column_and_count(
    tmp_path: Path, rows: list[str], header: str, expected: str
) -> None:
    path = write(tmp_path, "\n".join([header, *rows]) + "\n")
    with pytest.raises(ds.DataValidationError) as err:
        ds.load_training_csv(path)
    assert any(expected in p for p in err.value.problems), err.value.problems


def test_all_problems_are_reported_together(tmp_path: Path) -> None:
    rows = ["1,2,-1,0,7", *GOOD_ROWS]
    with pytest.raises(ds.DataValidationError) as err:
        ds.load_training_csv(write(tmp_path, "\n".join([HEADER, *rows])))
    assert len(err.value.problems) == 4


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(ds.DataValidationError, match="file not found"):
        ds.load_training_csv(tmp_path / "nope.csv")
    with pytest.raises(ds.DataValidationError, match="empty"):
        ds.load_training_csv(write(tmp_path, ""))
