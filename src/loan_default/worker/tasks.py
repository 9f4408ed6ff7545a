"""Celery tasks: thin wrappers that hand a (job id, chunk index) to `services.batch`.

Each worker process builds its own `ModelService` in `worker_process_init` (never at import, so
nothing is loaded before the prefork pool forks) and follows the registry alias like the API.
A task that runs twice for the same chunk overwrites the same bytes and is counted once.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from celery import Task, shared_task
from celery.signals import worker_process_init, worker_process_shutdown, worker_ready
from loguru import logger

from loan_default.core.config import Settings, get_settings
from loan_default.core.errors import ModelNotReady
from loan_default.core.logging import configure_logging
from loan_default.services import batch as batch_service
from loan_default.services.batch.records import HEARTBEAT_S, HEARTBEAT_TTL_S
from loan_default.services.batch.sweep import Redispatcher, sweep_stalled
from loan_default.services.challenger import Challenger
from loan_default.services.decisions.errors import DecisionStoreUnavailable
from loan_default.services.decisions.recorder import DecisionRecorder
from loan_default.services.model import ModelService
from loan_default.worker.celery_app import SCORE_CHUNK_TASK, CeleryDispatcher

#: How long a task waits for the model of a freshly started worker before retrying later.
MODEL_WAIT_S = 30.0


@dataclass(slots=True)
class WorkerContext:
    settings: Settings
    model: ModelService
    store: batch_service.JobStore
    decisions: DecisionRecorder | None = None
    challenger: Challenger | None = None
    broker: Redispatcher | None = None
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")

    def start_heartbeat(self) -> None:
        """A daemon thread: the key lives while this process does (a SIGKILL stops it). The
        same thread runs the stall sweep (`services.batch.sweep`) when it is this worker's turn."""

        def run() -> None:
            next_sweep = time.monotonic() + self.settings.batch_stall_s / 4
            while True:
                try:
                    self.store.beat(self.worker_id, HEARTBEAT_TTL_S)
                except Exception as exc:  # the store being down is reported elsewhere
                    logger.debug("heartbeat not written: {}", type(exc).__name__)
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + self.settings.batch_stall_s / 4
                    self.sweep()
                time.sleep(HEARTBEAT_S)

        threading.Thread(target=run, name="batch-heartbeat", daemon=True).start()

    def sweep(self) -> dict[str, list[int]]:
        """Re-send lost chunks of stalled jobs, if no other worker swept in this interval."""
        if self.broker is None:
            return {}
        turn_s = max(1, round(self.settings.batch_stall_s / 4))
        try:
            if self.store.claim("stall-sweep", self.worker_id, turn_s) is not None:
                return {}
            return sweep_stalled(self.store, self.broker, stall_s=self.settings.batch_stall_s)
        except Exception as exc:  # broker or store down: the next turn tries again
            logger.warning("stall sweep skipped: {}", type(exc).__name__)
            return {}

    def wait_for_model(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.model.ready and time.monotonic() < deadline:
            time.sleep(0.05)
        self.model.require()


class _Holder:
    """The current process's context (one per worker process; created after the fork)."""

    context: WorkerContext | None = None


def init_context(settings: Settings | None = None) -> WorkerContext:
    if _Holder.context is None:
        settings = settings or get_settings()
        configure_logging(settings)
        model = ModelService.from_registry(settings)
        model.start_background_reload()
        challenger = Challenger.from_registry(settings, production=model)
        if challenger is not None:
            challenger.start()
        store = batch_service.store_from_settings(settings)
        if store is None:  # the broker is Redis (create_celery insists), so this cannot be
            raise RuntimeError("no batch job store: set CELERY_BROKER_URL or BATCH_STORE_URL")
        _Holder.context = WorkerContext(
            settings=settings,
            model=model,
            store=store,
            decisions=DecisionRecorder.from_settings(settings),
            challenger=challenger,
            broker=CeleryDispatcher.from_settings(settings),
        )
        _Holder.context.start_heartbeat()
    return _Holder.context


def _on_process_init(**_: Any) -> None:
    init_context()


def _on_process_shutdown(**_: Any) -> None:
    if _Holder.context is not None:
        _Holder.context.model.stop()
        if _Holder.context.challenger is not None:
            _Holder.context.challenger.stop()
        if _Holder.context.decisions is not None:
            _Holder.context.decisions.close()


def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    from celery.concurrency.prefork import TaskPool

    settings = get_settings()
    pool = getattr(sender, "pool", None)
    if not isinstance(pool, TaskPool):
        # solo/threads pools run tasks in this process: load the model now, not on first task.
        ctx = init_context(settings)
        ctx.wait_for_model(MODEL_WAIT_S)
        logger.info("batch worker ready (model v{})", ctx.model.require().version)
    else:
        logger.info("batch worker ready (models load in the pool processes)")


class ChunkTask(Task):  # type: ignore[misc]
    """Marks the job FAILURE once a chunk has failed for good (retries exhausted, bad data)."""

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        job_id = args[0] if args else kwargs.get("job_id")
        logger.error("chunk task {} of job {} failed: {}", task_id, job_id, type(exc).__name__)
        ctx = _Holder.context
        if ctx is not None and job_id:
            try:
                batch_service.fail_job(
                    store=ctx.store,
                    job_id=str(job_id),
                    message=f"scoring failed ({type(exc).__name__}); resubmit the job",
                )
            except Exception:
                logger.exception("could not record the failure of job {}", job_id)


def _score_chunk(self: Task, job_id: str, index: int) -> str:
    ctx = init_context()
    try:
        ctx.wait_for_model(MODEL_WAIT_S)
        outcome = batch_service.score_chunk(
            store=ctx.store,
            job_id=job_id,
            index=index,
            predict=ctx.model.predict_matrix,
            worker_id=ctx.worker_id,
            escape_formulas=ctx.settings.batch_csv_escape_formulas,
            decisions=ctx.decisions,
            shadow=ctx.challenger.score_batch if ctx.challenger is not None else None,
            decision_ids=ctx.settings.decision_recording != "off",
        )
    except (ModelNotReady, batch_service.StoreUnavailable, DecisionStoreUnavailable) as exc:
        retries = int(self.request.retries or 0)
        logger.warning("chunk {}/{} deferred ({}), retry {}", job_id, index, exc, retries + 1)
        raise self.retry(
            exc=exc,
            countdown=min(30.0, 0.5 * 2**retries),
            max_retries=ctx.settings.batch_task_max_retries,
        ) from exc
    logger.debug("chunk {}/{}: {}", job_id, index, outcome)
    return outcome


score_chunk = shared_task(
    bind=True,
    base=ChunkTask,
    name=SCORE_CHUNK_TASK,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)(_score_chunk)

worker_process_init.connect(_on_process_init, weak=False)
worker_process_shutdown.connect(_on_process_shutdown, weak=False)
worker_ready.connect(_on_worker_ready, weak=False)
