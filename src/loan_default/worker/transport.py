"""kombu's Redis transport, with one command client per channel instead of one per command.

kombu's Redis channel builds a new `redis.Redis` object for every command it sends outside the
consumer's BRPOP: each publish (the API's job submit), each ack and each update of the unacked
index (the worker). Building one fills a ~170-entry case-insensitive callback table: ~0.17 ms
of a publish's ~0.9 ms here, more when the API wakes from idle. The object holds no connection
of its own (it borrows from the channel's pool per command), so building it once per channel
changes no connection's lifecycle: the channel still closes its pool, and a channel kombu
revives after a connection error is a new channel with a new client. kombu already caches the
channel's other client (`client`, used for BRPOP) the same way.

Used for `redis://` and `rediss://` broker URLs (`celery_app.create_celery`); any other scheme
keeps kombu's own transport.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import Any, Final

from kombu.transport import redis as kombu_redis

#: Broker URL schemes this transport serves (kombu maps both to its Redis transport).
SCHEMES: Final = frozenset({"redis", "rediss"})


class Channel(kombu_redis.Channel):
    """kombu's Redis channel; `conn_or_acquire` hands out the channel's one command client."""

    @cached_property
    def command_client(self) -> Any:
        """A `redis.Redis` over the channel's (sync) pool, built on first use."""
        return self._create_client()  # type: ignore[no-untyped-call]

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        yield client if client is not None else self.command_client


class Transport(kombu_redis.Transport):
    """kombu's Redis transport over `Channel`."""

    Channel = Channel
