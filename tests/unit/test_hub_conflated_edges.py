"""Conflating links at their edges (issue 14: mutants of ``deliver_conflated`` and the
``Conflator`` that the conflation tests let live): a rewind to the last of each subject whose
messages take several reads, a batch that starts at or before the cursor, the one timer set for
the earliest turn and set again after it fired, a link the protocol detached while it held
messages, and held messages waiting for room."""

from __future__ import annotations

import json
from typing import Any

import pytest
from test_hub import PAD, Socket, hub_on, settle_loop
from test_hub_conflation import FakeTime

from wsq.broker.memory import MemoryBroker
from wsq.core.messages import NewMessage
from wsq.core.policy import StoragePolicies
from wsq.core.positions import START, parse_position
from wsq.core.wire import copy_tail
from wsq.hub import conflate
from wsq.hub.copy import deliver_copy


async def pub(broker: MemoryBroker, address: str, *items: tuple[Any, str], pad: str = "") -> None:
    news = [
        NewMessage(body=json.dumps({"n": n, "pad": pad}), publisher="p", subject=s)
        for n, s in items
    ]
    await broker.publish("t", address, news)
    await settle_loop()


def ints(sock: Socket) -> list[int]:
    return [t["body"]["n"] for t in sock.drain()]


def timers_due(clock: FakeTime) -> list[float]:
    return [due for due, _, handle in clock.timers if not handle.cancelled()]


async def test_a_conflated_rewind_that_takes_several_reads_sends_only_the_last_of_each() -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        FakeTime(hub)  # no turn passes: whatever is sent is sent at once
        # 10 kB each: a catch-up read takes about three (the outbox room), so the superseded
        # ones (2 and 3, 4) and the kept ones (1, 5, 6) lie across reads.
        await pub(
            broker,
            "r",
            (1, "r.a"),
            (2, "r.b"),
            (3, "r.c"),
            (4, "r.b"),
            (5, "r.b"),
            (6, "r.c"),
            pad=PAD,
        )
        sock = Socket(hub)
        await sock.attach(address="r", credit=100, rewind=3, conflate={"ms": 100})
        await settle_loop()
        assert ints(sock) == [1, 5, 6]  # a, b and c, each its latest, in order
        # The superseded ones were never offered: nothing was conflated.
        assert hub.conflated == 0
        await pub(broker, "r", (7, "r.d"))  # then live: a quiet subject goes at once
        assert ints(sock) == [7]


async def test_a_conflating_link_sends_only_what_follows_its_cursor() -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        FakeTime(hub)
        await pub(broker, "c", *[(i, f"c.s{i}") for i in range(5)])
        msgs = (await broker.read("t", "c", START, 10)).messages
        for k in range(-1, 5):  # the cursor before all of them, then at each one
            sock = Socket(hub)  # a fresh link: no subject has had a turn
            sub = (await sock.attach(address="c", credit=100, conflate={"ms": 100})).attachment
            if k < 0:
                sub.cursor, sub.cursor_id = parse_position(START), START
            else:
                sub.seen(msgs[k])
            assert deliver_copy(sub, msgs) is True
            assert ints(sock) == list(range(k + 1, 5)), k
            assert sub.cursor == msgs[-1].pos
        assert hub.catch_ups == 0


async def test_the_one_timer_is_set_for_the_earliest_turn_and_again_after_it_fired() -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        clock = FakeTime(hub)
        sock = Socket(hub)
        await sock.attach(address="tm", credit=100, conflate={"ms": 100})
        await settle_loop()
        start = clock.now
        await pub(broker, "tm", (1, "tm.b"))
        clock.advance(0.03)
        await pub(broker, "tm", (2, "tm.a"))
        assert ints(sock) == [1, 2]  # quiet subjects: at once; b's turn at +0.1, a's at +0.13
        await pub(broker, "tm", (3, "tm.a"))
        assert timers_due(clock) == [start + 0.13]
        await pub(broker, "tm", (4, "tm.b"))  # b's turn comes first: the timer moves to it
        assert timers_due(clock) == [start + 0.1]
        clock.advance(0.07)
        assert ints(sock) == [4]
        assert timers_due(clock) == [start + 0.13]  # set again, for a's turn
        clock.advance(0.03)
        assert ints(sock) == [3]
        assert timers_due(clock) == []
        # A second round: the timer is set again after it fired.
        await pub(broker, "tm", (5, "tm.a"))
        assert ints(sock) == []
        assert timers_due(clock) == [clock.now + 0.1]
        clock.advance(0.1)
        assert ints(sock) == [5]


