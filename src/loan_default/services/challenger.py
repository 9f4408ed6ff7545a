"""The challenger: a second registry alias scored in shadow, beside production, off the answer.

The client's answer comes from production only. The challenger's probability is added to the
decision *record*: for single predictions by the group-commit writer thread, once per group,
just before the group is written (`score_records`, one ONNX call for the whole group); for batch
chunks by the worker when it builds the chunk's `DecisionBatch` (`score_batch`, one call per
chunk). A challenger that is missing, still loading, the same version as production, or failing
changes nothing but the record's two challenger columns (left empty) and
`loan_challenger_errors_total`.

Which decisions are shadow-scored is a function of the decision id (`sample_keys`), so a test
can predict it and a redelivered batch chunk samples the same rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Final

import numpy as np
import numpy.typing as npt
from loguru import logger

from loan_default.core.config import Settings
from loan_default.features import build_matrix
from loan_default.model.bundle import ModelBundle
from loan_default.services import metrics
from loan_default.services.decisions.batches import DecisionBatch
from loan_default.services.decisions.records import DecisionRecord, set_challenger
from loan_default.services.model import ModelService

#: Fibonacci hashing (2^64 / golden ratio): the low 64 bits of an id times this, top 32 bits.
#: Random v7 ids stay uniform (multiplication by an odd constant is a bijection); batch ids,
#: whose last 32 bits are the row number, become an evenly spread sequence mixed with the job's
#: hash bits, so row 0 is not sampled in every job.
_GOLDEN: Final = np.uint64(0x9E3779B97F4A7C15)


def id_keys(decision_ids: Sequence[str]) -> npt.NDArray[np.uint64]:
    """The low 64 bits of each decision id (the UUID's last 16 hex digits)."""
    return np.array([int(d[19:23] + d[24:], 16) for d in decision_ids], dtype=np.uint64)


def sample_keys(decision_ids: Sequence[str]) -> npt.NDArray[np.float64]:
    """A number in [0, 1) per decision id; a decision is sampled when it is below the rate."""
    with np.errstate(over="ignore"):  # wrap-around is the point
        mixed = id_keys(decision_ids) * _GOLDEN
    return (mixed >> np.uint64(32)).astype(np.float64) / 2.0**32


def sampled(decision_ids: Sequence[str], rate: float) -> npt.NDArray[np.bool_]:
    """Which of `decision_ids` the challenger scores at sampling rate `rate`."""
    if rate >= 1.0:
        return np.ones(len(decision_ids), dtype=bool)
    if rate <= 0.0 or not decision_ids:
        return np.zeros(len(decision_ids), dtype=bool)
    return sample_keys(decision_ids) < rate


class Challenger:
    """A `ModelService` following the challenger alias, and how to shadow-score with it."""

    def __init__(self, *, service: ModelService, production: ModelService, rate: float) -> None:
        self.service = service
        self.production = production
        self.rate = rate

    @classmethod
    def from_registry(cls, settings: Settings, *, production: ModelService) -> Challenger | None:
        """None when CHALLENGER_ALIAS is empty; otherwise the alias is followed like production
        (same loader and checks, same reload interval), absent or not."""
        alias = settings.challenger_alias.strip()
        if not alias:
            return None
        service = ModelService.from_registry(
            settings,
            alias=alias,
            optional=True,
            on_error=lambda _code: metrics.CHALLENGER_ERRORS.labels("load").inc(),
        )
        return cls(service=service, production=production, rate=settings.challenger_sampling_rate)

    def start(self) -> None:
        self.service.start_background_reload()

    def stop(self) -> None:
        self.service.stop()

    @property
    def bundle(self) -> ModelBundle | None:
        """The challenger to score with now: None when none is loaded or it is production's
        version (a challenger of itself says nothing)."""
        bundle = self.service.bundle
        if bundle is None:
            return None
        production = self.production.bundle
        if production is not None and production.version == bundle.version:
            return None
        return bundle

    # --- the writer thread's hook --------------------------------------------------------
    def score_records(self, records: list[DecisionRecord]) -> list[DecisionRecord]:
        """`records`, the sampled ones given the challenger's version and probability (one
        model call for all of them; in place, see `set_challenger`); on any failure, unchanged.
        Never raises."""
        bundle = self.bundle
        if bundle is None or self.rate <= 0.0:
            return records
        try:
            chosen = np.flatnonzero(sampled([r.decision_id for r in records], self.rate))
            if not len(chosen):
                return records
            raw = np.array(
                [
                    (records[i].employed, records[i].bank_balance, records[i].annual_salary)
                    for i in chosen
                ],
                dtype=np.float64,
            )
            probability = bundle.score(build_matrix(raw)).probability.tolist()
        except Exception:
            metrics.CHALLENGER_ERRORS.labels("score").inc()
            logger.exception("challenger v{} failed; group recorded without it", bundle.version)
            return records
        version = bundle.version
        for i, p in zip(chosen.tolist(), probability, strict=True):
            set_challenger(records[i], version, p)  # the writer alone holds them (see there)
        metrics.CHALLENGER_SCORED.labels("predict").inc(len(chosen))
        return records

    # --- the batch worker's ----------------------------------------------------------------
    def score_batch(
        self, batch: DecisionBatch, matrix: npt.NDArray[np.float32] | None = None
    ) -> DecisionBatch:
        """`batch` with the challenger's probability on its sampled rows (NaN elsewhere, stored
        as NULL); `matrix` is the chunk's model matrix when the caller has it. Never raises."""
        bundle = self.bundle
        if bundle is None or self.rate <= 0.0 or not len(batch):
            return batch
        try:
            mask = sampled(batch.decision_ids(), self.rate)
            if not mask.any():
                return batch
            if matrix is None:
                raw = np.column_stack((batch.employed, batch.bank_balance, batch.annual_salary))
                matrix = build_matrix(raw)
            probability = np.full(len(batch), np.nan)
            probability[mask] = bundle.score(
                np.ascontiguousarray(matrix[mask], dtype=np.float32)
            ).probability
        except Exception:
            metrics.CHALLENGER_ERRORS.labels("score").inc()
            logger.exception("challenger v{} failed; chunk recorded without it", bundle.version)
            return batch
        metrics.CHALLENGER_SCORED.labels("batch").inc(int(mask.sum()))
        return dataclasses.replace(
            batch, challenger_version=bundle.version, challenger_probability=probability
        )
