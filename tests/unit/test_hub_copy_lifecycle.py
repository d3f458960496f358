"""A copy link's life in the hub (issue 14: mutants of the topic and the catch-up that the
fan-out tests let live): a topic whose start failed is not kept, the topic stays while one link
of two is left and lets the broker's tail go with the last, ``$`` after messages passed, a lone
link behind catching up from memory, messages that expired on their way, one catch-up at a time,
a link detached during a read pins nothing, reads sized by credit, and the hub's counters."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from test_hub import Socket, hub_on, settle_loop
from test_memory_broker import FakeClock

from wsq.broker.memory import MemoryBroker
from wsq.core.errors import BrokerUnavailable
from wsq.core.messages import NewMessage
from wsq.core.policy import StoragePolicies
from wsq.hub import conflate, copy


async def pub(broker: MemoryBroker, address: str, numbers: range, **fields: Any) -> list[str]:
    news = [NewMessage(body=json.dumps(i), publisher="p", **fields) for i in numbers]
    results = await broker.publish("t", address, news)
    await settle_loop()
    return [r.id for r in results]


def bodies(sock: Socket) -> list[Any]:
    return [t["body"] for t in sock.drain()]


def flow(sock: Socket, credit: int, handle: int = 0) -> None:
    sock.hub.credit(sock.send({"op": "flow", "ch": 1, "handle": handle, "credit": credit}).link)


class FailingStart(MemoryBroker):
    fail = False

    async def last_position(self, tenant: str, address: str) -> str:
        if self.fail:
            self.fail = False
            raise BrokerUnavailable("down")
        return await super().last_position(tenant, address)


async def test_a_topic_whose_start_failed_is_not_kept_and_the_next_attach_works() -> None:
    broker = FailingStart(StoragePolicies())
    async with hub_on(broker) as hub:
        broker.fail = True
        with pytest.raises(BrokerUnavailable):
            await Socket(hub).attach(address="fs", credit=10)
        assert hub.topics == {}
        sock = Socket(hub)
        await sock.attach(address="fs", credit=10)
        await pub(broker, "fs", range(2))
        assert bodies(sock) == [0, 1]


async def test_the_topic_stays_for_the_link_left_and_its_tail_goes_with_the_last() -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        a, b = Socket(hub), Socket(hub)
        la = await a.attach(address="tw", credit=10)
        lb = await b.attach(address="tw", credit=10)
        await hub.detach(la, [])
        await pub(broker, "tw", range(2))
        assert bodies(b) == [0, 1]
        topic = hub.topics[("t", "tw")]
        tails = broker._logs[("t", "tw")].tails
        assert len(tails) == 1
        await hub.detach(lb, [])
        assert hub.topics == {} and topic.tail is None
        assert tails == []  # the broker no longer passes this address on to the hub


async def test_a_link_from_the_live_end_starts_after_the_last_message_passed_on() -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        first = Socket(hub)
        await first.attach(address="le", credit=10)
        ids = await pub(broker, "le", range(3))
        late = Socket(hub)
        link = await late.attach(address="le", credit=10)
        assert link.attachment.cursor_id == ids[-1]
        await pub(broker, "le", range(3, 4))
        assert bodies(late)[-1:] == [3]


async def test_a_lone_link_behind_catches_up_from_the_topics_memory() -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        sock = Socket(hub)
        await sock.attach(address="lo", credit=1)
        await pub(broker, "lo", range(1))
        await pub(broker, "lo", range(1, 4))  # it falls behind here: the topic keeps them
        await pub(broker, "lo", range(4, 6))  # no link is live: kept too
        assert bodies(sock) == [0]
        flow(sock, 10)
        await settle_loop()
        assert bodies(sock) == [1, 2, 3, 4, 5]
        assert (hub.catch_ups, hub.broker_catch_ups) == (1, 0)


async def test_messages_that_expired_on_their_way_move_the_cursor_and_are_not_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        live, late, behind = Socket(hub), Socket(hub), Socket(hub)
        await live.attach(address="ex", credit=100)
        await pub(broker, "ex", range(2))
        await behind.attach(address="ex", credit=1)
        ids = await pub(broker, "ex", range(2, 4), ttl_ms=60_000)
        assert bodies(behind) == [2]  # and behind: the topic keeps 2 and 3 from here
        # From the start: the topic's memory does not reach back that far, the broker is read.
        late_link = await late.attach(address="ex", credit=100, **{"from": "^"})
        # The hub's clock is past their expiry; the broker's is not (it still reads them).
        real_now = copy._now_ms()
        monkeypatch.setattr(copy, "_now_ms", lambda: real_now + 120_000)
        await pub(broker, "ex", range(4, 6), ttl_ms=60_000)
        await settle_loop()
        assert bodies(live) == [0, 1, 2, 3]  # 4 and 5 expired before they were passed on
        assert bodies(late) == [0, 1]  # 2 to 5 expired before the catch-up sent them
        assert late_link.attachment.live
        assert late_link.attachment.cursor_id > ids[-1]
        flow(behind, 10)  # from the topic's memory: 3 to 5 expired
        await settle_loop()
        assert bodies(behind) == []
        assert behind.conn.sessions[1].links[0].attachment.live
        assert (hub.catch_ups, hub.broker_catch_ups) == (2, 1)


class SlowRead(MemoryBroker):
    """Its read takes a round trip (as with Redis), and counts the reads under way."""

    under_way = 0
    most = 0
    limits: list[int]

    async def read(self, *args: Any, **kwargs: Any) -> Any:
        self.limits = getattr(self, "limits", [])
        self.limits.append(args[3])
        self.under_way += 1
        self.most = max(self.most, self.under_way)
        try:
            await asyncio.sleep(0.01)
            return await super().read(*args, **kwargs)
        finally:
            self.under_way -= 1


async def wait_reads(broker: SlowRead) -> None:
    for _ in range(100):  # the condition, bounded
        await asyncio.sleep(0.01)
        if broker.under_way == 0:
            return


async def test_one_catch_up_at_a_time_and_each_read_within_the_credit() -> None:
    broker = SlowRead(StoragePolicies())
    async with hub_on(broker) as hub:
        await pub(broker, "one", range(20))
        sock = Socket(hub)
        await sock.attach(address="one", credit=3, **{"from": "^"})
        for _ in range(3):
            flow(sock, 1)  # grants while the read is under way
        await wait_reads(broker)
        got = bodies(sock)
        await wait_reads(broker)
        got += bodies(sock)
        assert got == list(range(6))
        assert broker.most == 1
        assert broker.limits and max(broker.limits) <= 6
        assert hub.broker_catch_ups == 1


async def test_a_link_detached_during_a_read_pins_nothing_in_the_topic() -> None:
    broker = SlowRead(StoragePolicies())
    async with hub_on(broker) as hub:
        live = Socket(hub)
        await live.attach(address="dr", credit=100)
        await pub(broker, "dr", range(5))
        sock = Socket(hub)
        link = await sock.attach(address="dr", credit=100, **{"from": "^"})
        await asyncio.sleep(0)  # the read is under way
        event = sock.send({"op": "detach", "ch": 1, "handle": 0})
        await hub.detach(link, event.unsettled)
        await wait_reads(broker)
        await pub(broker, "dr", range(5, 8))
        assert bodies(live) == list(range(8))
        topic = hub.topics[("t", "dr")]
        assert list(topic.live) == [live.conn.sessions[1].links[0].attachment]
        assert topic.recent == []  # nobody is behind: nothing kept


async def test_a_conflating_link_with_little_credit_catches_up_on_the_latest() -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        await pub(broker, "cl", range(3), subject="cl.a")
        sock = Socket(hub)
        await sock.attach(address="cl", credit=1, conflate={"ms": 100}, **{"from": "^"})
        await settle_loop()
        assert bodies(sock) == [2]


async def test_the_conflation_counters_add_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conflate, "CONFLATE_MAX_SUBJECTS", 1)
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        sock = Socket(hub)
        await sock.attach(address="cc", credit=0, conflate={"ms": 100})
        await settle_loop()
        for _ in range(2):
            await pub(broker, "cc", range(2), subject="cc.a")  # one held, one replaced
            await pub(broker, "cc", range(1), subject="cc.b")  # no room for a subject
        assert (hub.conflated, hub.conflate_dropped) == (3, 2)


async def test_what_passes_while_a_lone_link_reads_history_is_kept_from_where_it_was() -> None:
    broker = SlowRead(StoragePolicies())
    async with hub_on(broker) as hub:
        await pub(broker, "kh", range(2))
        sock = Socket(hub)
        await sock.attach(address="kh", credit=3, **{"from": "^"})
        await pub(broker, "kh", range(2, 3))  # passes while the read is under way
        await wait_reads(broker)
        assert bodies(sock) == [0, 1, 2]  # caught up: live, no credit left
        await pub(broker, "kh", range(3, 4))  # behind again: the topic's memory has it
        flow(sock, 5)
        await settle_loop()
        assert bodies(sock) == [3]
        assert hub.broker_catch_ups == 1


async def test_a_message_is_expired_from_the_millisecond_it_expires_at(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        await pub(broker, "ms", range(1), ttl_ms=60_000)
        await pub(broker, "ms", range(1, 2))
        [first, _] = (await broker.read("t", "ms", "0-0", 10)).messages
        assert first.expires_at is not None
        # The hub's clock at that very millisecond; the broker's is earlier and still reads it.
        monkeypatch.setattr(copy, "_now_ms", lambda: first.expires_at)
        sock = Socket(hub)
        await sock.attach(address="ms", credit=10, **{"from": "^"})
        await settle_loop()
        assert bodies(sock) == [1]


async def test_a_catch_up_whose_read_comes_back_empty_goes_live_at_the_live_end() -> None:
    clock = FakeClock()
    broker = MemoryBroker(StoragePolicies(), clock=clock)
    async with hub_on(broker) as hub:
        live = Socket(hub)
        await live.attach(address="em", credit=10)
        [first] = await pub(broker, "em", range(1))
        [last] = await pub(broker, "em", range(1, 2), ttl_ms=1000)  # passed on by the reader
        sock = Socket(hub)
        link = await sock.attach(address="em", credit=10, **{"from": first})
        clock.advance(1000)  # 1 expires in the broker before the catch-up reads it
        await settle_loop()
        sub = link.attachment
        assert sub.live
        assert (sub.cursor_id, sub.cursor) == (last, hub.topics[("t", "em")].live_pos)
        await pub(broker, "em", range(2, 3))
        assert bodies(sock) == [2]
