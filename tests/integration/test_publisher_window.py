"""A publisher with far more on the way than the gateway holds (its credit allows it): the
gateway reads no further than the message it is publishing and one more, and the publisher is
paused by its socket, not closed; once the broker answers, everything it sent is stored, answered
and delivered, in order. docs/protocol.md, "flow: credit"."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from wsq_harness import attach_frame, eventually, make_settings, running_gateway

from wsq.broker.memory import MemoryBroker
from wsq.core.messages import NewMessage, Published
from wsq.ws_protocol import WebSocketProtocol

MAX_FRAME = 65_536


class Held(MemoryBroker):
    """Holds every publish to ``big.feed`` until ``go`` is set; counts what it was asked to
    store there (the node's own publishes, wsq.stats, go through)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.go = asyncio.Event()
        self.calls = 0
        self.messages = 0

    async def publish(
        self, tenant: str, address: str, messages: Sequence[NewMessage]
    ) -> list[Published]:
        if address == "big.feed":
            self.calls += 1
            self.messages += len(messages)
            await self.go.wait()
        return await super().publish(tenant, address, messages)


async def test_a_publisher_past_what_the_gateway_holds_is_paused_not_closed_and_loses_nothing() -> (
    None
):
    settings = make_settings(server={"max_frame_bytes": MAX_FRAME})
    broker = Held(settings.storage_policies())
    async with running_gateway(settings, broker) as gw:
        sub = await gw.subscriber("big.feed", credit=100_000, settled=True)
        client = await gw.client(sub="pub")
        await client.begin(1)
        await client.send(attach_frame(1, 0, "sender", "big.feed"))
        await client.expect("attach", ch=1, handle=0)
        credit = (await client.expect("flow", ch=1, handle=0))["credit"]
        # n messages of one transfer each, each near max_frame_bytes: n x 64 KiB on the way.
        n = 64
        assert credit >= n
        pad = "x" * (MAX_FRAME - 200)

        async def send_all() -> None:
            for i in range(n):
                await client.send(
                    {"op": "transfer", "ch": 1, "handle": 0, "delivery": i, "body": [i, pad]}
                )

        sending = asyncio.create_task(send_all())
        await eventually(lambda: broker.calls == 1, "the first publish", within=5)
        await asyncio.sleep(0.5)  # were the gateway to read on, it would have by now
        # The gateway took one message to publish and reads no more: the publisher's socket
        # is paused with at most that message, one waiting and one read of bytes held.
        assert (broker.calls, broker.messages) == (1, 1)
        protocols = [
            p for p in gw.server.server_state.connections if isinstance(p, WebSocketProtocol)
        ]
        paused = [p for p in protocols if p.read_paused]
        assert len(paused) == 1
        # Unparsed: at most one socket read (256 KiB) and the part of a frame before it, of
        # the 4 MiB sent.
        assert len(paused[0].conn.reader.buffer) < 256 * 1024 + MAX_FRAME
        # Let the broker answer: every transfer is stored, accepted in order and delivered.
        broker.go.set()
        await asyncio.wait_for(sending, 10)
        accepted: list[int] = []
        while len(accepted) < n:
            d = await client.expect("disposition", ch=1, timeout=10)
            assert d["outcome"] == "accepted", d
            accepted += range(d["first"], d["last"] + 1)
        assert accepted == list(range(n))
        got = [(await sub.expect("transfer", timeout=10))["body"][0] for _ in range(n)]
        assert got == list(range(n))
        await client.nothing("close", wait=0.2)
        await client.begin(2)  # the publisher's connection lives on
        await client.close()
        await sub.close()
