"""Before authentication (issue 13; docs/security.md, "Before authentication"): a real
``wsq serve`` probed as a client with no token would probe it.

Each test reproduces one finding (a connection held for ever with no request, a flood of
upgrades from one source or from many, every connection slot taken) and shows it closed within
``handshake_timeout_ms`` or refused, while ``/healthz``, other sources and a bystander tenant's
authenticated socket are still served. Source addresses other than 127.0.0.1 are other
loopback addresses (127.0.0.2 and up: all of 127/8 is local on Linux).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import socket
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest
import websockets
from wsq_harness import SECRET_ACME, SECRET_OTHER, Client, Served, serve_config, tenants

from wsq.auth import mint_token

DEADLINE_MS = 2500
PER_IP = 20
PENDING = 60
MAX_CONNECTIONS = 80
#: wsq.admission.HEADROOM: connections kept for /healthz past max_pending and max_connections.
HEADROOM = 8
#: A trusted proxy of the gateway under test; 127.0.0.1 is not one (it is a client here).
PROXY = "127.0.0.9"
#: Partial upgrades sent from one source, as fast as the test can.
FLOOD = 2000
#: How much the gateway's RSS may grow under the flood from one source.
RSS_BOUND_KIB = 4 * 1024


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One ``wsq serve`` for the module, with small bounds (each test lets go of what it took)."""
    config = tmp_path_factory.mktemp("before-auth") / "wsq.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [server]
            open_timeout_ms = 10000
            handshake_timeout_ms = {DEADLINE_MS}
            max_pending_per_ip = {PER_IP}
            max_pending = {PENDING}
            max_connections = {MAX_CONNECTIONS}
            trusted_proxies = ["{PROXY}"]
            [tenants.acme]
            keys = [{{ kid = "k1", alg = "HS256", secret = "{SECRET_ACME}" }}]
            [tenants.other]
            keys = [{{ alg = "HS256", secret = "{SECRET_OTHER}" }}]
            """
        )
    )
    with serve_config(config) as server:
        yield server


# -- raw clients -------------------------------------------------------------------------------


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket()
    try:
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
    except OSError:
        sock.close()  # else left to the garbage collector: a ResourceWarning in a later test
        raise
    sock.setblocking(False)
    return sock


def upgrade_request(path: str = "/ws", forwarded_for: str | None = None) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    xff = f"X-Forwarded-For: {forwarded_for}\r\n" if forwarded_for else ""
    return (
        f"GET {path} HTTP/1.1\r\nHost: gateway\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Protocol: wsq.v1\r\n{xff}\r\n"
    ).encode()


def is_open(sock: socket.socket) -> bool:
    """Still open, nothing received: not closed, reset or answered (a 503 is an answer)."""
    try:
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    except OSError:
        pass
    return False


async def closed_within(sock: socket.socket, timeout: float) -> float | None:
    """Seconds until the gateway closes ``sock`` (reset or end of stream), None if it did not
    within ``timeout``; whatever it sends first is read and dropped."""
    loop = asyncio.get_running_loop()
    start = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            while await loop.sock_recv(sock, 4096):
                pass
    except TimeoutError:
        return None
    except OSError:
        pass
    return time.monotonic() - start


async def answer(sock: socket.socket, timeout: float = 3.0) -> str:
    """The status line the gateway answers on ``sock`` ("" when it closed without one)."""
    loop = asyncio.get_running_loop()
    data = b""
    with contextlib.suppress(OSError):
        async with asyncio.timeout(timeout):
            while b"\r\n" not in data:
                chunk = await loop.sock_recv(sock, 4096)
                if not chunk:
                    break
                data += chunk
    return data.split(b"\r\n", 1)[0].decode("latin-1")


def peek_503(sock: socket.socket) -> bool:
    """The gateway answered 503 on ``sock``."""
    with contextlib.suppress(OSError):
        return sock.recv(12, socket.MSG_PEEK).startswith(b"HTTP/1.1 503")
    return False


@contextlib.contextmanager
def sockets() -> Iterator[list[socket.socket]]:
    held: list[socket.socket] = []
    try:
        yield held
    finally:
        for sock in held:
            sock.close()
        time.sleep(0.2)  # the gateway sees the closes before the next test counts


# -- wsq.v1 clients ----------------------------------------------------------------------------


@dataclass
class Bystander:
    """Tenant "other", authenticated, with a receiver and a sender on one address."""

    client: Client
    deliveries: int = 0

    async def served(self, body: str) -> None:
        """A message published on the sender comes back on the receiver."""
        delivery, self.deliveries = self.deliveries, self.deliveries + 1
        await self.client.send(
            {"op": "transfer", "ch": 1, "handle": 1, "delivery": delivery, "body": body}
        )
        assert (await self.client.expect("transfer", timeout=3))["body"] == body


_bystanders = itertools.count()


@contextlib.asynccontextmanager
async def bystander(port: int, source: str = "127.0.0.2") -> AsyncIterator[Bystander]:
    token = mint_token(tenants()["other"], "bystander", publish=[">"], subscribe=[">"])
    ws = await websockets.connect(
        f"ws://127.0.0.1:{port}/ws", subprotocols=["wsq.v1"], local_addr=(source, 0)
    )
    client = Client(ws)
    address = f"news.bystander.{next(_bystanders)}"
    try:
        await client.open(token)
        await client.begin(1)
        await client.subscribe(1, 0, address, credit=100)
        await client.sender(1, 1, address)
        yield Bystander(client)
    finally:
        await client.close()


async def healthz(port: int, source: str = "127.0.0.2") -> int:
    transport = httpx.AsyncHTTPTransport(local_address=source)
    async with httpx.AsyncClient(transport=transport, timeout=3) as http:
        return (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code


# -- the deadline ------------------------------------------------------------------------------


async def test_connections_that_never_finish_their_request_are_closed_at_the_deadline(
    served: Served,
) -> None:
    """A bare TCP connection, a partial upgrade, an upgrade drip-fed faster than any idle timer
    (a byte every 0.2 s) and a POST whose body stalls: each closed at handshake_timeout_ms (2.5 s
    here), none still open a second later. Before the deadline they were all held for ever."""
    port = served.port
    token = mint_token(tenants()["acme"], "svc", publish=[">"], subscribe=[])
    post = (
        "POST /v1/addresses/orders.1/messages HTTP/1.1\r\nHost: gateway\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        'Content-Length: 200\r\n\r\n{"body": "half a bo'
    ).encode()
    with sockets() as held:
        bare = connect(port)
        partial = connect(port)
        partial.send(b"GET /ws HTTP/1.1\r\nHost: gateway\r\nUpgrade: websocket\r\n")
        drip = connect(port)
        stalled = connect(port)
        stalled.send(post)
        held += [bare, partial, drip, stalled]

        async def drip_feed() -> None:
            for byte in upgrade_request():
                with contextlib.suppress(BlockingIOError):
                    drip.send(bytes([byte]))
                await asyncio.sleep(0.2)

        feeder = asyncio.create_task(drip_feed())
        limit = DEADLINE_MS / 1000 + 1.0
        try:
            closes = await asyncio.gather(*(closed_within(s, limit) for s in held))
        finally:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await feeder
    took = dict(
        zip(
            ["bare TCP", "partial upgrade", "drip-fed upgrade", "stalled POST"], closes, strict=True
        )
    )
    print("closed after (s):", {k: v if v is None else round(v, 3) for k, v in took.items()})
    late = [what for what, after in took.items() if after is None]
    assert not late, f"still open {limit} s after connecting: {late}"
    early = [
        what
        for what, after in took.items()
        if after is not None and after < 0.9 * DEADLINE_MS / 1000
    ]
    assert not early, f"closed before the deadline: {took}"
    assert "handshake_timeout_ms" in served.log()  # counted, and said once


# -- pending, per source and in total ----------------------------------------------------------


async def test_a_flood_from_one_source_is_capped_and_everyone_else_is_still_served(
    served: Served,
) -> None:
    """2,000 partial upgrades from 127.0.0.1 as fast as it can: max_pending_per_ip (20) held,
    every other one answered 503 at once, the gateway's RSS bounded; meanwhile /healthz, a new
    socket from 127.0.0.2 and a bystander tenant's socket opened before the flood are all
    served. Before the bounds, all 2,000 were held for ever."""
    port = served.port
    async with bystander(port) as before:
        await before.served("before the flood")
        rss = [served.rss_kib()]
        with sockets() as held:
            start = time.monotonic()
            for _ in range(FLOOD):
                sock = connect(port)
                held.append(sock)
                with contextlib.suppress(OSError):
                    sock.send(b"GET /ws HTTP/1.1\r\nHost: gateway\r\n")
            flood_s = time.monotonic() - start
            assert await healthz(port) == 200
            await before.served("during the flood")
            async with bystander(port) as during:
                await during.served("a new socket during the flood")
            # Until the gateway has answered its backlog, and before the first held ones meet
            # their deadline: the 20 it holds, at most.
            still_open = len(held)
            while still_open > PER_IP and time.monotonic() - start < 0.9 * DEADLINE_MS / 1000:
                await asyncio.sleep(0.05)
                still_open = sum(is_open(s) for s in held)
            rss.append(served.rss_kib())
            answered = sum(peek_503(s) for s in held)
            drained_s = time.monotonic() - start
        growth = max(rss) - rss[0]
        print(
            f"{FLOOD} partial upgrades sent in {flood_s:.2f} s; after {drained_s:.2f} s {still_open}"
            f" held, {answered} answered 503; RSS {rss} KiB (+{growth})"
        )
        assert still_open <= PER_IP, f"{still_open} held from one source"
        assert answered >= len(held) - PER_IP
        assert growth < RSS_BOUND_KIB, f"RSS grew by {growth} KiB under the flood"
        await before.served("after the flood")
        assert "max_pending_per_ip" in served.log()


async def test_pending_sockets_are_bounded_in_total_and_healthz_keeps_its_headroom(
    served: Served,
) -> None:
    """Upgrades completed but never opened, 20 from each of 127.0.0.3-7 (100): max_pending (60)
    accepted, every further upgrade answered 503 before it is accepted; /healthz still 200, the
    bystander's authenticated socket still served, and once the flood lets go a new socket opens."""
    port = served.port
    async with bystander(port) as before:
        with sockets() as held:
            for host in range(3, 8):
                for _ in range(PER_IP):
                    sock = connect(port, f"127.0.0.{host}")
                    sock.send(upgrade_request())
                    held.append(sock)
            answers = await asyncio.gather(*(answer(s) for s in held))
            accepted = sum("101" in a for a in answers)
            refused = sum("503" in a or a == "" for a in answers)
            print(f"{len(held)} upgrades: {accepted} accepted, {refused} refused")
            assert accepted == PENDING and refused == len(held) - PENDING, answers
            assert await healthz(port) == 200
            await before.served("pending is full")
            late = connect(port, "127.0.0.2")
            held.append(late)
            late.send(upgrade_request())
            assert "503" in await answer(late)
        assert "max_pending" in served.log()
        async with bystander(port) as after:
            await after.served("the flood let go")


