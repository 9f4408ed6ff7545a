"""`model promote challenger --if-better`: the gate on live outcomes, its fallback to the test
set, and the registry's aliases afterwards, against a real MLflow store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from loan_default.cli import main as cli_main
from loan_default.registry.client import Registry, RegistryError
from loan_default.services.decisions.outcome_reads import JoinedOutcomes
from loan_default.training.challenger_gate import live_gate, promote_challenger
from tests.conftest import make_settings

N = 4_000


def _population(seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(y, production p, challenger p): the challenger knows the risk, production half of it."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=N)
    risk = 1 / (1 + np.exp(-(3.0 * z - 4.0)))
    y = (rng.random(N) < risk).astype(np.int64)
    noisy = 1 / (1 + np.exp(-(3.0 * (z + rng.normal(scale=1.5, size=N)) / 1.8 - 4.0)))
    return y, noisy, risk


def _joined(
    y: np.ndarray, production: np.ndarray, challenger: np.ndarray, versions: tuple[str, str]
) -> JoinedOutcomes:
    n = len(y)
    return JoinedOutcomes(
        model_version=np.full(n, versions[0]),
        decided_at=np.full(n, np.datetime64("2026-06-01T00:00:00", "ms")),
        probability=production,
        threshold=np.full(n, 0.3),
        prediction=(production >= 0.3).astype(np.int8),
        defaulted=y.astype(np.int8),
        challenger_probability=challenger,
        challenger_version=np.full(n, versions[1]),
    )


@pytest.mark.unit
def test_live_gate_prefers_the_model_that_knows_the_risk(trained_settings) -> None:  # type: ignore[no-untyped-def]
    settings = trained_settings.model_copy(
        update={"gate_min_roc_auc": 0.8, "gate_min_pr_auc": 0.3, "gate_max_brier": 0.2,
                "gate_min_f1": 0.2}
    )  # fmt: skip
    y, production, challenger = _population()
    better = live_gate(
        settings, y, production, challenger,
        production_threshold=0.3, challenger_threshold=0.3, production_version="1",
    )  # fmt: skip
    assert better.promoted, better.reason
    assert "4000 live outcomes" in better.reason
    worse = live_gate(
        settings, y, challenger, production,
        production_threshold=0.3, challenger_threshold=0.3, production_version="1",
    )  # fmt: skip
    assert not worse.promoted
    one_class = live_gate(
        settings, np.zeros(N, np.int64), production, challenger,
        production_threshold=0.3, challenger_threshold=0.3, production_version="1",
    )  # fmt: skip
    assert not one_class.promoted


@pytest.fixture
def registry_with_challenger(fresh_store: Path) -> tuple[Path, Registry, str]:
    store = fresh_store
    registry = Registry(make_settings(store))
    v1 = registry.client.get_model_version(registry.name, "1")
    v2 = registry.client.create_model_version(registry.name, v1.source, run_id=v1.run_id)
    registry.client.set_registered_model_alias(registry.name, "challenger", str(v2.version))
    return store, registry, str(v2.version)


@pytest.mark.integration
def test_live_outcomes_promote_a_better_challenger_and_drop_its_alias(
    registry_with_challenger: tuple[Path, Registry, str],
) -> None:
    store, registry, challenger = registry_with_challenger
    settings = make_settings(
        store, challenger_min_outcomes=1000, gate_min_roc_auc=0.8, gate_min_pr_auc=0.3,
        gate_max_brier=0.2, gate_min_f1=0.2,
    )  # fmt: skip
    y, production, better = _population()
    result = promote_challenger(
        settings, if_better=True, joined=_joined(y, production, better, ("1", challenger))
    )
    assert result.promoted, result.reason
    assert result.evidence == f"live outcomes ({N} decisions)"
    assert registry.alias_version() == challenger
    assert registry.alias_version("challenger") is None
    with pytest.raises(RegistryError, match="no challenger"):
        promote_challenger(settings, if_better=True, joined=None)


@pytest.mark.integration
def test_a_worse_challenger_stays_and_rows_of_other_versions_do_not_count(
    registry_with_challenger: tuple[Path, Registry, str],
) -> None:
    store, registry, challenger = registry_with_challenger
    # minimums the worse model meets too, so the comparison with production decides
    settings = make_settings(store, challenger_min_outcomes=1000, gate_min_roc_auc=0.7,
                             gate_min_pr_auc=0.2, gate_max_brier=0.2, gate_min_f1=0.1)  # fmt: skip
    y, production, better = _population()
    worse = promote_challenger(
        settings, if_better=True, joined=_joined(y, better, production, ("1", challenger))
    )
    assert not worse.promoted
    assert worse.reason.startswith("worse than production")
    assert registry.alias_version() == "1"
    assert registry.alias_version("challenger") == challenger
    # decisions another challenger version scored are not this one's evidence: too few live
    # rows, so the test-set gate decides (the same model as production: not better)
    other = promote_challenger(
        settings, if_better=True, joined=_joined(y, production, better, ("1", "77"))
    )
    assert other.live_rows == 0
    assert other.evidence.startswith("test set")
    assert not other.promoted
    assert other.reason.startswith("not better than production")


@pytest.mark.integration
def test_cli_promote_challenger(
    registry_with_challenger: tuple[Path, Registry, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store, registry, challenger = registry_with_challenger
    settings = make_settings(store, decision_store_url=f"sqlite:///{store / 'decisions.db'}")
    for name, value in settings.model_dump().items():
        if value is not None and not isinstance(value, (dict, list)):
            monkeypatch.setenv(name.upper(), str(value))
    # no outcomes recorded: the test-set gate; the same model as production is not better
    assert cli_main(["model", "promote", "challenger", "--if-better"]) == 3
    out = capsys.readouterr().out
    assert f"challenger v{challenger} vs production v1: not promoted" in out
    assert "evidence: test set" in out
    assert cli_main(["model", "promote", "challenger"]) == 0
    assert registry.alias_version() == challenger
    assert cli_main(["model", "promote", "challenger"]) == 1  # the alias is gone now
    assert "no challenger" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["model", "promote", "newest"])
