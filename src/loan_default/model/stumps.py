"""Exact per-feature contributions of a depth-1 booster, by table lookup instead of TreeSHAP.

Why: an adverse decision must carry its reason codes before it is answered, and XGBoost's
`pred_contribs` costs ~0.6 ms for one row (a DMatrix and a tree walk per call), twice the rest of
a prediction. The promoted models are stumps (`max_depth` 1, chosen by training's depth search),
and for a stump TreeSHAP has a closed form: the split feature gets `leaf(x) - E`, where `E` is the
cover-weighted mean of the two leaves, and the bias gets `E`. Summed over trees, a feature's
contribution is a step function of that feature alone, with a step at each of its split
thresholds. So it is tabulated once at load (the sorted thresholds and the value between each
pair) and a row's contribution is one binary search per feature: microseconds.

Exact, not approximate: it is the same quantity `pred_contribs` computes (SHAP values of the tree
ensemble), in float64 rather than XGBoost's float32 accumulation, so the two agree to float32
rounding. `ModelBundle` checks that agreement on probe rows at load and falls back to
`pred_contribs` if it does not hold, and for any booster with a deeper tree (`from_booster`
returns None).

XGBoost sends a row down the "yes" branch when `x < split_condition` (float32 compare); inputs are
validated finite, so the "missing" branch never applies here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import xgboost as xgb


@dataclass(frozen=True, slots=True)
class StumpContributions:
    """Per feature: sorted split thresholds (float32) and the contribution on each side."""

    thresholds: tuple[npt.NDArray[np.float32], ...]
    values: tuple[npt.NDArray[np.float64], ...]
    """values[f][i]: feature f's contribution when exactly i of its thresholds are <= x."""
    bias: float

    @classmethod
    def from_booster(
        cls, booster: xgb.Booster, feature_names: Sequence[str], bias: float
    ) -> StumpContributions | None:
        """The table of a single-output booster whose trees are all stumps (or leaves), else
        None. `bias` is `pred_contribs`' last column (the same for every row)."""
        names = booster.feature_names or [f"f{j}" for j in range(len(feature_names))]
        index = {name: j for j, name in enumerate(names)}
        # per feature and threshold: the summed (left - E) and (right - E) of its stumps
        steps: list[dict[float, list[float]]] = [{} for _ in feature_names]
        for dump in booster.get_dump(dump_format="json", with_stats=True):
            node = json.loads(dump)
            if "leaf" in node:
                continue  # a tree without a split only moves the bias
            children = {c["nodeid"]: c for c in node.get("children", [])}
            yes, no = children.get(node["yes"]), children.get(node["no"])
            if yes is None or no is None or "leaf" not in yes or "leaf" not in no:
                return None  # deeper than one split: TreeSHAP has no closed form here
            feature = index.get(node["split"])
            if feature is None:
                return None
            cover = float(yes["cover"]) + float(no["cover"])
            if cover <= 0:
                return None
            mean = (float(yes["cover"]) * yes["leaf"] + float(no["cover"]) * no["leaf"]) / cover
            left_right = steps[feature].setdefault(
                float(np.float32(node["split_condition"])), [0, 0]
            )
            left_right[0] += yes["leaf"] - mean
            left_right[1] += no["leaf"] - mean
        thresholds, values = [], []
        for per_threshold in steps:
            cuts = sorted(per_threshold)
            left = np.array([per_threshold[c][0] for c in cuts], dtype=np.float64)
            right = np.array([per_threshold[c][1] for c in cuts], dtype=np.float64)
            # i thresholds <= x: the first i stumps send x right, the others left
            right_done = np.concatenate([[0.0], np.cumsum(right)])
            left_to_go = np.concatenate([np.cumsum(left[::-1])[::-1], [0.0]])
            thresholds.append(np.array(cuts, dtype=np.float32))
            values.append(right_done + left_to_go)
        return cls(tuple(thresholds), tuple(values), float(bias))

    def contribs(self, matrix: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """(n, features + 1) float32, laid out as `pred_contribs` (bias last)."""
        n, width = matrix.shape[0], len(self.thresholds)
        out = np.empty((n, width + 1), dtype=np.float32)
        for f in range(width):
            out[:, f] = self.values[f][np.searchsorted(self.thresholds[f], matrix[:, f], "right")]
        out[:, width] = self.bias
        return out
