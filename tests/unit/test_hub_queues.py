"""The hub's queue pump without sockets (mutation testing found its rounds reached only by the
socket-level queue tests): turns that move on by one, credit and the unsettled bound, at-most-
once links settled as sent, and the deliveries it counts."""

from __future__ import annotations

import json
from typing import Any

from test_hub import Socket, hub_on, settle_loop

from wsq.broker.memory import MemoryBroker
from wsq.core.messages import NewMessage
from wsq.core.policy import StoragePolicies


async def jobs(broker: MemoryBroker, n: int, start: int = 0) -> None:
    await broker.publish(
        "t",
        "jobs",
        [NewMessage(body=json.dumps(i), publisher="p") for i in range(start, start + n)],
    )
    await settle_loop()


def bodies(sock: Socket) -> list[Any]:
    return [t["body"] for t in sock.drain()]


async def test_consumers_with_credit_take_turns_the_first_turn_moving_on_each_round() -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        socks = [Socket(hub) for _ in range(3)]
        for s in socks:
            await s.attach(address="jobs", mode="move", credit=2)
        await settle_loop()
        await jobs(broker, 6)
        got = [bodies(s) for s in socks]
        # Each consumer claimed its 2 in one turn: consecutive jobs, all six handed out once.
        assert sorted(map(tuple, got)) == [(0, 1), (2, 3), (4, 5)]
        assert hub.deliveries() == {"t": 6}


async def test_a_lone_consumer_takes_the_backlog_in_rounds_of_its_credit() -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        await jobs(broker, 40)
        sock = Socket(hub)
        link = await sock.attach(address="jobs", mode="move", credit=5)
        await settle_loop()
        assert bodies(sock) == [0, 1, 2, 3, 4]
        assert link.credit == 0
        assert len(link.unsettled) == 5
        hub.credit(sock.send({"op": "flow", "ch": 1, "handle": 0, "credit": 100}).link)
        await settle_loop()
        assert bodies(sock) == list(range(5, 40))
        assert link.credit == 65
        assert hub.deliveries() == {"t": 40}


async def test_an_at_most_once_link_is_settled_as_it_is_sent() -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        sock = Socket(hub)
        link = await sock.attach(address="jobs", mode="move", credit=10, settled=True)
        await settle_loop()
        await jobs(broker, 3)
        frames = sock.drain()
        assert [t["body"] for t in frames] == [0, 1, 2]
        assert all(t["settled"] is True for t in frames)
        assert link.unsettled == {}
        # Accepted at once: nothing is left for another consumer.
        assert await broker.claim("t", "jobs", "default", "other", 10, 1000) == []


async def test_a_consumer_without_credit_is_skipped_and_its_turn_comes_with_credit() -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        idle = Socket(hub)
        busy = Socket(hub)
        idle_link = await idle.attach(address="jobs", mode="move", credit=0)
        await busy.attach(address="jobs", mode="move", credit=1)
        await settle_loop()
        await jobs(broker, 3)
        assert bodies(idle) == []
        assert bodies(busy) == [0]
        hub.credit(idle.send({"op": "flow", "ch": 1, "handle": 0, "credit": 5}).link)
        await settle_loop()
        assert bodies(idle) == [1, 2]
        assert idle_link.credit == 3
