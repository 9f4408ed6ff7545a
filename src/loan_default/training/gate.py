"""The promotion gate: a new version reaches serving only if it meets the configured minimums
and beats the current production version on the same rows.

One rule (`compare_with_production`) for every way a version arrives: training and `model import`
gate on the test split (`gate`, `decide_promotion`), `model promote challenger --if-better` on
live outcomes (`challenger_gate`). Production is scored by the serving kernel (`bundle.score`),
so what the gate measured is what the API returns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from loguru import logger

from loan_default.core.config import Settings
from loan_default.model.bundle import ModelLoadError
from loan_default.registry.client import Registry
from loan_default.training.metrics import evaluate


@dataclass
class GateDecision:
    promoted: bool
    reason: str
    production_version: str | None
    production_metrics: dict[str, float] | None


def below_minimums(settings: Settings, metrics: dict[str, float]) -> list[str]:
    """The configured minimums `metrics` misses (empty: it meets them all)."""
    failures = []
    if metrics["roc_auc"] < settings.gate_min_roc_auc:
        failures.append(f"ROC-AUC {metrics['roc_auc']:.4f} < {settings.gate_min_roc_auc}")
    if metrics["pr_auc"] < settings.gate_min_pr_auc:
        failures.append(f"PR-AUC {metrics['pr_auc']:.4f} < {settings.gate_min_pr_auc}")
    if metrics["brier"] > settings.gate_max_brier:
        failures.append(f"Brier {metrics['brier']:.4f} > {settings.gate_max_brier}")
    if metrics["f1"] < settings.gate_min_f1:
        failures.append(f"F1 {metrics['f1']:.4f} < {settings.gate_min_f1}")
    return failures


def compare_with_production(
    settings: Settings,
    metrics: dict[str, float],
    prod_metrics: dict[str, float],
    prod_version: str,
    *,
    evidence: str = "",
) -> GateDecision:
    """Promote only when neither ROC-AUC nor Brier is worse than production's on the same rows
    and one of them is better by more than GATE_MIN_IMPROVEMENT. Pure: the test-set gate of
    training and import and the live-outcome gate of `model promote challenger --if-better`
    decide by this one rule."""
    d_auc = metrics["roc_auc"] - prod_metrics["roc_auc"]
    d_brier = prod_metrics["brier"] - metrics["brier"]
    cmp = (
        f"ROC-AUC {metrics['roc_auc']:.4f} vs {prod_metrics['roc_auc']:.4f}, "
        f"Brier {metrics['brier']:.4f} vs {prod_metrics['brier']:.4f} "
        f"(production v{prod_version}{evidence})"
    )
    tol = 1e-9
    if d_auc < -tol or d_brier < -tol:
        return GateDecision(False, f"worse than production: {cmp}", prod_version, prod_metrics)
    if max(d_auc, d_brier) <= settings.gate_min_improvement + tol:
        return GateDecision(False, f"not better than production: {cmp}", prod_version, prod_metrics)
    return GateDecision(True, f"better than production: {cmp}", prod_version, prod_metrics)


def gate(
    settings: Settings,
    registry: Registry,
    metrics: dict[str, float],
    X_test: npt.NDArray[np.float32],
    y_test: npt.NDArray[np.int64],
) -> GateDecision:
    """Configured minimums, then: beat the current production version on the same test set."""
    failures = below_minimums(settings, metrics)
    prod_version = registry.alias_version()
    if failures:
        return GateDecision(False, "below minimums: " + "; ".join(failures), prod_version, None)
    if prod_version is None:
        return GateDecision(
            True, f"passes minimums; no {settings.model_alias!r} version yet", None, None
        )
    try:
        prod = registry.load_bundle(prod_version)
    except ModelLoadError as exc:
        logger.warning(
            "current production v{} cannot be loaded ({}); gating on minimums only",
            prod_version,
            exc,
        )
        return GateDecision(
            True, f"passes minimums; production v{prod_version} unloadable", prod_version, None
        )
    prod_metrics = evaluate(y_test, prod.score(X_test).probability, threshold=prod.card.threshold)
    return compare_with_production(settings, metrics, prod_metrics, prod_version)


def decide_promotion(
    settings: Settings,
    registry: Registry,
    version: str,
    metrics: dict[str, float],
    X_test: npt.NDArray[np.float32],
    y_test: npt.NDArray[np.int64],
    *,
    forced_reason: str | None = None,
) -> GateDecision:
    """Gate a newly registered version (or promote it regardless, with `forced_reason`), record
    the reason on the version, and move the alias when it passes: training and `model import`
    decide the same way."""
    if forced_reason is not None:
        decision = GateDecision(True, forced_reason, registry.alias_version(), None)
    else:
        decision = gate(settings, registry, metrics, X_test, y_test)
    client = registry.client
    client.set_model_version_tag(settings.model_name, version, "gate_reason", decision.reason)
    if decision.promoted:
        registry.promote(version, reason=decision.reason)
    else:
        client.set_model_version_tag(settings.model_name, version, "promoted", "false")
    return decision
