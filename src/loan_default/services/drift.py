"""Input drift: PSI of each model feature, recent traffic vs the training distribution.

The reference is the histogram stored in the model card (`training_distribution`: bin edges and
proportions per feature), not the first requests a server happened to see. Requests are sampled
into a sliding window at `DRIFT_SAMPLING_RATE` (one `random()` and one deque append on the request
path); a background thread recomputes the PSI every `DRIFT_INTERVAL_S`, sets the gauges, and logs
one warning when drift starts and one info line when it ends. Batch rows are sampled by the API
when it accepts a job (`DriftMonitor.observe_matrix`), so the PSI covers both kinds of traffic.

PSI = sum_i (a_i - e_i) * ln(a_i / e_i) over the training bins, where a value outside the
training range falls in the first or last bin (as at training time) and empty bins are floored
at `PSI_EPSILON` so the log stays finite. Rules of thumb: < 0.1 stable, 0.1-0.25 moderate,
> 0.25 significant; the alert threshold defaults to 0.15.
"""

from __future__ import annotations

import math
import random
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from loguru import logger

from loan_default.core.clock import utc_iso
from loan_default.core.config import Settings
from loan_default.features import FEATURE_NAMES
from loan_default.model.card import FeatureDistribution
from loan_default.services import metrics

PSI_EPSILON: Final = 1e-4


def bin_proportions(values: npt.ArrayLike, edges: Sequence[float]) -> npt.NDArray[np.float64]:
    """Share of `values` in each training bin (same binning as the training histogram)."""
    arr = np.asarray(values, dtype=np.float64)
    k = len(edges) - 1
    if arr.size == 0:
        return np.zeros(k)
    idx = np.searchsorted(np.asarray(edges[1:-1], dtype=np.float64), arr, side="right")
    counts = np.bincount(idx, minlength=k)
    return np.asarray(counts / arr.size, dtype=np.float64)


