"""Conflation in the hub (contract section 5, ``conflate``), without sockets: a real memory
broker and protocol objects, a fake clock and a fake timer so that turns are exact."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from test_hub import Socket, hub_on, settle_loop

from wsq.broker.memory import MemoryBroker
from wsq.core.messages import NewMessage
from wsq.core.policy import StoragePolicies
from wsq.core.wire import copy_tail
from wsq.hub import Hub, conflate


class FakeTime:
    """The hub's clock and its timers: time moves only when the test says."""

    def __init__(self, hub: Hub) -> None:
        self.now = 1000.0
        self.timers: list[tuple[float, Callable[[], None], asyncio.TimerHandle]] = []
        hub.clock = lambda: self.now
        hub.loop_call_later = self.call_later  # type: ignore[method-assign]

    def call_later(self, delay: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        handle = asyncio.get_running_loop().call_later(3600, lambda: None)  # cancellable stand-in
        self.timers.append((self.now + delay, callback, handle))
        return handle

    def pending(self) -> int:
        return sum(1 for _, _, h in self.timers if not h.cancelled())

    def advance(self, seconds: float) -> None:
        self.now += seconds
        due = [t for t in self.timers if t[0] <= self.now and not t[2].cancelled()]
        self.timers = [t for t in self.timers if t not in due]
        for _, callback, handle in due:
            handle.cancel()
            callback()


async def pub(broker: MemoryBroker, address: str, *items: tuple[Any, str]) -> None:
    news = [NewMessage(body=json.dumps(b), publisher="p", subject=s) for b, s in items]
    await broker.publish("t", address, news)
    await settle_loop()


def bodies(sock: Socket) -> list[Any]:
    return [t["body"] for t in sock.drain()]


async def test_the_first_goes_at_once_then_the_latest_once_per_turn() -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        clock = FakeTime(hub)
        sock = Socket(hub)
        await sock.attach(address="px", credit=100, conflate={"ms": 100, "by": "subject"})
        await settle_loop()
        await pub(broker, "px", (1, "px.a"))
        assert bodies(sock) == [1]  # a quiet subject: at once
        await pub(broker, "px", *[(i, "px.a") for i in range(2, 11)])
        assert bodies(sock) == []  # its turn is 100 ms after the last one
        assert clock.pending() == 1
        clock.advance(0.099)
        assert bodies(sock) == []
        clock.advance(0.001)
        assert bodies(sock) == [10]  # the latest; 2..9 never sent
        assert hub.conflated == 8
        clock.advance(1.0)
        assert bodies(sock) == [] and clock.pending() == 0  # nothing held, no timer


async def test_one_timer_per_link_however_many_subjects_are_held() -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        clock = FakeTime(hub)
        sock = Socket(hub)
        await sock.attach(address="m", credit=1000, conflate={"ms": 50})
        await settle_loop()
        await pub(broker, "m", *[(0, f"m.s{i}") for i in range(200)])
        assert len(bodies(sock)) == 200  # each subject quiet: all at once
        await pub(broker, "m", *[(v, f"m.s{i}") for v in (1, 2) for i in range(200)])
        assert bodies(sock) == [] and clock.pending() == 1
        clock.advance(0.05)
        assert bodies(sock) == [2] * 200
        assert hub.conflated == 200
        assert hub.stats()["hub.conflated"] == 200


async def test_credit_still_applies_and_a_flow_sends_the_latest() -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        clock = FakeTime(hub)
        sock = Socket(hub)
        link = await sock.attach(address="c", credit=1, conflate={"ms": 10})
        await settle_loop()
        await pub(broker, "c", ("a1", "c.a"), ("b1", "c.b"))
        assert bodies(sock) == ["a1"]  # one credit
        await pub(broker, "c", ("a2", "c.a"), ("b2", "c.b"), ("b3", "c.b"))
        clock.advance(1.0)
        assert bodies(sock) == [] and link.credit == 0
        sock.send({"op": "flow", "ch": 1, "handle": 0, "credit": 10})
        hub.credit(link)
        assert bodies(sock) == ["b3", "a2"]  # b was held first; each its latest
        assert link.credit == 8


async def test_held_subjects_are_bounded_and_what_is_dropped_is_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(conflate, "CONFLATE_MAX_SUBJECTS", 3)
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        FakeTime(hub)
        sock = Socket(hub)
        await sock.attach(address="b", credit=0, conflate={"ms": 10})  # holds everything
        await settle_loop()
        await pub(broker, "b", *[(i, f"b.s{i}") for i in range(5)])
        await pub(broker, "b", ("again", "b.s0"))  # a held subject is still replaced
        assert hub.conflate_dropped == 2 and hub.conflated == 1
        held = sock.conn  # nothing sent without credit
        assert bodies(sock) == [] and held.out_bytes == 0


async def test_held_bytes_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        # The wire tail of one such message (same lengths of body, subject, id and props).
        await pub(broker, "k0", ("x" * 200, "k.s0"))
        [one] = (await broker.read("t", "k0", "0-0", 1)).messages
        monkeypatch.setattr(conflate, "CONFLATE_MAX_BYTES", 2 * len(copy_tail(one)) + 1)
        FakeTime(hub)
        sock = Socket(hub)
        link = await sock.attach(address="k", credit=0, conflate={"ms": 10})
        await settle_loop()
        await pub(broker, "k", *[("x" * 200, f"k.s{i}") for i in range(4)])
        assert hub.conflate_dropped == 2  # two fit
        sock.send({"op": "flow", "ch": 1, "handle": 0, "credit": 10})
        hub.credit(link)
        assert [len(b) for b in bodies(sock)] == [200, 200]
