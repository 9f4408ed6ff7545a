"""The monitoring report people look at: one self-contained HTML page of five charts.

`data` gathers the numbers from the decision store (PSI by month, realized vs expected default
rate, reliability, ROC of production vs challenger, score distribution); `svg` draws inline SVG;
`page` lays out the HTML. `build` ties them together for the CLI (`loan-default report`) and the
route (`GET /api/v1/monitoring/report`), which differ only in where the model card comes from.
"""

from __future__ import annotations

from datetime import UTC, datetime

from loan_default.core.config import Settings
from loan_default.model.card import ModelCard
from loan_default.services.decisions.store import DecisionStore
from loan_default.services.report import data as report_data
from loan_default.services.report import page
from loan_default.services.report.page import CHART_IDS

__all__ = ["CHART_IDS", "build"]


def build(
    store: DecisionStore,
    *,
    settings: Settings,
    start: datetime,
    end: datetime,
    card: ModelCard | None,
    card_version: str | None = None,
    now: datetime | None = None,
) -> str:
    """The report page of the decisions of [start, end); `card` (of `card_version`) gives the
    training histograms the PSI compares with (None: the PSI chart says it has none)."""
    gathered = report_data.gather(
        joined=store.outcomes_joined(start, end),
        features=store.iter_feature_columns(start, end),
        card=card,
        reference_version=card_version,
        settings=settings,
        start=start,
        end=end,
    )
    return page.render(gathered, generated_at=now or datetime.now(UTC))
