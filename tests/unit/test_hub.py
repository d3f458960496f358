"""The hub's fan-out and backpressure, without sockets: a real memory broker, real protocol
objects, and a test that plays the writer (draining the outbox when it chooses)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from wsq.broker.base import NewMessage
from wsq.broker.memory import MemoryBroker
from wsq.config import Settings
from wsq.hub import Hub, Outlet
from wsq.protocol.connection import Limits, ServerConnection
from wsq.protocol.events import AttachRequested

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

    async def attach(self, **fields: Any) -> None:
        frame = {"op": "attach", "ch": 1, "handle": 0, "role": "receiver", **fields}
        self.conn.receive_text(json.dumps(frame))
        event = self.conn.next_event()
        assert isinstance(event, AttachRequested)
        link = event.link
        if link.mode == "copy":
            after, recovered = await self.hub.attach_copy("t", link, self.outlet)
            self.conn.accept_attach(link, from_=after, recovered=recovered)
        else:
            await self.hub.attach_move("t", link, self.outlet, "consumer-1")
            self.conn.accept_attach(link)
        self.hub.activate(link)

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
    broker = MemoryBroker(Settings())
    await broker.start()
    hub = Hub(broker)
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
    await hub.close()
    await broker.close()


async def test_a_queue_link_stops_at_the_high_water_mark_and_returns_the_rest() -> None:
    broker = MemoryBroker(Settings())
    await broker.start()
    hub = Hub(broker)
    await publish(broker, "jobs", 400)  # a backlog waiting for the first consumer
    sock = Socket(hub)
    await sock.attach(address="jobs", credit=1000, mode="move")
    await settle_loop()
    sock.watch()
    assert sock.peak < HIGH_WATER + 2 * len(PAD)
    got = await collect(sock, 400)
    assert sorted(got) == list(range(400))
    assert sock.peak < HIGH_WATER + 2 * len(PAD)
    await hub.close()
    await broker.close()


async def test_one_live_reader_serves_every_local_link_of_an_address() -> None:
    broker = MemoryBroker(Settings())
    await broker.start()
    hub = Hub(broker)
    socks = [Socket(hub) for _ in range(5)]
    for s in socks:
        await s.attach(address="news", credit=10)
    topic = hub.topics[("t", "news")]
    assert len(topic.subs) == 5 and topic.tail is not None
    await publish(broker, "news", 3)
    await settle_loop()
    for s in socks:
        assert [t["body"]["n"] for t in s.drain()] == [0, 1, 2]
    await hub.close()
    await broker.close()


async def test_a_link_the_protocol_detached_gets_no_more_transfers() -> None:
    broker = MemoryBroker(Settings())
    await broker.start()
    hub = Hub(broker)
    sock = Socket(hub)
    await sock.attach(address="news", credit=10)
    # The client detaches; the gateway has not yet handed LinkEnded to the hub.
    sock.conn.receive_text(json.dumps({"op": "detach", "ch": 1, "handle": 0}))
    sock.conn.next_event()
    sock.drain()
    await publish(broker, "news", 2)
    await settle_loop()
    assert sock.drain() == []
    await hub.close()
    await broker.close()
