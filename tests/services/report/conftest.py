"""A decision store seeded with six months of decisions, outcomes and challenger scores, and a
card whose training histograms are those of the first month's inputs (no model is trained)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from loan_default.model.card import ModelCard
from loan_default.services.decisions import DecisionStore
from loan_default.services.decisions.outcomes import Outcome
from loan_default.training.pipeline import feature_distribution
from tests.services.decisions.conftest import make_record

START = datetime(2026, 1, 1, tzinfo=UTC)
END = datetime(2026, 7, 1, tzinfo=UTC)
N = 6_000
SHIFT_FROM = 3_000
"""From this decision on (April) bank balances are 60 % higher: the PSI of the balance rises."""


@dataclass(frozen=True)
class Seeded:
    store: DecisionStore
    card: ModelCard
    at: npt.NDArray[np.datetime64]
    features: npt.NDArray[np.float64]
    p: npt.NDArray[np.float64]
    challenger: npt.NDArray[np.float64]
    """NaN where the challenger did not score the decision."""
    y: npt.NDArray[np.int8]
    """-1 where no outcome was recorded."""


def seed(store: DecisionStore, *, n: int = N, challenger: bool = True) -> Seeded:
    rng = np.random.default_rng(14)
    employed = (rng.random(n) < 0.7).astype(np.float64)
    balance = np.clip(rng.normal(10_000, 3_000, n), 0, None)
    balance[SHIFT_FROM:] *= 1.6
    salary = np.clip(rng.normal(400_000, 120_000, n), 20_000, None)
    features = np.column_stack([employed, balance, salary, balance / salary])
    p = np.clip(rng.beta(0.6, 8.0, n), 1e-4, 0.999)
    y = (rng.random(n) < p).astype(np.int8)
    scored = challenger & (rng.random(n) < 0.5)
    ch = np.where(scored, np.clip(0.7 * p + 0.3 * y * rng.random(n), 0, 1), np.nan)
    step = (END - START) / n
    records = [
        make_record(
            i,
            at=START + step * i,
            employed=float(employed[i]),
            bank_balance=float(balance[i]),
            annual_salary=float(salary[i]),
            saving_rate=float(features[i, 3]),
            model_version="1",
            probability=float(p[i]),
            threshold=0.3,
            prediction=int(p[i] >= 0.3),
            challenger_version="2" if scored[i] else None,
            challenger_probability=float(ch[i]) if scored[i] else None,
        )
        for i in range(n)
    ]
    assert store.record_many(records) == n
    known = rng.random(n) < 0.8
    store.record_outcomes(
        [
            Outcome(
                defaulted=bool(y[i]),
                observed_at=START + timedelta(days=200),
                decision_id=records[i].decision_id,
            )
            for i in range(n)
            if known[i]
        ],
        key_id="test",
    )
    card = ModelCard.model_construct(
        training_distribution=feature_distribution(features[: n // 6].astype(np.float32))
    )
    at = np.array([r.decided_at.replace(tzinfo=None) for r in records], dtype="datetime64[ms]")
    return Seeded(store, card, at, features, p, ch, np.where(known, y, -1).astype(np.int8))


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    db: Path = tmp_path_factory.mktemp("report") / "decisions.db"
    store = DecisionStore.from_url(f"sqlite:///{db}")
    try:
        yield seed(store)
    finally:
        store.close()
