"""The model's inputs and the one engineered feature.

Everything that turns raw applicant fields into the model's feature vector lives here, so the
training matrix and the serving vector cannot drift apart. Functions work on numpy arrays (batch)
or plain floats (the single-row hot path, where numpy call overhead would dominate).
"""

from __future__ import annotations

from typing import Final

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

FloatArray = npt.NDArray[np.float32]

#: Smallest accepted annual salary (API, batch files and training data alike). Any positive value
#: would keep the division defined, but a salary below one currency unit a year is an input error,
#: and a tiny one makes `saving_rate` overflow (1e12 / 1e-308 is infinite; float32, which the
#: model computes in, overflows from 3.4e38): with salary >= 1 and balance <= 1e12 it stays finite.
MIN_ANNUAL_SALARY: Final = 1.0


def saving_rate(bank_balance: float, annual_salary: float) -> float:
    """Bank balance as a fraction of annual salary (`Saving_Rate`); salary is validated >= 1."""
    return bank_balance / annual_salary


def feature_row(employed: float, bank_balance: float, annual_salary: float) -> list[float]:
    """One applicant's feature vector in `FEATURE_NAMES` order, as plain floats."""
    return [
        float(employed),
        float(bank_balance),
        float(annual_salary),
        saving_rate(bank_balance, annual_salary),
    ]


def build_matrix(raw: npt.ArrayLike) -> FloatArray:
    """Model matrix (n, 4) float32 from raw columns (n, 3) in `RAW_FEATURES` order.

    float32 because that is what XGBoost and the ONNX graph compute in; converting once here keeps
    training, the ONNX parity check and serving on identical inputs.
    """
    arr = np.asarray(raw, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != len(RAW_FEATURES):
        raise ValueError(f"expected an (n, {len(RAW_FEATURES)}) array, got shape {arr.shape}")
    out = np.empty((arr.shape[0], len(FEATURE_NAMES)), dtype=np.float32)
    out[:, :3] = arr
    out[:, 3] = arr[:, 1] / arr[:, 2]
    return out
