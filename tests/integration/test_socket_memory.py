"""What a socket costs for many of them (docs/performance.md, "Scale"): nothing of its
handshake's headers kept in websockets' objects, which live as long as the socket
(wsq.ws_protocol); no task per delivery while the socket reads (wsq.gateway)."""

from __future__ import annotations

import asyncio
import gc
import json
import secrets
from typing import Any

import websockets
from websockets.datastructures import Headers
from wsq_harness import Gateway, Publisher


async def test_an_open_socket_keeps_no_headers_of_its_handshake(gateway: Gateway) -> None:
    marker = f"x-wsq-test-{secrets.token_hex(4)}"
    async with websockets.connect(
        gateway.url, subprotocols=["wsq.v1"], additional_headers={marker: "v" * 200}
    ) as ws:
        await ws.send(json.dumps({"op": "open", "token": gateway.token()}))
        assert json.loads(await ws.recv())["op"] == "open"
        assert ws.request is not None
        # type(), not isinstance(): the heap may hold a weak proxy whose object is gone, and
        # isinstance() on it raises ReferenceError (seen in CI).
        held = [
            o
            for o in gc.get_objects()
            if type(o) is Headers and marker in o and o is not ws.request.headers
        ]
        # the client's own request has it; the server's side has let go of it
        assert held == []
        # and so has the ASGI scope the gateway keeps for the socket
        peers = gateway.server.config.app.state.gateway.peers  # type: ignore[attr-defined]
        assert peers and all(peer.scope["headers"] == [] for peer in peers)
        assert not any("state" in peer.scope or "extensions" in peer.scope for peer in peers)


async def test_deliveries_to_a_socket_that_reads_start_no_writer_task(gateway: Gateway) -> None:
    """Written on the loop's next turn by a callback while the transport takes them
    (wsq.gateway.Peer._flush): no task, coroutine or frame per delivery for the collector."""
    loop = asyncio.get_running_loop()
    started: list[str] = []
    create_task = loop.create_task

    def counting(coro: Any, **kw: Any) -> asyncio.Task[Any]:
        started.append(getattr(coro, "__qualname__", "?"))
        return create_task(coro, **kw)

    sub = await gateway.subscriber("mem.flush", credit=1000)
    pub = Publisher(await gateway.sender("mem.other"))
    loop.create_task = counting  # type: ignore[method-assign]
    try:
        for n in range(20):
            await pub.publish("mem.flush", {"n": n})
            assert (await sub.expect("transfer"))["body"] == {"n": n}
    finally:
        loop.create_task = create_task  # type: ignore[method-assign]
    assert "Peer._write_loop" not in started, started
    await sub.close()
    await pub.client.close()
