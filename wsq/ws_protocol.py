"""uvicorn's sans-I/O WebSocket protocol, trimmed for many idle sockets.

uvicorn keeps per socket an ``asyncio.Queue`` of received messages (three deques and an
``asyncio.Event`` with a fourth), an ``asyncio.Event`` for write flow control (a fifth), and the
handshake's request and response with their headers, for the socket's whole life: about 9 KiB
of a wsq connection's ~25. This subclass swaps the queue and the event for small equivalents
with the interface uvicorn uses (one reader: the gateway's peer), and lets go of the handshake
once it is answered. ``wsq serve`` and the test harness run uvicorn with it
(``ws=WS_PROTOCOL``); the integration tests exercise it end to end.

Before its ``open`` is verified a socket is pending (``wsq.admission``), and so is every byte it
sends: each read is counted (``Ticket.hold``) before websockets parses it, against
``max_pending_bytes`` and ``max_pending_bytes_per_ip``, and a socket whose bytes do not fit is
closed at once (``wsq:resource-limit-exceeded``, close 1008) with nothing parsed. While pending,
a socket is not read ahead of the gateway: once a message is in, reading waits until the gateway
asks for the next one (uvicorn reads on as soon as it takes a message), so frames pipelined behind
``open`` wait in the kernel while the token is verified.

What one read may make a socket hold is bounded too: websockets parses (and, with
permessage-deflate, inflates) every frame it is given at once, so a read of 256 KiB full of ~1 KB
compressed frames made it hold ~250 messages of up to ``max_frame_bytes`` each. Here its parser
starts one frame at a time (``_Reader``), and the next only while no message waits for the
gateway: a socket holds at most one received message the gateway has not taken, and the rest of
the read, raw, in websockets' buffer (the transport reads nothing more meanwhile).

Most of what an idle socket reads is its client's heartbeat, ``[]`` alone in its read: that is
handed to the gateway's ``on_heartbeat`` as it is read (no parser, no message, no wake-up of the
socket's task), when the parser waits between frames and the gateway takes it (an open wsq.v1
connection); anything else, or a heartbeat it does not take, is read as ever.
"""

from __future__ import annotations

import asyncio
import struct
import sys
import time
from collections.abc import Callable, Generator
from typing import Any, cast

if sys.platform != "win32":
    import fcntl
    import termios

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState, PayloadTooBig
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.streams import StreamReader

from wsq.admission import SCOPE_KEY, STATE_KEY, Ticket
from wsq.config import ServerConfig
from wsq.core import codec
from wsq.core.errors import FrameTooLarge, ResourceLimitExceeded, WsqError
from wsq.core.fifo import Fifo
from wsq.http_protocol import REFUSED, HTTPProtocol

#: What uvicorn's ``ws`` setting takes to use this protocol.
WS_PROTOCOL = "wsq.ws_protocol:WebSocketProtocol"
#: How long our close may wait for a client that stopped reading before the socket is dropped.
CLOSE_WRITE_TIMEOUT_S = 2.0
#: The ioctl that answers the bytes in a TCP socket's send queue (Linux's SIOCOUTQ); None where
#: there is none (the transport's own buffer is what we see there).
_SIOCOUTQ: int | None = getattr(termios, "TIOCOUTQ", None) if sys.platform == "linux" else None


_DATA_OPCODES = (Opcode.TEXT, Opcode.BINARY, Opcode.CONT)

#: permessage-deflate as uvicorn answers it (4 KiB windows both ways, ``memLevel`` 5, context
#: kept), compressing at zlib's level 1 instead of its default 6: the profile of a compressed
#: fan-out put 45 % of the server's CPU in zlib, and level 1 halves that on wsq.v1 batches for
#: ~13 % more bytes (docs/performance.md, "Browser-real rows"). Any inflater reads either.
DEFLATE = ServerPerMessageDeflateFactory(
    server_max_window_bits=12,
    client_max_window_bits=12,
    compress_settings={"memLevel": 5, "level": 1},
)


_HEAD16 = struct.Struct("!BBH")
_HEAD64 = struct.Struct("!BBQ")


def text_frame_head(size: int) -> bytes:
    """The head of a server's (unmasked) final text frame of ``size`` bytes (RFC 6455 5.2):
    what websockets' ``Frame.serialize`` writes before the data."""
    if size < 126:
        return bytes((0x81, size))
    if size < 65536:
        return _HEAD16.pack(0x81, 126, size)
    return _HEAD64.pack(0x81, 127, size)


