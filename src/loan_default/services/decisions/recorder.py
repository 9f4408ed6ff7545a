"""Recording decisions as they are made, by the DECISION_RECORDING policy.

Protocol-neutral: the predict route hands over a `Prediction` and who asked; the batch worker
hands over a scored chunk. `required` (the default) means no answer without a committed record:
a store failure raises `DecisionStoreUnavailable`, which the API answers with 503 (and the worker
retries the chunk). `best_effort` serves anyway and counts the loss in
`loan_decisions_lost_total`; `off` records nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Final, Literal

from loguru import logger

from loan_default.core.clock import Clock, utc_now
from loan_default.core.config import Settings
from loan_default.services import metrics
from loan_default.services.decisions.batches import DecisionBatch
from loan_default.services.decisions.errors import DecisionStoreUnavailable
from loan_default.services.decisions.ids import new_decision_id, whole_ms
from loan_default.services.decisions.records import DecisionRecord
from loan_default.services.decisions.store import DecisionStore
from loan_default.services.model import Prediction

Mode = Literal["required", "best_effort", "off"]
#: Seconds between attempts to open a store that could not be opened (down at start-up).
REOPEN_INTERVAL_S: Final = 2.0


class DecisionRecorder:
    """The decision store and the policy for when it fails."""

    def __init__(
        self,
        store: DecisionStore | None,
        mode: Mode,
        *,
        opener: Callable[[], DecisionStore] | None = None,
        store_type: str = "off",
        now: Clock = utc_now,
    ) -> None:
        """`now` stamps each prediction's `decided_at` (and so its id); a batch chunk carries its
        job's time instead (`DecisionBatch.created_at`)."""
        self.now = now
        self.mode: Mode = mode if (store is not None or opener is not None) else "off"
        self.store = store if self.mode != "off" else None
        self.store_type = store.type if store is not None else store_type
        self._opener = opener
        self._group_hook: Callable[[list[DecisionRecord]], list[DecisionRecord]] | None = None
        self._stop = threading.Event()
        if self.store is None and opener is not None and self.mode != "off":
            threading.Thread(
                target=self._open_until_up, name="decision-store-open", daemon=True
            ).start()

    @classmethod
    def from_settings(cls, settings: Settings, *, now: Clock = utc_now) -> DecisionRecorder:
        """The store named by DECISION_STORE_URL, migrated to head. A store that cannot be
        reached at start-up is opened by a background thread as soon as it answers (until then
        `required` answers 503 and `best_effort` serves unrecorded): no restart needed."""
        mode: Mode = settings.decision_recording
        if mode == "off":
            return cls(None, "off", now=now)
        kind = "postgresql" if settings.decision_store_url.startswith("postgres") else "sqlite"
        try:
            return cls(DecisionStore.from_settings(settings), mode, now=now)
        except DecisionStoreUnavailable:
            logger.error(
                "decision store unreachable at start-up; retrying every {} s", REOPEN_INTERVAL_S
            )
            return cls(
                None,
                mode,
                opener=lambda: DecisionStore.from_settings(settings),
                store_type=kind,
                now=now,
            )

    def _open_until_up(self) -> None:
        assert self._opener is not None  # nosec B101 - set by the only caller
        while not self._stop.wait(REOPEN_INTERVAL_S):
            try:
                store = self._opener()
                store.set_group_hook(self._group_hook)
                self.store = store
            except DecisionStoreUnavailable:
                continue
            except Exception:
                logger.exception("decision store cannot be opened")
                continue
            logger.info("decision store reachable: recording resumes")
            return

    async def start_writer(self) -> None:
        """Start the running event loop's writer child process and wait until it is up, so the
        first predictions do not wait for its imports (`DECISION_WRITER=process`; else nothing
        to start). One that fails is logged; the first group starts another."""
        if self.store is None:
            return
        try:
            await self.store.start_writer_process()
        except DecisionStoreUnavailable as exc:
            logger.error("decision writer process not up at start-up: {}", exc)

    def set_group_hook(
        self, prepare: Callable[[list[DecisionRecord]], list[DecisionRecord]] | None
    ) -> None:
        """Have the store's writer thread run `prepare` on each group before writing it (the
        challenger's shadow scoring), now and on a store opened later."""
        self._group_hook = prepare
        if self.store is not None:
            self.store.set_group_hook(prepare)

    async def record_prediction(
        self,
        result: Prediction,
        *,
        key_id: str,
        request_id: str | None,
        reference: str | None,
    ) -> str | None:
        """Commit the record of one prediction; its decision id, or None when nothing was
        recorded (off, or best_effort with the store down)."""
        if self.mode == "off":
            return None
        store = self.store
        if store is None:
            self._lost("predict", 1)
            return None
        decided_at = whole_ms(self.now())
        decision_id = new_decision_id(decided_at)
        features = result.features_used
        record = DecisionRecord(
            decision_id=decision_id,
            decided_at=decided_at,
            request_id=request_id,
            key_id=key_id,
            reference=reference,
            source="predict",
            job_id=None,
            row=None,
            employed=features["employed"],
            bank_balance=features["bank_balance"],
            annual_salary=features["annual_salary"],
            saving_rate=features["saving_rate"],
            model_name=result.model_name,
            model_version=result.model_version,
            model_alias=result.model_alias,
            probability=result.probability,
            threshold=result.threshold,
            prediction=result.prediction,
            risk_band=result.default_risk,
            reason_codes=result.reason_codes,
        )
        try:
            await store.record(record)
        except DecisionStoreUnavailable:
            self._lost("predict", 1)
            return None
        metrics.DECISIONS_RECORDED.labels("predict").inc()
        return decision_id

    def record_chunk(self, batch: DecisionBatch) -> int:
        """Write one chunk's decisions, idempotently (a redelivered chunk writes nothing twice);
        returns the rows newly written. Raises under `required`, so the chunk is retried rather
        than scored without its record."""
        if self.mode == "off" or len(batch) == 0:
            return 0
        store = self.store
        if store is None:
            self._lost("batch", len(batch))
            return 0
        try:
            written = store.record_batch(batch)
        except DecisionStoreUnavailable:
            self._lost("batch", len(batch))
            return 0
        metrics.DECISIONS_RECORDED.labels("batch").inc(written)
        return written

    def _lost(self, source: str, rows: int) -> None:
        metrics.DECISION_STORE_ERRORS.inc()
        if self.mode == "required":
            raise DecisionStoreUnavailable(
                "the decision record is unavailable and DECISION_RECORDING=required: no decision "
                "is answered unrecorded; retry shortly"
            )
        metrics.DECISIONS_LOST.labels(source).inc(rows)
        logger.warning("decision store down: {} {} decision(s) served unrecorded", rows, source)

    def status(self) -> dict[str, str]:
        """For /readyz: the store's type and state (no exception text)."""
        if self.store is not None:
            return self.store.status()
        if self.mode == "off":
            return {"type": "off", "status": "ok"}
        return {"type": self.store_type, "status": "unavailable"}

    def close(self) -> None:
        self._stop.set()
        if self.store is not None:
            self.store.close()
