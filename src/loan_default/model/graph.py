"""The served ONNX graph: the stored tree ensemble with the card's calibration folded in.

Why: on one row the kernel costs onnxruntime's call plus every numpy operation after it, and a
ufunc on a numpy scalar costs ~0.3 us; Platt scaling after the graph was ten of them, a third of
`score_one`. Platt scaling on the booster's logit is affine in the booster's margin m:
`1 / (1 + exp(a * logit(sigmoid(m)) + b)) = sigmoid(-a*m - b)`. So it folds into the trees:
every leaf weight times -a, the base margin times -a, minus b. The served graph is that ensemble
(`TreeEnsembleRegressor`, margin out) followed by `Sigmoid`, and one onnxruntime call gives the
calibrated probability of a row or of a million rows alike: nothing runs after it but the
threshold and the band.

It is built when a bundle loads, from the stored `model.onnx` (onnxmltools' binary
`TreeEnsembleClassifier`) and the card, so the artifact format and every registered version stay
as they are. An isotonic map is not affine: its graph gives the booster's own probability and the
kernel applies the map after it (`ServedGraph.residual`).

Precision: the graph computes in float32, as the booster does. Against XGBoost's probability
calibrated in float64 the served probability differs by <= ~6e-7 (200k random rows), well inside
`PARITY_TOLERANCE`, which every load checks on the result of this fold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import onnx
from onnx import helper

from loan_default.model.card import Calibration

#: Name of the served graph's output: (n, 1) float32 calibrated probability of default.
ONNX_PROBABILITY: Final = "probability"
_ML_DOMAIN: Final = "ai.onnx.ml"
#: Opset of the default domain for `Sigmoid` (unchanged since 13).
_OPSET: Final = 13
IDENTITY: Final = Calibration(method="identity")


@dataclass(frozen=True, slots=True)
class ServedGraph:
    """The graph the kernel runs and the calibration still to apply to its output."""

    model: bytes
    #: Identity when the calibration was folded into the graph, else the card's (isotonic) map.
    residual: Calibration


def served_graph(onnx_model: bytes, calibration: Calibration) -> ServedGraph:
    """Fold `calibration` into the stored binary tree ensemble; ValueError if it is not one."""
    stored = onnx.load_from_string(onnx_model)
    attrs = _binary_ensemble(stored)
    if calibration.method == "sigmoid":
        scale, shift, residual = -calibration.a, -calibration.b, IDENTITY
    else:
        scale, shift = 1.0, 0.0
        residual = calibration
    base = float(attrs.get("base_values", [0.0])[0])
    ensemble = helper.make_node(
        "TreeEnsembleRegressor",
        [stored.graph.input[0].name],
        ["margin"],
        domain=_ML_DOMAIN,
        n_targets=1,
        aggregate_function="SUM",
        post_transform="NONE",
        base_values=[scale * base + shift],
        target_ids=attrs["class_ids"],
        target_nodeids=attrs["class_nodeids"],
        target_treeids=attrs["class_treeids"],
        target_weights=[scale * w for w in attrs["class_weights"]],
        **{k: v for k, v in attrs.items() if k.startswith("nodes_")},
    )
    sigmoid = helper.make_node("Sigmoid", ["margin"], [ONNX_PROBABILITY])
    output = helper.make_tensor_value_info(ONNX_PROBABILITY, onnx.TensorProto.FLOAT, [None, 1])
    graph = helper.make_graph(
        [ensemble, sigmoid], "calibrated_default_probability", [stored.graph.input[0]], [output]
    )
    ml_opset = next(o.version for o in stored.opset_import if o.domain == _ML_DOMAIN)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid(_ML_DOMAIN, ml_opset), helper.make_opsetid("", _OPSET)],
        ir_version=stored.ir_version,
        producer_name="loan-default",
    )
    onnx.checker.check_model(model)
    return ServedGraph(model.SerializeToString(), residual)


def _binary_ensemble(model: onnx.ModelProto) -> dict[str, Any]:
    """The attributes of the one binary, logistic `TreeEnsembleClassifier` node `export_onnx`
    writes; anything else (another converter's layout) is refused rather than guessed at."""
    nodes = list(model.graph.node)
    if len(nodes) != 1 or nodes[0].op_type != "TreeEnsembleClassifier":
        raise ValueError(
            f"expected one TreeEnsembleClassifier node, got {[n.op_type for n in nodes]}"
        )
    attrs = {a.name: helper.get_attribute_value(a) for a in nodes[0].attribute}
    labels = list(attrs.get("classlabels_int64s", []))
    if attrs.get("post_transform") != b"LOGISTIC" or labels != [0, 1]:
        raise ValueError("expected a binary classifier with a logistic output")
    if set(attrs.get("class_ids", [])) != {0} or len(attrs.get("base_values", [0.0])) != 1:
        raise ValueError("expected one margin per row (class_ids all 0, one base value)")
    if any(k.endswith("_as_tensor") for k in attrs):
        raise ValueError("tensor-valued tree attributes are not supported")
    return attrs