def is_heartbeat_frame(data: bytes) -> bool:
    """Whether ``data`` is exactly one client's (masked) final text frame holding ``[]``, the
    wsq.v1 heartbeat (RFC 6455 5.2: FIN and opcode 1, the mask bit and length 2, the mask,
    then the two bytes masked by its first two)."""
    return (
        len(data) == 8
        and data[0] == 0x81
        and data[1] == 0x82
        and data[6] ^ data[2] == 0x5B  # "["
        and data[7] ^ data[3] == 0x5D  # "]"
    )


def uvicorn_options(server: ServerConfig) -> dict[str, Any]:
    """What uvicorn's WebSocket side is given (``wsq serve``, the tests' gateways).

    - ``ws_max_size``: ``max_frame_bytes``. websockets refuses a message past it while reading
      it, and a compressed one while inflating it (zlib is never asked for more than the
      limit), so no client makes the process hold more than ``max_frame_bytes`` of one
      message, whatever it sent on the wire; ``WebSocketProtocol`` answers the refusal as the
      gateway answers any message past the limit (``wsq:frame-too-large``, close 1009).
    - ``ws_per_message_deflate``: ``[server] ws_compression``. Accepted, the offer is answered
      as websockets' factory does in uvicorn: ``server_max_window_bits=12;
      client_max_window_bits=12`` (a browser offers ``client_max_window_bits``), compressed at
      zlib's level 1 (``DEFLATE``, which ``WebSocketProtocol`` puts in place of uvicorn's);
      declined, the handshake answers no ``Sec-WebSocket-Extensions``.
    - Heartbeats are wsq's own empty batches (``idle_ms``): no WebSocket pings from uvicorn.
    """
    return {
        "ws": WS_PROTOCOL,
        "ws_max_size": server.max_frame_bytes,
        "ws_per_message_deflate": server.ws_compression == "deflate",
        "ws_ping_interval": None,
        "ws_ping_timeout": None,
    }


