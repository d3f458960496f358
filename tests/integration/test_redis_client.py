"""The Redis broker's connections send a command when it is sent: not on a later turn of the
event loop, behind the callbacks queued meanwhile (a fan-out's flush to every socket); and the
task sending it can always be cancelled (Python 3.11's ``wait_for`` around a write lost it)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
import redis
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from wsq_harness import RedisCluster, RedisServer

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


async def test_a_connection_closed_under_a_command_is_a_connection_error(
    redis_server: RedisServer,
) -> None:
    # redis-py#4287: another task cleared the writer while this one awaited; the broker must
    # see Redis as down.
    conn = write_at_once(Connection)(host="127.0.0.1", port=redis_server.port)
    await conn.connect()

    writer = conn._writer
    assert writer is not None

    async def disconnected_meanwhile() -> None:
        conn._writer = None

    conn.check_health = disconnected_meanwhile  # type: ignore[method-assign]
    try:
        with pytest.raises(RedisConnectionError):
            await conn.send_packed_command(b"PING\r\n")
    finally:
        writer.close()
        await writer.wait_closed()
        await conn.disconnect()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    with RedisCluster(tmp_path_factory.mktemp("redis-cluster")) as c:
        yield c


@pytest.mark.parametrize("deployment", ["server", "cluster"])
async def test_a_task_sending_commands_stops_at_once_when_cancelled(
    deployment: str, request: pytest.FixtureRequest
) -> None:
    """A loop over commands (a lease refresher, a flush) is cancelled at every point of its
    commands, over and over: each time it ends. Through 3.11's ``wait_for`` a cancellation that
    arrived as the write ended was lost, nearly always, and a close awaiting the loop waited
    for ever."""
    url = request.getfixturevalue("redis_server" if deployment == "server" else "cluster").url
    clients = RedisClients(url)
    clients.start()
    loop = asyncio.get_running_loop()
    try:
        await clients.redis.set("wsq-test:cancel", "1")  # connected (a cluster: its map read)
        if deployment == "cluster":
            # Every node found in the map, and the reader's node clients, write at once too.
            nodes = clients.cluster_client().get_nodes()
            assert len(nodes) >= 3
            for node in nodes:
                assert issubclass(node.connection_class, WriteAtOnce), node.name
                plain = clients.node_client(node.host, node.port, 5.0)
                assert issubclass(plain.connection_pool.connection_class, WriteAtOnce)
                await plain.aclose()
        for trial in range(200):

            async def refresher() -> None:
                while True:
                    await clients.redis.set("wsq-test:cancel", "1", px=1000)

            task = loop.create_task(refresher())
            # Cancelled after 0 to ~40 turns of the loop: at every step of a command.
            for _ in range(trial % 41):
                await asyncio.sleep(0)
            task.cancel()
            done, _ = await asyncio.wait([task], timeout=5.0)
            if not done:
                for _ in range(100):  # so that the test ends; the loop would not
                    task.cancel()
                    if (await asyncio.wait([task], timeout=0.05))[0]:
                        break
            assert done, f"trial {trial}: the cancellation was lost; the task went on"
            assert task.cancelled()
    finally:
        await clients.close()
