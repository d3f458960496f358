"""A client that stops reading cannot take our close either: the gateway drops its socket
rather than keeping it (and the peer's task) forever."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time

import pytest
from wsq_harness import Gateway


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
    finally:
        sock.close()
