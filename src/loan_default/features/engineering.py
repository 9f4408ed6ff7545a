"""The one engineered feature and the model matrix.

Everything that turns raw applicant fields into the model's feature vector lives here, so the
training matrix and the serving vector cannot drift apart. `saving_rate` is written once and
works on plain floats and numpy arrays alike (true division is correctly rounded either way).
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import numpy.typing as npt

from loan_default.features.contract import FEATURE_NAMES, RAW_FEATURES

FloatArray = npt.NDArray[np.float32]
_Num = TypeVar("_Num", float, npt.NDArray[np.float64])


def saving_rate(bank_balance: _Num, annual_salary: _Num) -> _Num:
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
    training, the ONNX parity check and serving on identical inputs. The engineered column is
    computed in float64 from the raw values, exactly as `feature_row` does, then rounded once.
    """
    arr = np.asarray(raw, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != len(RAW_FEATURES):
        raise ValueError(f"expected an (n, {len(RAW_FEATURES)}) array, got shape {arr.shape}")
    out = np.empty((arr.shape[0], len(FEATURE_NAMES)), dtype=np.float32)
    out[:, :3] = arr
    out[:, 3] = saving_rate(arr[:, 1], arr[:, 2])
    return out
