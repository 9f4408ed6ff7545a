"""The challenger's logic: deterministic sampling, shadow scoring of a writer group and of a
batch chunk (with a stand-in model), failures that cost nothing, and the comparison numbers."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from prometheus_client import REGISTRY

from loan_default.features import build_matrix
from loan_default.services import challenger_report
from loan_default.services.challenger import Challenger, sample_keys, sampled
from loan_default.services.decisions import DecisionRecord, DecisionStore
from loan_default.services.decisions.ids import batch_decision_ids, new_decision_id
from loan_default.services.decisions.writer import GroupCommitWriter
from loan_default.services.model import ModelService
from tests.conftest import make_settings
from tests.services.decisions.conftest import (  # noqa: F401 - fixtures
    make_batch,
    make_record,
    now_ms,
    pg_database,
    store_url,
)

pytestmark = pytest.mark.unit


class FakeBundle:
    """What shadow scoring uses of a bundle: `version` and the `score` kernel (and the name and
    alias the swap log names)."""

    name, alias = "loan-default", "challenger"

    def __init__(self, version: str, *, fail: bool = False) -> None:
        self.version = version
        self.fail = fail
        self.calls: list[int] = []

    def score(self, matrix: np.ndarray) -> Any:
        if self.fail:
            raise RuntimeError("onnx session broken")
        self.calls.append(matrix.shape[0])
        return SimpleNamespace(probability=self.expected(matrix))

    @staticmethod
    def expected(matrix: np.ndarray) -> np.ndarray:
        m = matrix.astype(np.float64)
        return 1 / (1 + np.exp(-(m[:, 3] * 3 - m[:, 0])))


def _counter(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _challenger(
    tmp_path: Path, *, version: str = "2", production: str = "1", rate: float = 1.0, **kw: Any
) -> tuple[Challenger, FakeBundle]:
    settings = make_settings(tmp_path)
    fake = FakeBundle(version, **kw)
    shadow = Challenger(
        service=ModelService(settings=settings, bundle=fake),  # type: ignore[arg-type]
        production=ModelService(settings=settings, bundle=FakeBundle(production)),  # type: ignore[arg-type]
        rate=rate,
    )
    return shadow, fake


def _raw_matrix(records: list[DecisionRecord]) -> np.ndarray:
    return build_matrix([(r.employed, r.bank_balance, r.annual_salary) for r in records])


# --- sampling --------------------------------------------------------------------------------
def test_sampling_is_a_function_of_the_id_and_matches_the_rate() -> None:
    ids = [new_decision_id() for _ in range(20_000)]
    keys = sample_keys(ids)
    assert ((keys >= 0) & (keys < 1)).all()
    np.testing.assert_array_equal(keys, sample_keys(list(ids)))  # deterministic
    for rate in (0.1, 0.5, 0.9):
        assert abs(sampled(ids, rate).mean() - rate) < 0.015
    assert sampled(ids, 1.0).all()
    assert not sampled(ids, 0.0).any()
    # the rule, spelled out: low 64 bits of the UUID times 2^64/phi, top 32 bits, over 2^32
    low = int(ids[0].replace("-", "")[16:], 16)
    assert keys[0] == ((low * 0x9E3779B97F4A7C15) % 2**64 >> 32) / 2**32


def test_batch_rows_are_sampled_evenly_and_differently_per_job() -> None:
    created = now_ms()
    a = sampled(batch_decision_ids("job-a", created, 0, 10_000), 0.25)
    b = sampled(batch_decision_ids("job-b", created, 0, 10_000), 0.25)
    assert abs(a.mean() - 0.25) < 0.01
    assert abs(b.mean() - 0.25) < 0.01
    assert (a != b).any()  # row numbers alone do not decide


# --- a writer group --------------------------------------------------------------------------
def test_score_records_fills_the_sampled_records_with_one_model_call(tmp_path: Path) -> None:
    shadow, fake = _challenger(tmp_path, rate=0.5)
    records = [
        make_record(i, challenger_version=None, challenger_probability=None) for i in range(200)
    ]
    before = _counter("loan_challenger_scored_total", {"source": "predict"})
    out = shadow.score_records(records)
    chosen = sampled([r.decision_id for r in records], 0.5)
    assert fake.calls == [int(chosen.sum())]  # vectorised: one call for the group
    expected = FakeBundle.expected(_raw_matrix(records))
    for i, (old, new) in enumerate(zip(records, out, strict=True)):
        if chosen[i]:
            assert new.challenger_version == "2"
            assert new.challenger_probability == pytest.approx(expected[i], abs=1e-12)
            assert new.probability == old.probability
            assert new.prediction == old.prediction
        else:
            assert new is old
            assert new.challenger_probability is None
    after = _counter("loan_challenger_scored_total", {"source": "predict"})
    assert after - before == chosen.sum()


def test_no_challenger_when_it_is_production_or_it_fails(tmp_path: Path) -> None:
    records = [
        make_record(i, challenger_version=None, challenger_probability=None) for i in range(5)
    ]
    same, fake = _challenger(tmp_path, version="1", production="1")
    assert same.bundle is None
    assert same.score_records(records) is records
    assert not fake.calls
    broken, _ = _challenger(tmp_path, fail=True)
    before = _counter("loan_challenger_errors_total", {"stage": "score"})
    assert broken.score_records(records) is records
    assert _counter("loan_challenger_errors_total", {"stage": "score"}) == before + 1


@pytest.mark.parametrize("fail", [False, True])
def test_the_writer_thread_shadow_scores_each_group_before_writing(
    tmp_path: Path, fail: bool
) -> None:
    """A group is written with the challenger's fields filled in, or (challenger failing)
    without them, and every waiter is woken either way."""
    shadow, _ = _challenger(tmp_path, fail=fail)
    written: list[DecisionRecord] = []

    def write(records: list[DecisionRecord]) -> None:
        time.sleep(0.005)  # let groups form
        written.extend(records)

    writer = GroupCommitWriter(
        write, flush_interval_s=0.0, max_batch=50, prepare=shadow.score_records
    )
    records = [
        make_record(i, challenger_version=None, challenger_probability=None) for i in range(120)
    ]
    waiters: list[Future[None]] = []
    for r in records:
        fut: Future[None] = Future()
        writer.submit(r, fut)
        waiters.append(fut)
    for fut in waiters:
        fut.result(5)
    writer.close()
    assert [r.decision_id for r in written] == [r.decision_id for r in records]
    expected = FakeBundle.expected(_raw_matrix(records))
    if fail:
        assert all(r.challenger_probability is None for r in written)
    else:
        assert writer.commits < len(records)  # grouped
        got = np.array([r.challenger_probability for r in written])
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
        assert {r.challenger_version for r in written} == {"2"}


def test_a_raising_hook_never_costs_a_record() -> None:
    written: list[DecisionRecord] = []

    def boom(records: list[DecisionRecord]) -> list[DecisionRecord]:
        raise RuntimeError("bug in the hook")

    writer = GroupCommitWriter(written.extend, flush_interval_s=0.0, max_batch=10, prepare=boom)
    fut: Future[None] = Future()
    writer.submit(make_record(1), fut)
    fut.result(5)
    writer.close()
    assert len(written) == 1


# --- a batch chunk ---------------------------------------------------------------------------
@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[DecisionStore]:
    store = DecisionStore.from_url(f"sqlite:///{tmp_path / 'd.db'}", record_timeout_s=5)
    yield store
    store.close()


def test_score_batch_records_the_challenger_on_sampled_rows(
    tmp_path: Path,
    store_url: str,  # noqa: F811 - the fixture imported above
) -> None:
    """On both stores (SQLite's executemany, PostgreSQL's binary COPY)."""
    with DecisionStore.from_url(store_url, record_timeout_s=5) as store:
        _score_batch_records(tmp_path, store)


def _score_batch_records(tmp_path: Path, store: DecisionStore) -> None:
    shadow, fake = _challenger(tmp_path, rate=0.5)
    batch = make_batch("job-1", now_ms(), 0, 300)
    scored = shadow.score_batch(batch)
    mask = sampled(batch.decision_ids(), 0.5)
    assert fake.calls == [int(mask.sum())]
    raw = np.column_stack((batch.employed, batch.bank_balance, batch.annual_salary))
    expected = FakeBundle.expected(build_matrix(raw))
    assert scored.challenger_version == "2"
    np.testing.assert_allclose(scored.challenger_probability[mask], expected[mask], atol=1e-12)
    assert np.isnan(scored.challenger_probability[~mask]).all()
    # stored: NULL where not sampled, the probability where sampled
    assert store.record_batch(scored) == 300
    for rec, want, m in zip(scored.records(), expected, mask, strict=True):
        got = store.get(rec.decision_id)
        assert got == rec
        if m:
            assert got.challenger_probability == pytest.approx(want, abs=1e-12)
            assert got.challenger_version == "2"
        else:
            assert got.challenger_probability is None
            assert got.challenger_version is None


# --- the comparison --------------------------------------------------------------------------
def test_report_equals_numpy_on_the_stored_rows(
    tmp_path: Path, sqlite_store: DecisionStore
) -> None:
    rng = np.random.default_rng(7)
    start = now_ms() - timedelta(seconds=10)
    n = 500
    prod = rng.uniform(0, 1, n)
    chall = np.clip(prod + rng.normal(0, 0.2, n), 0, 1).round(2)  # ties, for Spearman
    records = [
        make_record(
            i,
            at=start + timedelta(milliseconds=i),
            model_version="1",
            probability=float(prod[i]),
            prediction=int(prod[i] >= 0.4),
            challenger_version="2" if i % 2 else "3",
            challenger_probability=float(chall[i]) if i % 10 else None,
        )
        for i in range(n)
    ]
    sqlite_store.record_many(records)
    rows = sqlite_store.challenger_rows(start, start + timedelta(seconds=1))
    thresholds = {"2": 0.5, "3": 0.3}
    data = challenger_report.report(
        rows, start=start, end=start + timedelta(seconds=1), threshold_of=thresholds.get
    )
    keep = np.arange(n) % 10 != 0
    p, c = prod[keep], chall[keep]
    cut = np.where(np.arange(n)[keep] % 2 == 1, 0.5, 0.3)
    assert data["count"] == keep.sum()
    assert data["production_versions"] == ["1"]
    assert data["challenger_versions"] == ["2", "3"]
    assert data["agreement_rate"] == pytest.approx(((c >= cut) == (p >= 0.4)).mean(), abs=1e-12)
    assert data["pearson"] == pytest.approx(np.corrcoef(p, c)[0, 1], abs=1e-12)
    from scipy.stats import spearmanr  # type: ignore[import-untyped]  # test-only cross-check

    assert data["spearman"] == pytest.approx(spearmanr(p, c).statistic, abs=1e-12)
    assert data["realized"] is None


def test_report_of_nothing_is_empty_not_an_error() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    data = challenger_report.report(
        [], start=at, end=at + timedelta(days=1), threshold_of=lambda v: None
    )
    assert data["count"] == 0
    assert data["agreement_rate"] is None
    assert data["pearson"] is None


# --- following the alias ---------------------------------------------------------------------
def test_an_optional_alias_is_followed_refused_and_dropped(tmp_path: Path) -> None:
    """Moving the alias swaps the challenger; a version that fails to load is reported (the
    metric's hook) and the loaded one stays; removing the alias unloads it."""
    alias: dict[str, str | None] = {"to": "2"}
    errors: list[str] = []

    def load(version: str) -> Any:
        if version == "3":
            raise RuntimeError("corrupt artifact")
        return FakeBundle(version)

    service = ModelService(
        settings=make_settings(tmp_path),
        resolve_alias=lambda: alias["to"],
        load_version=load,
        optional=True,
        on_error=errors.append,
    )
    assert service.check_for_update()
    assert service.bundle is not None
    assert service.bundle.version == "2"
    alias["to"] = "3"
    assert not service.check_for_update()
    assert service.bundle.version == "2"
    assert errors == ["model_version_refused"]
    alias["to"] = None
    service.check_for_update()
    assert service.bundle is None


def test_load_failures_of_the_challenger_count_in_the_metric(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, challenger_alias="challenger")
    production = ModelService(settings=settings, bundle=FakeBundle("1"))  # type: ignore[arg-type]
    shadow = Challenger.from_registry(settings, production=production)
    assert shadow is not None
    assert (
        Challenger.from_registry(
            make_settings(tmp_path, challenger_alias=""), production=production
        )
        is None
    )
    shadow.service._resolve_alias = lambda: "5"  # the registry's answer
    shadow.service._load_version = lambda v: (_ for _ in ()).throw(RuntimeError("no artifact"))
    before = _counter("loan_challenger_errors_total", {"stage": "load"})
    shadow.service.check_for_update()
    assert _counter("loan_challenger_errors_total", {"stage": "load"}) == before + 1
    assert shadow.bundle is None
    assert production.bundle is not None


@pytest.mark.unit
def test_realized_both_models_on_the_same_observed_decisions() -> None:
    from sklearn.metrics import brier_score_loss, roc_auc_score

    from loan_default.services.challenger_report import realized_both
    from loan_default.services.decisions.outcome_reads import JoinedOutcomes

    rng = np.random.default_rng(5)
    n = 3_000
    prod, chal = rng.random(n), rng.random(n)
    y = (rng.random(n) < chal).astype(np.int8)
    y[:500] = -1  # no outcome yet
    chal[500:800] = np.nan  # not shadow-scored
    joined = JoinedOutcomes(
        model_version=np.full(n, "1"),
        decided_at=np.full(n, np.datetime64("2026-03-01", "ms")),
        probability=prod,
        threshold=np.full(n, 0.5),
        prediction=(prod >= 0.5).astype(np.int8),
        defaulted=y,
        challenger_probability=chal,
        challenger_version=np.where(np.isnan(chal), "", "2"),
    )
    got = realized_both(joined)
    assert got is not None
    rows = slice(800, n)
    assert got["count"] == n - 800
    assert got["challenger_versions"] == ["2"]
    assert got["production"]["roc_auc"] == pytest.approx(
        roc_auc_score(y[rows], prod[rows]), abs=1e-9
    )
    assert got["challenger"]["roc_auc"] == pytest.approx(
        roc_auc_score(y[rows], chal[rows]), abs=1e-9
    )
    assert got["challenger"]["brier"] == pytest.approx(
        brier_score_loss(y[rows], chal[rows]), abs=1e-9
    )
    no_outcomes = dataclasses.replace(joined, defaulted=np.full(n, -1, np.int8))
    assert realized_both(no_outcomes) is None
