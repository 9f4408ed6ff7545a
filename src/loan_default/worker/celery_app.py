"""The Celery app, built from Settings: `celery -A loan_default.worker.celery_app worker`.

Redis broker (and result backend) when `CELERY_BROKER_URL` is set; otherwise the embedded SQLite
broker (`worker.embedded`) under `CELERY_DATA_DIR`, so `make run` needs no server.

At-least-once delivery: a chunk message is acknowledged only after its result is stored
(`acks_late`), is requeued if the worker process dies (`task_reject_on_worker_lost`), and each
worker process reserves one message at a time (prefetch 1) so a dead worker holds at most one.
On Redis, a message held by a worker that died entirely comes back after the transport's
`visibility_timeout`: it is `CELERY_VISIBILITY_TIMEOUT_S`, which the settings require to exceed
`BATCH_TASK_TIME_LIMIT_S` (the longest a chunk may run), so a chunk still being scored is never
handed out twice. The sweep that restores such messages runs every visibility_timeout / 10
seconds (at most 10), instead of kombu's default of every 100 seconds.

Importing this module builds the app object only; the model is loaded in each worker process
by `tasks` on `worker_process_init`.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Final

from celery import Celery

from loan_default.core.config import Settings, get_settings
from loan_default.services.batch import is_redis_url

#: Task name the API publishes and the worker consumes (the API never imports `tasks`).
SCORE_CHUNK_TASK: Final = "loan_default.score_chunk"
#: How the embedded broker is spelled in a broker URL.
EMBEDDED_TRANSPORT: Final = "loan_default.worker.embedded:Transport"


def embedded_broker_url(settings: Settings) -> str:
    path = Path(settings.celery_data_dir).resolve() / "broker.sqlite"
    return f"sqla+sqlite:///{path}"


def broker_url(settings: Settings) -> str:
    return settings.celery_broker_url or embedded_broker_url(settings)


def uses_embedded_broker(settings: Settings) -> bool:
    return not settings.celery_broker_url


def create_celery(settings: Settings) -> Celery:
    embedded = uses_embedded_broker(settings)
    if embedded:
        Path(settings.celery_data_dir).mkdir(parents=True, exist_ok=True)
    app = Celery("loan_default", set_as_current=False)
    vt = settings.celery_visibility_timeout_s
    transport_options: dict[str, Any] = {}
    if is_redis_url(broker_url(settings)):
        transport_options = {
            "visibility_timeout": vt,
            "unacked_restore_interval": max(1, min(10, vt // 10)),
            "unacked_restore_throttle": 1,
            "socket_timeout": 5,
            "socket_connect_timeout": 2,
            "health_check_interval": 10,
        }
    app.conf.update(
        broker_url=broker_url(settings),
        broker_transport=EMBEDDED_TRANSPORT if embedded else None,
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=2,
        broker_connection_max_retries=None,
        broker_pool_limit=10,
        result_backend=settings.celery_result_backend or None,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=settings.celery_queue,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        task_time_limit=settings.batch_task_time_limit_s,
        task_soft_time_limit=max(1, settings.batch_task_time_limit_s - 5),
        task_publish_retry=True,
        task_publish_retry_policy={
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_enable_remote_control=not embedded,
        broker_heartbeat=0,
        timezone="UTC",
    )
    return app


class CeleryDispatcher:
    """`services.batch.Dispatcher` over a Celery app: one task per chunk, sent by name."""

    def __init__(self, app: Celery, *, queue: str) -> None:
        self.app = app
        self.queue = queue

    def dispatch(self, job_id: str, n_chunks: int) -> None:
        with self.app.producer_or_acquire() as producer:
            for i in range(n_chunks):
                self.app.send_task(
                    SCORE_CHUNK_TASK, args=(job_id, i), queue=self.queue, producer=producer
                )


@lru_cache(maxsize=1)
def default_app() -> Celery:
    """The worker's app, from the environment; built on first use, not at import."""
    app = create_celery(get_settings())
    app.conf.imports = ("loan_default.worker.tasks",)
    return app


def __getattr__(name: str) -> Any:
    # `celery -A loan_default.worker.celery_app` looks up `app`: build it only then, so the API
    # (which builds its own app from its Settings) can import this module without side effects.
    if name in {"app", "celery"}:
        return default_app()
    raise AttributeError(name)
