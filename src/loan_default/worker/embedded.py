"""The embedded broker: kombu's SQLAlchemy transport on a SQLite file, tuned for low latency.

Chosen over kombu's filesystem transport because a SQLite transaction claims a message
atomically across processes (`BEGIN IMMEDIATE`), a crash can never leave a half-written message,
and queued jobs survive restarts in one file. Neither transport redelivers a message whose worker
was SIGKILLed mid-task (both drop it on delivery), so `tasks.recover_orphans` re-dispatches
unfinished chunks from the job store when a worker starts on this broker.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import sqlalchemy as kombu_sqla

#: Seconds between polls of the messages table while the queue is empty.
POLLING_INTERVAL = 0.02


class Channel(kombu_sqla.Channel):
    def _engine_from_config(self) -> Any:
        from sqlalchemy import create_engine, event

        opts = dict(self.connection.client.transport_options)
        for key in (
            "queue_tablename",
            "message_tablename",
            "callback",
            "errback",
            "max_retries",
            "interval_start",
            "interval_step",
            "interval_max",
            "retry_errors",
            "polling_interval",
            "visibility_timeout",
            "unacked_restore_interval",
            "unacked_restore_throttle",
        ):
            opts.pop(key, None)
        opts.setdefault("connect_args", {"timeout": 30})
        engine = create_engine(self.connection.client.hostname, **opts)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine


class Transport(kombu_sqla.Transport):
    Channel = Channel
    polling_interval = POLLING_INTERVAL