class _Inbox:
    """Received ASGI events for the app: ``put_nowait``, ``get`` and ``empty`` of an
    ``asyncio.Queue``, for one reader at a time."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: Fifo[Any] = Fifo()
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Any:
        while not self._items:
            waiter = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                self._waiter = None
        return self._items.popleft()

    def empty(self) -> bool:
        return not self._items


class _Flag:
    """``set``, ``clear``, ``is_set`` and ``wait`` of an ``asyncio.Event``, with no deque of
    waiters while nobody waits (the common case: the transport is writable), and when it was
    last cleared (``cleared_at``, monotonic): since when the transport takes no more."""

    __slots__ = ("_value", "_waiters", "cleared_at")

    def __init__(self) -> None:
        self._value = False
        self._waiters: list[asyncio.Future[None]] | None = None
        self.cleared_at = 0.0

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        self._value = True
        waiters = self._waiters
        if waiters:
            self._waiters = None
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def clear(self) -> None:
        if self._value:
            self.cleared_at = time.monotonic()
        self._value = False

    async def wait(self) -> bool:
        while not self._value:
            waiter = asyncio.get_running_loop().create_future()
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if self._waiters is not None and waiter in self._waiters:
                    self._waiters.remove(waiter)
        return True


class _Reader(StreamReader):
    """websockets' buffer of a socket's received bytes. Where its parser waits between frames
    (``at_eof``) it starts the next only once let go (``go``), and, while ``stepwise``, that one
    frame alone: the rest of the bytes stay here, raw, until it is let go again. Stepwise until
    the handshake is answered, and after it where permessage-deflate was agreed (a frame that
    may inflate); otherwise a read is parsed whole, as websockets does."""

    def __init__(self) -> None:
        super().__init__()
        self.go = True
        self.stepwise = True
        # The parser waits here, between two frames (not inside one whose bytes come in parts).
        self.between_frames = False

    def at_eof(self) -> Generator[None, None, bool]:
        self.between_frames = True
        while True:
            if self.buffer:
                if self.go:
                    self.go = not self.stepwise
                    self.between_frames = False
                    return False
            elif self.eof:
                return True
            yield


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's ``websockets-sansio`` protocol with less memory per socket (see the module)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.config.ws_per_message_deflate:
            self.conn.available_extensions = [DEFLATE]
        # websockets logs every frame at debug level with the head and tail of its data (a
        # token's header and signature, pieces of bodies) and the handshake's headers: never.
        # The gateway logs frames itself, by op and numbers only (wsq.framelog).
        self.conn.debug = False
        # The parser, restarted on a reader that lets it take a frame at a time (_parse).
        self.conn.reader = _Reader()
        self.conn.parser = self.conn.parse()
        next(self.conn.parser)
        # Received bytes left unparsed in the reader while a message waits for the gateway.
        self.held = False
        self.queue = _Inbox()  # type: ignore[assignment]
        self.writable = _Flag()  # type: ignore[assignment]
        self.writable.set()
        # Before authentication (wsq.http_protocol): the connection's admission ticket, and the
        # deadline of its upgrade until the accept.
        self.ticket: Ticket | None = None
        self.deadline: asyncio.TimerHandle | None = None
        # Refused for its bytes before authentication: nothing more of it is parsed.
        self.refused = False
        # The gateway's answer to a client's heartbeat read alone (``data_received``): True
        # when it took it (an open wsq.v1 connection), False to have it parsed as any message.
        self.on_heartbeat: Callable[[], bool] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Upgraded by wsq.http_protocol, still the transport's protocol: take its ticket over.
        previous = transport.get_protocol()
        if isinstance(previous, HTTPProtocol) and previous.ticket is not None:
            self.ticket = previous.ticket
            self.deadline, previous.deadline = previous.deadline, None
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._end_deadline()
        if self.held:  # never to be parsed: let go of them now, not when the gateway has ended
            self.held = False
            self.conn.reader.buffer.clear()
        if self.ticket is not None:
            self.ticket.closed()
        super().connection_lost(exc)

    def _pending(self) -> bool:
        return self.ticket is not None and self.ticket.pending

    def data_received(self, data: bytes) -> None:
        if (
            len(data) == 8
            and (on_heartbeat := self.on_heartbeat) is not None
            and is_heartbeat_frame(data)
            and not self.held
            and self.conn.reader.between_frames  # type: ignore[attr-defined]
            and not self.conn.reader.buffer
            # not inside a fragmented message (``cur_size`` before websockets 15)
            and getattr(self.conn, "current_size", getattr(self.conn, "cur_size", None)) is None
            and self.conn.state is State.OPEN
            and self.queue.empty()
            and on_heartbeat()
        ):
            # A client's heartbeat, alone in its read, as most of an idle socket's reads are:
            # nothing to parse, no message for the gateway's task to wake up for.
            return
        if self.refused:
            return
        if self.ticket is not None and not self.ticket.hold(len(data)):
            self._refuse()
            return
        self.conn.reader.feed_data(data)
        if not self.held:
            self._parse()

    def _parse(self) -> None:
        """What uvicorn's ``data_received`` does once websockets has the bytes, a frame at a time
        where a frame may inflate (``_Reader``): websockets' parser is let take the next frame
        only while no message waits for the gateway (or once the gateway has closed: messages
        are dropped then). Otherwise the rest stays raw in the reader (``held``, and the
        transport paused) until the gateway takes the message (``receive``): one read of
        compressed frames no longer inflates into as many messages at once, each up to
        ``max_frame_bytes``. Without compression a read is parsed whole, as before: its messages
        hold no more than the read."""
        conn = self.conn
        reader: _Reader = conn.reader  # type: ignore[assignment]
        while True:
            reader.go = True
            next(conn.parser)
            if conn.parser_exc is not None:
                self.held = False
                self.handle_parser_exception()
                return
            if conn.handshake_exc is not None and not self.handshake_initiated:
                self.handle_handshake_exception()
                return
            if conn.events:
                self.handle_events()
            if reader.go or not reader.buffer or self.refused:
                self.held = False  # the parser waits for more bytes (or took the read whole)
                return
            if not self.queue.empty() and not self.close_sent:
                break  # a message waits for the gateway: the rest waits here
        self.held = True
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def handle_events(self) -> None:
        # With permessage-deflate what a message holds is what it inflated to, not what it took
        # on the wire: a pending socket's data frames are counted again as inflated (a client
        # that does not compress has its bytes counted twice: cautious, and small).
        if self.conn.extensions and self._pending():
            assert self.ticket is not None
            inflated = sum(
                len(event.data)
                for event in self.conn.events
                if isinstance(event, Frame) and event.opcode in _DATA_OPCODES
            )
            if inflated and not self.ticket.hold(inflated):
                self.conn.events.clear()
                self._refuse()
                return
        super().handle_events()

    def _refuse(self) -> None:
        """Past max_pending_bytes or max_pending_bytes_per_ip (counted by the ticket): closed
        now. Before the accept, the static 503 of an upgrade refused at its head; after it, the
        gateway's answer to a connection error, ``wsq:resource-limit-exceeded`` in a close and
        the WebSocket close 1008 (docs/protocol.md), written at once. Nothing more is read."""
        self.refused = True
        self.held = False
        # What websockets and uvicorn hold of the socket's message: let go of it now, not when
        # the socket's objects go (the ticket's count is released when the socket closes).
        self.conn.reader.buffer.clear()
        self.frames = []
        if not self.handshake_complete:
            self.transport.write(REFUSED)
        elif not self.close_sent and self.conn.state is State.OPEN:
            error = ResourceLimitExceeded(
                "too many bytes received before authentication; try again later"
            )
            self.conn.send_close(1008)
            self.transport.write(self._close_frame(error) + b"".join(self.conn.data_to_send()))
            self.close_sent = True
        self.transport.close()
        self.loop.call_later(CLOSE_WRITE_TIMEOUT_S, self._abort_if_open)

    def _close_frame(self, error: WsqError) -> bytes:
        """The wsq ``close`` carrying ``error``, as one WebSocket text frame."""
        close = codec.dumps({"op": "close", "error": error.to_error()}).encode()
        return Frame(Opcode.TEXT, close).serialize(mask=False, extensions=self.conn.extensions)

    async def receive(self) -> Any:
        # uvicorn stops reading once a message is queued and reads on as soon as the app takes
        # it; before authentication, only once the app asks for the next one (after the open
        # is verified, when it is in the message taken). Bytes held unparsed (_parse, only
        # while reading is paused) are parsed first.
        if self.read_paused and self.queue.empty():
            self._read_on()
        message = await self.queue.get()
        if self.read_paused and self.queue.empty() and not self._pending():
            self._read_on()
        return message

    def _read_on(self) -> None:
        """No message waits for the gateway: the next from the bytes held, else from the socket."""
        if self.held:
            self._parse()
            if self.held or not self.queue.empty():
                return
        self.read_paused = False
        self.transport.resume_reading()

    def _end_deadline(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        # Answered (conn.accept): frames are parsed a read at a time unless they may inflate.
        cast(_Reader, self.conn.reader).stepwise = bool(self.conn.extensions)
        if self.ticket is not None and self.response.status_code == 101:
            # The gateway tells the ticket of a valid open; the admission stays out of the
            # socket's copy of the lifespan state (one key less per socket).
            scope = cast(dict[str, Any], self.scope)
            scope["state"].pop(STATE_KEY, None)
            scope[SCOPE_KEY] = self.ticket

    def handle_parser_exception(self) -> None:
        exc = self.conn.parser_exc
        if isinstance(exc, PayloadTooBig) and not self.close_sent:
            # A message past ws_max_size (max_frame_bytes), refused by websockets as it read or
            # inflated it: the gateway's answer to such a message (wsq.v1 section 1), before
            # the close 1009 websockets has queued.
            error = FrameTooLarge(
                f"message larger than max_frame_bytes ({self.config.ws_max_size})"
            )
            self.conn.writes.insert(0, self._close_frame(error))
            # websockets keeps the exception (parser_exc) as long as the socket's objects live,
            # and its traceback the inflated data it refused (max_frame_bytes): let go of it.
            exc.__traceback__ = None
        super().handle_parser_exception()

    def backlog(self) -> int | None:
        """Bytes written to this socket that the client has not taken yet: the transport's
        buffer and, on Linux, the kernel's send queue (``SIOCOUTQ``: unsent and unacknowledged,
        which shrinks only as the client reads). It shrinking is how a slow client that still
        reads is told from one that reads nothing, while the kernel takes no more from us (it
        takes more only once it has room for half its buffer again, megabytes on a fast
        link). None when the socket is gone."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return None
        size = transport.get_write_buffer_size()
        sock = transport.get_extra_info("socket")
        if sock is not None and _SIOCOUTQ is not None:
            try:
                queued = fcntl.ioctl(sock.fileno(), _SIOCOUTQ, b"\0\0\0\0")
            except (OSError, ValueError):
                pass
            else:
                size += int.from_bytes(queued, sys.byteorder)
        return size

    def writable_now(self) -> bool:
        """Whether ``write_text_now`` writes: uvicorn's ``send`` of a message would not wait (the
        transport takes data) and would write it (the socket is open, no close sent)."""
        return (
            self.writable.is_set()
            and self.handshake_complete
            and not self.close_sent
            and not self.disconnected
            and self.initial_response is None
        )

    def write_now(self, pieces: list[bytes]) -> None:
        """What uvicorn's ``send`` does with a ``websocket.send`` of the text that ``pieces``
        (UTF-8) make, in order, without a coroutine: only where ``writable_now`` says so (the
        gateway's writer, wsq.gateway). Uncompressed, the text frame's head is made here and
        written with the pieces as they are (``text_frame_head``): no frame object, no copy, and
        a compact frame's shared body goes to every socket as the same bytes. With
        permessage-deflate, or while websockets has frames of its own to write first (a pong, a
        close), websockets frames it."""
        conn = self.conn
        if conn.extensions or conn.writes or conn.state is not State.OPEN:
            try:
                conn.send_text(pieces[0] if len(pieces) == 1 else b"".join(pieces))
            except InvalidState:
                raise ClientDisconnected() from None
            self.transport.write(b"".join(conn.data_to_send()))
            return
        self.transport.writelines([text_frame_head(sum(map(len, pieces))), *pieces])

    async def send(self, message: Any) -> None:
        if message["type"] == "websocket.close" and self.handshake_complete:
            await self._send_close(message)
            return
        await super().send(message)
        if message["type"] == "websocket.accept" and self.handshake_complete:
            self._end_deadline()  # the open timeout (wsq.gateway) takes over
            # Read only while answering the handshake; headers and all, ~5 KiB per socket.
            # websockets' parser keeps the request as long as the socket lives (a local of its
            # generator, ServerProtocol.parse): its headers are emptied for it (~2 KiB).
            self.request.headers.clear()
            self.request = None  # type: ignore[assignment]
            # The scope's copy too (~1 KiB): the gateway reads the headers before it accepts
            # (Origin, and X-Forwarded-For in uvicorn's proxy middleware), never after; so the
            # socket's copy of the lifespan state and the extensions (wsq.drain reads them
            # before the accept), three dicts a socket.
            scope = cast(dict[str, Any], self.scope)
            scope["headers"].clear()
            scope.pop("state", None)
            scope.pop("extensions", None)
            self.response = None  # type: ignore[assignment]

    async def _send_close(self, message: Any) -> None:
        """uvicorn waits without end to write a close to a client that stopped reading (the
        transport stays paused), and once written closes the transport gently, which waits
        without end to flush it: either way the socket, and the app's task, live forever.
        Here the close waits a bounded time to be written, and the socket is dropped if the
        client has not let it go ``close_timeout`` later."""
        if not self.writable.is_set() and not self.disconnected:
            # Counted from when the transport stopped taking data: a client that has read
            # nothing for the gateway's idle already (a stalled socket) is dropped at once.
            paused_s = time.monotonic() - cast(_Flag, self.writable).cleared_at
            try:
                async with asyncio.timeout(max(0.0, CLOSE_WRITE_TIMEOUT_S - paused_s)):
                    await self.writable.wait()
            except TimeoutError:
                self.transport.abort()  # connection_lost wakes the app's receive()
                raise ClientDisconnected() from None
        await super().send(message)
        if self.held and not self.disconnected:
            self._parse()  # dropped now (the gateway has closed), the client's close maybe too
        if not self.disconnected:
            self.loop.call_later(self.close_timeout, self._abort_if_open)

    def _abort_if_open(self) -> None:
        if not self.disconnected:
            self.transport.abort()


def backlog_of(send: Any) -> int | None:
    """What the socket behind ``send`` holds that its client has not read yet, where uvicorn
    runs it with this protocol (``WebSocketProtocol.backlog``); None elsewhere (an HTTP
    stream, a test's fake)."""
    backlog = getattr(getattr(send, "__self__", None), "backlog", None)
    result = backlog() if callable(backlog) else None
    return result if isinstance(result, int) else None
