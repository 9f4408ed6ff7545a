"""The broker transport: kombu's Redis transport with one command client per channel.

On the real test Redis: the API's dispatcher publishes through it (one client object for a
channel's many commands, not one per command), the messages are Celery's, and a consumer on the
same transport receives and acknowledges them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import orjson
import pytest
import redis
from kombu import Connection, Consumer, Queue
from kombu.transport import redis as kombu_redis

from loan_default.core.config import Settings
from loan_default.worker import transport
from loan_default.worker.celery_app import SCORE_CHUNK_TASK, CeleryDispatcher, create_celery
from tests.conftest import redis_url

pytestmark = pytest.mark.integration

DB = 5


@pytest.fixture
def queue() -> Iterator[str]:
    name = f"test-transport-{uuid.uuid4().hex[:10]}"
    yield name
    client = redis.Redis.from_url(redis_url(DB))
    client.delete(name, f"_kombu.binding.{name}", f"_kombu.binding_permanent.{name}")
    client.close()


def _settings(url: str, queue: str) -> Settings:
    return Settings(environment="test", celery_broker_url=url, celery_queue=queue)


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/5", "rediss://127.0.0.1:6380/5"])
def test_redis_urls_get_the_transport(url: str) -> None:
    app = create_celery(_settings(url, "q"))
    assert app.connection_for_write().transport_cls is transport.Transport


def test_other_schemes_keep_kombus_own() -> None:
    app = create_celery(_settings("memory://", "q"))
    assert app.conf.broker_transport is None
    assert app.connection_for_write().transport_cls == "memory"


def test_a_channel_builds_one_command_client(queue: str, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[int] = []  # the channel each command client was built for
    create = kombu_redis.Channel._create_client

    def counted(self: kombu_redis.Channel, asynchronous: bool = False) -> object:
        if not asynchronous:  # not the channel's (already cached) BRPOP client
            built.append(id(self))
        return create(self, asynchronous)

    monkeypatch.setattr(kombu_redis.Channel, "_create_client", counted)
    dispatcher = CeleryDispatcher.from_settings(_settings(redis_url(DB), queue))
    try:
        dispatcher.dispatch("job-a", 3)
        dispatcher.dispatch("job-b", 2)
    finally:
        dispatcher.close()
    # One per channel (the connection's default channel declares the queue, the producer's
    # publishes); kombu's own channel builds one per command: 5 publishes + the declare.
    assert len(built) == len(set(built)) <= 2
    raw = redis.Redis.from_url(redis_url(DB)).lrange(queue, 0, -1)
    messages = [orjson.loads(m) for m in reversed(raw)]
    assert [m["headers"]["task"] for m in messages] == [SCORE_CHUNK_TASK] * 5
    assert [m["headers"]["argsrepr"] for m in messages] == [
        "('job-a', 0)",
        "('job-a', 1)",
        "('job-a', 2)",
        "('job-b', 0)",
        "('job-b', 1)",
    ]


def test_a_consumer_on_the_transport_receives_and_acks(queue: str) -> None:
    dispatcher = CeleryDispatcher.from_settings(_settings(redis_url(DB), queue))
    try:
        dispatcher.dispatch("job-c", 2)
    finally:
        dispatcher.close()
    got: list[list[object]] = []
    with Connection(redis_url(DB), transport=transport.Transport) as conn:

        def on_message(body: object, message: object) -> None:
            got.append(body[0])  # type: ignore[index]
            message.ack()  # type: ignore[attr-defined]

        with Consumer(conn, [Queue(queue)], callbacks=[on_message], accept=["json"]):
            while len(got) < 2:
                conn.drain_events(timeout=5)
    assert got == [["job-c", 0], ["job-c", 1]]
    assert redis.Redis.from_url(redis_url(DB)).llen(queue) == 0
    assert dispatcher.queued() == 0
