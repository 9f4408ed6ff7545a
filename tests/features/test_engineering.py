from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from loan_default.features import FEATURE_NAMES, build_matrix, feature_row, saving_rate

pytestmark = pytest.mark.unit


def test_feature_order_is_the_contract() -> None:
    assert FEATURE_NAMES == ("employed", "bank_balance", "annual_salary", "saving_rate")


def test_saving_rate_is_balance_over_salary() -> None:
    assert saving_rate(8754.36, 532339.56) == pytest.approx(0.016445, rel=1e-4)
    assert feature_row(1, 100.0, 400.0) == [1.0, 100.0, 400.0, 0.25]


def test_build_matrix_matches_feature_row() -> None:
    raw = [[1, 8754.36, 532339.56], [0, 0.0, 1.0]]
    m = build_matrix(raw)
    assert m.dtype == np.float32
    assert m.shape == (2, 4)
    for i, row in enumerate(raw):
        np.testing.assert_allclose(m[i], np.float32(feature_row(*row)))


def test_build_matrix_rejects_wrong_shape() -> None:
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        build_matrix([[1, 2]])


@given(
    st.integers(0, 1),
    st.floats(0, 1e7, allow_nan=False),
    st.floats(1e-2, 1e7, allow_nan=False),
)
def test_matrix_and_row_agree(employed: int, balance: float, salary: float) -> None:
    m = build_matrix([[employed, balance, salary]])[0]
    row = np.float32(feature_row(employed, balance, salary))
    np.testing.assert_allclose(m, row, rtol=1e-6)
    assert m[3] >= 0