def psi(expected: npt.ArrayLike, actual: npt.ArrayLike, *, epsilon: float = PSI_EPSILON) -> float:
    """Population Stability Index of two proportion vectors over the same bins."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), epsilon)
    a = np.maximum(np.asarray(actual, dtype=np.float64), epsilon)
    if e.shape != a.shape:
        raise ValueError(f"bins differ: {e.shape} vs {a.shape}")
    return float(np.sum((a - e) * np.log(a / e)))


@dataclass(frozen=True)
class DriftReport:
    psi: dict[str, float | None]
    samples: int
    window_size: int
    min_samples: int
    threshold: float
    drift_detected: bool
    drifted_features: list[str]
    sampling_rate: float
    reference_model_version: str | None
    computed_at: str = field(default_factory=utc_iso)

    def as_dict(self) -> dict[str, Any]:
        return {
            "psi": self.psi,
            "drift_detected": self.drift_detected,
            "drifted_features": self.drifted_features,
            "threshold": self.threshold,
            "samples": self.samples,
            "window_size": self.window_size,
            "window_fill": round(self.samples / self.window_size, 4),
            "min_samples": self.min_samples,
            "sampling_rate": self.sampling_rate,
            "reference_model_version": self.reference_model_version,
            "computed_at": self.computed_at,
        }


class DriftMonitor:
    """Sliding window of sampled feature rows and the PSI against a model card's histograms."""

    def __init__(
        self,
        *,
        window_size: int,
        sampling_rate: float,
        threshold: float,
        min_samples: int,
        interval_s: float,
        batch_sampling_rate: float = 0.05,
    ) -> None:
        self.window_size = window_size
        self.sampling_rate = sampling_rate
        self.batch_sampling_rate = batch_sampling_rate
        self.threshold = threshold
        self.min_samples = min(min_samples, window_size)
        self.interval_s = interval_s
        self._window: deque[tuple[float, float, float, float]] = deque(maxlen=window_size)
        self._reference: dict[str, FeatureDistribution] = {}
        self._reference_version: str | None = None
        self._random = random.Random()  # nosec B311 - sampling for drift monitoring, not security
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._drifting = False

    @classmethod
    def from_settings(cls, settings: Settings) -> DriftMonitor:
        return cls(
            window_size=settings.drift_window_size,
            sampling_rate=settings.drift_sampling_rate,
            threshold=settings.drift_psi_threshold,
            min_samples=settings.drift_min_samples,
            interval_s=settings.drift_interval_s,
            batch_sampling_rate=settings.drift_batch_sampling_rate,
        )

    # --- reference -----------------------------------------------------------------------
    def set_reference(
        self, distribution: Mapping[str, FeatureDistribution], *, version: str | None = None
    ) -> None:
        """Compare against this training histogram from now on (called on every model swap)."""
        self._reference = {f: distribution[f] for f in FEATURE_NAMES if f in distribution}
        self._reference_version = version

    # --- feeding -------------------------------------------------------------------------
    def observe(
        self, employed: float, bank_balance: float, annual_salary: float, saving_rate: float
    ) -> None:
        """Request path: keep the row with probability `sampling_rate` (a deque append)."""
        if self.sampling_rate >= 1.0 or self._random.random() < self.sampling_rate:
            self._window.append((employed, bank_balance, annual_salary, saving_rate))

    def observe_matrix(
        self, matrix: npt.NDArray[np.floating], *, sampling_rate: float | None = None
    ) -> int:
        """Feed a model matrix (n, 4) in FEATURE_NAMES order; returns how many rows were kept."""
        rate = self.batch_sampling_rate if sampling_rate is None else sampling_rate
        n = int(matrix.shape[0])
        if n == 0 or rate <= 0:
            return 0
        take = min(n, self.window_size, max(1, math.floor(n * rate + self._random.random())))
        rows = np.asarray(matrix, dtype=np.float64)[
            np.sort(np.random.default_rng().choice(n, size=take, replace=False))
        ]
        self._window.extend(
            (float(r[0]), float(r[1]), float(r[2]), float(r[3])) for r in rows.tolist()
        )
        return take

    @property
    def samples(self) -> int:
        return len(self._window)

    def clear(self) -> None:
        self._window.clear()

    # --- computing -----------------------------------------------------------------------
    def compute(self) -> DriftReport:
        """PSI per feature over the current window; updates gauges and logs transitions."""
        with self._lock:
            rows = list(self._window)
            n = len(rows)
            values: dict[str, float | None] = dict.fromkeys(FEATURE_NAMES)
            if n >= self.min_samples and self._reference:
                data = np.asarray(rows, dtype=np.float64)
                for j, name in enumerate(FEATURE_NAMES):
                    ref = self._reference.get(name)
                    if ref is not None:
                        actual = bin_proportions(data[:, j], ref.edges)
                        values[name] = round(psi(ref.proportions, actual), 6)
            drifted = [f for f, v in values.items() if v is not None and v > self.threshold]
            report = DriftReport(
                psi=values,
                samples=n,
                window_size=self.window_size,
                min_samples=self.min_samples,
                threshold=self.threshold,
                drift_detected=bool(drifted),
                drifted_features=drifted,
                sampling_rate=self.sampling_rate,
                reference_model_version=self._reference_version,
            )
            self._publish(report)
            return report

    def _publish(self, report: DriftReport) -> None:
        for name, value in report.psi.items():
            if value is not None:
                metrics.DRIFT_PSI.labels(name).set(value)
        metrics.DRIFT_DETECTED.set(1 if report.drift_detected else 0)
        metrics.DRIFT_SAMPLES.set(report.samples)
        if report.drift_detected and not self._drifting:
            logger.warning(
                "input drift detected: PSI above {} for {} ({} samples)",
                report.threshold,
                ", ".join(f"{f}={report.psi[f]}" for f in report.drifted_features),
                report.samples,
            )
        elif self._drifting and not report.drift_detected:
            logger.info("input drift cleared ({} samples)", report.samples)
        self._drifting = report.drift_detected

    # --- background ----------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()

        def run() -> None:
            while not self._stop.wait(self.interval_s):
                try:
                    self.compute()
                except Exception:
                    logger.exception("drift computation failed")

        self._thread = threading.Thread(target=run, name="drift-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
