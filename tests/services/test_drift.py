"""PSI against hand-computed values, binning, and the monitor's window/alert logic."""

from __future__ import annotations

import math

import numpy as np
import pytest
from loguru import logger

from loan_default.model.card import FeatureDistribution
from loan_default.services import metrics
from loan_default.services.drift import DriftMonitor, bin_proportions, psi

pytestmark = pytest.mark.unit


def test_psi_hand_computed() -> None:
    # (0.25-0.5)ln(0.25/0.5) + (0.75-0.5)ln(0.75/0.5)
    expected = -0.25 * math.log(0.5) + 0.25 * math.log(1.5)
    assert psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(expected)
    assert expected == pytest.approx(0.274653, abs=1e-6)


def test_psi_identical_is_zero_and_symmetric_terms_positive() -> None:
    assert psi([0.1] * 10, [0.1] * 10) == 0
    assert psi([0.2, 0.3, 0.5], [0.3, 0.3, 0.4]) == pytest.approx(
        0.1 * math.log(1.5) + 0 + -0.1 * math.log(0.8)
    )


def test_psi_empty_bin_floored_at_epsilon() -> None:
    eps = 1e-4
    expected = (eps - 0.5) * math.log(eps / 0.5) + 0.5 * math.log(2)
    assert psi([0.5, 0.5], [0.0, 1.0]) == pytest.approx(expected)
    assert expected == pytest.approx(4.604319, abs=1e-5)


def test_psi_shape_mismatch() -> None:
    with pytest.raises(ValueError):
        psi([0.5, 0.5], [1.0])


def test_bin_proportions_matches_training_binning() -> None:
    # inner edges 10, 20; right-closed search: 10 falls in bin 1; outside values in end bins
    got = bin_proportions([-5, 5, 10, 15, 25, 100], [0, 10, 20, 30])
    assert got.tolist() == pytest.approx([2 / 6, 2 / 6, 2 / 6])
    assert bin_proportions([], [0, 1, 2]).tolist() == [0, 0]


def _monitor(**kw: float) -> DriftMonitor:
    m = DriftMonitor(
        window_size=int(kw.get("window_size", 100)),
        sampling_rate=kw.get("sampling_rate", 1.0),
        threshold=0.15,
        min_samples=int(kw.get("min_samples", 20)),
        interval_s=60,
    )
    uniform = FeatureDistribution(edges=[0, 1, 2, 3, 4], proportions=[0.25] * 4)
    m.set_reference(
        {
            "employed": FeatureDistribution(edges=[0, 0.5, 1], proportions=[0.5, 0.5]),
            "bank_balance": uniform,
            "annual_salary": uniform,
            "saving_rate": uniform,
        },
        version="7",
    )
    return m


def test_monitor_waits_for_min_samples_then_reports() -> None:
    m = _monitor()
    for i in range(10):
        m.observe(i % 2, i % 4 + 0.5, i % 4 + 0.5, i % 4 + 0.5)
    r = m.compute()
    assert r.samples == 10
    assert all(v is None for v in r.psi.values())
    assert r.drift_detected is False
    for i in range(10, 40):
        m.observe(i % 2, i % 4 + 0.5, i % 4 + 0.5, i % 4 + 0.5)
    r = m.compute()
    assert r.psi == {"employed": 0, "bank_balance": 0, "annual_salary": 0, "saving_rate": 0}
    assert r.reference_model_version == "7"
    assert r.as_dict()["window_fill"] == 0.4


def test_monitor_alerts_once_per_transition() -> None:
    lines: list[str] = []
    sink = logger.add(lambda msg: lines.append(str(msg)), level="INFO", format="{message}")
    try:
        m = _monitor(window_size=40)
        for _ in range(40):
            m.observe(1, 3.5, 3.5, 3.5)  # everything in the last bin
        assert m.compute().drift_detected
        assert m.compute().drift_detected
        assert metrics.DRIFT_DETECTED._value.get() == 1
        assert sum("input drift detected" in s for s in lines) == 1
        for i in range(40):  # the window slides back to the reference
            m.observe(i % 2, i % 4 + 0.5, i % 4 + 0.5, i % 4 + 0.5)
        assert not m.compute().drift_detected
        assert metrics.DRIFT_DETECTED._value.get() == 0
        assert sum("input drift cleared" in s for s in lines) == 1
    finally:
        logger.remove(sink)


def test_sampling_rate_zero_keeps_nothing_and_window_is_bounded() -> None:
    m = _monitor(sampling_rate=0.0)
    for _ in range(100):
        m.observe(1, 1, 1, 1)
    assert m.samples == 0
    m = _monitor(window_size=10)
    for _ in range(100):
        m.observe(1, 1, 1, 1)
    assert m.samples == 10


def test_observe_matrix_samples_batch_rows() -> None:
    m = _monitor(window_size=1000)
    matrix = np.tile(np.array([[1, 2.5, 2.5, 2.5]], dtype=np.float32), (500, 1))
    kept = m.observe_matrix(matrix, sampling_rate=0.1)
    assert kept in (50, 51)
    assert m.samples == kept
    assert m.observe_matrix(matrix[:0], sampling_rate=1) == 0
