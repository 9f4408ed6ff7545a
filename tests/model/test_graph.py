"""The served graph: the card's calibration folded into the stored tree ensemble."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
import xgboost as xgb
from onnx import helper

from loan_default.features import build_matrix
from loan_default.model.bundle import ModelBundle, ModelLoadError, export_onnx, onnx_session
from loan_default.model.card import Calibration
from loan_default.model.graph import IDENTITY, ONNX_PROBABILITY, served_graph

pytestmark = pytest.mark.integration

SIGMOID = Calibration(method="sigmoid", a=-0.97, b=3.2)
ISOTONIC = Calibration(method="isotonic", x=[0.0, 0.2, 0.6, 1.0], y=[0.0, 0.05, 0.5, 1.0])


def _rows(n: int = 20_000) -> np.ndarray:
    rng = np.random.default_rng(7)
    raw = np.column_stack(
        [rng.integers(0, 2, n), rng.uniform(0, 40_000, n), rng.uniform(1, 800_000, n)]
    )
    return build_matrix(raw)


def _run(model: bytes, matrix: np.ndarray) -> np.ndarray:
    out: Any = onnx_session(model).run([ONNX_PROBABILITY], {"input": matrix})[0]
    return np.asarray(out[:, 0], dtype=np.float64)


@pytest.mark.parametrize("calibration", [SIGMOID, IDENTITY], ids=["sigmoid", "identity"])
def test_an_affine_calibration_is_folded_into_the_graph(
    bundle: Any, calibration: Calibration
) -> None:
    graph = served_graph(export_onnx(bundle.booster), calibration)
    assert graph.residual == IDENTITY
    x = _rows()
    expected = calibration.apply(bundle.raw_proba_xgb(x).astype(np.float64))
    served = _run(graph.model, x)
    # float32 arithmetic in the graph: within a micro-unit of XGBoost calibrated in float64
    assert np.max(np.abs(served - expected)) < 2e-6
    assert served.min() > 0
    assert served.max() < 1


def test_an_isotonic_map_stays_after_the_graph(bundle: Any) -> None:
    graph = served_graph(export_onnx(bundle.booster), ISOTONIC)
    assert graph.residual == ISOTONIC
    x = _rows()
    # the graph alone gives the booster's own probability
    np.testing.assert_allclose(_run(graph.model, x), bundle.raw_proba_xgb(x), atol=1e-6)


def test_an_isotonic_bundle_scores_a_row_as_in_a_matrix(bundle: Any) -> None:
    card = bundle.card.model_copy(update={"calibration": ISOTONIC})
    iso = ModelBundle(booster=bundle.booster, onnx_model=export_onnx(bundle.booster), card=card)
    x = _rows(300)
    matrix = iso.score(x)
    for i in range(0, 300, 7):
        one = iso.score_row(x[i].astype(np.float64).tolist())
        assert one.probability == matrix.probability[i]
        assert one.prediction == matrix.prediction[i]
        assert one.default_risk == matrix.default_risk[i]
    expected = ISOTONIC.apply(bundle.raw_proba_xgb(x))
    assert np.max(np.abs(matrix.probability - expected)) < 2e-6


def test_a_base_margin_is_scaled_with_the_leaves() -> None:
    # base_score 0.2: onnxmltools writes it as the ensemble's base value (a logit)
    rng = np.random.default_rng(3)
    x = rng.random((2_000, 4)).astype(np.float32)
    booster = xgb.train(
        {"objective": "binary:logistic", "base_score": 0.2, "max_depth": 2},
        xgb.DMatrix(x, x[:, 0] + 0.3 * x[:, 1] > 0.8),
        20,
    )
    stored = onnx.load_from_string(export_onnx(booster))
    attrs = {a.name for a in stored.graph.node[0].attribute}
    assert "base_values" in attrs
    served = _run(served_graph(export_onnx(booster), SIGMOID).model, x)
    expected = SIGMOID.apply(np.asarray(booster.inplace_predict(x), dtype=np.float64))
    assert np.max(np.abs(served - expected)) < 2e-6


def _replace_attr(model: bytes, name: str, value: Any) -> bytes:
    m = onnx.load_from_string(model)
    node = m.graph.node[0]
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend([*kept, helper.make_attribute(name, value)])
    return m.SerializeToString()


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("post_transform", "NONE", "logistic"),
        ("classlabels_int64s", [0, 1, 2], "binary"),
        ("base_values", [0.1, 0.2], "one base value"),
    ],
)
def test_another_layout_is_refused_not_guessed(
    bundle: Any, name: str, value: Any, message: str
) -> None:
    model = _replace_attr(export_onnx(bundle.booster), name, value)
    with pytest.raises(ValueError, match=message):
        served_graph(model, SIGMOID)
    with pytest.raises(ModelLoadError, match="ONNX model cannot be loaded"):
        ModelBundle(booster=bundle.booster, onnx_model=model, card=bundle.card)


def test_a_graph_of_other_nodes_is_refused(bundle: Any) -> None:
    m = onnx.load_from_string(export_onnx(bundle.booster))
    m.graph.node.append(helper.make_node("Identity", ["probabilities"], ["copy"]))
    with pytest.raises(ValueError, match="one TreeEnsembleClassifier node"):
        served_graph(m.SerializeToString(), SIGMOID)
