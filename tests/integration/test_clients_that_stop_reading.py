"""A client that stops reading cannot take our close either: the gateway drops its socket
rather than keeping it (and the peer's task) forever."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import time
from typing import Any

import pytest
from wsq_harness import Client, Gateway, Publisher


async def deaf_socket(gateway: Gateway) -> socket.socket:
    """A raw WebSocket to /ws that will never read after the handshake (tiny receive buffer)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", gateway.port))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        "GET /ws HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: wsq.v1\r\n\r\n"
    )
    await loop.sock_sendall(sock, request.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += await loop.sock_recv(sock, 1)
    assert b" 101 " in head.split(b"\r\n", 1)[0]
    return sock


def text_frame(value: object) -> bytes:
    """One masked client text frame."""
    data = json.dumps(value).encode()
    mask = os.urandom(4)
    n = len(data)
    if n < 126:
        header = bytes([0x81, 0x80 | n])
    elif n < 65536:
        header = bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        header = bytes([0x81, 0x80 | 127]) + n.to_bytes(8, "big")
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))


async def wait_until_no_sockets(gateway: Gateway, within_s: float = 20.0) -> int:
    connections = gateway.server.server_state.connections
    deadline = time.monotonic() + within_s
    while connections and time.monotonic() < deadline:  # noqa: ASYNC110 (uvicorn state)
        await asyncio.sleep(0.1)
    return len(connections)


@pytest.mark.gateway(server={"outbox_max_bytes": 65536, "max_frame_bytes": 65536})
async def test_a_client_that_floods_requests_and_never_reads_is_dropped(
    gateway: Gateway,
) -> None:
    loop = asyncio.get_running_loop()
    sock = await deaf_socket(gateway)
    try:
        await loop.sock_sendall(sock, text_frame({"op": "open", "token": gateway.token()}))
        # Every begin and end is answered: answers pile up past the outbox cap.
        flood = text_frame(
            [f for ch in range(500) for f in ({"op": "begin", "ch": ch}, {"op": "end", "ch": ch})]
        )
        with pytest.raises((TimeoutError, OSError)):
            for _ in range(10_000):
                await asyncio.wait_for(loop.sock_sendall(sock, flood), 2)
        assert await wait_until_no_sockets(gateway) == 0
        app: Any = gateway.server.config.app
        assert app.state.snapshot()["closes"] == {"outbox-overflow": 1}  # wsq_closes_total
    finally:
        sock.close()


# -- a client that keeps sending heartbeats and never reads (contract section 3) --------------

#: The server's idle in the tests below, and how much later than it a drop may come: the
#: gateway looks every quarter idle, then closes (its close cannot be written either).
STALL_IDLE_MS = 2000
DROP_MARGIN_S = 2.5
STALL_SERVER = {"idle_ms": STALL_IDLE_MS, "outbox_max_bytes": 262144, "max_frame_bytes": 65536}
# Incompressible (permessage-deflate is on): 8,000 characters of base64 noise.
BODY = base64.b64encode(os.urandom(6000)).decode()


def peers_of(gateway: Gateway, sub: str) -> list[Any]:
    """The gateway's peers (server side) whose token's sub is ``sub``."""
    app: Any = gateway.server.config.app
    return [p for p in app.state.gateway.peers if p.principal and p.principal.sub == sub]


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS:")).split()[1])


async def keep_sending_heartbeats(client: Client, every_s: float = 0.25) -> None:
    """``[]`` well within half of the server's idle, until the socket is gone."""
    with contextlib.suppress(Exception):
        while True:
            await client.send_raw("[]")
            await asyncio.sleep(every_s)


async def publish_until_stalled(gateway: Gateway, publisher: Publisher, sub: str) -> float:
    """Publish 8 KB messages until the server holds output for ``sub``'s socket that it cannot
    write: its outbox past half of outbox_max_bytes (its links paused), the kernel's buffers and
    the transport's full. Answers when that was first seen."""
    deadline = time.monotonic() + 30
    high_water = STALL_SERVER["outbox_max_bytes"] // 2
    while time.monotonic() < deadline:
        await publisher.publish("stall.feed", *[BODY] * 7)  # < max_frame_bytes
        (peer,) = peers_of(gateway, sub)
        if peer.conn.out_bytes >= high_water:
            return time.monotonic()
    raise AssertionError("the outbox never filled")


