"""`loan-default model promote challenger [--if-better]`: promote the shadow model, on evidence.

Why live outcomes first: the held-out test set is last year's applicants; a challenger is
usually trained because the population moved, and the decisions it shadow-scored since, with
their observed outcomes, are the fairest comparison there is (both models, the same applicants,
what really happened). So once at least CHALLENGER_MIN_OUTCOMES decisions decided by the current
production version carry the challenger's probability *and* an outcome, the gate compares the
two on exactly those rows; with fewer it falls back to the test-set gate training uses. Either
way the rule is training's (`gate.below_minimums` and `gate.compare_with_production`),
so "better" means the same thing for a retrained, an imported and a challenger version.

On promotion the challenger alias is removed: the new production version is no longer a
challenger, and a stale alias would shadow-score production against itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from loan_default.core.config import Settings
from loan_default.registry.client import Registry, RegistryError
from loan_default.services.decisions.outcome_reads import JoinedOutcomes
from loan_default.training.gate import GateDecision, below_minimums, compare_with_production, gate
from loan_default.training.metrics import evaluate
from loan_default.training.pipeline import split


@dataclass(frozen=True, slots=True)
class ChallengerPromotion:
    challenger_version: str
    production_version: str
    promoted: bool
    reason: str
    evidence: str
    """`live outcomes (N decisions)` or `test set (N rows; M live outcomes < minimum)`."""
    live_rows: int


def live_rows(
    joined: JoinedOutcomes, *, production_version: str, challenger_version: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(y, production p, challenger p, production threshold) of the decisions production
    `production_version` answered, `challenger_version` shadow-scored, and whose outcome is in."""
    rows = (
        (joined.model_version == production_version)
        & (joined.challenger_version == challenger_version)
        & (joined.defaulted >= 0)
        & ~np.isnan(joined.challenger_probability)
    )
    threshold = float(joined.threshold[rows][0]) if rows.any() else 0.5
    return (
        joined.defaulted[rows].astype(np.int64),
        joined.probability[rows],
        joined.challenger_probability[rows],
        threshold,
    )


def live_gate(
    settings: Settings,
    y: np.ndarray,
    p_production: np.ndarray,
    p_challenger: np.ndarray,
    *,
    production_threshold: float,
    challenger_threshold: float,
    production_version: str,
) -> GateDecision:
    """Training's gate on live outcomes: the minimums, then better than production on them."""
    if len(np.unique(y)) < 2:
        return GateDecision(
            False, "live outcomes hold one class only: no ranking to compare", None, None
        )
    metrics = evaluate(y, p_challenger, threshold=challenger_threshold)
    failures = below_minimums(settings, metrics)
    if failures:
        return GateDecision(
            False, "below minimums on live outcomes: " + "; ".join(failures), None, None
        )
    prod_metrics = evaluate(y, p_production, threshold=production_threshold)
    return compare_with_production(
        settings,
        metrics,
        prod_metrics,
        production_version,
        evidence=f", {len(y)} live outcomes",
    )


def promote_challenger(
    settings: Settings,
    *,
    if_better: bool,
    joined: JoinedOutcomes | None,
    registry: Registry | None = None,
) -> ChallengerPromotion:
    """Point the serving alias at the challenger: always, or (`if_better`) when it passes the
    gate on live outcomes (`joined`, from the decision store) or, short of them, on the test set.
    Raises RegistryError when there is no challenger to promote."""
    registry = registry or Registry(settings)
    alias = settings.challenger_alias
    challenger = registry.alias_version(alias) if alias else None
    if challenger is None:
        raise RegistryError(
            f"no challenger: alias @{alias or '(CHALLENGER_ALIAS empty)'} is not set"
        )
    production = registry.alias_version()
    if production == challenger:
        raise RegistryError(f"@{alias} and @{settings.model_alias} are both v{challenger}")
    n_live = 0
    if not if_better:
        decision = GateDecision(True, "challenger promoted (CLI, gate not applied)", None, None)
        evidence = "none (--if-better not given)"
    elif production is None:
        decision = GateDecision(True, f"no @{settings.model_alias} version yet", None, None)
        evidence = "none (nothing in production)"
    else:
        bundle = registry.load_bundle(challenger)
        y, p_prod, p_chal, prod_threshold = (
            live_rows(joined, production_version=production, challenger_version=challenger)
            if joined is not None
            else (np.empty(0, np.int64), np.empty(0), np.empty(0), 0.5)
        )
        n_live = len(y)
        if n_live >= settings.challenger_min_outcomes:
            decision = live_gate(
                settings,
                y,
                p_prod,
                p_chal,
                production_threshold=prod_threshold,
                challenger_threshold=bundle.card.threshold,
                production_version=production,
            )
            evidence = f"live outcomes ({n_live} decisions)"
        else:
            from loan_default.data.dataset import load_training_csv
            from loan_default.features import build_matrix

            data = load_training_csv(settings.data_file)
            _, X_te_raw, _, y_te = split(data)
            X_te = build_matrix(X_te_raw)
            metrics = evaluate(
                y_te, bundle.score(X_te).probability, threshold=bundle.card.threshold
            )
            decision = gate(settings, registry, metrics, X_te, y_te)
            evidence = (
                f"test set ({len(y_te)} rows; {n_live} live outcomes < "
                f"CHALLENGER_MIN_OUTCOMES {settings.challenger_min_outcomes})"
            )
    client = registry.client
    client.set_model_version_tag(settings.model_name, challenger, "gate_reason", decision.reason)
    if decision.promoted:
        registry.promote(challenger, reason=decision.reason)
        client.delete_registered_model_alias(settings.model_name, alias)
    return ChallengerPromotion(
        challenger_version=challenger,
        production_version=production or "none",
        promoted=decision.promoted,
        reason=decision.reason,
        evidence=evidence,
        live_rows=n_live,
    )


def window(
    settings: Settings, start: datetime | None, end: datetime | None
) -> tuple[datetime, datetime]:
    """The decision-time window of the live evidence: default PERFORMANCE_WINDOW_DAYS to now."""
    end = end or datetime.now(UTC)
    return start or end - timedelta(days=settings.performance_window_days), end
