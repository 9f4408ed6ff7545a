"""Adverse-action reason codes: the versioned reason table and the ranking of a row's codes.

A reason names what raised *this* applicant's risk above the model's average applicant, from the
booster's own per-feature log-odds contributions (XGBoost `pred_contribs`). Only contributions
> 0 count; features sharing a code add up; codes are ordered by that sum, largest first, ties in
table order; at most `MAX_REASONS`. Ordering by log-odds is ordering by effect on the served
probability: the calibrated probability is an increasing function g of the margin (the sum of the
contributions), so removing contribution c lowers it by g(m) - g(m - c), larger for larger c.

The texts say what the columns really hold (ISLP `Default`): `bank_balance` is the average
credit-card balance left after the monthly payment, `annual_salary` the annual income, `employed`
is 1 - `student`. A text claims a direction ("is high") only when training constrained the
feature that way, so the claim holds across the feature's whole range (`build_table`); an
unconstrained feature gets a neutral text and a different code.

The table is stored in each model card, so a past decision is explained with the table of the
model that made it; `REASONS_VERSION` changes whenever a code's text or features change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import xgboost as xgb
from pydantic import BaseModel, ConfigDict, Field, model_validator

#: Most codes given for one decision (Regulation B's commentary: more than four reasons are not
#: likely to be helpful to the applicant).
MAX_REASONS: Final = 4
#: Version of `_DEFINITION` below: bump it when a code, text or feature list changes.
REASONS_VERSION: Final = "1"


class ReasonCode(BaseModel):
    """One code: its stable id, the sentence an applicant reads, the features it covers."""

    model_config = ConfigDict(frozen=True)

    code: str = Field(min_length=1, max_length=64)
    text: str = Field(min_length=1, max_length=200)
    features: list[str] = Field(min_length=1)


class ReasonTable(BaseModel):
    """A versioned reason table; each feature is covered by at most one code."""

    model_config = ConfigDict(frozen=True)

    version: str = Field(min_length=1)
    codes: list[ReasonCode] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> ReasonTable:
        ids = [c.code for c in self.codes]
        if len(set(ids)) != len(ids):
            raise ValueError(f"reason codes must be unique: {ids}")
        covered = [f for c in self.codes for f in c.features]
        if len(set(covered)) != len(covered):
            raise ValueError(f"a feature may belong to one reason code only: {covered}")
        return self

    @property
    def features(self) -> frozenset[str]:
        return frozenset(f for c in self.codes for f in c.features)

    def text(self, code: str) -> str:
        """The applicant-facing sentence of `code` (KeyError for a code not in this table)."""
        for c in self.codes:
            if c.code == code:
                return c.text
        raise KeyError(code)


@dataclass(frozen=True, slots=True)
class _Group:
    """A code's definition: the features, the direction its directional text asserts, and the
    code and text used with (`code`, `text`) or without (`neutral_*`) that constraint."""

    features: tuple[str, ...]
    direction: int
    code: str
    text: str
    neutral_code: str
    neutral_text: str


#: The one definition of the reason table, in tie-break order.
_DEFINITION: Final = (
    _Group(
        ("bank_balance",),
        1,
        "BALANCE_HIGH",
        "Average credit card balance left after the monthly payment is high",
        "BALANCE_LEVEL",
        "Level of the average credit card balance left after the monthly payment",
    ),
    _Group(
        ("saving_rate",),
        1,
        "BALANCE_TO_INCOME_HIGH",
        "Credit card balance is high relative to income",
        "BALANCE_TO_INCOME_LEVEL",
        "Credit card balance relative to income",
    ),
    _Group(
        ("annual_salary",),
        -1,
        "INCOME_LOW",
        "Annual income is low",
        "INCOME_LEVEL",
        "Level of annual income",
    ),
    _Group(
        ("employed",),
        1,
        "NOT_STUDENT",
        "Not a student: at the same card balance, students default less often",
        "STUDENT_STATUS",
        "Student status",
    ),
)


def build_table(constraints: Mapping[str, int]) -> ReasonTable:
    """The reason table for a model trained with `constraints` (feature -> -1/0/+1).

    A group gets its directional code only when every feature in it was constrained in the
    direction the text asserts; otherwise (unconstrained, the setting off, or a card written
    before constraints were recorded: `{}`) its neutral code, which claims no direction.
    """
    codes = []
    for g in _DEFINITION:
        directed = all(constraints.get(f, 0) == g.direction for f in g.features)
        codes.append(
            ReasonCode(
                code=g.code if directed else g.neutral_code,
                text=g.text if directed else g.neutral_text,
                features=list(g.features),
            )
        )
    return ReasonTable(version=REASONS_VERSION, codes=codes)


def used_features(booster: xgb.Booster, feature_names: Sequence[str]) -> frozenset[str]:
    """Features with at least one split in the booster: only these can be named.

    A feature without a split has a contribution of exactly 0; going by the booster's own split
    count rather than by that 0 makes "never name an unused feature" hold by construction.
    """
    weights = booster.get_score(importance_type="weight")
    names = booster.feature_names or [f"f{j}" for j in range(len(feature_names))]
    return frozenset(f for f, key in zip(feature_names, names, strict=True) if weights.get(key))


class ReasonRanker:
    """A reason table compiled against a model's feature order and the features it uses."""

    __slots__ = ("_codes", "_columns", "table")

    def __init__(
        self, table: ReasonTable, *, feature_names: Sequence[str], used: frozenset[str]
    ) -> None:
        unknown = table.features - set(feature_names)
        if unknown:
            raise ValueError(f"reason table names features the model lacks: {sorted(unknown)}")
        index = {f: j for j, f in enumerate(feature_names)}
        kept = [
            (c.code, tuple(index[f] for f in c.features if f in used))
            for c in table.codes
            if any(f in used for f in c.features)
        ]
        self.table = table
        self._codes = np.array([code for code, _ in kept], dtype=object)
        self._columns = tuple(cols for _, cols in kept)

    def rank(self, contribs: npt.NDArray[np.floating]) -> list[tuple[str, ...]]:
        """Codes per row from per-feature contributions (n, k) (a trailing bias column is ignored).

        Element-wise operations only, each row on its own values in a fixed order: a row gets
        the same codes alone or in any batch, at any position.
        """
        n = contribs.shape[0]
        if n == 0 or not self._columns:
            return [()] * n
        raised = np.maximum(np.asarray(contribs, dtype=np.float64), 0.0)
        scores = np.zeros((n, len(self._columns)))
        for j, cols in enumerate(self._columns):
            for col in cols:
                scores[:, j] += raised[:, col]
        order = np.argsort(-scores, axis=1, kind="stable")[:, :MAX_REASONS]
        count = np.minimum((scores > 0).sum(axis=1), MAX_REASONS)
        # A row's answer is fixed by its (count, order): build each distinct answer's tuple once
        # (a few dozen at most) rather than once per row (2.5 -> 0.3 us per row).
        key = count.astype(np.int64)
        for i in range(order.shape[1]):
            key = key * len(self._columns) + order[:, i]
        answers: dict[int, tuple[str, ...]] = {}
        out = []
        for i, k in enumerate(key.tolist()):
            answer = answers.get(k)
            if answer is None:
                answer = answers[k] = tuple(self._codes[order[i, : count[i]]].tolist())
            out.append(answer)
        return out