async def test_a_link_the_protocol_detached_gets_nothing_it_held() -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        clock = FakeTime(hub)
        sock = Socket(hub)
        await sock.attach(address="dt", credit=100, conflate={"ms": 100})
        await settle_loop()
        await pub(broker, "dt", (1, "dt.a"))
        await pub(broker, "dt", (2, "dt.a"))
        assert ints(sock) == [1]  # 2 is held for a's turn
        # The client detaches; the gateway has not yet handed LinkEnded to the hub.
        sock.send({"op": "detach", "ch": 1, "handle": 0})
        sock.drain()
        clock.advance(0.1)
        assert sock.drain() == []


async def test_held_messages_waiting_for_room_go_when_the_outbox_drains() -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        clock = FakeTime(hub)
        sock = Socket(hub)
        await sock.attach(address="rm", credit=100, conflate={"ms": 100})
        await settle_loop()
        await pub(broker, "rm", (1, "rm.a"), (2, "rm.b"))
        await pub(broker, "rm", (3, "rm.a"), (4, "rm.b"))
        assert ints(sock) == [1, 2]
        sock.outlet.high_water = 1
        await pub(broker, "rm", (0, "rm.z"), pad=PAD)  # goes at once, and fills the outbox
        clock.advance(0.1)  # a's and b's turns: no room
        assert not sock.outlet.has_room()
        sock.outlet.high_water = 10**6
        assert ints(sock) == [0]  # drained: the hub hears there is room
        assert ints(sock) == [3, 4]


async def test_after_a_turn_the_timer_is_set_for_the_earliest_of_those_still_held() -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        clock = FakeTime(hub)
        sock = Socket(hub)
        await sock.attach(address="e", credit=100, conflate={"ms": 100})
        await settle_loop()
        start = clock.now
        for n, subject, later in ((1, "e.x", 0.02), (2, "e.z", 0.03), (3, "e.y", 0.0)):
            await pub(broker, "e", (n, subject))  # quiet: at once
            clock.advance(later)
        assert ints(sock) == [1, 2, 3]  # turns: x at +0.1, z at +0.12, y at +0.15
        for n, subject in ((4, "e.z"), (5, "e.y"), (6, "e.x")):  # held in this order
            await pub(broker, "e", (n, subject))
        assert timers_due(clock) == [start + 0.1]
        clock.advance(start + 0.1 - clock.now)
        assert ints(sock) == [6]
        assert timers_due(clock) == [start + 0.12]  # z's, the earliest left, not y's
        clock.advance(0.02)
        assert ints(sock) == [4]
        clock.advance(0.03)
        assert ints(sock) == [5]


async def test_held_bytes_may_reach_the_bound_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        await pub(broker, "hb0", (0, "hb.s0"))
        [one] = (await broker.read("t", "hb0", START, 1)).messages
        monkeypatch.setattr(conflate, "CONFLATE_MAX_BYTES", 2 * len(copy_tail(one)))
        FakeTime(hub)
        sock = Socket(hub)
        await sock.attach(address="hb", credit=0, conflate={"ms": 10})
        await settle_loop()
        await pub(broker, "hb", (0, "hb.s0"), (1, "hb.s1"), (2, "hb.s2"))  # same sizes
        assert hub.conflate_dropped == 1  # two fit exactly
