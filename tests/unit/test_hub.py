"""The hub's fan-out and backpressure, without sockets: a real memory broker, real protocol
objects, and a test that plays the writer (draining the outbox when it chooses)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest

from wsq.broker.memory import MemoryBroker
from wsq.config import Settings, TenantConfig
from wsq.core.errors import BrokerUnavailable
from wsq.core.messages import NewMessage
from wsq.core.policy import StoragePolicies
from wsq.hub import Hub, Outlet
from wsq.protocol.connection import Limits, ServerConnection
from wsq.protocol.events import AttachRequested, LinkEnded


class ErrorLog(logging.Handler):
    """The errors wsq and asyncio log meanwhile: a hub callback that raised (a live batch the
    broker's tail callback could not hand over, a timer's callback) is logged, not raised to
    the test, and the links after it in the live set silently miss that batch."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name}: {record.getMessage()}")

    @contextmanager
    def on(self, *names: str) -> Iterator[ErrorLog]:
        loggers = [logging.getLogger(n) for n in names]
        for lg in loggers:
            lg.addHandler(self)
        try:
            yield self
        finally:
            for lg in loggers:
                lg.removeHandler(self)


@asynccontextmanager
async def hub_on(
    broker: MemoryBroker, policies: StoragePolicies | None = None, errors_logged: bool = False
) -> AsyncIterator[Hub]:
    """``broker`` started and a hub on it (with ``policies``); both closed on exit. Unless
    ``errors_logged``, the block must end with no error logged by wsq or asyncio."""
    await broker.start()
    hub = Hub(broker) if policies is None else Hub(broker, policies)
    with ErrorLog().on("wsq", "asyncio") as errors:
        try:
            yield hub
        finally:
            await hub.close()
            await broker.close()
        assert errors_logged or not errors.lines, errors.lines


def tenant_t(**fields: Any) -> StoragePolicies:
    """The storage policies of one tenant ``t`` with these ``TenantConfig`` fields."""
    return Settings(
        tenants={"t": TenantConfig(name="t", issuer="t", keys=(), **fields)}
    ).storage_policies()


HIGH_WATER = 32 * 1024
PAD = "x" * 10_000