async def test_x_forwarded_for_counts_per_client_only_from_a_trusted_proxy(
    served: Served,
) -> None:
    """Through the trusted proxy (127.0.0.9), each client its own bound; from anyone else the
    header is not believed: 25 upgrades from 127.0.0.10, each claiming another client, are one
    source (20 accepted)."""
    port = served.port
    with sockets() as held:
        from_proxy = []
        for _ in range(PER_IP + 5):
            sock = connect(port, PROXY)
            sock.send(upgrade_request(forwarded_for="203.0.113.7"))
            from_proxy.append(sock)
        other_client = connect(port, PROXY)
        other_client.send(upgrade_request(forwarded_for="198.51.100.1, 203.0.113.8"))
        spoofed = []
        for i in range(PER_IP + 5):
            sock = connect(port, "127.0.0.10")
            sock.send(upgrade_request(forwarded_for=f"203.0.113.{100 + i}"))
            spoofed.append(sock)
        held += [*from_proxy, other_client, *spoofed]
        proxied = await asyncio.gather(*(answer(s) for s in from_proxy))
        assert sum("101" in a for a in proxied) == PER_IP, proxied
        assert sum("503" in a for a in proxied) == 5, proxied
        assert "101" in await answer(other_client)  # 203.0.113.8: another client
        direct = await asyncio.gather(*(answer(s) for s in spoofed))
        assert sum("101" in a for a in direct) == PER_IP, direct


async def test_past_max_connections_only_health_checks_are_served(served: Served) -> None:
    """max_connections (80) authenticated sockets: the next upgrade is refused (503) before it
    is accepted, /healthz still answers (it has 8 connections of its own past the bound), and
    the sockets already open are still served."""
    port = served.port
    clients: list[Client] = []
    try:
        async with bystander(port) as first:
            token = mint_token(tenants()["acme"], "many", publish=[], subscribe=[">"])
            for _ in range(MAX_CONNECTIONS - 1):
                ws = await websockets.connect(f"ws://127.0.0.1:{port}/ws", subprotocols=["wsq.v1"])
                client = Client(ws)
                clients.append(client)
                await client.open(token)
            with sockets() as held:
                late = connect(port, "127.0.0.2")
                held.append(late)
                late.send(upgrade_request())
                assert "503" in await answer(late)
                assert await healthz(port) == 200
            await first.served("at max_connections")
    finally:
        await asyncio.gather(*(c.close() for c in clients))
    assert "max_connections" in served.log()
