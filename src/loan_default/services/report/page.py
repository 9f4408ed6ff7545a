"""The report as one self-contained HTML page: inline CSS, inline SVG, one small inline script.

The script only checks the page: it records script errors (`window.onerror`) and sets
`data-report-check` on `<html>` to "ok" once every chart holds drawn SVG, or to the problem. The
browser test reads that attribute from chromium's `--dump-dom`; a person never needs it. The
Content-Security-Policy forbids every fetch, so a page that renders here renders offline.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Final

from loan_default.core.clock import utc_iso
from loan_default.services.report import svg
from loan_default.services.report.data import ReportData
from loan_default.services.report.svg import esc

#: The chart elements, in page order (the browser test looks for each).
CHART_IDS: Final = (
    "chart-psi",
    "chart-default-rate",
    "chart-reliability",
    "chart-roc",
    "chart-scores",
)
#: Drawn SVG elements a chart must hold to count as drawn (axes alone have more than this).
MIN_SVG_ELEMENTS: Final = 12

_CSP: Final = (
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"
)
_STYLE: Final = """
body{font:14px/1.45 system-ui,sans-serif;color:#222;margin:24px auto;max-width:760px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 4px}
p.meta,figcaption{color:#555;font-size:13px}figure{margin:8px 0}
svg text{font-family:system-ui,sans-serif}.tick{font-size:11px;fill:#444}
.label{font-size:12px;fill:#222}.legend{font-size:12px;fill:#222}
.note{font-size:12px;fill:#8a4b00;font-style:italic}
"""
_CHECK: Final = """
(function(){var errors=[];window.onerror=function(m){errors.push(String(m));};
document.addEventListener('DOMContentLoaded',function(){var bad=[];
IDS.forEach(function(id){var el=document.getElementById(id);
if(!el||el.querySelectorAll('svg *').length<MIN){bad.push(id);}});
var problems=bad.concat(errors);
document.documentElement.setAttribute('data-report-check',
problems.length?'failed: '+problems.join(' '):'ok');});})();
"""


def _figure(chart_id: str, heading: str, chart: str, caption: str) -> str:
    return (
        f'<section><h2>{esc(heading)}</h2><figure id="{chart_id}">{chart}'
        f"<figcaption>{esc(caption)}</figcaption></figure></section>"
    )


def _month(at: datetime) -> str:
    return utc_iso(at.timestamp())


def _series(names: Sequence[str], values: Sequence[Sequence[float | None]]) -> list[svg.Series]:
    return list(zip(names, values, strict=True))


def render(data: ReportData, *, generated_at: datetime) -> str:
    """The whole page. Every text that comes from data passes through `esc`."""
    months = data.months
    reference = (
        f"v{data.reference_version}'s model card" if data.reference_version else "the model card"
    )
    charts = [
        _figure(
            "chart-psi",
            "Input drift: PSI per feature by month",
            svg.line_chart(
                title="PSI per feature by month",
                categories=months,
                series=[(c.name, c.y) for c in data.psi],
                y_label="PSI vs training",
                hline=(f"alert threshold {data.psi_threshold:g}", data.psi_threshold),
                note=data.psi_note,
            ),
            f"Recorded inputs of each month's decisions vs the training histograms of "
            f"{reference}. Below 0.1 stable, 0.1-0.25 moderate, above 0.25 significant.",
        ),
        _figure(
            "chart-default-rate",
            "Realized vs expected default rate by monthly cohort",
            svg.line_chart(
                title="Realized vs expected default rate",
                categories=months,
                series=_series(
                    [
                        "observed (decisions with an outcome)",
                        "predicted, same decisions",
                        "estimated, awaiting outcome",
                    ],
                    [data.observed_rate, data.predicted_rate, data.expected_rate],
                ),
                y_label="default rate",
                y_percent=True,
            ),
            "Observed default rate of each month's decisions whose outcome is known, the mean "
            "probability the model gave those same decisions, and the rate it expects of the "
            "decisions still waiting for an outcome (confidence-based estimation).",
        ),
        _figure(
            "chart-reliability",
            "Reliability diagram",
            svg.xy_chart(
                title="Reliability per model version",
                curves=[(c.name, c.x, c.y) for c in data.reliability],
                x_label="mean predicted probability (10 equal-width bins)",
                y_label="observed default rate",
                diagonal="perfect calibration",
                note=None if data.reliability else "no outcomes in this window",
            ),
            "Each point is one bin of predicted probability of the decisions with an outcome; "
            "points below the diagonal: the model over-predicts risk, above: it under-predicts.",
        ),
        _figure(
            "chart-roc",
            "ROC: production vs challenger",
            svg.xy_chart(
                title="ROC curve",
                curves=[(c.name, c.x, c.y) for c in data.roc],
                x_label="false positive rate",
                y_label="true positive rate",
                diagonal="chance",
                note=data.roc_note,
            ),
            "Both models on the same decisions: those the challenger shadow-scored whose "
            "outcome is known.",
        ),
        _figure(
            "chart-scores",
            "Score distribution: now vs reference",
            svg.bar_chart(
                title="Score distribution",
                edges=data.score_edges,
                series=[(c.name, c.y) for c in data.scores],
                x_label="predicted probability of default",
                y_label="share of decisions",
                note=None if data.scores else "no decisions in this window",
            ),
            data.score_note,
        ),
    ]
    check = _CHECK.replace("IDS", str(list(CHART_IDS))).replace("MIN", str(MIN_SVG_ELEMENTS))
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>loan-default monitoring report</title>"
        f"<style>{_STYLE}</style><script>{check}</script></head><body>"
        "<h1>loan-default monitoring report</h1>"
        f'<p class="meta">Decisions from {esc(_month(data.start))} to {esc(_month(data.end))} '
        f"(UTC, end exclusive): {data.decisions:,} decisions, {data.outcomes:,} with an "
        f"outcome. Generated {esc(_month(generated_at))}.</p>"
        f"{''.join(charts)}</body></html>\n"
    )
