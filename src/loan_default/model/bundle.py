"""Load and save a model version: `model.ubj` + `model.onnx` + `model_card.json`.

Nothing here unpickles. One scoring kernel, `ModelBundle.score`, turns a model matrix into
calibrated probabilities, 0/1 predictions and risk-band codes: the single predict, batch chunks,
the MLflow pyfunc and the promotion gate all call it (the single row as a (1, 4) matrix), so
"what the API returns" and "what the gate measured" are one code path and a batch row equals its
single prediction by construction. It runs one ONNX graph, the stored ensemble with the card's
calibration folded in (`model.graph`; onnxruntime costs microseconds per call where XGBoost's
predict costs hundreds). The XGBoost booster is kept for per-feature contributions
(the `?explain=true` output and the reason codes of `model.reasons`) and for the ONNX parity check
at load time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NamedTuple

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import xgboost as xgb
from loguru import logger

from loan_default.features import (
    FEATURE_NAMES,
    RISK_LABELS,
    band_edges,
    build_matrix,
    feature_row,
    risk_codes,
    risk_labels,
)
from loan_default.model import reasons as reasons_mod
from loan_default.model.card import ModelCard
from loan_default.model.graph import ONNX_PROBABILITY, served_graph
from loan_default.model.stumps import StumpContributions

BOOSTER_FILE: Final = "model.ubj"
ONNX_FILE: Final = "model.onnx"
CARD_FILE: Final = "model_card.json"
ONNX_INPUT: Final = "input"
#: Largest |served - XGBoost calibrated| probability difference accepted at training and load.
PARITY_TOLERANCE: Final = 1e-5
#: Largest |stump table - pred_contribs| (log-odds) accepted at load; float32 rounding is ~1e-7.
STUMP_TOLERANCE: Final = 1e-5


class ModelLoadError(RuntimeError):
    """A model version is missing files, corrupt, or incompatible with this code's features."""


class Scored(NamedTuple):
    """One scored row; `probability` is the calibrated probability of default.

    A NamedTuple, immutable like a frozen dataclass but built in a third of the time (a frozen
    dataclass sets each field through `object.__setattr__`); it is built on every predict.
    """

    probability: float
    prediction: int
    default_risk: str


@dataclass(frozen=True, slots=True)
class Scores:
    """Rows scored by the kernel: probability, 0/1 prediction, risk-band code (see RISK_LABELS)."""

    probability: npt.NDArray[np.float64]
    prediction: npt.NDArray[np.int8]
    risk_code: npt.NDArray[np.uint8]

    @property
    def default_risk(self) -> npt.NDArray[np.str_]:
        return risk_labels(self.risk_code)

    def slice(self, lo: int, hi: int) -> Scores:
        return Scores(self.probability[lo:hi], self.prediction[lo:hi], self.risk_code[lo:hi])


def export_onnx(booster: xgb.Booster) -> bytes:
    """Convert the booster to ONNX (onnxmltools); output `probabilities` is (n, 2)."""
    from onnxmltools import convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType

    onx = convert_xgboost(
        booster,
        initial_types=[(ONNX_INPUT, FloatTensorType([None, len(FEATURE_NAMES)]))],
        target_opset=15,
    )
    return bytes(onx.SerializeToString())


