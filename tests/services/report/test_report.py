"""The report's numbers equal the monitoring kernels' on the same rows, and its page is
self-contained, escaped and holds every chart."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from loan_default.features import FEATURE_NAMES
from loan_default.model.card import SCORE_EDGES, FeatureDistribution, ModelCard
from loan_default.services import drift
from loan_default.services import report as report_service
from loan_default.services.decisions import DecisionStore
from loan_default.services.decisions.outcome_reads import FeatureColumns, JoinedOutcomes
from loan_default.services.performance import realized_performance
from loan_default.services.report import data as report_data
from loan_default.services.report import svg
from tests.conftest import make_settings
from tests.services.report.conftest import END, START, Seeded, seed

pytestmark = pytest.mark.unit

SETTINGS = make_settings(__import__("pathlib").Path("/nonexistent"))
MONTHS = tuple(f"2026-{m:02d}" for m in range(1, 7))


def _gather(s: Seeded, *, card: ModelCard | None = None) -> report_data.ReportData:
    return report_data.gather(
        joined=s.store.outcomes_joined(START, END),
        features=s.store.iter_feature_columns(START, END),
        card=card if card is not None else s.card,
        reference_version="1",
        settings=SETTINGS,
        start=START,
        end=END,
    )


def test_feature_columns_stream_the_window_in_pages(seeded: Seeded) -> None:
    mid = datetime(2026, 3, 1, tzinfo=UTC)
    pages = list(seeded.store.iter_feature_columns(START, mid, page_size=700))
    assert len(pages) > 2
    assert all(len(p) <= 700 for p in pages)
    got = FeatureColumns(
        np.concatenate([p.decided_at for p in pages]), np.concatenate([p.values for p in pages])
    )
    rows = seeded.at < np.datetime64("2026-03-01")
    np.testing.assert_array_equal(got.decided_at, seeded.at[rows])
    np.testing.assert_array_equal(got.values, seeded.features[rows])
    with pytest.raises(ValueError, match="timezone"):
        next(seeded.store.iter_feature_columns(START.replace(tzinfo=None), mid))


def test_psi_by_month_is_drift_psi_of_that_month(seeded: Seeded) -> None:
    data = _gather(seeded)
    assert data.months == MONTHS
    psi = {c.name: c.y for c in data.psi}
    assert set(psi) == set(FEATURE_NAMES)
    months = seeded.at.astype("datetime64[M]")
    for j, name in enumerate(FEATURE_NAMES):
        ref = seeded.card.training_distribution[name]
        for m, month in enumerate(MONTHS):
            rows = seeded.features[months == np.datetime64(month), j]
            want = drift.psi(ref.proportions, drift.bin_proportions(rows, ref.edges))
            assert psi[name][m] == pytest.approx(want, abs=1e-12)
    # the balance shifts from April: its PSI crosses the threshold there, not before
    balance = psi["bank_balance"]
    assert all(v is not None and v < 0.1 for v in balance[:3])
    assert all(v is not None and v > SETTINGS.drift_psi_threshold for v in balance[3:])


def test_default_rates_reliability_and_roc_equal_the_rows(seeded: Seeded) -> None:
    data = _gather(seeded)
    months = seeded.at.astype("datetime64[M]")
    for m, month in enumerate(MONTHS):
        this = months == np.datetime64(month)
        known, pending = this & (seeded.y >= 0), this & (seeded.y < 0)
        assert data.observed_rate[m] == pytest.approx(seeded.y[known].mean(), abs=1e-12)
        assert data.predicted_rate[m] == pytest.approx(seeded.p[known].mean(), abs=1e-12)
        assert data.expected_rate[m] == pytest.approx(seeded.p[pending].mean(), abs=1e-12)
    assert data.outcomes == int((seeded.y >= 0).sum())
    (curve,) = data.reliability
    table = realized_performance(y=seeded.y[seeded.y >= 0], p=seeded.p[seeded.y >= 0]).reliability
    assert curve.name == "v1"
    assert curve.x == tuple(b.mean_predicted for b in table if b.count)
    assert curve.y == tuple(b.observed_rate for b in table if b.count)
    # ROC on the decisions scored by both with an outcome, AUC equal to scikit-learn's
    both = (seeded.y >= 0) & ~np.isnan(seeded.challenger)
    production, challenger = data.roc
    auc_p = roc_auc_score(seeded.y[both], seeded.p[both])
    auc_c = roc_auc_score(seeded.y[both], seeded.challenger[both])
    assert production.name == f"production v1 (AUC {auc_p:.3f})"
    assert challenger.name == f"challenger v2 (AUC {auc_c:.3f})"
    assert production.x[0] == production.y[0] == 0.0
    assert production.x[-1] == production.y[-1] == 1.0
    assert len(production.x) <= report_data.ROC_POINTS
    # trapezoid under the thinned curve stays close to the exact AUC
    assert np.trapezoid(production.y, production.x) == pytest.approx(auc_p, abs=0.01)
    assert data.roc_note is not None
    assert f"{int(both.sum()):,}" in data.roc_note
    first, last = data.scores
    assert first.name.startswith("2026-01")
    assert last.name.startswith("2026-06")
    assert sum(first.y) == pytest.approx(1.0)
    assert sum(last.y) == pytest.approx(1.0)
    assert "no training distribution of scores" in data.score_note


def test_without_challenger_production_alone_and_said_so(tmp_path: object) -> None:
    with DecisionStore.from_url(f"sqlite:///{tmp_path}/d.db") as store:
        s = seed(store, n=1_200, challenger=False)
        data = _gather(s)
    (curve,) = data.roc
    assert curve.name.startswith("production (AUC")
    assert data.roc_note == "no challenger data: production alone"


def test_page_is_self_contained_and_holds_every_chart(seeded: Seeded) -> None:
    page = report_service.build(
        seeded.store, settings=SETTINGS, start=START, end=END, card=seeded.card, card_version="1"
    )
    lines_or_bars = {
        "chart-psi": 4,  # a line per feature
        "chart-default-rate": 3,
        "chart-reliability": 1,
        "chart-roc": 2,
        "chart-scores": 10,
    }
    assert set(lines_or_bars) == set(report_service.CHART_IDS)
    for chart_id, least in lines_or_bars.items():
        section = page.split(f'id="{chart_id}"', 1)[1].split("</figure>", 1)[0]
        drawn = len(re.findall(r'<path d="M[^"]+L', section)) + section.count("fill-opacity")
        assert drawn >= least, chart_id
    # nothing to fetch: no URL, no src/href attribute, and a CSP that forbids fetching anyway
    assert not re.search(r"https?://|\bsrc=|\bhref=", page)
    assert "default-src 'none'" in page
    assert "v1&#x27;s model card" in page


def test_every_text_is_escaped(tmp_path: object) -> None:
    evil = '<script>alert("x")</script>'
    with DecisionStore.from_url(f"sqlite:///{tmp_path}/d.db") as store:
        s = seed(store, n=600)
        hist = s.card.training_distribution["employed"]
        card = ModelCard.model_construct(
            training_distribution={evil: FeatureDistribution(edges=hist.edges,
                                                             proportions=hist.proportions)}
        )  # fmt: skip
        page = report_service.build(
            store, settings=SETTINGS, start=START, end=END, card=card, card_version=evil
        )
    assert evil not in page
    assert page.count("<script>") == 1  # the page's own check, nothing injected
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page


def test_an_empty_window_still_renders_every_chart_with_a_note() -> None:
    empty = report_data.gather(
        joined=JoinedOutcomes.concat([]),
        features=[],
        card=None,
        reference_version=None,
        settings=SETTINGS,
        start=START,
        end=END,
    )
    assert empty.psi_note == "no model card available: PSI not computed"
    assert empty.roc == ()
    assert empty.scores == ()
    page = report_service.page.render(empty, generated_at=END)
    for chart_id in report_service.CHART_IDS:
        assert f'id="{chart_id}"' in page
    assert "no decisions in this window" in page


@pytest.mark.parametrize(
    ("value", "top"), [(0.0, 1.0), (0.031, 0.05), (0.2, 0.2), (0.21, 0.25), (7.0, 10.0)]
)
def test_nice_axis_tops(value: float, top: float) -> None:
    assert svg.nice_max(value) == pytest.approx(top)


def test_scores_now_are_compared_with_the_training_scores_the_card_records(
    seeded: Seeded,
) -> None:
    trained = [0.5, 0.2, 0.1, 0.08, 0.06, 0.03, 0.02, 0.005, 0.004, 0.001]
    card = seeded.card.model_copy(
        update={
            "score_distribution": FeatureDistribution(edges=list(SCORE_EDGES), proportions=trained)
        }
    )
    data = _gather(seeded, card=card)
    reference, latest = data.scores
    assert reference.name == "training (v1)"
    assert reference.y == tuple(trained)
    assert latest.name.startswith("2026-06")
    last = seeded.at.astype("datetime64[M]") == np.datetime64("2026-06")
    now = drift.bin_proportions(seeded.p[last], list(SCORE_EDGES))
    assert latest.y == pytest.approx(tuple(now), abs=1e-12)
    assert data.score_note == f"PSI against training {drift.psi(trained, now):.3f}"


@pytest.mark.integration
def test_training_records_the_score_distribution(bundle) -> None:  # type: ignore[no-untyped-def]
    recorded = bundle.card.score_distribution
    assert recorded is not None
    assert recorded.edges == list(SCORE_EDGES)
    assert sum(recorded.proportions) == pytest.approx(1.0)
    # most applicants of the data set are far from default: the first bin holds most of them
    assert recorded.proportions[0] > 0.8
