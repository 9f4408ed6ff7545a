"""The training data set: derived reproducibly from a public PyPI wheel, and validated.

The original `Default_Fin.csv` is a transformation of ISLP's `Default` data (monthly balance and
income scaled to annual figures). We rebuild it byte for byte from the ISLP 0.6.0 wheel rather than
committing the file, and check both checksums so a changed upstream fails loudly.
"""

from __future__ import annotations

import csv
import hashlib
import io
import subprocess  # nosec B404 - only fixed argv lists are run, never a shell
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from loan_default.features import BOUNDS, RAW_COLUMNS, TARGET_COLUMN

ISLP_REQUIREMENT = "ISLP==0.6.0"
ISLP_MEMBER = "ISLP/data/Default.csv"
SOURCE_SHA256 = "d113590204485565bdd692b2d8430e7c2fcc72ec323df92314a745c99a0eefe9"
DERIVED_SHA256 = "319365ab29337045a1f6028faec64c88ff0c50e399793b25fcc50f92b0af32f4"
DATA_COLUMNS = ("Index", *RAW_COLUMNS, TARGET_COLUMN)


class DataIntegrityError(RuntimeError):
    """A downloaded or derived file does not have the expected checksum."""


class DataValidationError(ValueError):
    """A training CSV is unusable; the message names the column and the count of bad rows."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid training data: " + "; ".join(problems))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    return sha256_bytes(path.read_bytes())


def _shortest(x: float) -> str:
    """Shortest round-trip form, integers without a trailing `.0` (matches the original file)."""
    x = round(x, 2)
    return str(int(x)) if x == int(x) else repr(x)


def derive(source_csv: bytes) -> bytes:
    """ISLP `Default.csv` bytes -> `Default_Fin.csv` bytes (CRLF, shortest numbers)."""
    if sha256_bytes(source_csv) != SOURCE_SHA256:
        raise DataIntegrityError(
            f"{ISLP_MEMBER} sha256 is {sha256_bytes(source_csv)}, expected {SOURCE_SHA256}"
        )
    reader = csv.DictReader(io.StringIO(source_csv.decode("utf-8")))
    lines = [",".join(DATA_COLUMNS)]
    for i, row in enumerate(reader, start=1):
        employed = 1 if row["student"] == "No" else 0
        balance = _shortest(round(float(row["balance"]), 2) * 12)
        salary = _shortest(round(float(row["income"]), 2) * 12)
        defaulted = 1 if row["default"] == "Yes" else 0
        lines.append(f"{i},{employed},{balance},{salary},{defaulted}")
    out = ("\r\n".join(lines) + "\r\n").encode("ascii")
    if sha256_bytes(out) != DERIVED_SHA256:
        raise DataIntegrityError(
            f"derived file sha256 is {sha256_bytes(out)}, expected {DERIVED_SHA256}"
        )
    return out


def read_wheel_member(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as zf:
        return zf.read(ISLP_MEMBER)


def download_wheel(dest: Path) -> Path:
    """`pip download` the ISLP wheel without its (large) dependencies."""
    dest.mkdir(parents=True, exist_ok=True)
    existing = sorted(dest.glob("[Ii][Ss][Ll][Pp]-0.6.0-*.whl"))
    if existing:
        return existing[0]
    cmd = [sys.executable, "-m", "pip", "download", ISLP_REQUIREMENT, "--no-deps", "-d", str(dest)]
    subprocess.run(cmd, check=True, capture_output=True)  # noqa: S603 # nosec B603 - fixed argv, no shell
    found = sorted(dest.glob("[Ii][Ss][Ll][Pp]-0.6.0-*.whl"))
    if not found:
        raise DataIntegrityError(f"pip download {ISLP_REQUIREMENT} produced no wheel in {dest}")
    return found[0]


def ensure_dataset(target: Path, *, cache_dir: Path | None = None) -> Path:
    """Create `target` from the ISLP wheel unless a file with the right checksum is there."""
    if target.exists() and sha256_file(target) == DERIVED_SHA256:
        return target
    with tempfile.TemporaryDirectory() as tmp:
        wheel = download_wheel(cache_dir or Path(tmp))
        data = derive(read_wheel_member(wheel))
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(target.suffix + ".partial")
    partial.write_bytes(data)
    partial.replace(target)
    return target


@dataclass(frozen=True)
class TrainingData:
    """Validated raw features (n, 3) in RAW_COLUMNS order and 0/1 labels."""

    X: npt.NDArray[np.float64]
    y: npt.NDArray[np.int64]
    sha256: str
    path: Path


def _count(mask: npt.NDArray[np.bool_]) -> int:
    return int(np.count_nonzero(mask))


def load_training_csv(path: Path) -> TrainingData:
    """Read and validate a training CSV; raises DataValidationError listing every problem."""
    if not path.exists():
        raise DataValidationError([f"file not found: {path}"])
    raw = path.read_bytes()
    try:
        header = next(csv.reader(io.StringIO(raw.decode("utf-8-sig").split("\n", 1)[0])))
    except (StopIteration, UnicodeDecodeError):
        raise DataValidationError(["file is empty or not UTF-8 text"]) from None
    header = [h.strip() for h in header]
    dupes = sorted({h for h in header if header.count(h) > 1})
    problems: list[str] = [f"duplicate header column {d!r}" for d in dupes]
    missing = [c for c in (*RAW_COLUMNS, TARGET_COLUMN) if c not in header]
    problems += [f"missing column {c!r}" for c in missing]
    if problems:
        raise DataValidationError(problems)
    df = pd.read_csv(io.BytesIO(raw), dtype=str, keep_default_na=False, encoding="utf-8-sig")
    df.columns = [c.strip() for c in df.columns]
    if len(df) == 0:
        raise DataValidationError(["file has no data rows"])
    cols: dict[str, npt.NDArray[np.float64]] = {}
    for col in (*RAW_COLUMNS, TARGET_COLUMN):
        text = df[col].str.strip()
        values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
        empty = (text == "") | text.str.lower().isin(["nan", "na", "null", "none"])
        non_numeric = np.isnan(values) & ~empty.to_numpy()
        if _count(empty.to_numpy()):
            problems.append(f"column {col!r}: {_count(empty.to_numpy())} rows are empty/NaN")
        if _count(non_numeric):
            problems.append(f"column {col!r}: {_count(non_numeric)} rows are not numeric")
        inf = np.isinf(values)
        if _count(inf):
            problems.append(f"column {col!r}: {_count(inf)} rows are infinite")
        cols[col] = values
    ok = {c: ~np.isnan(v) for c, v in cols.items()}
    # The same bounds the API and batch files enforce (the row contract), on the CSV's columns.
    for b in BOUNDS:
        out = ok[b.column] & b.violations(cols[b.column])
        if _count(out):
            problems.append(f"column {b.column!r}: {_count(out)} rows break: {b.reason()}")
    bad_target = ok[TARGET_COLUMN] & ~np.isin(cols[TARGET_COLUMN], (0.0, 1.0))
    if _count(bad_target):
        problems.append(f"column {TARGET_COLUMN!r}: {_count(bad_target)} rows are not 0 or 1")
    if not problems:
        classes = np.unique(cols[TARGET_COLUMN])
        if classes.size < 2:
            problems.append(
                f"column {TARGET_COLUMN!r}: only one class ({int(classes[0])}) present; "
                "need both 0 and 1"
            )
    if problems:
        raise DataValidationError(problems)
    X = np.column_stack([cols[c] for c in RAW_COLUMNS])
    y = cols[TARGET_COLUMN].astype(np.int64)
    return TrainingData(X=X, y=y, sha256=sha256_bytes(raw), path=path)
