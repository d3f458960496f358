"""uvicorn's h11 HTTP protocol with a deadline and bounds before authentication.

uvicorn arms no timer on a new connection, and its keep-alive timer is cancelled by any byte
received: a bare TCP connection, a request head that never ends, one drip-fed a byte at a time
and a body that stalls each hold a socket (and its file descriptor) for ever. Here:

- **A deadline** (``[server] handshake_timeout_ms``) from the connection, and again from each
  response, to the end of the next request (head and body), or for a WebSocket upgrade to its
  accept. Missed, the connection is closed. The ``open`` timeout takes over after the accept.
- **Admission** (``wsq.admission``): asked at accept time, before anything is parsed, and at
  each request head; a refusal is a static 503 and a close (a WebSocket upgrade is refused
  before it is accepted).

``wsq serve`` runs uvicorn with it (``http=HTTP_PROTOCOL``). It finds the process's
``Admission`` in the lifespan state (``STATE_KEY``); without one (an application other than
wsq's) it is uvicorn's protocol unchanged.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from h11._connection import DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
from uvicorn.protocols.http.h11_impl import H11Protocol

from wsq.admission import SCOPE_KEY, STATE_KEY, Admission, Ticket

#: What uvicorn's ``http`` setting takes to use this protocol.
HTTP_PROTOCOL = "wsq.http_protocol:HTTPProtocol"

#: The request that opens an HTTP stream (wsq.stream): pending until its ``open`` is verified.
STREAM_OPEN = ("POST", "/v1/stream")

_BUSY = b"busy: too many connections before authentication, try again later\n"
#: Written to a connection refused at accept time: nothing of it has been read yet.
REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"retry-after: 1\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(_BUSY), _BUSY)
)


class _Connection(h11.Connection):
    """h11's connection, telling the protocol of each request head and each request's end
    before uvicorn acts on them."""

    protocol: HTTPProtocol

    def next_event(self) -> Any:
        event = super().next_event()
        if isinstance(event, h11.Request):
            if not self.protocol.on_request_head(event):
                return h11.NEED_DATA  # answered 503 and closing: uvicorn stops here
        elif isinstance(event, h11.EndOfMessage):
            self.protocol.on_request_end()
        return event


class HTTPProtocol(H11Protocol):
    """uvicorn's ``h11`` protocol with the deadline and admission of the module."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.admission: Admission | None = self.app_state.get(STATE_KEY)
        self.ticket: Ticket | None = None
        self.deadline: asyncio.TimerHandle | None = None
        self.upgrading = False
        # The request in is one that opens an HTTP stream.
        self.opening_stream = False
        if self.admission is not None:
            size = self.config.h11_max_incomplete_event_size
            conn = _Connection(h11.SERVER, size or DEFAULT_MAX_INCOMPLETE_EVENT_SIZE)
            conn.protocol = self
            self.conn = conn

    # -- the connection ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        admission = self.admission
        if admission is None:
            super().connection_made(transport)  # type: ignore[arg-type]
            return
        peer = transport.get_extra_info("peername")
        ip = peer[0] if isinstance(peer, tuple) and peer else None
        ticket = admission.admit(ip)
        if ticket is None:
            # Refused before anything is read: a static answer, the socket closed.
            transport.write(REFUSED)  # type: ignore[attr-defined]
            transport.close()
            return
        self.ticket = ticket
        super().connection_made(transport)  # type: ignore[arg-type]
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.admission is not None and self.ticket is None:
            return  # refused at accept time: uvicorn never knew of it
        self._disarm()
        if self.ticket is not None and not self.upgrading:
            self.ticket.closed()
        super().connection_lost(exc)

    # -- the deadline --------------------------------------------------------------------------

    def _arm(self) -> None:
        self._disarm()
        assert self.admission is not None
        self.deadline = self.loop.call_later(
            self.admission.handshake_timeout_s, self._deadline_passed
        )

    def _disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _deadline_passed(self) -> None:
        self.deadline = None
        transport = self.transport
        if transport.is_closing():
            return
        if transport.get_write_buffer_size() and not self.upgrading:
            # Still sending our answer: a client that does not read is not this deadline's.
            self._arm()
            return
        assert self.admission is not None
        self.admission.deadline_passed()
        transport.abort()

    # -- requests ------------------------------------------------------------------------------

    def on_request_head(self, event: h11.Request) -> bool:
        """Admission's word on a request head; a refusal is answered here (503, close)."""
        assert self.ticket is not None
        upgrade = False
        forwarded: list[str] = []
        connection = b""
        upgrade_to = b""
        for name, value in event.headers:
            if name == b"x-forwarded-for":
                forwarded.append(value.decode("latin-1"))
            elif name == b"connection":
                connection = value.lower()
            elif name == b"upgrade":
                upgrade_to = value.lower()
        upgrade = upgrade_to == b"websocket" and b"upgrade" in connection
        path = event.target.partition(b"?")[0].decode("latin-1")
        self.opening_stream = (event.method.decode("latin-1"), path) == STREAM_OPEN
        if self.ticket.on_request(
            event.method.decode("latin-1"),
            path,
            upgrade,
            ", ".join(forwarded) if forwarded else None,
        ):
            return True
        self._disarm()
        self.send_503_response()
        return False

    def on_request_end(self) -> None:
        """A request's body is in (a WebSocket upgrade's is the accept: see ws_protocol)."""
        if self.upgrading or self.ticket is None:
            return
        self._disarm()
        if self.opening_stream and self.scope is not None:
            # Like a WebSocket, an HTTP stream stays pending until its open is verified: the
            # gateway's peer finds the ticket in the scope and calls authenticated().
            self.scope[SCOPE_KEY] = self.ticket  # type: ignore[literal-required]
            return
        self.ticket.request_done()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # A stream's opening body holds its open: its bytes are a WebSocket's first message,
        # counted against max_pending_bytes(_per_ip) until the open is verified (Ticket.hold),
        # the read that carried its head included. Uncounted, 256 stalled 1 MB bodies from 8
        # sources held 247 MiB. (The bridge checks its token before it reads a body.)
        ticket = self.ticket
        if not (self.opening_stream and ticket is not None and ticket.pending):
            return
        if not ticket.hold(len(data)) and not self.transport.is_closing():
            self._disarm()
            if self.cycle is None or not self.cycle.response_started:
                self.transport.write(REFUSED)
            self.transport.close()

    def send_503_response(self) -> None:
        self.transport.write(REFUSED)
        self.transport.close()

    def on_response_complete(self) -> None:
        # Before uvicorn's own: it may go straight on to a pipelined request, which disarms.
        if self.ticket is not None and not self.transport.is_closing():
            self._arm()
        super().on_response_complete()

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        # The WebSocket protocol takes the socket's ticket and deadline over in its
        # connection_made (wsq.ws_protocol): it ends the deadline at the accept and closes the
        # ticket when the socket closes.
        self.upgrading = self.ticket is not None
        super().handle_websocket_upgrade(event)
