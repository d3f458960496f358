"""wsq's WebSocket protocol before authentication, on a stand-in transport: every byte received
counted against the admission's budgets (``max_pending_bytes``, ``max_pending_bytes_per_ip``), a
socket past them closed with ``wsq:resource-limit-exceeded`` and nothing of it parsed, and no
reading ahead of the gateway until the ``open`` is verified. The same against a real
``wsq serve``: tests/integration/test_before_auth_bytes.py. And, with permessage-deflate, a read
of compressed frames inflated a message at a time, before and after the ``open``
(tests/integration/test_ws_compression.py)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
import zlib
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from wsq.admission import MAX_PENDING_BYTES_PER_IP, Admission, Ticket
from wsq.config import ServerConfig
from wsq.ws_protocol import WebSocketProtocol, uvicorn_options

SERVER = replace(ServerConfig(), max_frame_bytes=4096, max_pending_bytes=100_000)
#: The source's share: room for the upgrade request and a little more than one message.
PER_IP = 6000


class Transport(asyncio.Transport):
    """What the protocol writes, and whether it reads."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.reading = True
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("192.0.2.7", 50000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def get_protocol(self) -> Any:
        return None


class Socket:
    """One protocol and its ASGI app, which accepts and then takes messages when asked
    (``take``), as the gateway's reader does."""

    def __init__(self, admission: Admission, server: ServerConfig = SERVER) -> None:
        self.received: asyncio.Queue[Any] = asyncio.Queue()
        self.wanted = asyncio.Semaphore(0)
        options = {k: v for k, v in uvicorn_options(server).items() if k != "ws"}
        config = Config(
            app=self.app, interface="asgi3", lifespan="off", log_level="warning", **options
        )
        config.load()
        self.protocol = WebSocketProtocol(config=config, server_state=ServerState(), app_state={})
        self.transport = Transport()
        self.protocol.connection_made(self.transport)
        ticket = admission.admit("192.0.2.7")
        assert ticket is not None
        self.ticket: Ticket = ticket
        self.protocol.ticket = ticket

    async def app(self, scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept", "subprotocol": "wsq.v1"})
        while True:
            await self.wanted.acquire()
            message = await receive()
            await self.received.put(message)
            if message["type"] == "websocket.disconnect":
                return

    async def take(self) -> Any:
        self.wanted.release()
        return await asyncio.wait_for(self.received.get(), 1)

    async def end(self) -> None:
        """The socket lost, and the app's task ended (a fixture's teardown)."""
        if not self.protocol.disconnected:
            self.protocol.connection_lost(None)
        while self.protocol.tasks:  # the app takes its disconnect and ends
            self.wanted.release()
            await asyncio.sleep(0)

    async def upgrade(self, extensions: str = "") -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        self.protocol.data_received(
            (
                "GET /ws HTTP/1.1\r\nHost: gateway\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"Sec-WebSocket-Protocol: wsq.v1\r\n{extensions}\r\n"
            ).encode()
        )
        for _ in range(10):
            await asyncio.sleep(0)
        assert self.transport.written.startswith(b"HTTP/1.1 101"), self.transport.written
        self.transport.written = b""


def frame(text: str, *, deflate: bool = False) -> bytes:
    """A client's text frame (masked with a zero key: the payload as it is), its payload
    compressed as permessage-deflate has it when ``deflate``."""
    payload = text.encode()
    head = 0x81
    if deflate:
        compressor = zlib.compressobj(wbits=-15)
        payload = (compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
        head |= 0x40  # RSV1: compressed
    assert len(payload) < 65536
    return struct.pack("!BBH", head, 0x80 | 126, len(payload)) + b"\0\0\0\0" + payload


def first_text(written: bytes) -> str:
    """The text of the first frame the server wrote (unmasked, under 64 KiB; inflated when
    compressed)."""
    compressed, length, start = written[0] & 0x40, written[1], 2
    if length == 126:
        (length,), start = struct.unpack("!H", written[2:4]), 4
    payload = written[start : start + length]
    if compressed:
        payload = zlib.decompressobj(wbits=-15).decompress(payload + b"\0\0\xff\xff")
    return payload.decode()


def refused(written: bytes) -> bool:
    """The server wrote a wsq close with wsq:resource-limit-exceeded, then the WebSocket
    close 1008."""
    error = json.loads(first_text(written)).get("error") or {}
    return error.get("condition") == "wsq:resource-limit-exceeded" and written.endswith(
        b"\x88\x02\x03\xf0"
    )


@pytest.fixture
def admission() -> Admission:
    return Admission(replace(SERVER, max_pending_bytes_per_ip=PER_IP))


@pytest.fixture
async def socket(admission: Admission) -> AsyncIterator[Socket]:
    sock = Socket(admission)
    await sock.upgrade()
    yield sock
    await sock.end()


async def test_bytes_before_the_open_are_counted_and_released_once_it_is_verified(
    admission: Admission, socket: Socket
) -> None:
    head = socket.ticket.held
    assert head > 100  # the upgrade request: bytes of this connection too
    message = frame(json.dumps({"op": "open", "token": "t" * 1000}))
    socket.protocol.data_received(message)
    assert socket.ticket.held == admission.pending_bytes == head + len(message)
    assert (await socket.take())["text"].startswith('{"op": "open"')
    socket.ticket.authenticated()
    assert (admission.pending_bytes, dict(admission.pending_bytes_by_ip)) == (0, {})
    socket.protocol.data_received(frame("x" * 4000) * 2)  # past the share: no longer counted
    assert not socket.transport.closing and admission.pending_bytes == 0


async def test_a_socket_past_its_sources_share_is_closed_and_nothing_of_it_parsed(
    admission: Admission, socket: Socket
) -> None:
    first = frame("[" + " " * 3000 + "]")
    socket.protocol.data_received(first)
    socket.protocol.data_received(frame("[" + " " * 3000 + "]"))  # 6000 bytes: past the share
    assert refused(socket.transport.written)
    assert socket.transport.closing
    assert admission.refused == {MAX_PENDING_BYTES_PER_IP: 1}
    socket.protocol.data_received(b"more")  # nothing read after the refusal
    assert (await socket.take())["text"] == "[" + " " * 3000 + "]"  # the first, which fit
    socket.protocol.connection_lost(None)
    assert (await socket.take())["type"] == "websocket.disconnect"
    assert (admission.pending_bytes, dict(admission.pending_bytes_by_ip)) == (0, {})


async def test_while_the_open_is_verified_pipelined_messages_wait_in_the_kernel(
    socket: Socket,
) -> None:
    """uvicorn reads on as soon as the app takes a message; before authentication, not until
    the gateway asks for the next one (it asks once the open is verified)."""
    socket.protocol.data_received(frame('{"op": "open", "token": "t"}'))
    assert not socket.transport.reading  # uvicorn's: one message waits for the app
    await socket.take()
    assert not socket.transport.reading  # the open is being verified: read nothing more
    socket.ticket.authenticated()
    socket.wanted.release()  # the gateway asks for the next message
    await asyncio.sleep(0)
    assert socket.transport.reading
    socket.protocol.data_received(frame("[]"))
    assert (await asyncio.wait_for(socket.received.get(), 1))["text"] == "[]"
    socket.protocol.data_received(frame("[1]"))
    await socket.take()
    assert socket.transport.reading  # authenticated: uvicorn's read-ahead of one message


async def test_with_compression_a_message_counts_what_it_inflates_to(admission: Admission) -> None:
    """Two frames of ~20 bytes each that inflate to 3,000: past the source's 6,000 once counted
    as inflated (on the wire, with the upgrade, they are ~300 bytes)."""
    sock = Socket(admission, replace(SERVER, ws_compression="deflate"))
    await sock.upgrade("Sec-WebSocket-Extensions: permessage-deflate\r\n")
    try:
        bomb = frame("[" + " " * 2998 + "]", deflate=True)
        assert len(bomb) < 40
        sock.protocol.data_received(bomb)
        assert (await sock.take())["text"] == "[" + " " * 2998 + "]"
        sock.protocol.data_received(bomb)
        assert refused(sock.transport.written)
        assert sock.transport.closing
        assert admission.refused == {MAX_PENDING_BYTES_PER_IP: 1}
    finally:
        sock.protocol.connection_lost(None)
        while sock.protocol.tasks:
            sock.wanted.release()
            await asyncio.sleep(0)


async def test_before_the_open_a_read_of_compressed_messages_is_counted_as_each_is_inflated(
    admission: Admission,
) -> None:
    """One read of ten ~30-byte frames that inflate to 3,000 bytes each (30,000: five times the
    source's share): the first is inflated, counted and given to the gateway; the next only
    when the gateway asks for it, and that one is past the share: refused, the rest never
    inflated. Before, the read was inflated whole, then refused with nothing delivered."""
    sock = Socket(admission, replace(SERVER, ws_compression="deflate"))
    await sock.upgrade("Sec-WebSocket-Extensions: permessage-deflate\r\n")
    try:
        head = sock.ticket.held
        texts = [f"[{n}" + " " * 2997 + "]" for n in range(10)]
        read = b"".join(frame(text, deflate=True) for text in texts)
        sock.protocol.data_received(read)
        assert sock.ticket.held == head + len(read) + 3000  # one message inflated
        assert (await sock.take())["text"] == texts[0]
        assert not sock.transport.closing
        sock.wanted.release()  # the gateway asks for the next message: 3,000 more
        await asyncio.sleep(0)
        assert refused(sock.transport.written)
        assert admission.refused == {MAX_PENDING_BYTES_PER_IP: 1}
    finally:
        sock.protocol.connection_lost(None)
        while sock.protocol.tasks:
            sock.wanted.release()
            await asyncio.sleep(0)


async def test_one_read_of_many_compressed_messages_is_inflated_a_message_at_a_time(
    admission: Admission,
) -> None:
    """An authenticated socket's one read of 200 frames of ~30 bytes, each inflating to just
    under max_frame_bytes (4,096): websockets is let parse the next frame only once the gateway
    has taken the previous message, so one message at most waits for it, the rest of the read
    waits raw (and the transport reads nothing more); every message still comes, in order.
    Before, the read was inflated whole: 200 messages, 50 x max_frame_bytes, queued at once."""
    sock = Socket(admission, replace(SERVER, ws_compression="deflate"))
    await sock.upgrade("Sec-WebSocket-Extensions: permessage-deflate\r\n")
    sock.ticket.authenticated()
    try:
        texts = [f"[{n}" + " " * 4000 + "]" for n in range(200)]
        read = b"".join(frame(text, deflate=True) for text in texts)
        assert len(read) < 200 * 40
        sock.protocol.data_received(read)
        assert len(sock.protocol.queue._items) == 1
        assert not sock.transport.reading
        for n, text in enumerate(texts):
            assert (await sock.take())["text"] == text
            assert len(sock.protocol.queue._items) == (1 if n < 199 else 0)
        assert sock.transport.reading  # all of it taken: reading on
    finally:
        sock.protocol.connection_lost(None)
        while sock.protocol.tasks:
            sock.wanted.release()
            await asyncio.sleep(0)


async def test_bytes_held_when_the_gateway_closes_are_dropped_and_the_clients_close_is_read(
    admission: Admission,
) -> None:
    """The gateway closes while the rest of a read waits unparsed: those messages are dropped
    (as uvicorn drops any after a close), and the client's close among them ends the socket
    at once rather than after close_timeout."""
    sock = Socket(admission, replace(SERVER, ws_compression="deflate"))
    await sock.upgrade("Sec-WebSocket-Extensions: permessage-deflate\r\n")
    sock.ticket.authenticated()
    try:
        bombs = b"".join(frame(f"[{n}" + " " * 4000 + "]", deflate=True) for n in range(5))
        sock.protocol.data_received(bombs + b"\x88\x82\0\0\0\0\x03\xe8")  # close 1000
        assert sock.protocol.held and len(sock.protocol.queue._items) == 1
        await sock.protocol.send({"type": "websocket.close", "code": 1000})
        assert not sock.protocol.held and not sock.protocol.conn.reader.buffer
        assert sock.transport.closing
        assert (await sock.take())["text"].startswith("[0 ")  # taken before: still there
    finally:
        sock.protocol.connection_lost(None)
        while sock.protocol.tasks:
            sock.wanted.release()
            await asyncio.sleep(0)