def onnx_session(model: bytes) -> ort.InferenceSession:
    """One-thread session: requests are concurrent across processes, not inside one call."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def save_bundle(
    directory: Path, *, booster: xgb.Booster, onnx_model: bytes, card: ModelCard
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(directory / BOOSTER_FILE))
    (directory / ONNX_FILE).write_bytes(onnx_model)
    (directory / CARD_FILE).write_text(card.model_dump_json(indent=2))
    return directory


class ModelBundle:
    """A loaded, validated model version. Immutable once built, so it can be swapped atomically."""

    __slots__ = (
        "_calibrate",
        "_edges",
        "_onnx",
        "_output",
        "_ranker",
        "_run_options",
        "_stumps",
        "_threshold",
        "alias",
        "booster",
        "card",
        "name",
        "reason_table",
        "version",
    )

    def __init__(
        self,
        *,
        booster: xgb.Booster,
        onnx_model: bytes,
        card: ModelCard,
        name: str = "local",
        version: str = "0",
        alias: str | None = None,
    ) -> None:
        if list(card.features) != list(FEATURE_NAMES):
            raise ModelLoadError(
                f"model card features {card.features} do not match this service's "
                f"features {list(FEATURE_NAMES)}"
            )
        if booster.num_features() != len(FEATURE_NAMES):
            raise ModelLoadError(
                f"booster expects {booster.num_features()} features, not {len(FEATURE_NAMES)}"
            )
        booster.set_param({"nthread": 1})
        self.booster = booster
        self.card = card
        self.name = name
        self.version = str(version)
        self.alias = alias
        try:
            graph = served_graph(onnx_model, card.calibration)
            self._onnx = onnx_session(graph.model)
        except Exception as exc:  # onnx and onnxruntime raise their own exception types
            raise ModelLoadError(f"ONNX model cannot be loaded: {type(exc).__name__}") from exc
        # Built once: InferenceSession.run builds a default RunOptions on every call without one
        # (measured: 10.6 us per single-row call without, 6.0 us with).
        self._run_options = ort.RunOptions()
        self._output = [ONNX_PROBABILITY]
        self._threshold = card.threshold
        self._edges = band_edges(medium=card.risk_bands.medium, high=card.risk_bands.high)
        # None unless the card's map could not be folded into the graph (isotonic).
        self._calibrate = None if graph.residual.method == "identity" else graph.residual.apply
        if not set(card.monotone_constraints) <= set(FEATURE_NAMES):
            raise ModelLoadError(
                f"model card constrains unknown features: {card.monotone_constraints}"
            )
        if card.reasons is not None and card.reasons.features != set(FEATURE_NAMES):
            # A feature no code covers could raise the risk and never be named.
            raise ModelLoadError(
                f"model card's reason table covers {sorted(card.reasons.features)}, "
                f"not every feature of {list(FEATURE_NAMES)}"
            )
        self.reason_table = card.reason_table()
        self._ranker = reasons_mod.ReasonRanker(
            self.reason_table,
            feature_names=FEATURE_NAMES,
            used=reasons_mod.used_features(booster, FEATURE_NAMES),
        )
        self.check_parity(self.probe_matrix())
        self._stumps = self._stump_table(self.probe_matrix())

    @classmethod
    def load(
        cls, directory: Path, *, name: str = "local", version: str = "0", alias: str | None = None
    ) -> ModelBundle:
        """Load a bundle from a directory; every failure becomes ModelLoadError."""
        try:
            card = ModelCard.model_validate_json((directory / CARD_FILE).read_text())
            booster = xgb.Booster()
            booster.load_model(str(directory / BOOSTER_FILE))
            onnx_model = (directory / ONNX_FILE).read_bytes()
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError(
                f"model bundle in {directory} is missing or corrupt: {type(exc).__name__}: "
                f"{str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}"
            ) from exc
        return cls(
            booster=booster,
            onnx_model=onnx_model,
            card=card,
            name=name,
            version=version,
            alias=alias,
        )

    # --- scoring -------------------------------------------------------------------------
    def score(self, matrix: npt.NDArray[np.float32]) -> Scores:
        """The scoring kernel: model matrix (n, 4) float32 -> calibrated scores.

        The graph's calibrated probability of default, then the threshold and risk bands.
        """
        if matrix.shape[0] == 0:
            return Scores(np.empty(0), np.empty(0, dtype=np.int8), np.empty(0, dtype=np.uint8))
        p, adverse, code = self._decide(self._graph(matrix).astype(np.float64))
        return Scores(p, adverse.view(np.int8), code.astype(np.uint8))

    def score_raw(self, raw: npt.ArrayLike) -> Scores:
        """Score raw columns (n, 3) in RAW_FEATURES order (engineered here, as in training)."""
        return self.score(build_matrix(raw))

    def score_one(self, employed: float, bank_balance: float, annual_salary: float) -> Scored:
        """Single-row path: the kernel's functions on one row; no pandas, no DataFrame."""
        return self.score_row(feature_row(employed, bank_balance, annual_salary))

    def score_row(self, row: list[float]) -> Scored:
        """Score one feature row (`feature_row`'s output, FEATURE_NAMES order).

        The same graph call on a (1, 4) matrix and the same `_decide`, on the row's probability
        as a Python float rather than a 1-element array: the same float64 value `score` passes
        (float32 -> float64 is exact), at a fraction of the cost of numpy operations on one value.
        """
        p, adverse, code = self._decide(float(self._graph(np.array([row], dtype=np.float32))[0]))
        return Scored(p, int(adverse), RISK_LABELS[int(code)])

    def _decide(self, p: Any) -> tuple[Any, Any, Any]:
        """Residual calibration (none unless isotonic), threshold, band of float64
        probabilities: one Python float or an array, by the same operations."""
        if self._calibrate is not None:
            p = self._calibrate(p)
        return p, p >= self._threshold, risk_codes(p, self._edges)

    def _graph(self, matrix: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The served graph's output for a model matrix: one probability per row."""
        out: npt.NDArray[np.float32] = self._onnx.run(
            self._output, {ONNX_INPUT: matrix}, self._run_options
        )[0]
        return out[:, 0]

    def raw_proba_xgb(self, matrix: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return np.asarray(self.booster.inplace_predict(matrix), dtype=np.float32)

    def contribs(self, matrix: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Per-feature log-odds contributions (n, 4) plus the bias column: the SHAP values of
        XGBoost's `pred_contribs`, looked up in the stump table when the booster is all stumps
        (`model.stumps`: the same values, ~100x cheaper), else from `pred_contribs` itself.

        They sum to the booster's raw margin, before calibration; one call for the whole matrix.
        """
        if self._stumps is not None:
            return self._stumps.contribs(matrix)
        return self.tree_shap(matrix)

    def tree_shap(self, matrix: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """XGBoost's own `pred_contribs` (TreeSHAP), whatever the trees' depth."""
        out: npt.NDArray[np.float32] = self.booster.predict(
            xgb.DMatrix(matrix, nthread=1), pred_contribs=True
        )
        return out

    def _stump_table(self, probe: npt.NDArray[np.float32]) -> StumpContributions | None:
        """The stump table if the booster is all stumps and the table reproduces
        `pred_contribs` on the probe rows (to STUMP_TOLERANCE), else None (use TreeSHAP)."""
        exact = self.tree_shap(probe)
        table = StumpContributions.from_booster(
            self.booster, FEATURE_NAMES, bias=float(exact[0, -1])
        )
        if table is None:
            return None
        diff = float(np.max(np.abs(table.contribs(probe) - exact)))
        if not diff <= STUMP_TOLERANCE:
            logger.warning(
                "stump contributions differ from pred_contribs by {:.2e}: using pred_contribs",
                diff,
            )
            return None
        return table

    def contributions(
        self, employed: float, bank_balance: float, annual_salary: float
    ) -> dict[str, float]:
        """One applicant's contributions by feature name plus `bias` (`?explain=true`'s output)."""
        return self.explain_row(feature_row(employed, bank_balance, annual_salary))[0]

    def explain_row(self, row: list[float]) -> tuple[dict[str, float], tuple[str, ...]]:
        """One feature row's contributions by name (plus `bias`) and its reason codes, from one
        `pred_contribs` call (it costs ~10x the scoring); the codes are `reasons_row`'s."""
        contribs = self.contribs(np.array([row], dtype=np.float32))
        out = {name: float(v) for name, v in zip(FEATURE_NAMES, contribs[0, :-1], strict=True)}
        out["bias"] = float(contribs[0, -1])
        return out, self._ranker.rank(contribs[:, : len(FEATURE_NAMES)])[0]

    def reasons(self, matrix: npt.NDArray[np.float32]) -> list[tuple[str, ...]]:
        """Reason codes per row of a model matrix (n, 4): up to MAX_REASONS codes of this model's
        reason table, those that raised the risk most first (`model.reasons`).

        Callers pass only the rows that need reasons (adverse ones, or all with `explain`).
        """
        if matrix.shape[0] == 0:
            return []
        return self._ranker.rank(self.contribs(matrix)[:, : len(FEATURE_NAMES)])

    def reasons_row(self, row: list[float]) -> tuple[str, ...]:
        """One feature row's codes (`feature_row`'s output): `reasons` on a (1, 4) matrix, so a
        batch row gets exactly the codes of its single prediction."""
        return self.reasons(np.array([row], dtype=np.float32))[0]

    # --- integrity -----------------------------------------------------------------------
    def probe_matrix(self) -> npt.NDArray[np.float32]:
        """Rows spanning the training distribution, for the load-time parity check."""
        dist = self.card.training_distribution
        cols = []
        for f in ("employed", "bank_balance", "annual_salary"):
            edges = np.asarray(dist[f].edges, dtype=np.float64) if f in dist else np.zeros(2)
            finite = edges[np.isfinite(edges)]
            cols.append(np.linspace(finite.min(), finite.max(), 64) if finite.size else np.ones(64))
        raw = np.column_stack(cols)
        raw[:, 0] = np.round(np.clip(raw[:, 0], 0, 1))
        raw[:, 2] = np.maximum(raw[:, 2], 1.0)
        return build_matrix(raw)

    def check_parity(self, matrix: npt.NDArray[np.float32]) -> float:
        """Max |kernel - XGBoost calibrated in float64| probability: checks the ONNX conversion
        and the calibration folded into the graph at once. ModelLoadError above the tolerance."""
        expected = self.card.calibration.apply(self.raw_proba_xgb(matrix))
        diff = float(np.max(np.abs(self.score(matrix).probability - expected)))
        if not np.isfinite(diff) or diff > PARITY_TOLERANCE:
            raise ModelLoadError(f"ONNX and XGBoost disagree by {diff:.2e} (> {PARITY_TOLERANCE})")
        return diff