@pytest.mark.gateway(server=STALL_SERVER)
async def test_a_client_that_sends_heartbeats_and_never_reads_is_dropped(
    gateway: Gateway,
) -> None:
    deaf = await gateway.client(sub="deaf", rcvbuf=4096)
    await deaf.begin(1)
    await deaf.subscribe(1, 0, "stall.feed", credit=100_000)
    heartbeats = asyncio.create_task(keep_sending_heartbeats(deaf))
    publisher = Publisher(await gateway.client(sub="publisher"))
    publisher_heartbeats = asyncio.create_task(keep_sending_heartbeats(publisher.client))
    rss_before = rss_kib()
    try:
        stalled_at = await publish_until_stalled(gateway, publisher, "deaf")
        rss_stalled = rss_kib()
        (peer,) = peers_of(gateway, "deaf")
        held = peer.conn.out_bytes
        deadline = stalled_at + STALL_IDLE_MS / 1000 + DROP_MARGIN_S
        while peers_of(gateway, "deaf") and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        dropped_after = time.monotonic() - stalled_at
        assert not peers_of(gateway, "deaf"), (
            f"still connected {dropped_after:.1f} s after its output stalled, though it sent "
            "heartbeats: a client that stops reading is dead (contract section 3)"
        )
        # Dropped, not merely told: the socket is gone (and with it what the kernel held for
        # it, ~4 MB here), so its heartbeats fail.
        await asyncio.wait_for(heartbeats, 10)
        assert len(gateway.server.server_state.connections) == 1  # the publisher's
        app: Any = gateway.server.config.app
        assert app.state.snapshot()["closes"] == {"stall": 1}  # wsq_closes_total{reason}
        # Meanwhile the gateway held a bounded outbox for it, and the process did not grow
        # while it was stalled. (From the start, RSS counts the ~4 MB of messages published,
        # which the memory broker retains, and both ends' buffers.)
        assert held <= STALL_SERVER["outbox_max_bytes"] + STALL_SERVER["max_frame_bytes"]
        rss_after = rss_kib()
        grown_mib = (rss_after - rss_before) / 1024
        stalled_mib = (rss_after - rss_stalled) / 1024
        assert grown_mib < 32, f"RSS grew {grown_mib:.1f} MiB"
        assert stalled_mib < 2, f"RSS grew {stalled_mib:.1f} MiB while the socket was stalled"
        # The publisher, a reader, is still served.
        await publisher.publish("stall.feed", "after")
        print(
            f"dropped {dropped_after:.2f} s after the stall (idle {STALL_IDLE_MS} ms); "
            f"outbox held {held} bytes; RSS +{grown_mib:.1f} MiB, "
            f"{stalled_mib:+.2f} MiB from the stall to the drop"
        )
    finally:
        heartbeats.cancel()
        publisher_heartbeats.cancel()
        deaf.ws.transport.abort()  # a close would wait behind megabytes it does not read
        await publisher.client.close()


@pytest.mark.gateway(server=STALL_SERVER)
async def test_a_slow_client_that_still_reads_is_not_dropped(gateway: Gateway) -> None:
    slow = await gateway.client(sub="slow", rcvbuf=4096)
    await slow.begin(1)
    await slow.subscribe(1, 0, "stall.feed", credit=100_000)
    heartbeats = asyncio.create_task(keep_sending_heartbeats(slow))
    publisher = Publisher(await gateway.client(sub="publisher"))
    publisher_heartbeats = asyncio.create_task(keep_sending_heartbeats(publisher.client))
    try:
        started = time.monotonic()
        await publish_until_stalled(gateway, publisher, "slow")
        # More keeps coming than it reads: it reads one WebSocket message every 0.1 s, for
        # three times the server's idle. Its output never stops moving, though the kernel
        # takes more from the gateway only once it has room for half its (~4 MB) buffer.
        messages = chars = 0
        until = time.monotonic() + 3 * STALL_IDLE_MS / 1000
        while time.monotonic() < until:
            await publisher.publish("stall.feed", *[BODY] * 7)
            text = await asyncio.wait_for(slow.ws.recv(), 5)
            assert '"op":"close"' not in text
            messages += 1
            chars += len(text)
            await asyncio.sleep(0.1)
        assert peers_of(gateway, "slow"), "a slow client that still reads was dropped"
        assert messages >= 20
        rate = chars / (time.monotonic() - started) / 1000
        print(f"the slow client read {messages} messages, {chars} chars: {rate:.0f} kB/s")
    finally:
        heartbeats.cancel()
        publisher_heartbeats.cancel()
        slow.ws.transport.abort()
        await publisher.client.close()
