"""The hub's live views and attach answers without sockets (mutation testing found these
reached only by the socket-level tests): rewind with a filter and with conflation, conflation
behind a subject filter, a conflating link that catches up from the start, the answer to a
resume from a trimmed position, what a detach leaves, and the hub's counters."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from test_hub import Socket, hub_on, settle_loop, tenant_t
from test_hub_conflation import FakeTime

from wsq.broker.memory import MemoryBroker
from wsq.core.messages import NewMessage
from wsq.core.policy import StoragePolicies
from wsq.core.wire import copy_tail
from wsq.hub import conflate


async def pub(broker: MemoryBroker, address: str, *items: tuple[Any, str | None]) -> list[str]:
    news = [NewMessage(body=json.dumps(b), publisher="p", subject=s) for b, s in items]
    results = await broker.publish("t", address, news)
    await settle_loop()
    return [r.id for r in results]


def bodies(sock: Socket) -> list[Any]:
    return [t["body"] for t in sock.drain()]


async def test_a_rewind_with_a_filter_gets_the_last_matching_then_the_live_ones() -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        await pub(broker, "rw", (1, "rw.a"), (2, "rw.b"), (3, "rw.a"), (4, "rw.b"), (5, "rw.a"))
        sock = Socket(hub)
        await sock.attach(address="rw", credit=100, rewind=2, filter={"subject": "rw.a"})
        await settle_loop()
        assert bodies(sock) == [3, 5]
        await pub(broker, "rw", (6, "rw.b"), (7, "rw.a"))
        assert bodies(sock) == [7]


async def test_a_rewind_with_conflation_gets_the_last_of_each_subject_then_conflates() -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        clock = FakeTime(hub)
        await pub(broker, "rc", (1, "rc.a"), (2, "rc.b"), (3, "rc.a"), (4, "rc.c"), (5, "rc.b"))
        sock = Socket(hub)
        await sock.attach(address="rc", credit=100, rewind=2, conflate={"ms": 100})
        await settle_loop()
        # The last two subjects (b, c), each its latest, in the order they were published.
        assert bodies(sock) == [4, 5]
        await pub(broker, "rc", (6, "rc.b"), (7, "rc.b"), (8, "rc.a"))
        assert bodies(sock) == [8]  # a is quiet; b had its turn just now
        clock.advance(0.1)
        assert bodies(sock) == [7]
        assert hub.conflated == 1


async def test_conflation_behind_a_filter_offers_only_the_matching_subjects() -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        clock = FakeTime(hub)
        sock = Socket(hub)
        await sock.attach(
            address="cf", credit=100, conflate={"ms": 50}, filter={"subject": "cf.x.*"}
        )
        await settle_loop()
        # One batch: each subject's latest goes at once; the others were never offered.
        await pub(broker, "cf", (1, "cf.x.a"), (2, "cf.y.a"), (3, None), (4, "cf.x.a"))
        assert bodies(sock) == [4]
        assert hub.conflated == 1
        await pub(broker, "cf", (5, "cf.x.b"), (6, "cf.x.a"), (7, "cf.z"))
        assert bodies(sock) == [5]
        clock.advance(0.05)
        assert bodies(sock) == [6]


async def test_a_conflating_link_from_the_start_gets_the_latest_of_each_subject() -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        FakeTime(hub)  # turns on the fake clock: none passes unless the test says
        ids = await pub(broker, "cs", (1, "cs.a"), (2, "cs.b"), (3, "cs.a"), (4, "cs.b"))
        sock = Socket(hub)
        await sock.attach(address="cs", credit=100, conflate={"ms": 10}, **{"from": ids[0]})
        await settle_loop()
        # After ids[0]: 2 (b), 3 (a), 4 (b): b's 2 is superseded by 4 in its place, first.
        assert bodies(sock) == [4, 3]
        assert hub.conflated == 1
        await pub(broker, "cs", (5, "cs.c"))
        assert bodies(sock) == [5]


async def test_a_resume_from_a_trimmed_position_is_answered_not_recovered() -> None:
    broker = MemoryBroker(tenant_t(retention_max_len=3))
    async with hub_on(broker) as hub:
        ids = await pub(broker, "tr", *[(i, None) for i in range(6)])
        sock = Socket(hub)
        await sock.attach(address="tr", credit=100, **{"from": ids[0]})
        assert sock.conn.links()[0].attachment is not None
        await settle_loop()
        assert bodies(sock) == [3, 4, 5]
        kept = Socket(hub)
        await kept.attach(address="tr", credit=100, **{"from": ids[3]})
        await settle_loop()
        assert bodies(kept) == [4, 5]


async def test_the_attach_answers_where_it_starts_and_whether_it_recovered() -> None:
    broker = MemoryBroker(tenant_t(retention_max_len=3))
    async with hub_on(broker) as hub:
        ids = await pub(broker, "an", *[(i, None) for i in range(6)])
        for start, expected in (
            (ids[0], (ids[0], False)),
            (ids[2], (ids[2], True)),
            ("^", ("0-0", True)),
            ("$", (ids[5], True)),
        ):
            sock = Socket(hub)
            frame = {"op": "attach", "ch": 1, "handle": 0, "role": "receiver", "address": "an"}
            sock.conn.receive_text(json.dumps({**frame, "from": start}))
            link = sock.conn.next_event().link  # type: ignore[union-attr]
            assert await hub.attach_copy("t", link, sock.outlet) == expected
            assert await hub.attach_copy("other", link, sock.outlet) == (
                (start, True) if start not in ("^", "$") else ("0-0", True)
            )


async def test_a_detach_cancels_the_conflation_timer_and_forgets_the_topic() -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        clock = FakeTime(hub)
        sock = Socket(hub)
        link = await sock.attach(address="dt", credit=100, conflate={"ms": 100})
        await settle_loop()
        await pub(broker, "dt", (1, "dt.a"))
        await pub(broker, "dt", (2, "dt.a"))
        assert bodies(sock) == [1]
        assert clock.pending() == 1
        sub = link.attachment
        assert ("t", "dt") in hub.topics
        await hub.detach(link, [])
        assert link.attachment is None
        assert clock.pending() == 0
        assert sub.conflator.held == {}
        assert sub.conflator.held_bytes == 0
        assert hub.topics == {}
        clock.advance(1.0)
        assert bodies(sock) == []


async def test_deliveries_are_counted_by_tenant_while_live_and_after_the_topic_closes() -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        sock = Socket(hub)
        link = await sock.attach(address="dl", credit=100)
        await settle_loop()
        await pub(broker, "dl", (1, None), (2, None), (3, None))
        assert bodies(sock) == [1, 2, 3]
        assert hub.deliveries() == {"t": 3}
        await hub.detach(link, [])
        assert hub.deliveries() == {"t": 3}
        assert hub.delivered == {"t": 3}
        assert hub.stats() == {
            "hub.catch_ups": 0,
            "hub.broker_catch_ups": 0,
            "hub.conflated": 0,
            "hub.conflate_dropped": 0,
        }


async def test_held_bytes_follow_what_is_held_and_return_to_zero_once_sent() -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        FakeTime(hub)
        sock = Socket(hub)
        link = await sock.attach(address="hb", credit=0, conflate={"ms": 10})
        await settle_loop()
        conflator = link.attachment.conflator
        await pub(broker, "hb", ("a", "hb.a"), ("bb", "hb.b"))
        held = conflator.held
        assert [m.id for m in held.values()] == [held["hb.a"].id, held["hb.b"].id]
        tails = {k: len(copy_tail(m)) for k, m in held.items()}
        assert conflator.held_bytes == tails["hb.a"] + tails["hb.b"]
        await pub(broker, "hb", ("cccc", "hb.a"))
        assert conflator.held_bytes == len(copy_tail(held["hb.a"])) + tails["hb.b"]
        assert conflator.held_bytes == tails["hb.a"] + 3 + tails["hb.b"]  # "cccc" vs "a"
        sock.send({"op": "flow", "ch": 1, "handle": 0, "credit": 1})
        hub.credit(link)
        assert bodies(sock) == ["cccc"]  # a replaced in its place: still held first
        assert conflator.held_bytes == tails["hb.b"]
        sock.send({"op": "flow", "ch": 1, "handle": 0, "credit": 5})
        hub.credit(link)
        assert bodies(sock) == ["bb"]
        assert conflator.held_bytes == 0
        assert conflator.held == {}


async def test_past_the_most_turns_remembered_the_oldest_quiet_ones_are_forgotten(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(conflate, "_MAX_TURNS", 4)
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        clock = FakeTime(hub)
        sock = Socket(hub)
        link = await sock.attach(address="ft", credit=100, conflate={"ms": 1000})
        await settle_loop()
        for i in range(4):
            await pub(broker, "ft", (i, f"ft.s{i}"))
        conflator = link.attachment.conflator
        assert list(conflator.turns) == ["ft.s0", "ft.s1", "ft.s2", "ft.s3"]  # 4: all kept
        await pub(broker, "ft", (4, "ft.s4"))
        # 5 past 4: the oldest are forgotten down to 2.
        assert list(conflator.turns) == ["ft.s3", "ft.s4"]
        assert conflator.turns["ft.s4"] == clock.now + 1.0
        assert bodies(sock) == [0, 1, 2, 3, 4]
        await pub(broker, "ft", ("s0 again", "ft.s0"), ("s4 again", "ft.s4"))
        # s0's turn was forgotten: it goes at once; s4 waits for its turn.
        assert bodies(sock) == ["s0 again"]
        clock.advance(1.0)
        assert bodies(sock) == ["s4 again"]


async def test_deliveries_of_closed_topics_and_pumps_add_up_by_tenant() -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        sock = Socket(hub)
        a = await sock.attach(handle=0, address="d1", credit=100)
        b = await sock.attach(handle=1, address="d2", credit=100)
        q = await sock.attach(handle=2, address="d3", credit=100, mode="move")
        await settle_loop()
        await pub(broker, "d1", (1, None), (2, None))
        await pub(broker, "d2", (3, None))
        await pub(broker, "d3", (4, None), (5, None), (6, None))
        assert sorted(bodies(sock)) == [1, 2, 3, 4, 5, 6]
        assert hub.deliveries() == {"t": 6}
        for link in (a, b, q):
            await hub.detach(link, [])
        assert hub.topics == {}
        assert hub.pumps == {}
        assert hub.delivered == {"t": 6}
        assert hub.deliveries() == {"t": 6}


async def test_a_held_message_goes_on_the_event_loop_timer_when_its_turn_comes() -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        sock = Socket(hub)  # the hub's own clock and timers: no fake time here
        await sock.attach(address="rt", credit=100, conflate={"ms": 10})
        await settle_loop()
        await pub(broker, "rt", (1, "rt.a"))
        await pub(broker, "rt", (2, "rt.a"))
        assert bodies(sock) == [1]
        got: list[Any] = []
        for _ in range(500):  # the condition, bounded (a lost timer fails, never hangs)
            await asyncio.sleep(0.01)
            got += bodies(sock)
            if got:
                break
        assert got == [2]
