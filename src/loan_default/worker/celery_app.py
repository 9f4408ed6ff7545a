"""The Celery app, built from Settings: `celery -A loan_default.worker.celery_app worker`.

The broker is Redis (`CELERY_BROKER_URL`); `loan-default run` (`make run`) starts a private one
when none is configured, so local use needs no server installed and configured by hand, and runs
the same broker and job store code as production.

At-least-once delivery: a chunk message is acknowledged only after its result is stored
(`acks_late`), is requeued if the worker process dies (`task_reject_on_worker_lost`), and each
worker process reserves one message at a time (prefetch 1) so a dead worker holds at most one.
On Redis, a message held by a worker that died entirely comes back after the transport's
`visibility_timeout`: it is `CELERY_VISIBILITY_TIMEOUT_S`, which the settings require to exceed
`BATCH_TASK_TIME_LIMIT_S` (the longest a chunk may run), so a chunk still being scored is never
handed out twice. The sweep that restores such messages runs every visibility_timeout / 10
seconds (at most 10), instead of kombu's default of every 100 seconds. A message lost before
kombu recorded it as delivered is not in that set: the workers' stall sweep
(`services.batch.sweep`, `redispatch` below) sends its chunk again.

Importing this module builds the app object only; the model is loaded in each worker process
by `tasks` on `worker_process_init`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Final
from urllib.parse import urlsplit

from celery import Celery

from loan_default.core.config import Settings, get_settings
from loan_default.worker import transport

#: Task name the API publishes and the worker consumes (the API never imports `tasks`).
SCORE_CHUNK_TASK: Final = "loan_default.score_chunk"


class BrokerNotConfigured(RuntimeError):
    """CELERY_BROKER_URL is empty: there is nothing to publish to or consume from."""


def create_celery(settings: Settings) -> Celery:
    if not settings.celery_broker_url:
        raise BrokerNotConfigured(
            "CELERY_BROKER_URL is not set; `loan-default run` starts a private Redis for local use"
        )
    app = Celery("loan_default", set_as_current=False)
    vt = settings.celery_visibility_timeout_s
    transport_options: dict[str, Any] = {
        "visibility_timeout": vt,
        "unacked_restore_interval": max(1, min(10, vt // 10)),
        "unacked_restore_throttle": 1,
        # The restore pass runs under a Redis mutex that kombu holds for 300 s by default when
        # its holder dies: a worker SIGKILLed inside a pass (it runs every second here) would
        # block every redelivery for five minutes. A pass takes milliseconds; a shorter expiry
        # at worst lets two passes overlap, which restores a message twice (chunks are
        # idempotent).
        "unacked_mutex_expire": max(2, min(30, vt // 2)),
        "socket_timeout": 5,
        "socket_connect_timeout": 2,
        "health_check_interval": 10,
    }
    app.conf.update(
        broker_url=settings.celery_broker_url,
        # kombu's Redis transport less a client object built per command (see `transport`).
        broker_transport=(
            transport.Transport
            if urlsplit(settings.celery_broker_url).scheme in transport.SCHEMES
            else None
        ),
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
        worker_enable_remote_control=True,
        broker_heartbeat=0,
        timezone="UTC",
    )
    return app


class CeleryDispatcher:
    """`services.batch.Dispatcher` over a Celery app: one task per chunk, sent by name.

    Built by the composition root (`loan_default.wiring`) and handed to `create_app`.
    """

    def __init__(self, app: Celery, *, queue: str) -> None:
        self.app = app
        self.queue = queue

    @classmethod
    def from_settings(cls, settings: Settings) -> CeleryDispatcher:
        return cls(create_celery(settings), queue=settings.celery_queue)

    def broker_status(self) -> dict[str, Any]:
        """Broker reachability and queue depth (for /readyz; never raises)."""
        start = time.perf_counter()
        try:
            queued = self.queued()
        except Exception as exc:
            return {"type": "redis", "status": "unavailable", "error": type(exc).__name__}
        return {
            "type": "redis",
            "status": "ok",
            "queued_tasks": queued,
            "latency_ms": round((time.perf_counter() - start) * 1000, 2),
        }

    def close(self) -> None:
        self.app.close()

    def dispatch(self, job_id: str, n_chunks: int) -> None:
        self.redispatch(job_id, range(n_chunks))

    def redispatch(self, job_id: str, chunks: Sequence[int]) -> None:
        """Send these chunks of a job (all of them at submit; the lost ones from the sweep)."""
        with self.app.producer_or_acquire() as producer:
            for i in chunks:
                args = (job_id, i)
                # argsrepr: the args' repr for monitors, which Celery otherwise builds with its
                # size-bounded `saferepr` (needless for a short id and an int).
                self.app.send_task(
                    SCORE_CHUNK_TASK,
                    args=args,
                    argsrepr=repr(args),
                    kwargsrepr="{}",
                    queue=self.queue,
                    producer=producer,
                )

    def queued(self) -> int:
        """Messages waiting in the chunk queue (raises when the broker is unreachable)."""
        import redis

        client = redis.Redis.from_url(
            self.app.conf.broker_url, socket_timeout=1, socket_connect_timeout=1
        )
        try:
            return int(client.llen(self.queue))
        finally:
            client.close()


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
