from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loan_default.model.card import Calibration
from loan_default.training.calibration import fit_calibration, logit

pytestmark = pytest.mark.unit


def test_platt_recovers_known_map() -> None:
    rng = np.random.default_rng(0)
    raw = rng.uniform(0.01, 0.99, 50_000)
    # True default probability = sigmoid(0.5 * logit(raw) - 2): SMOTE-like overstatement.
    true_p = 1 / (1 + np.exp(-(0.5 * logit(raw) - 2)))
    y = rng.random(raw.size) < true_p
    cal = fit_calibration(raw, y, method="sigmoid")
    assert cal.method == "sigmoid"
    assert cal.a == pytest.approx(-0.5, abs=0.05)
    assert cal.b == pytest.approx(2.0, abs=0.1)
    np.testing.assert_allclose(cal.apply(raw), true_p, atol=0.02)


def test_isotonic_is_monotone_and_bounded() -> None:
    rng = np.random.default_rng(1)
    raw = rng.random(5000)
    y = rng.random(5000) < raw**2
    cal = fit_calibration(raw, y, method="isotonic")
    grid = np.linspace(-0.5, 1.5, 400)
    out = cal.apply(grid)
    assert np.all(np.diff(out) >= -1e-12)
    assert out.min() >= 0
    assert out.max() <= 1
    # Observed rate near raw=0.8 is 0.64.
    assert cal.apply(np.array([0.8]))[0] == pytest.approx(0.64, abs=0.08)


@pytest.mark.parametrize("method", ["sigmoid", "isotonic"])
def test_one_value_alone_equals_the_same_value_in_a_long_array(method: str) -> None:
    """A batch row gets exactly the single predict's probability (the contract), on any CPU.

    The single predict runs the same `apply` on a 1-element array; numpy's SIMD log/exp differ
    from libm's in the last bit on some CPUs, so this checks that a value alone (a masked tail
    lane) and inside a long array (full SIMD lanes) come out identical.
    """
    rng = np.random.default_rng(2)
    raw = rng.random(2000)
    cal = fit_calibration(raw, rng.random(2000) < raw, method=method)
    probes = np.concatenate(
        [[0.0, 1e-13, 1e-9, 0.01, 0.37, 0.5, 0.999, 1.0 - 1e-13, 1.0], rng.random(5000), raw[:500]]
    )
    vector = cal.apply(probes)
    scalar = np.array([cal.apply(np.array([p]))[0] for p in probes])
    mismatch = np.flatnonzero(vector != scalar)
    assert mismatch.size == 0, [(probes[i], vector[i], scalar[i]) for i in mismatch[:5]]


@settings(max_examples=60, deadline=None)
@given(
    st.floats(-5, 5),
    st.floats(-5, 5),
    st.lists(st.floats(0, 1, allow_subnormal=True), min_size=1, max_size=40),
)
def test_sigmoid_scalar_equals_vector_for_any_map(a: float, b: float, ps: list[float]) -> None:
    cal = Calibration(method="sigmoid", a=a, b=b)
    assert cal.apply(np.array(ps)).tolist() == [cal.apply(np.array([p]))[0] for p in ps]


def test_unknown_method_and_bad_card() -> None:
    with pytest.raises(ValueError, match="unknown"):
        fit_calibration([0.1, 0.9], [0, 1], method="beta")
    with pytest.raises(ValueError, match="non-decreasing"):
        Calibration(method="isotonic", x=[0.5, 0.1], y=[0.0, 1.0])


@settings(max_examples=40, deadline=None)
@given(st.floats(-3, -0.05), st.floats(-3, 3), st.lists(st.floats(0, 1), min_size=2, max_size=30))
def test_sigmoid_map_is_monotone(a: float, b: float, ps: list[float]) -> None:
    cal = Calibration(method="sigmoid", a=a, b=b)
    xs = np.sort(np.array(ps))
    out = cal.apply(xs)
    assert np.all(np.diff(out) >= -1e-12)
