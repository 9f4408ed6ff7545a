from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from loan_default.features import band_edges, build_matrix, risk_codes, risk_labels
from loan_default.model.bundle import (
    BOOSTER_FILE,
    CARD_FILE,
    ONNX_FILE,
    ModelBundle,
    ModelLoadError,
    export_onnx,
)
from loan_default.model.card import ModelCard, RiskBands

pytestmark = pytest.mark.integration


@pytest.fixture
def bundle_dir(bundle, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    d = tmp_path / "b"
    d.mkdir()
    bundle.booster.save_model(str(d / BOOSTER_FILE))
    (d / ONNX_FILE).write_bytes(export_onnx(bundle.booster))
    (d / CARD_FILE).write_text(bundle.card.model_dump_json())
    return d


def test_roundtrip_and_scoring_paths_agree(bundle_dir: Path) -> None:
    b = ModelBundle.load(bundle_dir, version="7")
    assert b.version == "7"
    raw = np.array([[1, 8754.36, 532339.56], [0, 25000, 40000], [1, 0, 1]])
    s = b.score_raw(raw)
    for i, row in enumerate(raw):
        one = b.score_one(*row)
        # One kernel: a row scored alone equals the same row inside a matrix, bit for bit.
        assert one.probability == s.probability[i]
        assert one.prediction == s.prediction[i]
        assert one.default_risk == s.default_risk[i]
    # ...and the kernel's ONNX probabilities stay within the parity tolerance of XGBoost's.
    xgb_p = b.card.calibration.apply(b.raw_proba_xgb(build_matrix(raw)))
    assert np.max(np.abs(xgb_p - s.probability)) < 2e-6
    contrib = b.contributions(0, 25000, 40000)
    margin = float(
        b.booster.predict(
            xgb.DMatrix(b.probe_matrix()[:1] * 0 + np.float32([[0, 25000, 40000, 0.625]])),
            output_margin=True,
        )[0]
    )
    assert sum(contrib.values()) == pytest.approx(margin, abs=1e-4)
    assert set(contrib) == {"employed", "bank_balance", "annual_salary", "saving_rate", "bias"}


def test_high_balance_is_riskier(bundle_dir: Path) -> None:
    b = ModelBundle.load(bundle_dir)
    low = b.score_one(1, 1000, 400000)
    high = b.score_one(1, 28000, 400000)
    assert high.probability > low.probability
    assert high.default_risk in {"Medium", "High"}
    assert low.default_risk == "Low"


def test_corrupt_booster_is_refused(bundle_dir: Path) -> None:
    (bundle_dir / BOOSTER_FILE).write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match="missing or corrupt"):
        ModelBundle.load(bundle_dir)


def test_missing_file_is_refused(bundle_dir: Path) -> None:
    (bundle_dir / ONNX_FILE).unlink()
    with pytest.raises(ModelLoadError):
        ModelBundle.load(bundle_dir)


def test_onnx_from_another_booster_fails_parity(bundle_dir: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((200, 4)).astype(np.float32)
    other = xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(x, x[:, 0] > 0.5), 5)
    (bundle_dir / ONNX_FILE).write_bytes(export_onnx(other))
    with pytest.raises(ModelLoadError, match="disagree"):
        ModelBundle.load(bundle_dir)


def test_card_with_other_features_is_refused(bundle_dir: Path) -> None:
    card = ModelCard.model_validate_json((bundle_dir / CARD_FILE).read_text())
    bad = card.model_copy(update={"features": ["employed", "bank_balance", "income", "x"]})
    (bundle_dir / CARD_FILE).write_text(bad.model_dump_json())
    with pytest.raises(ModelLoadError, match="do not match"):
        ModelBundle.load(bundle_dir)


@pytest.mark.unit
def test_risk_bands() -> None:
    bands = RiskBands(medium=0.3, high=0.7)
    p = np.array([0.0, 0.299, 0.3, 0.69, 0.7, 1.0])
    codes = risk_codes(p, band_edges(medium=bands.medium, high=bands.high))
    assert risk_labels(codes).tolist() == ["Low", "Low", "Medium", "Medium", "High", "High"]
    with pytest.raises(ValueError, match="medium < high"):
        RiskBands(medium=0.7, high=0.3)


def test_copy_is_independent(bundle_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(bundle_dir, copy)
    assert ModelBundle.load(copy).card == ModelBundle.load(bundle_dir).card
