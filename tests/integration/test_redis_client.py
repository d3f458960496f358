"""The Redis broker's connections send a command when it is sent: not on a later turn of the
event loop, behind the callbacks queued meanwhile (a fan-out's flush to every socket)."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from wsq_harness import RedisServer

from wsq.broker.redis.client import RedisClients, WriteAtOnce, write_at_once


async def test_a_command_reaches_redis_before_the_callbacks_queued_before_it(
    redis_server: RedisServer,
) -> None:
    clients = RedisClients(redis_server.url)
    clients.start()
    key = "wsq-test:write-at-once"
    sync = redis.Redis.from_url(redis_server.url)
    try:
        sync.delete(key)
        await clients.redis.ping()  # the pool's connection is made and idle
        seen: list[bool] = []

        def queued_before() -> None:
            # Blocks the loop, as a long flush does: only a command already written can
            # reach Redis meanwhile.
            deadline = time.monotonic() + 2.0
            while not sync.exists(key) and time.monotonic() < deadline:
                time.sleep(0.005)
            seen.append(bool(sync.exists(key)))

        asyncio.get_running_loop().call_soon(queued_before)
        await clients.redis.set(key, "1")
        assert seen == [True]
    finally:
        sync.delete(key)
        sync.close()
        await clients.close()


def test_every_connection_class_of_a_url_writes_at_once() -> None:
    for cls in (Connection, SSLConnection, UnixDomainSocketConnection):
        made = write_at_once(cls)
        assert issubclass(made, WriteAtOnce) and issubclass(made, cls)
        assert write_at_once(cls) is made and write_at_once(made) is made


async def test_a_connection_closed_under_a_command_is_a_connection_error() -> None:
    # redis-py#4287: another task cleared the writer; the broker must see Redis as down.
    conn = write_at_once(Connection)()
    with pytest.raises(RedisConnectionError):
        conn._send_packed_command([b"PING\r\n"])
