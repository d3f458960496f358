"""Occupancy and turns in the Redis presence store, shared by two brokers (two processes) on a
single Redis and on a Redis Cluster (every key of it in one slot per command or script):
exactly one of them is told an address became occupied or vacated, and a process that stops
refreshing its lease has its holds and members swept by the other, told once."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from wsq_harness import RedisCluster, RedisServer, make_settings

from wsq.broker.redis import RedisBroker
from wsq.core.presence import Member


@pytest.fixture(params=["redis", "cluster"])
def redis_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "redis":
        with RedisServer(tmp_path) as server:
            yield server.url
    else:
        with RedisCluster(tmp_path) as cluster:
            yield cluster.url


@pytest.fixture
async def brokers(redis_url: str) -> AsyncIterator[tuple[RedisBroker, RedisBroker]]:
    policies = make_settings(broker_url=redis_url).storage_policies()
    a = RedisBroker(redis_url, policies, quota_lease_ms=1000)
    b = RedisBroker(redis_url, policies, quota_lease_ms=1000)
    await a.start()
    await b.start()
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def test_one_process_is_told_and_a_dead_ones_holds_are_swept_once(
    brokers: tuple[RedisBroker, RedisBroker],
) -> None:
    a, b = (x.presence_store for x in brokers)
    first = await a.occupy("acme", "room")
    assert first > 0  # the first holder: occupied
    assert await b.occupy("acme", "room") == 0  # held already
    assert await a.vacate("acme", "room") == 0  # b still holds it
    assert await b.vacate("acme", "room") == first + 1  # the last: vacated, numbered on
    assert await b.vacate("acme", "room") == 0  # twice: no-op

    # a holds two addresses and a member, then stops refreshing its lease (as if killed).
    assert await a.occupy("acme", "solo") > 0
    assert await a.occupy("acme", "shared") > 0
    assert await b.occupy("acme", "shared") == 0
    assert await a.join("acme", "solo", Member("a.1", "alice", "a-1", "a"), 10)
    lost: list[tuple[str, str, list[str]]] = []
    b.on_dropped = lambda t, addr, members: lost.append((t, addr, [m.id for m in members]))
    await a.close()  # its owner key is gone: its lease ended
    swept = await b.sweep()
    assert [(t, addr) for t, addr, _ in swept] == [("acme", "solo")]  # "shared" is b's still
    assert lost == [("acme", "solo", ["a.1"])]
    assert await b.sweep() == []  # swept once
    assert (await b.members("acme", "solo"))[1] == {}
    assert await b.vacate("acme", "shared") > 0


async def test_a_turn_is_one_holders_at_a_time(brokers: tuple[RedisBroker, RedisBroker]) -> None:
    a, b = (x.presence_store for x in brokers)
    assert await a.hold("acme", "orders", "sink.g", "A", 60_000)
    assert not await b.hold("acme", "orders", "sink.g", "B", 60_000)  # a's turn
    assert await a.hold("acme", "orders", "sink.g", "A", 60_000)  # renewed
    assert await b.hold("acme", "orders", "sink.h", "B", 60_000)  # another name: its own
    assert await b.hold("acme", "orders", "sink.g", "B", 0)  # not b's: nothing given up
    assert not await b.hold("acme", "orders", "sink.g", "B", 60_000)
    assert await a.hold("acme", "orders", "sink.g", "A", 0)  # given up
    assert await b.hold("acme", "orders", "sink.g", "B", 60_000)
    assert not await a.hold("acme", "orders", "sink.g", "A", 60_000)
