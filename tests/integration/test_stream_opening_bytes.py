"""The opening body of an HTTP stream (``POST /v1/stream``) is a WebSocket's first message: its
bytes count against ``max_pending_bytes`` and ``max_pending_bytes_per_ip`` until the ``open`` is
verified (docs/security.md, "Before authentication"), against a real ``wsq serve``.

Before: they were bounded only per request (``max_frame_bytes``) and in number
(``max_pending_per_ip``): 64 sockets from 8 sources, each sending 990 KB of a 1 MB opening body
and stalling, were all held, the process's RSS +62 MiB (at the defaults that scales to 2 GiB).
The bridge is not concerned: it refuses a request without a token before reading its body.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import textwrap
from collections.abc import Iterator

import httpx
import pytest
from http_stream import http_stream, open_frame
from wsq_harness import SECRET_ACME, Served, serve_config
from wsq_harness import tenants as harness_tenants

from wsq.auth import mint_token

MIB = 1024 * 1024
TOTAL = 8 * MIB
PER_IP = 3 * MIB
SOURCES = 8
PER_SOURCE = 8
SENT = 990_000
#: The budget (8 MiB) and what 64 sockets and their buffers cost beside it.
RSS_BOUND_KIB = 24 * 1024
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    config = tmp_path_factory.mktemp("stream-opening-bytes") / "wsq.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [server]
            max_pending_bytes = {TOTAL}
            max_pending_bytes_per_ip = {PER_IP}
            handshake_timeout_ms = 30000
            [tenants.acme]
            keys = [{{ kid = "k1", alg = "HS256", secret = "{SECRET_ACME}" }}]
            """
        )
    )
    with serve_config(config, env=MALLOC_ENV) as server:
        yield server


async def stalled_body(port: int, source: str) -> socket.socket:
    """A socket from ``source`` that sent 990 KB of a 1 MB opening body and stops."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.bind((source, 0))
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    head = (
        "POST /v1/stream HTTP/1.1\r\nhost: wsq\r\ncontent-type: application/json\r\n"
        "content-length: 1000000\r\n\r\n"
    )
    with contextlib.suppress(OSError):  # refused while sending
        await loop.sock_sendall(sock, head.encode() + b"[" + b" " * (SENT - 1))
    return sock


def still_open(sock: socket.socket) -> bool:
    """Nothing answered and not closed: held (an answer is the 503 of a refusal)."""
    try:
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    except OSError:
        pass
    return False


async def test_stalled_opening_bodies_are_bounded_by_bytes(served: Served) -> None:
    before = served.rss_kib()
    sockets = []
    try:
        for source in range(3, 3 + SOURCES):
            for _ in range(PER_SOURCE):
                sockets.append(await stalled_body(served.port, f"127.0.0.{source}"))
        await asyncio.sleep(1.0)  # all of it read
        held = sum(still_open(s) for s in sockets)
        grown = served.rss_kib() - before
        print(f"\n{len(sockets)} stalled opening bodies of {SENT} bytes: {held} held, +{grown} KiB")
        assert held <= TOTAL // SENT + SOURCES  # the budget's worth, and a read each at most
        assert grown < RSS_BOUND_KIB
        async with httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        ) as other:
            assert (await other.get(served.url + "/healthz")).status_code == 200
    finally:
        for s in sockets:
            s.close()


async def test_a_large_opening_body_is_served_and_let_go_once_open(served: Served) -> None:
    # An open and a 600 KB transfer in one opening body, five times over from one source: each
    # fits, and its bytes are let go when its open is verified (3 MiB would not hold five).
    token = mint_token(harness_tenants()["acme"], "dave", publish=[">"], subscribe=[">"])
    for _ in range(5):
        first = [
            open_frame(token),
            {"op": "begin", "ch": 1},
            {"op": "attach", "ch": 1, "handle": 1, "role": "sender", "address": "big.one"},
            {"op": "transfer", "ch": 1, "handle": 1, "delivery": 0, "body": "x" * 600_000},
        ]
        async with http_stream(served.url, first) as stream:
            assert (await stream.until("open"))["sub"] == "dave"
            assert (await stream.until("disposition"))["outcome"] == "accepted"