class Socket:
    """One client: a protocol object, its outlet, and a record of the most it ever queued."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.conn = ServerConnection(Limits())
        self.outlet = Outlet(self.conn, HIGH_WATER)
        self.peak = 0
        self.conn.receive_text(json.dumps({"op": "open", "token": "t"}))
        self.conn.next_event()
        self.conn.accept_open({})
        self.conn.receive_text(json.dumps({"op": "begin", "ch": 1}))
        self.conn.next_event()
        self.drain()

    async def attach(self, handle: int = 0, **fields: Any) -> Any:
        frame = {"op": "attach", "ch": 1, "handle": handle, "role": "receiver", **fields}
        self.conn.receive_text(json.dumps(frame))
        event = self.conn.next_event()
        assert isinstance(event, AttachRequested)
        link = event.link
        if link.mode == "copy":
            after, recovered = await self.hub.attach_copy("t", link, self.outlet)
            self.conn.accept_attach(link, from_=after, recovered=recovered)
        else:
            await self.hub.attach_move("t", link, self.outlet, f"consumer-{id(self)}")
            self.conn.accept_attach(link)
        self.hub.activate(link)
        return link

    def send(self, frame: dict[str, Any]) -> Any:
        """A client frame; answers the event it produced."""
        self.conn.receive_text(json.dumps(frame))
        return self.conn.next_event()

    def watch(self) -> None:
        self.peak = max(self.peak, self.conn.out_bytes)

    def drain(self) -> list[dict[str, Any]]:
        """Play the writer: take everything queued, then tell the hub there is room."""
        self.watch()
        frames: list[dict[str, Any]] = []
        for text in self.conn.data_to_send():
            value = json.loads(text)
            frames.extend(value if isinstance(value, list) else [value])
        if self.outlet.stalled:
            self.hub.drained(self.outlet)
        return [f for f in frames if f["op"] == "transfer"]


async def settle_loop() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def publish(broker: MemoryBroker, address: str, n: int) -> None:
    for start in range(0, n, 50):
        await broker.publish(
            "t",
            address,
            [
                NewMessage(body=json.dumps({"n": i, "pad": PAD}), publisher="p")
                for i in range(start, min(n, start + 50))
            ],
        )


async def collect(sock: Socket, n: int) -> list[int]:
    got: list[int] = []
    for _ in range(1000):
        await settle_loop()
        sock.watch()
        got.extend(t["body"]["n"] for t in sock.drain())
        if len(got) >= n:
            break
    return got


async def test_a_copy_link_stops_at_the_high_water_mark_and_catches_up_losslessly() -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        sock = Socket(hub)
        await sock.attach(address="feed", credit=100_000, **{"from": "^"})
        await publish(broker, "feed", 400)  # 4 MB: far past the mark
        await settle_loop()
        sock.watch()
        # It stopped one message past the mark, not 4 MB later.
        assert sock.peak < HIGH_WATER + 2 * len(PAD)
        got = await collect(sock, 400)
        assert got == list(range(400))
        assert sock.peak < HIGH_WATER + 2 * len(PAD)
        assert hub.catch_ups > 0


async def test_a_catch_up_reads_no_more_than_the_outbox_has_room_for() -> None:
    # 400 messages of 10 kB are retained; the link has credit for all of them but its outbox
    # room for about three. Each read must be bounded by that room, not by READ_BATCH (512
    # messages of up to a MiB each would be read, and encoded, at once).
    broker = MemoryBroker(StoragePolicies())
    await broker.start()
    await publish(broker, "feed", 400)
    sizes: list[int] = []
    read = broker.read

    async def counting_read(*args: Any, **kw: Any) -> Any:
        result = await read(*args, **kw)
        sizes.append(len(result.messages))
        return result

    broker.read = counting_read  # type: ignore[method-assign]
    hub = Hub(broker)
    sock = Socket(hub)
    await sock.attach(address="feed", credit=100_000, **{"from": "^"})
    got = await collect(sock, 400)
    assert got == list(range(400))
    assert sizes and max(sizes) <= HIGH_WATER // len(PAD) + 1, sizes
    await hub.close()
    await broker.close()


async def test_a_queue_link_stops_at_the_high_water_mark_and_returns_the_rest() -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        await publish(broker, "jobs", 400)  # a backlog waiting for the first consumer
        sock = Socket(hub)
        await sock.attach(address="jobs", credit=1000, mode="move")
        await settle_loop()
        sock.watch()
        assert sock.peak < HIGH_WATER + 2 * len(PAD)
        got = await collect(sock, 400)
        assert sorted(got) == list(range(400))
        assert sock.peak < HIGH_WATER + 2 * len(PAD)


async def test_one_live_reader_serves_every_local_link_of_an_address() -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        socks = [Socket(hub) for _ in range(5)]
        for s in socks:
            await s.attach(address="news", credit=10)
        topic = hub.topics[("t", "news")]
        assert len(topic.subs) == 5 and topic.tail is not None
        await publish(broker, "news", 3)
        await settle_loop()
        for s in socks:
            assert [t["body"]["n"] for t in s.drain()] == [0, 1, 2]


async def test_a_link_the_protocol_detached_gets_no_more_transfers() -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        sock = Socket(hub)
        await sock.attach(address="news", credit=10)
        # The client detaches; the gateway has not yet handed LinkEnded to the hub.
        sock.conn.receive_text(json.dumps({"op": "detach", "ch": 1, "handle": 0}))
        sock.conn.next_event()
        sock.drain()
        await publish(broker, "news", 2)
        await settle_loop()
        assert sock.drain() == []


async def test_credit_granted_while_the_outbox_is_full_resumes_once_it_drains() -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        sock = Socket(hub)
        await sock.attach(0, address="busy", credit=1000)
        quiet = await sock.attach(1, address="quiet", credit=0)
        sock.drain()
        await broker.publish("t", "quiet", [NewMessage(body='"q1"', publisher="p")])
        await publish(broker, "busy", 10)  # the outbox goes past the mark
        await settle_loop()
        assert not sock.outlet.has_room()
        hub.credit(sock.send({"op": "flow", "ch": 1, "handle": 1, "credit": 10}).link)
        await settle_loop()
        got: list[Any] = []
        for _ in range(10):
            got += sock.drain()
            await settle_loop()
        assert [t["body"] for t in got if t["handle"] == 1] == ["q1"]
        assert quiet.attachment.live


async def test_a_filtered_link_with_little_credit_gets_every_match_once_in_order() -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        sock = Socket(hub)
        link = await sock.attach(address="feed", credit=3, filter={"subject": "a.*"})
        subjects = ["a.x" if i % 3 else "b.x" for i in range(60)]
        for start in (0, 30):  # two live batches
            await broker.publish(
                "t",
                "feed",
                [
                    NewMessage(body=str(i), publisher="p", subject=subjects[i])
                    for i in range(start, start + 30)
                ],
            )
        got: list[int] = []
        for _ in range(40):  # the client grants 3 more each time it has read what it got
            await settle_loop()
            frames = sock.drain()
            got += [t["body"] for t in frames]
            assert [t["delivery"] for t in frames] == list(range(len(got) - len(frames), len(got)))
            hub.credit(sock.send({"op": "flow", "ch": 1, "handle": 0, "credit": 3}).link)
        assert got == [i for i in range(60) if subjects[i] == "a.x"]
        assert link.attachment.live


async def test_links_of_one_address_each_take_what_their_credit_allows_of_a_batch() -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        socks = [Socket(hub) for _ in range(3)]
        for credit, s in zip((0, 4, 100), socks, strict=True):
            await s.attach(address="news", credit=credit)
        await broker.publish(
            "t", "news", [NewMessage(body=str(i), publisher="p") for i in range(10)]
        )
        await settle_loop()
        assert [[t["body"] for t in s.drain()] for s in socks] == [
            [],
            [0, 1, 2, 3],
            list(range(10)),
        ]
        # The two that ran out of credit left the live set; a grant catches them up from history.
        assert [s.conn.sessions[1].links[0].attachment.live for s in socks] == [False, False, True]
        for s in socks[:2]:
            hub.credit(s.send({"op": "flow", "ch": 1, "handle": 0, "credit": 100}).link)
        await settle_loop()
        assert [[t["body"] for t in s.drain()] for s in socks] == [
            list(range(10)),
            list(range(4, 10)),
            [],
        ]


class LaggingTail(MemoryBroker):
    """Its live reader hands batches over 50 ms late, as a blocking read from Redis does."""

    def tail(self, tenant: str, address: str, after: str, on_messages: Any) -> Any:
        loop = asyncio.get_running_loop()
        return super().tail(
            tenant, address, after, lambda ms: loop.call_later(0.05, on_messages, ms)
        )


async def test_a_late_live_batch_never_moves_a_caught_up_cursor_back() -> None:
    broker = LaggingTail(StoragePolicies())
    async with hub_on(broker) as hub:
        first = Socket(hub)
        await first.attach(address="feed", credit=1000)
        await broker.publish("t", "feed", [NewMessage(body=str(n), publisher="p") for n in (1, 2)])
        await asyncio.sleep(0.1)  # the live reader has passed 2
        await broker.publish("t", "feed", [NewMessage(body=str(n), publisher="p") for n in (3, 4)])
        await broker.publish("t", "feed", [NewMessage(body=str(n), publisher="p") for n in (5, 6)])
        late = Socket(hub)
        await late.attach(address="feed", credit=1000, **{"from": "^"})  # reads 1..6 from history
        await asyncio.sleep(0.3)  # the live batches [3, 4] and [5, 6] arrive after that
        assert [t["body"] for t in late.drain()] == [1, 2, 3, 4, 5, 6]
        assert [t["body"] for t in first.drain()] == [1, 2, 3, 4, 5, 6]


class SlowClaim(MemoryBroker):
    """claim takes a network round trip once ``slow``, as with Redis."""

    slow = False

    async def claim(self, *args: Any, **kwargs: Any) -> Any:
        if self.slow:
            await asyncio.sleep(0.05)
        return await super().claim(*args, **kwargs)


async def test_a_queue_link_detached_while_the_pump_awaits_gets_no_transfer() -> None:
    broker = SlowClaim(StoragePolicies())
    async with hub_on(broker) as hub:
        a = Socket(hub)
        link = await a.attach(address="jobs", mode="move", credit=1)
        await broker.publish("t", "jobs", [NewMessage(body='"m1"', publisher="p")])
        await asyncio.sleep(0.05)
        assert [t["body"] for t in a.drain()] == ["m1"]
        broker.slow = True
        await broker.publish("t", "jobs", [NewMessage(body='"m2"', publisher="p")])
        hub.credit(a.send({"op": "flow", "ch": 1, "handle": 0, "credit": 5}).link)
        await asyncio.sleep(0.02)  # the pump is awaiting the broker's claim
        event = a.send({"op": "detach", "ch": 1, "handle": 0})
        assert isinstance(event, LinkEnded)
        await hub.detach(link, event.unsettled)
        await asyncio.sleep(0.3)
        assert a.drain() == []
        # Nothing stays leased to the consumer that left: both can be claimed at once, m1
        # counted (its delivery ended without an outcome), m2 not (it was never sent).
        claimed = await broker.claim("t", "jobs", "default", "someone", 10, 1000)
        assert sorted((d.message.body, d.redelivered) for d in claimed) == [
            ('"m1"', 1),
            ('"m2"', 0),
        ]


class FailingLeave(MemoryBroker):
    failing = False

    async def leave(self, *args: Any, **kwargs: Any) -> None:
        if self.failing:
            raise BrokerUnavailable("down")
        await super().leave(*args, **kwargs)


async def test_a_failed_leave_on_detach_does_not_leave_the_group_pump_behind() -> None:
    broker = FailingLeave(StoragePolicies())
    async with hub_on(broker) as hub:
        sock = Socket(hub)
        link = await sock.attach(address="jobs", mode="move", credit=5)
        await broker.publish("t", "jobs", [NewMessage(body="1", publisher="p")])
        await asyncio.sleep(0.05)
        broker.failing = True
        event = sock.send({"op": "detach", "ch": 1, "handle": 0})
        with pytest.raises(BrokerUnavailable):
            await hub.detach(link, event.unsettled)
        assert ("t", "jobs", "default") not in hub.pumps


def _ints(frames: list[dict[str, Any]]) -> list[int]:
    return [t["body"]["n"] for t in frames]


async def _one_at_a_time(sock: Socket, link: Any, rounds: int) -> list[int]:
    """A client that grants one credit after each delivery."""
    got: list[int] = []
    for _ in range(rounds):
        await settle_loop()
        frames = sock.drain()
        got += _ints(frames)
        if frames:
            sock.hub.credit(sock.send({"op": "flow", "ch": 1, "handle": 0, "credit": 1}).link)
    return got


async def _small(broker: MemoryBroker, address: str, numbers: range) -> None:
    await broker.publish(
        "t", address, [NewMessage(body=json.dumps({"n": i}), publisher="p") for i in numbers]
    )


async def test_a_link_granting_one_credit_at_a_time_catches_up_from_memory() -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        sock = Socket(hub)
        fast = Socket(hub)
        link = await sock.attach(address="feed", credit=1)
        await fast.attach(address="feed", credit=1000)
        for start in range(0, 200, 50):
            await _small(broker, "feed", range(start, start + 50))
        got = await _one_at_a_time(sock, link, 400)
        assert got == list(range(200))
        assert _ints(fast.drain()) == list(range(200))
        # It fell behind on every message and never read the broker to catch up.
        assert hub.catch_ups >= 199
        assert hub.broker_catch_ups == 0
        # Everyone is live again: the topic keeps nothing.
        await _small(broker, "feed", range(200, 201))
        assert hub.topics[("t", "feed")].recent == []


async def test_memory_never_gives_a_late_link_what_retention_dropped() -> None:
    policies = tenant_t(retention_max_len=3)
    broker = MemoryBroker(policies)
    async with hub_on(broker, policies) as hub:
        sock = Socket(hub)
        link = await sock.attach(address="feed", credit=1)
        await _small(broker, "feed", range(10))
        got = await _one_at_a_time(sock, link, 20)
        # The first went live; of the rest, the broker keeps 3, and so does the topic's memory.
        assert got == [0, 7, 8, 9]


async def test_memory_never_gives_a_late_link_what_age_retention_dropped() -> None:
    policies = tenant_t(retention_max_age_ms=200)
    broker = MemoryBroker(policies)
    async with hub_on(broker, policies) as hub:
        sock = Socket(hub)
        link = await sock.attach(address="feed", credit=1)
        await _small(broker, "feed", range(5))
        await settle_loop()
        assert _ints(sock.drain()) == [0]
        await asyncio.sleep(0.3)  # past the retention age: 1..4 are gone from the broker
        await _small(broker, "feed", range(5, 6))
        got = await _one_at_a_time(sock, link, 10)
        hub.credit(sock.send({"op": "flow", "ch": 1, "handle": 0, "credit": 1}).link)
        got += await _one_at_a_time(sock, link, 10)
        assert got == [5]
        assert hub.broker_catch_ups > 0


async def test_a_link_that_stops_granting_credit_pins_no_more_than_the_recent_bytes() -> None:
    # Retention keeps 1 MiB: what the topic's memory holds beyond it is its own.
    policies = tenant_t(retention_max_bytes=1024 * 1024)
    broker = MemoryBroker(policies)
    async with hub_on(broker, policies) as hub:
        stuck = Socket(hub)
        await stuck.attach(address="feed", credit=1)  # and never again
        live = Socket(hub)
        await live.attach(address="feed", credit=10_000)
        body = json.dumps("x" * 100_000)
        for _ in range(300):  # 30 MB
            await broker.publish("t", "feed", [NewMessage(body=body, publisher="p")])
            live.drain()
        topic = hub.topics[("t", "feed")]
        held = sum(len(m.wire or "") for m in topic.recent)
        # Bounded by wsq.hub.copy.RECENT_BYTES (4 MiB) and by retention (1 MiB here), amortised:
        # twice that at most. Before: all 300 (30 MB), up to 2,048 messages whatever their size.
        assert held <= 2 * 1024 * 1024 + 100_100, held
