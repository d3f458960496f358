"""What a webhook receiver can make wsq hold (wsq.webhooks.requests.post_signed, over real
sockets): an answer drip-fed a byte at a time ends at ``timeout_ms`` (the request's whole time,
as docs/webhooks.md says), a redirect is not followed, a huge body is never read.

Before: httpx's timeout bounds each read, not the request, so a receiver that sent a byte of
its answer's head every 0.2 s held the attempt (and one of the tenant's ``max_webhook_requests``
slots) until it chose to finish: ``ok`` after 4 s with ``timeout_ms = 600``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from wsq.webhooks.requests import OK, STATUS, TIMEOUT, post_signed

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"


async def _read_request(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            await reader.readexactly(int(line.split(b":")[1]))


@contextlib.asynccontextmanager
async def _serve(handler: Handler) -> AsyncIterator[str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/hook"
    finally:
        server.close()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(follow_redirects=False) as client:
        yield client


async def _post(http: httpx.AsyncClient, url: str, timeout_ms: int = 600) -> str:
    return await post_signed(http, url, "msg_1", b'{"type":"t"}', (b"k" * 32,), timeout_ms)


async def test_an_answer_drip_fed_ends_at_the_timeout(http: httpx.AsyncClient) -> None:
    sent: list[int] = []

    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        try:
            for byte in HEAD:  # 40 bytes, one every 0.2 s: 8 s, each read well within 0.6 s
                writer.write(bytes((byte,)))
                await writer.drain()
                sent.append(byte)
                await asyncio.sleep(0.2)
        except ConnectionError:
            pass
        finally:
            writer.close()

    async with _serve(drip) as url:
        assert await _post(http, url) == TIMEOUT
        assert len(sent) < len(HEAD)  # given up before the receiver finished its head


async def test_a_redirect_is_not_followed(http: httpx.AsyncClient) -> None:
    reached: list[bytes] = []

    async def elsewhere(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        reached.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(HEAD)
        writer.close()

    async with _serve(elsewhere) as target:

        async def redirect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await _read_request(reader)
            head = f"HTTP/1.1 307 Temporary Redirect\r\nlocation: {target}\r\ncontent-length: 0"
            writer.write(head.encode() + b"\r\n\r\n")
            writer.close()

        async with _serve(redirect) as url:
            assert await _post(http, url) == STATUS
        assert reached == []


async def test_a_huge_answer_body_is_not_read(http: httpx.AsyncClient) -> None:
    async def huge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000000000\r\n\r\n")
        try:
            while True:  # until wsq hangs up
                writer.write(b"x" * 65536)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async with _serve(huge) as url:
        assert await _post(http, url, timeout_ms=5000) == OK
