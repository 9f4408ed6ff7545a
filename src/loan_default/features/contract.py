"""The row contract: what one applicant row is, defined once.

Column names (as the API and batch files spell them, and as the training CSV does), the accepted
range of every raw input, and the risk-band codes and labels. The request schema, the batch JSON
and CSV validation, the training-data validation and the model card check all read them from
here, so a bound changed here changes everywhere (and nowhere else can it be changed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

#: Raw feature names as the API and batch files spell them (snake_case).
RAW_FEATURES: Final = ("employed", "bank_balance", "annual_salary")
#: The same columns as the training CSV names them.
RAW_COLUMNS: Final = ("Employed", "Bank Balance", "Annual Salary")
TARGET_COLUMN: Final = "Defaulted?"
ENGINEERED_FEATURES: Final = ("saving_rate",)
#: Column order of the model matrix; recorded in the model card and checked when loading.
FEATURE_NAMES: Final = (*RAW_FEATURES, *ENGINEERED_FEATURES)

#: The optional client reference of a row (the lender's application id): accepted on predict, in
#: batch JSON items and as a CSV column, echoed back and recorded with the decision.
REFERENCE: Final = "reference"
REFERENCE_MAX_LENGTH: Final = 64
#: 1 to REFERENCE_MAX_LENGTH printable ASCII characters, no space at either end. ASCII, not any
#: printable Unicode: references are looked up exactly, and Unicode has several spellings of
#: one visible text (NFC/NFD, look-alike letters); the same pattern also runs unchanged in
#: pydantic's regex engine, Python's `re` and JSON Schema clients (no `\p{...}` classes).
REFERENCE_PATTERN: Final = r"^[!-~](?:[ -~]*[!-~])?$"
#: REFERENCE_PATTERN compiled once, for the places that check one reference at a time.
REFERENCE_RE: Final = re.compile(REFERENCE_PATTERN)


def is_reference(value: object) -> bool:
    """A valid reference: a str of at most REFERENCE_MAX_LENGTH characters matching
    REFERENCE_PATTERN (which asks for at least one)."""
    return (
        type(value) is str
        and len(value) <= REFERENCE_MAX_LENGTH
        and REFERENCE_RE.fullmatch(value) is not None
    )


#: Upper bound of money amounts: larger values are input errors (and overflow float32).
MAX_AMOUNT: Final = 1e12
#: Smallest accepted annual salary (API, batch files and training data alike). Any positive value
#: would keep the division defined, but a salary below one currency unit a year is an input error,
#: and a tiny one makes `saving_rate` overflow (1e12 / 1e-308 is infinite; float32, which the
#: model computes in, overflows from 3.4e38): with salary >= 1 and balance <= 1e12 it stays finite.
MIN_ANNUAL_SALARY: Final = 1.0


@dataclass(frozen=True, slots=True)
class Bound:
    """The accepted range of one raw input (inclusive at both ends)."""

    name: str
    column: str
    low: float
    high: float
    integer: bool
    description: str

    def reason(self) -> str:
        """The sentence a 422 gives for a value outside this bound."""
        kind = "an integer" if self.integer else "a number"
        return f"{self.name} must be {kind} >= {self.low:g} and <= {self.high:g}"

    def violations(self, values: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        """True where a finite value breaks the bound (NaN/inf are reported separately)."""
        with np.errstate(invalid="ignore"):
            out = (values < self.low) | (values > self.high)
            if self.integer:
                out |= values != np.round(values)
        return np.asarray(out & np.isfinite(values))


#: Every raw input's range, in RAW_FEATURES order.
BOUNDS: Final = (
    Bound(
        "employed",
        "Employed",
        0,
        1,
        integer=True,
        description="1 if the applicant is employed, else 0.",
    ),
    Bound(
        "bank_balance",
        "Bank Balance",
        0,
        MAX_AMOUNT,
        integer=False,
        description="Bank balance, >= 0.",
    ),
    Bound(
        "annual_salary",
        "Annual Salary",
        MIN_ANNUAL_SALARY,
        MAX_AMOUNT,
        integer=False,
        description="Annual salary, >= 1.",
    ),
)
BOUND_BY_NAME: Final = {b.name: b for b in BOUNDS}


def rows_within_bounds(raw: npt.NDArray[np.float64]) -> bool:
    """True when every value of a raw matrix (RAW_FEATURES columns) is finite and in bounds."""
    if not np.isfinite(raw).all():
        return False
    return not any(b.violations(raw[:, j]).any() for j, b in enumerate(BOUNDS))


#: Risk-band labels, indexed by band code (0, 1, 2): the code is what result blobs store.
RISK_LABELS: Final = ("Low", "Medium", "High")


def band_edges(*, medium: float, high: float) -> npt.NDArray[np.float64]:
    """The model card's band edges as the array `risk_codes` takes (build it once per model)."""
    return np.array([medium, high], dtype=np.float64)


def risk_codes(probability: Any, edges: npt.NDArray[np.float64]) -> Any:
    """Band code: 0 below `medium`, 1 from `medium`, 2 from `high` (an edge is in the upper band).

    Takes a numpy scalar (the single predict) or an array (batches) and answers in kind.
    """
    return edges.searchsorted(probability, side="right")


def risk_labels(codes: npt.NDArray[np.uint8]) -> npt.NDArray[np.str_]:
    return np.asarray(RISK_LABELS)[codes]
