"""Presence across processes on Redis is told, not polled (issue 16): the presence script
announces each change on the address's notice channel, which the watching process's live reader
brings in. Here the watcher's slow re-read (``PresenceHub.sweep_s``) is set to an hour, so a
join, a leave or a dead process's members dropped elsewhere reach it only through a notice;
a notice lost is repaired by the re-read at resubscription, or by the slow re-read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from wsq_harness import RedisCluster, RedisServer, make_settings

from wsq.broker.redis import RedisBroker
from wsq.broker.redis import presence as redis_presence
from wsq.core.presence import Member
from wsq.hub.presence import PresenceHub
from wsq.protocol.state import Link, Role, Session

T = "acme"
#: A slow re-read that never comes within a test.
NEVER_S = 3600.0


@pytest.fixture(params=["redis", "cluster"])
def redis_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "redis":
        with RedisServer(tmp_path) as server:
            yield server.url
    else:
        with RedisCluster(tmp_path) as cluster:
            yield cluster.url


@pytest.fixture
def single_url(tmp_path: Path) -> Iterator[str]:
    with RedisServer(tmp_path) as server:
        yield server.url


async def _brokers(url: str, n: int) -> list[RedisBroker]:
    policies = make_settings(broker_url=url).storage_policies()
    out = [RedisBroker(url, policies) for _ in range(n)]
    for broker in out:
        await broker.start()
    return out


@pytest.fixture
async def pair(redis_url: str) -> AsyncIterator[list[RedisBroker]]:
    brokers = await _brokers(redis_url, 2)
    yield brokers
    for broker in brokers:
        await broker.close()


@pytest.fixture
async def single_pair(single_url: str) -> AsyncIterator[list[RedisBroker]]:
    brokers = await _brokers(single_url, 2)
    yield brokers
    for broker in brokers:
        await broker.close()


class Watcher:
    """A present link on one process, and the presence frames it is sent."""

    def __init__(self, hub: PresenceHub, address: str, n: int) -> None:
        self.hub = hub
        self.link = Link(Session(1), n, Role.RECEIVER, address)
        self.member = Member(id=f"m{n}", sub=f"u{n}", client=f"c{n}", node=f"n{n}")
        self.frames: list[dict[str, Any]] = []
        self.sent = asyncio.Event()

    async def join(self) -> None:
        await self.hub.join(T, self.link, self.member, 100, self.send)

    def send(self, link: Link, body: dict[str, Any]) -> None:
        self.frames.append(body)
        self.sent.set()

    async def told(self, what: str, sub: str) -> None:
        async with asyncio.timeout(10):
            while not any(f.get(what, {}).get("sub") == sub for f in self.frames):
                self.sent.clear()
                await self.sent.wait()


def hub_of(broker: RedisBroker, sweep_s: float) -> PresenceHub:
    hub = PresenceHub(broker.presence_store)
    hub.sweep_s = sweep_s
    return hub


async def test_a_join_and_a_leave_reach_another_process_by_notice(
    pair: list[RedisBroker],
) -> None:
    a, b = pair
    hub_a, hub_b = hub_of(a, NEVER_S), hub_of(b, NEVER_S)
    watcher = Watcher(hub_b, "lobby.notice", 1)
    await watcher.join()
    # The watcher's task subscribes the room's channel before the join below (its
    # subscription's first re-read sees nothing new).
    await asyncio.sleep(0.5)
    other = Watcher(hub_a, "lobby.notice", 2)
    await other.join()
    await watcher.told("join", "u2")
    await hub_a.leave(other.link)
    await watcher.told("leave", "u2")
    # Counted (wsq_presence_rooms_watched, wsq_presence_notices_total).
    assert b.presence_store.rooms_watched() == {"notice": 1, "poll": 0}
    assert b.presence_store.notices >= 2
    await hub_a.close()
    await hub_b.close()
    # Forgotten with its last link: nothing stays subscribed for it.
    assert b.presence_store.rooms_watched() == {"notice": 0, "poll": 0}
    assert not b._reader.rooms


async def test_past_the_bound_of_noticed_rooms_a_room_is_polled(
    single_pair: list[RedisBroker], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_presence, "MAX_NOTICED_ROOMS", 0)
    a, b = single_pair
    hub_a, hub_b = hub_of(a, NEVER_S), hub_of(b, NEVER_S)
    watcher = Watcher(hub_b, "lobby.polled", 1)
    await watcher.join()
    await Watcher(hub_a, "lobby.polled", 2).join()
    await watcher.told("join", "u2")
    assert b.presence_store.rooms_watched() == {"notice": 0, "poll": 1}
    assert not b._reader.rooms
    await hub_a.close()
    await hub_b.close()


async def test_a_dead_process_s_members_dropped_elsewhere_are_told_by_notice(
    pair: list[RedisBroker], redis_url: str
) -> None:
    a, b = pair
    [gone] = await _brokers(redis_url, 1)
    hub_b = hub_of(b, NEVER_S)
    watcher = Watcher(hub_b, "lobby.dead", 1)
    await watcher.join()
    member = Member(id="m9", sub="u9", client="c9", node="n9")
    assert await gone.presence_store.join(T, "lobby.dead", member, 100)
    await watcher.told("join", "u9")
    await gone.close()  # its lease given up, as a killed one's runs out
    # Another process reads the room (its own watcher's slow re-read, an occupancy request):
    # it drops the dead members, and the watcher hears of it from that drop's notice.
    _, room = await a.presence_store.members(T, "lobby.dead")
    assert list(room) == ["m1"]
    await watcher.told("leave", "u9")
    await hub_b.close()


async def _lose_a_notice(watching: RedisBroker, joining: PresenceHub, n: int) -> None:
    """A join made while the watching process drops every presence notice it gets."""
    reader = watching._reader
    lost = asyncio.Event()
    told = reader._on_notice

    def deaf(channel: str, data: str) -> None:
        if data.startswith("v:"):
            lost.set()
        else:
            told(channel, data)

    reader._on_notice = deaf  # type: ignore[method-assign]
    try:
        await Watcher(joining, "lobby.lost", n).join()
        async with asyncio.timeout(10):
            await lost.wait()
    finally:
        del reader._on_notice  # the class's again


async def test_a_lost_notice_is_repaired_when_the_subscription_comes_back(
    single_pair: list[RedisBroker], single_url: str
) -> None:
    a, b = single_pair
    hub_a, hub_b = hub_of(a, NEVER_S), hub_of(b, NEVER_S)
    watcher = Watcher(hub_b, "lobby.lost", 1)
    await watcher.join()
    await asyncio.sleep(0.5)  # subscribed
    await _lose_a_notice(b, hub_a, 2)
    await asyncio.sleep(0.3)
    assert not any("join" in f for f in watcher.frames)  # lost indeed
    # The watcher's subscription breaks and comes back: the room is read again.
    async with Redis.from_url(single_url) as admin:
        assert await admin.client_kill_filter(_type="pubsub") >= 1
    await watcher.told("join", "u2")
    await hub_a.close()
    await hub_b.close()


async def test_a_lost_notice_is_repaired_by_the_slow_re_read(
    single_pair: list[RedisBroker],
) -> None:
    a, b = single_pair
    hub_a, hub_b = hub_of(a, NEVER_S), hub_of(b, 0.5)
    watcher = Watcher(hub_b, "lobby.lost", 1)
    await watcher.join()
    await asyncio.sleep(0.5)
    await _lose_a_notice(b, hub_a, 2)
    await watcher.told("join", "u2")
    await hub_a.close()
    await hub_b.close()
