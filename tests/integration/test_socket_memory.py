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


def _awaiting_frames(coro: Any) -> list[Any]:
    """The frames of a coroutine and of every coroutine it awaits, outermost first."""
    frames = []
    while coro is not None and getattr(coro, "cr_frame", None) is not None:
        frames.append(coro.cr_frame)
        coro = coro.cr_await
    return frames


async def test_a_socket_waiting_for_its_next_message_holds_none_of_the_last(
    gateway: Gateway,
) -> None:
    """Most of a socket's life is a wait for its client's next message (its heartbeats are
    taken without the socket's task: wsq.ws_protocol); the last message it read (an attach, a
    publish of up to max_frame_bytes) is not held through that wait."""
    client = await gateway.client()
    marker = f"wsq-test-{secrets.token_hex(4)}"
    await client.send({"op": "begin", "ch": 1, "note": marker + "x" * 2000})
    assert (await client.expect("begin"))["ch"] == 1
    for _ in range(3):
        # taken by the WebSocket protocol as an idle client's are: each alone in its read
        await client.send_raw("[]")
        await asyncio.sleep(0.05)
    frames = [f for task in asyncio.all_tasks() for f in _awaiting_frames(task.get_coro())]
    # The walk reaches the sockets' read loops as they wait (else it could find nothing held
    # because it looked nowhere).
    assert any(f.f_code.co_name == "_read_loop" for f in frames)
    held = [
        (frame.f_code.co_name, name)
        for frame in frames
        for name, value in frame.f_locals.items()
        if isinstance(value, dict)
        and value.get("type") == "websocket.receive"
        and marker in str(value.get("text"))
    ]
    assert held == []
