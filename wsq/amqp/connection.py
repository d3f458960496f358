"""The server side of one AMQP 1.0 connection over WebSocket, as a state machine that does no I/O.

It speaks to the gateway exactly as wsq.v1's ``ServerConnection`` does: bytes in with
``receive_data``, the same events out (``wsq.protocol.events``) with ``next_event``, the same
answers (``accept_open``, ``accept_attach``, ``detach``, ``settle_publish`` …), the same
``Link`` and ``Session`` objects for the hub, and deliveries pushed with ``send_transfers``.
So the gateway's auth, rights, quotas, hub and brokers serve both protocols unchanged.

The stream: the SASL header and exchange (PLAIN: the password is the tenant's JWT; ANONYMOUS:
the token follows in a put-token on ``$cbs``, ``wsq.amqp.cbs``), then the AMQP header,
``open``, and frames (docs/amqp.md). Errors go to the narrowest scope: a link error detaches
the link, a session error ends the session, a connection error closes. One answer needs the
gateway's clock: a drain (``drain_done``, after ``DRAIN_WAIT_S``).

Why this module is longer than ~600 lines: like wsq.v1's connection, it is one state machine
whose frame handlers all share the connection's sessions, links, delivery numbering and credit;
the codec, the framing, the message mapping, the terminus translation, the CBS messages and the
output queue have left it.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from wsq.amqp import cbs
from wsq.amqp import frames as F
from wsq.amqp.codec import (
    AmqpDecodeError,
    Described,
    Symbol,
    SymbolArray,
    Ubyte,
    Uint,
    Ulong,
    Ushort,
)
from wsq.amqp.codec import decode as decode_value
from wsq.amqp.messages import encoded_delivery, publish_item
from wsq.amqp.output import AmqpLink, AmqpSession, OutgoingBytes
from wsq.amqp.terminus import answer_source, receiver_attach, sender_attach
from wsq.core.errors import (
    AmqpChannelNotFound,
    AmqpDecodeFailed,
    AmqpFramingError,
    AmqpInvalidField,
    AmqpMessageSizeExceeded,
    AmqpUnattachedHandle,
    FrameTooLarge,
    InvalidFrame,
    ResourceLimitExceeded,
    TransferLimitExceeded,
    Unauthorized,
    WsqError,
)
from wsq.core.fifo import Fifo
from wsq.core.limits import MAX_IDLE_MS, MAX_TOKEN_CHARS, MAX_UINT32, MIN_IDLE_MS
from wsq.core.messages import Outcome
from wsq.protocol.connection import Limits, publish_requests, too_many_links
from wsq.protocol.events import (
    AttachRequested,
    ConnectionEnded,
    CreditGranted,
    DeliveriesSettled,
    Event,
    LinkEnded,
    OpenRequested,
    PublishItem,
    RefreshRequested,
)
from wsq.protocol.figures import Figures
from wsq.protocol.frames import Refused, configure_link
from wsq.protocol.state import (
    CONNECTION_TRANSITIONS,
    ConnectionEvent,
    ConnectionState,
    Link,
    LinkEvent,
    LinkState,
    Role,
    Session,
    SessionEvent,
    SessionState,
    next_state,
)

SUBPROTOCOL = "amqp"
# Our session windows: never the limit (credit is); a peer refreshes them from every flow.
WINDOW = 2**31 - 1
# How long the gateway lets the hub deliver on a draining link before it answers the drain
# (what is still in the broker then stays there for the next credit).
DRAIN_WAIT_S = 0.05
# SASL frames carry the token: room for the longest token wsq accepts, and the rest of the frame.
MAX_SASL_FRAME = MAX_TOKEN_CHARS + 1024
# Before its token is verified (SASL ANONYMOUS, the token to come on $cbs) a connection needs a
# session and its two $cbs links; refused links wait for their detach. Each begin or attach of
# some 40 bytes made objects of about 1 KiB, kept until the open timeout: bounded, the rest
# closes the connection.
PRE_AUTH_SESSIONS = 2
PRE_AUTH_LINKS = 8


_AUTH_CONDITIONS = frozenset({"wsq:unauthorized", "wsq:token-expired", "wsq:forbidden"})
_OUTCOMES = {
    F.ACCEPTED: Outcome.ACCEPTED,
    F.REJECTED: Outcome.REJECTED,
    F.RELEASED: Outcome.RELEASED,
}


class AmqpConnection(OutgoingBytes):
    """The server end of one AMQP connection."""

    def __init__(
        self,
        limits: Limits,
        on_output: Callable[[], None] | None = None,
        errors: Counter[str] | None = None,
        *,
        node: str = "wsq",
        idle_ms: int = 0,
        figures: Figures | None = None,
    ) -> None:
        super().__init__(on_output, figures)
        self.limits = limits
        self.errors = errors
        # Our open names them; a client that authenticates over $cbs opens before its token.
        self.node = node
        self.idle_ms = idle_ms
        # SASL ANONYMOUS: the token comes in a put-token on $cbs (wsq.amqp.cbs); the requests
        # waiting for the gateway's verdict, oldest first, and the answers waiting for credit.
        self._cbs = False
        self._cbs_waiting: list[tuple[Session, Any]] = []
        self._cbs_replies: list[tuple[Session, bytes]] = []
        self.state = ConnectionState.AWAIT_OPEN
        self.sessions: dict[int, AmqpSession] = {}
        # 0 until the client's open names its idle-time-out: no heartbeats before.
        self.client_idle_ms = 0
        self.client_max_frame = MAX_UINT32
        self.client_channel_max = 65_535
        self._phase = "sasl-header"  # sasl-header, sasl, amqp-header, open, frames, done
        self._in = bytearray()
        self._events: Fifo[Event] = Fifo()
        self._answer: dict[str, Any] | None = None
        self._open_sent = False
        self._begun = 0
        # Whole client transfers on one link, gathered from the input at hand: one publish
        # (one broker write) for many, checked against the credit before any refill.
        self._batch: tuple[AmqpLink, list[PublishItem]] | None = None
        # The frame being handled, as received (a transfer past the credit is read again).
        self._raw = b""
        # Bytes of client transfers whose last frame has not come yet, on every link.
        self._partial_bytes = 0

    def _max_message_bytes(self) -> int:
        return self.limits.max_frame_bytes

    def _heartbeat_allowed(self) -> bool:
        return self._phase == "frames"

    def send_presence(self, link: Link, body: dict[str, Any]) -> None:
        """Presence has no AMQP form yet: its frames are not sent (docs/amqp.md)."""

    def _error(self, error: WsqError) -> Described:
        if self.errors is not None:
            self.errors[error.condition] += 1
        return F.error_value(error)

    # -- input -----------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Bytes of the client's stream (one WebSocket message; frames may span messages)."""
        if self.state is ConnectionState.CLOSED or self._phase == "done":
            return
        self._in += data
        if len(self._in) > 4 * self.limits.max_frame_bytes + MAX_SASL_FRAME:
            self._in.clear()
            self._fail(FrameTooLarge("more input waits than max_frame_bytes allows"))

    def next_event(self) -> Event | None:
        events = self._events
        while not events and self.state is not ConnectionState.AUTHENTICATING:
            if self._phase == "done" or not self._step():
                break
        if not events:
            self._flush_batch()
        return events.popleft() if events else None

    def _flush_batch(self) -> None:
        if self._batch is not None:
            link, items = self._batch
            self._batch = None
            self._events.extend(publish_requests(link, items, self.limits))

    def _step(self) -> bool:
        """Take one header or frame from the input; False when none is whole yet."""
        buf = self._in
        phase = self._phase
        if phase in ("sasl-header", "amqp-header"):
            if len(buf) < F.HEADER_SIZE:
                return False
            header = bytes(buf[: F.HEADER_SIZE])
            del buf[: F.HEADER_SIZE]
            self._on_header(header)
            return True
        if len(buf) < 8:
            return False
        size, doff, kind, channel = struct.unpack_from(">IBBH", buf)
        limit = MAX_SASL_FRAME if phase == "sasl" else self._max_frame()
        if size > limit:
            self._fail(FrameTooLarge(f"a frame larger than max-frame-size ({limit})"))
            return False
        if size < 8 or doff < 2 or doff * 4 > size:
            self._fail(AmqpFramingError("a malformed frame header"))
            return False
        if len(buf) < size:
            return False
        body = bytes(buf[doff * 4 : size])
        self._raw = bytes(buf[:size])
        del buf[:size]
        if not body:
            return True  # an empty frame: a heartbeat
        if (kind == F.FRAME_SASL) != (phase == "sasl"):
            self._fail(AmqpFramingError("a frame of the wrong type for this stage"))
            return False
        try:
            performative, end = decode_value(body)
        except AmqpDecodeError as exc:
            self._fail(AmqpDecodeFailed(f"a frame that does not decode: {exc}"))
            return False
        code = F.descriptor_code(performative)
        if code is None or not isinstance(performative.value, list):
            self._fail(AmqpFramingError("a frame body that is not a performative"))
            return False
        if phase == "closing":
            if code == F.CLOSE:  # the answer to our close
                self.state = ConnectionState.CLOSED
                self._phase = "done"
            return True
        try:
            if phase == "sasl":
                self._on_sasl(code, performative.value)
            else:
                self._dispatch(code, channel, performative.value, body[end:])
        except Refused as refused:
            self._fail(refused.error)
        return True

    def _channel_max(self) -> int:
        """Our channel-max: the client's sessions are bounded by their channel numbers."""
        return max(0, min(self.limits.max_sessions, 65_536) - 1)

    def _max_frame(self) -> int:
        return max(F.MIN_MAX_FRAME_SIZE, self.limits.max_frame_bytes)

    # -- headers and SASL ------------------------------------------------------------------

    def _on_header(self, header: bytes) -> None:
        if self._phase == "sasl-header":
            self._emit(F.SASL_HEADER)
            if header != F.SASL_HEADER:
                # AMQP without SASL, or not AMQP: we answer with the protocol we require.
                self._end(Unauthorized("SASL is required (PLAIN with the JWT as password)"))
                return
            mechanisms = [SymbolArray(("PLAIN", "ANONYMOUS"))]
            self._emit(F.frame(0, F.SASL_MECHANISMS, mechanisms, kind=F.FRAME_SASL))
            self._phase = "sasl"
            return
        self._emit(F.AMQP_HEADER)
        if header != F.AMQP_HEADER:
            self._end(AmqpFramingError("expected the AMQP 1.0 protocol header"))
            return
        self._phase = "open"

    def _on_sasl(self, code: int, fields: list[Any]) -> None:
        if code != F.SASL_INIT or self.state is not ConnectionState.AWAIT_OPEN:
            raise Refused(AmqpFramingError("expected sasl-init"))
        mechanism = F.field(fields, 0)
        response = F.field(fields, 1, b"")
        if mechanism == "ANONYMOUS":
            # Nothing is allowed until a put-token on $cbs is verified (open timeout applies).
            self._cbs = True
            self._emit(F.sasl_outcome(F.SASL_OK))
            self._phase = "amqp-header"
            return
        if mechanism != "PLAIN" or not isinstance(response, bytes):
            self._sasl_refuse(Unauthorized("SASL PLAIN (or ANONYMOUS and $cbs) is what wsq offers"))
            return
        # PLAIN: authzid NUL authcid NUL password; the password is the token.
        parts = response.split(b"\x00")
        token = parts[2] if len(parts) == 3 else b""
        if not token or len(token) > MAX_TOKEN_CHARS:
            self._sasl_refuse(Unauthorized("SASL PLAIN needs the token as password"))
            return
        try:
            text = token.decode("ascii")
        except UnicodeDecodeError:
            self._sasl_refuse(Unauthorized("the token is not a JWT"))
            return
        self.state = next_state(CONNECTION_TRANSITIONS, self.state, ConnectionEvent.OPEN_RECEIVED)
        self._events.append(OpenRequested(text, 0, None))

    def _sasl_refuse(self, error: WsqError) -> None:
        self._emit(F.sasl_outcome(F.SASL_AUTH))
        self._end(error)

    def accept_open(self, answer: dict[str, Any]) -> None:
        """The token is good: SASL succeeds; our ``open`` answers the client's."""
        if self.state is not ConnectionState.AUTHENTICATING:
            return
        self.state = next_state(CONNECTION_TRANSITIONS, self.state, ConnectionEvent.OPEN_ACCEPTED)
        self._answer = answer
        if self._cbs:
            extra = {f"wsq-{k}": answer[k] for k in ("tenant", "sub", "exp") if k in answer}
            self._cbs_answer(cbs.ACCEPTED, "Accepted", extra)
            return
        self._emit(F.sasl_outcome(F.SASL_OK))
        self._phase = "amqp-header"

    def reject_open(self, error: WsqError) -> None:
        self._in.clear()
        if self._phase == "sasl":
            self._sasl_refuse(error)
            return
        if self._cbs_waiting:
            self._cbs_answer(cbs.UNAUTHORIZED, error.description, {})
        self._fail(error)

    def accept_refresh(self, exp: int) -> None:
        """A put-token on $cbs refreshed the token: answer it."""
        if self.state is ConnectionState.OPEN and self._cbs_waiting:
            self._cbs_answer(cbs.ACCEPTED, "Accepted", {"wsq-exp": exp})

    # -- connection ------------------------------------------------------------------------

    def _end(self, error: WsqError | None, *, by_peer: bool = False) -> None:
        """The connection is over (what had to be sent is queued)."""
        if self.state is ConnectionState.CLOSED:
            return
        self._end_all_links()
        self._phase = "done"
        self._in.clear()
        self._batch = None
        self.state = ConnectionState.CLOSED if by_peer else ConnectionState.CLOSE_SENT
        wire = None
        if error is not None:
            wire = error.to_error()
            if self.errors is not None:
                self.errors[error.condition] += 1
        self._events.append(ConnectionEnded(wire, by_peer=by_peer))

    def close(self, error: WsqError | None = None) -> None:
        self._fail(error)

    def _fail(self, error: WsqError | None) -> None:
        if self.state in (ConnectionState.CLOSED, ConnectionState.CLOSE_SENT):
            return
        while self._cbs_waiting and self._open_sent:
            # A refused refresh (or any close) answers the put-tokens it leaves behind first.
            refused = error is not None and error.condition in _AUTH_CONDITIONS
            status = cbs.UNAUTHORIZED if refused else cbs.GONE
            self._cbs_answer(status, error.description if error else "closing", {})
        if self._phase in ("open", "frames"):
            if not self._open_sent:
                self._send_open()
            fields: list[Any] = [] if error is None else [F.error_value(error)]
            self._frame(0, F.CLOSE, fields)
            self._end(error)
            self._phase = "closing"
            return
        if self._phase == "sasl" and self.state is not ConnectionState.OPEN:
            self._emit(F.sasl_outcome(F.SASL_SYS))
        self._end(error)

    def _send_open(self) -> None:
        answer = self._answer or {}
        properties = {
            Symbol(f"wsq-{k}"): v for k, v in answer.items() if k in ("tenant", "sub", "exp")
        }
        channel_max = self._channel_max()
        self._frame(
            0,
            F.OPEN,
            [
                str(answer.get("node", self.node)),
                None,
                Uint(self._max_frame()),
                Ushort(channel_max),
                Uint(answer.get("idle", self.idle_ms)),
                None,
                None,
                None,
                None,
                properties or None,
            ],
        )
        self._open_sent = True

    def _dispatch(self, code: int, ch: int, fields: list[Any], payload: bytes) -> None:
        if code != F.TRANSFER:
            self._flush_batch()  # what the client sent before this frame is handled first
        if self._phase == "open":
            if code != F.OPEN:
                raise Refused(AmqpFramingError("the first frame must be open"))
            self._on_open(fields)
            return
        handler = _HANDLERS.get(code)
        if handler is None:
            raise Refused(AmqpFramingError(f"a frame the connection does not expect (0x{code:x})"))
        if code in (F.CLOSE, F.BEGIN):
            handler(self, ch, fields, payload)
            return
        session = self.sessions.get(ch)
        if session is None:
            raise Refused(AmqpChannelNotFound(f"channel {ch} has no session"))
        if session.state is SessionState.END_SENT and code != F.END:
            return  # frames that crossed our end
        handler(self, session, fields, payload)

    def _on_open(self, fields: list[Any]) -> None:
        idle = F.field(fields, 4, 0)
        max_frame = F.field(fields, 2, MAX_UINT32)
        channel_max = F.field(fields, 3, 65_535)
        if type(idle) is not int or not (idle == 0 or MIN_IDLE_MS <= idle <= MAX_IDLE_MS):
            raise Refused(
                AmqpInvalidField(
                    f"open: idle-time-out must be 0 or in {MIN_IDLE_MS}..{MAX_IDLE_MS} ms",
                )
            )
        if type(max_frame) is not int or type(channel_max) is not int:
            raise Refused(AmqpDecodeFailed("open: max-frame-size and channel-max are integers"))
        self.client_idle_ms = idle
        self.client_max_frame = max(F.MIN_MAX_FRAME_SIZE, max_frame)
        self.client_channel_max = channel_max
        self._phase = "frames"
        self._send_open()

    def _on_close(self, ch: int, fields: list[Any], payload: bytes) -> None:
        self._frame(0, F.CLOSE, [])
        self._end(None, by_peer=True)

    def _end_all_links(self) -> None:
        for session in self.sessions.values():
            self._end_links(session)
            session.advance(SessionEvent.ENDED)
        self.sessions.clear()
        self._begun = 0

    # -- sessions --------------------------------------------------------------------------

    def _on_begin(self, ch: int, fields: list[Any], payload: bytes) -> None:
        if ch > self._channel_max():
            raise Refused(AmqpFramingError(f"begin on channel {ch}, past channel-max"))
        if ch in self.sessions:
            existing = self.sessions.get(ch)
            if existing is None or existing.state is not SessionState.END_SENT:
                raise Refused(AmqpFramingError(f"begin on channel {ch}, which is in use"))
            del self.sessions[ch]
            existing.advance(SessionEvent.ENDED)
        if self.state is not ConnectionState.OPEN and len(self.sessions) >= PRE_AUTH_SESSIONS:
            raise Refused(
                ResourceLimitExceeded(f"at most {PRE_AUTH_SESSIONS} sessions before the token")
            )
        next_outgoing = F.field(fields, 1, 0)
        window = F.field(fields, 2, 0)
        if type(next_outgoing) is not int or type(window) is not int:
            raise Refused(AmqpDecodeFailed("begin: next-outgoing-id and incoming-window"))
        session = AmqpSession(ch, self.counts)
        session.next_incoming = next_outgoing
        session.remote_limit = window
        self.sessions[ch] = session
        self._frame(
            ch,
            F.BEGIN,
            [
                Ushort(ch),
                Uint(0),
                Uint(WINDOW),
                Uint(WINDOW),
                Uint(max(0, 2 * self.limits.max_links_per_session - 1)),
            ],
        )
        if self._begun >= self.limits.max_sessions:
            self.end_session(
                session,
                ResourceLimitExceeded(
                    f"at most {self.limits.max_sessions} sessions per connection"
                ),
                counted=False,
            )
            return
        self._begun += 1

    def _on_end(self, session: AmqpSession, fields: list[Any], payload: bytes) -> None:
        del self.sessions[session.ch]
        if session.state is SessionState.END_SENT:
            session.advance(SessionEvent.ENDED)
            return  # the answer to our end
        self._begun -= 1
        self._end_links(session)
        session.advance(SessionEvent.ENDED)
        self._frame(session.ch, F.END, [])

    def end_session(
        self, session: Session, error: WsqError | None = None, *, counted: bool = True
    ) -> None:
        if session.state is not SessionState.BEGUN or self.sessions.get(session.ch) is not session:
            return
        if counted:
            self._begun -= 1
        self._end_links(session)
        session.advance(SessionEvent.END_SENT)
        self._frame(session.ch, F.END, [] if error is None else [self._error(error)])

    def _end_links(self, session: Session) -> None:
        for link in session.links.values():
            if link.can(LinkEvent.ENDED):
                self._link_ended(link)
                link.advance(LinkEvent.ENDED)
        session.links.clear()
        session.unsettled.clear()
        if isinstance(session, AmqpSession) and session.held:
            size = sum(len(data) for _, data in session.held)
            self.out_bytes -= size
            self.figures.outbox_bytes -= size
            session.held.clear()

    def _link_ended(self, link: Link) -> None:
        if isinstance(link, AmqpLink):
            if link.incoming is not None:
                self._partial_bytes -= link.incoming[3]
                link.incoming = None
            if link.cbs:
                return  # never the gateway's
        unsettled = list(link.unsettled.values())
        if link.unsettled:
            session_unsettled = link.session.unsettled
            for delivery in link.unsettled:
                session_unsettled.pop(delivery, None)
            link.unsettled.clear()
        self._events.append(LinkEnded(link, unsettled))

    # -- links -----------------------------------------------------------------------------

    def _handle(self, session: Session, fields: list[Any], i: int = 0) -> int | None:
        handle = F.field(fields, i)
        if type(handle) is not int or not 0 <= handle <= MAX_UINT32:
            self.end_session(session, AmqpDecodeFailed("a link frame without a valid handle"))
            return None
        return handle

    def _on_attach(self, session: AmqpSession, fields: list[Any], payload: bytes) -> None:
        handle = self._handle(session, fields, 1)
        if handle is None:
            return
        if handle in session.links:
            self.end_session(session, AmqpFramingError(f"attach on handle {handle}, in use"))
            return
        if len(session.links) >= 2 * self.limits.max_links_per_session:
            self.end_session(session, ResourceLimitExceeded("too many links awaiting detach"))
            return
        if self.state is not ConnectionState.OPEN and (
            sum(len(s.links) for s in self.sessions.values()) >= PRE_AUTH_LINKS
        ):
            raise Refused(ResourceLimitExceeded(f"at most {PRE_AUTH_LINKS} links before the token"))
        name = F.field(fields, 0, "")
        client_receives = F.field(fields, 2) is True
        role = Role.RECEIVER if client_receives else Role.SENDER
        link = AmqpLink(session, handle, role, name if isinstance(name, str) else "")
        link.attach_fields = fields
        session.links[handle] = link
        try:
            if client_receives:
                frame, link.applied = receiver_attach(fields)
            else:
                frame = sender_attach(fields)
                link.delivery_count = F.field(fields, 9, 0)
                if type(link.delivery_count) is not int:
                    raise Refused(AmqpDecodeFailed("attach: initial-delivery-count"))
            link.cbs = frame.get("address") == cbs.ADDRESS
            if link.cbs:
                link.address = cbs.ADDRESS
            elif self.state is not ConnectionState.OPEN:
                raise Refused(Unauthorized("no token yet: send a put-token to $cbs first"))
            else:
                configure_link(link, frame)
        except Refused as refused:
            self.detach(link, refused.error)
            return
        if (error := too_many_links(session.links.values(), self.limits)) is not None:
            self.detach(link, error)
            return
        if link.cbs:  # the $cbs node is the connection's own: answered here
            link.advance(LinkEvent.ACCEPTED)
            self._attach_answer(link, True, {})
            if role is Role.SENDER:
                link.credit = cbs.CREDIT
                self._link_flow(link)
            return
        self._events.append(AttachRequested(link))

    def _attach_answer(self, link: AmqpLink, accepted: bool, properties: dict[Any, Any]) -> None:
        fields = link.attach_fields
        # Answered once: the decoded attach (up to a frame of values at ~20 bytes per byte)
        # is not kept for the link's life.
        link.attach_fields = []
        if link.role is Role.RECEIVER:
            source = answer_source(fields, link.mode, link.applied) if accepted else None
            target = F.field(fields, 6)
            settle = Ubyte(1 if link.pre_settled else 0)
        else:
            source = F.field(fields, 5)
            target = F.field(fields, 6) if accepted else None
            settle = Ubyte(F.field(fields, 3, 2))
        self._frame(
            link.ch,
            F.ATTACH,
            [
                link.name,
                Uint(link.handle),
                link.role is Role.SENDER,  # our role: receiver of what the client sends
                settle,
                Ubyte(0),
                source,
                target,
                None,
                None,
                Uint(0) if link.role is Role.RECEIVER else None,
                Ulong(self.limits.max_frame_bytes),
                None,
                None,
                properties or None,
            ],
        )

    def accept_attach(
        self, link: Link, *, from_: str | None = None, recovered: bool | None = None
    ) -> None:
        if not link.can(LinkEvent.ACCEPTED):
            return
        assert isinstance(link, AmqpLink)
        link.advance(LinkEvent.ACCEPTED)
        properties: dict[Any, Any] = {}
        if link.role is Role.RECEIVER:
            if link.mode == "copy":
                properties[Symbol("wsq-from")] = from_
                properties[Symbol("wsq-recovered")] = recovered
            else:
                properties[Symbol("wsq-group")] = link.group
        self._attach_answer(link, True, properties)
        if link.role is Role.SENDER:
            link.credit = self.limits.sender_credit
            self._link_flow(link)

    def _link_flow(self, link: AmqpLink) -> None:
        session = link.session
        self._frame(
            link.ch,
            F.FLOW,
            [
                Uint(session.next_incoming % 2**32),
                Uint(WINDOW),
                Uint(session.next_outgoing % 2**32),
                Uint(WINDOW),
                Uint(link.handle),
                Uint(link.delivery_count % 2**32),
                Uint(max(0, link.credit)),
            ],
        )

    def detach(self, link: Link, error: WsqError | None = None) -> None:
        if not link.can(LinkEvent.ENDED) or link.session.links.get(link.handle) is not link:
            return
        assert isinstance(link, AmqpLink)
        if link.state is LinkState.ATTACHING:
            self._attach_answer(link, False, {})  # a refused attach: null terminus, then detach
        self._link_ended(link)
        link.advance(LinkEvent.ENDED)
        fields: list[Any] = [Uint(link.handle), True]
        if error is not None:
            fields.append(self._error(error))
        self._frame(link.ch, F.DETACH, fields)

    def _link(self, session: Session, fields: list[Any], i: int) -> AmqpLink | None:
        handle = self._handle(session, fields, i)
        if handle is None:
            return None
        link = session.links.get(handle)
        if link is None:
            self.end_session(
                session,
                AmqpUnattachedHandle(f"no link holds handle {handle}"),
            )
            return None
        if link.state is LinkState.DETACH_SENT:
            return None
        assert isinstance(link, AmqpLink)
        return link

    def _on_detach(self, session: AmqpSession, fields: list[Any], payload: bytes) -> None:
        handle = self._handle(session, fields)
        if handle is None:
            return
        link = session.links.pop(handle, None)
        if link is None:
            self.end_session(
                session,
                AmqpUnattachedHandle(f"no link holds handle {handle}"),
            )
            return
        if link.state is LinkState.DETACH_SENT:
            return
        self._link_ended(link)
        link.advance(LinkEvent.ENDED)
        # Echo the client's closed: a detach that only suspends is answered in kind (wsq ends
        # the link either way: terminus recovery is not supported, docs/amqp.md).
        self._frame(session.ch, F.DETACH, [Uint(handle), F.field(fields, 1) is True])

    def _on_flow(self, session: AmqpSession, fields: list[Any], payload: bytes) -> None:
        next_incoming = F.field(fields, 0)
        window = F.field(fields, 1, 0)
        if type(next_incoming) is int and type(window) is int:
            session.remote_limit = next_incoming + window
            self._release_held(session)
        if F.field(fields, 4) is None:
            if F.field(fields, 9) is True:
                self._frame(
                    session.ch,
                    F.FLOW,
                    [
                        Uint(session.next_incoming % 2**32),
                        Uint(WINDOW),
                        Uint(session.next_outgoing % 2**32),
                        Uint(WINDOW),
                    ],
                )
            return
        link = self._link(session, fields, 4)
        if link is None:
            return
        if link.role is Role.RECEIVER:
            count = F.field(fields, 5, 0)
            credit = F.field(fields, 6, 0)
            if type(count) is not int or type(credit) is not int:
                self.detach(link, AmqpDecodeFailed("flow: delivery-count and link-credit"))
                return
            # The client's view of our delivery count may lag ours: credit is what is left.
            available = (count + credit - link.delivery_count) % 2**32
            granted = available - link.credit
            link.credit = min(available, MAX_UINT32)
            # The latest flow says whether the client drains (a later one without drain
            # cancels it); the gateway answers it with ``drain_done`` after DRAIN_WAIT_S.
            link.drain = F.field(fields, 8) is True and not link.cbs
            if link.cbs:
                self._cbs_flush()
            elif granted > 0 or link.drain:
                self._events.append(CreditGranted(link, max(granted, 0)))
        if F.field(fields, 9) is True:
            self._link_flow(link)

    def drain_done(self, link: Link) -> None:
        """Answer a drain: the credit the hub did not use is spent (the delivery count moves
        on by it), and our flow says so with ``drain`` set."""
        if not isinstance(link, AmqpLink) or not link.drain or link.state is not LinkState.ATTACHED:
            return
        link.drain = False
        link.delivery_count += max(link.credit, 0)
        link.credit = 0
        session = link.session
        self._frame(
            link.ch,
            F.FLOW,
            [
                Uint(session.next_incoming % 2**32),
                Uint(WINDOW),
                Uint(session.next_outgoing % 2**32),
                Uint(WINDOW),
                Uint(link.handle),
                Uint(link.delivery_count % 2**32),
                Uint(0),
                None,
                True,
            ],
        )

    # -- transfers from the client (publishing) ---------------------------------------------

    def _on_transfer(self, session: AmqpSession, fields: list[Any], payload: bytes) -> None:
        link = self._link(session, fields, 0)
        if link is None:
            return
        if link.role is not Role.SENDER:
            self.detach(link, InvalidFrame("transfer on a link where the client receives"))
            return
        partial = link.incoming
        if partial is None:
            delivery = F.field(fields, 1)
            if delivery is None:
                delivery = session.next_incoming
            if delivery != session.next_incoming:
                self.end_session(
                    session,
                    AmqpFramingError(
                        f"transfer delivery-id {delivery}, expected {session.next_incoming}"
                    ),
                )
                return
            if link.credit <= 0 and link.overdrawn != delivery and self._batch is not None:
                # Past the credit: publish (and settle) the transfers before it first, then
                # read it again; the refill they send cannot have reached the client.
                link.overdrawn = delivery
                self._in[:0] = self._raw
                self._flush_batch()
                return
            session.next_incoming = delivery + 1
            link.delivery_count += 1
            if link.credit <= 0 or link.overdrawn == delivery:
                self.detach(link, TransferLimitExceeded("transfer beyond the credit granted"))
                return
            link.credit -= 1
            if link.cbs:
                self._on_cbs_request(session, link, delivery, fields, payload)
                return
            partial = (delivery, F.field(fields, 4) is True, [], 0)
        delivery, settled, chunks, size = partial
        self._partial_bytes -= size
        if F.field(fields, 9) is True:  # aborted
            link.incoming = None
            return
        size += len(payload)
        # One message, and all the unfinished ones of the connection together, are bounded
        # as one wsq.v1 message is: a client cannot hold max_frame_bytes on every link.
        if size > self.limits.max_frame_bytes or (
            self._partial_bytes + size > self.limits.max_frame_bytes
        ):
            link.incoming = None
            self.detach(
                link,
                AmqpMessageSizeExceeded(
                    f"a message larger than max_frame_bytes ({self.limits.max_frame_bytes})",
                ),
            )
            return
        chunks.append(payload)
        settled = settled or F.field(fields, 4) is True
        if F.field(fields, 5) is True:  # more frames follow
            link.incoming = (delivery, settled, chunks, size)
            self._partial_bytes += size
            return
        link.incoming = None
        item = publish_item(delivery, settled, b"".join(chunks))
        batch = self._batch
        if batch is not None and batch[0] is link:
            batch[1].append(item)
        else:
            self._flush_batch()
            self._batch = (link, [item])

    # -- $cbs: tokens sent as put-token requests (wsq.amqp.cbs) ------------------------------

    def _on_cbs_request(
        self, session: Session, link: AmqpLink, delivery: int, fields: list[Any], payload: bytes
    ) -> None:
        if F.field(fields, 5) is True or len(payload) > MAX_SASL_FRAME:
            self.detach(link, AmqpMessageSizeExceeded("a $cbs request is one small frame"))
            return
        if F.field(fields, 4) is not True:  # settle the request itself at once
            self._frame(
                link.ch,
                F.DISPOSITION,
                [True, Uint(delivery % 2**32), None, True, F.outcome_value(F.ACCEPTED)],
            )
        link.credit += 1
        self._link_flow(link)
        if len(self._cbs_waiting) >= cbs.MAX_PENDING:
            raise Refused(ResourceLimitExceeded("too many $cbs requests unanswered"))
        try:
            request = cbs.put_token(payload)
        except cbs.CbsRequestError as exc:
            self._cbs_waiting.append((session, None))
            self._cbs_answer(cbs.BAD_REQUEST, str(exc), {})
            return
        self._cbs_waiting.append((session, request.correlation))
        if self.state is ConnectionState.AWAIT_OPEN:
            self.state = next_state(
                CONNECTION_TRANSITIONS, self.state, ConnectionEvent.OPEN_RECEIVED
            )
            self._events.append(OpenRequested(request.token, self.client_idle_ms, None))
        else:
            self._events.append(RefreshRequested(request.token))

    def _cbs_answer(self, status: int, description: str, extra: dict[str, Any]) -> None:
        """Answer the oldest waiting $cbs request on the client's receiver link from $cbs."""
        session, correlation = self._cbs_waiting.pop(0)
        message = cbs.reply(correlation, status, description[:500], extra)
        if len(self._cbs_replies) >= cbs.MAX_PENDING:
            return  # a client that never grants its $cbs receiver credit loses answers
        self._cbs_replies.append((session, message))
        self._cbs_flush()

    def _cbs_flush(self) -> None:
        """Send the answers the client has granted credit for, on its $cbs receiver link of
        the request's session."""
        waiting: list[tuple[Session, bytes]] = []
        for session, message in self._cbs_replies:
            link = next(
                (
                    lk
                    for lk in session.links.values()
                    if isinstance(lk, AmqpLink)
                    and lk.cbs
                    and lk.role is Role.RECEIVER
                    and lk.state is LinkState.ATTACHED
                    and lk.credit > 0
                ),
                None,
            )
            if link is None or self.sessions.get(session.ch) is not session:
                if self.sessions.get(session.ch) is session:
                    waiting.append((session, message))
                continue
            delivery = session.next_outgoing
            session.next_outgoing += 1
            link.credit -= 1
            link.delivery_count += 1
            head = F.transfer_head(link.ch, link.handle, delivery, True, len(message))
            self._emit(head + message)
        self._cbs_replies = waiting

    def settle_publish(
        self, link: Link, results: Sequence[tuple[PublishItem, str | None, WsqError | None]]
    ) -> None:
        if link.state is not LinkState.ATTACHED:
            return
        assert isinstance(link, AmqpLink)
        for item, position, error in results:
            if item.settled:
                continue
            if error is None and position is not None:
                state = F.outcome_value(F.ACCEPTED)
            else:
                state = F.outcome_value(
                    F.REJECTED, [self._error(error or InvalidFrame("rejected"))]
                )
            self._frame(
                link.ch,
                F.DISPOSITION,
                [True, Uint(item.delivery % 2**32), None, True, state],
            )
        if results:
            link.credit += len(results)
            self._link_flow(link)

    # -- transfers to the client (delivering) ----------------------------------------------

    def transfer_overhead(self, link: Link) -> int:
        """A transfer's frame head, performative and the AMQP sections around a message."""
        return 96

    def send_transfer(self, link: Link, wire: str, message_id: str | None = None) -> None:
        self.send_transfers(link, [wire], None if message_id is None else [message_id])

    def send_transfers(
        self, link: Link, tails: Sequence[str], message_ids: Sequence[str] | None = None
    ) -> None:
        n = len(tails)
        if not n:
            return
        assert isinstance(link, AmqpLink)
        session = link.session
        assert isinstance(session, AmqpSession)
        first = session.next_outgoing
        session.next_outgoing = first + n
        link.credit -= n
        link.delivery_count += n
        track = message_ids is not None and not link.pre_settled
        handle = link.handle
        settled = link.pre_settled
        ch = link.ch
        limit = self.client_max_frame - F.TRANSFER_HEAD_SIZE
        head = F.transfer_head
        items: list[bytes] = []  # one per delivery: its frame(s)
        for i, tail in enumerate(tails):
            delivery = first + i
            if track:
                assert message_ids is not None
                link.unsettled[delivery] = message_ids[i]
                session.unsettled[delivery] = link
            message = encoded_delivery(tail)
            if len(message) <= limit:
                items.append(head(ch, handle, delivery, settled, len(message)) + message)
            else:
                items.append(self._transfer_frames(ch, Uint(handle), delivery, settled, message))
        if first + n <= session.remote_limit and not session.held:
            self._emit(items[0] if n == 1 else b"".join(items))  # one output item per call
            return
        # Past the client's session window: each delivery waits for its flow on its own.
        for i, item in enumerate(items):
            delivery = first + i
            if delivery < session.remote_limit and not session.held:
                self._emit(item)
            else:
                session.held.append((delivery, item))
                self.out_bytes += len(item)
                self.figures.outbox_bytes += len(item)

    def _transfer_frames(
        self, ch: int, handle: Uint, delivery: int, settled: bool, message: bytes
    ) -> bytes:
        """One delivery as transfer frames no larger than the client's max-frame-size."""
        tag = struct.pack(">I", delivery % 2**32)
        fields = [handle, Uint(delivery % 2**32), tag, Uint(0), settled]
        whole = F.frame(ch, F.TRANSFER, list(fields), message)
        if len(whole) <= self.client_max_frame:
            return whole
        room = self.client_max_frame - len(whole) + len(message) - 8
        out = []
        pos = 0
        while pos < len(message):
            chunk = message[pos : pos + max(room, 64)]
            pos += len(chunk)
            more = pos < len(message)
            out.append(F.frame(ch, F.TRANSFER, [*fields, more] if more else list(fields), chunk))
        return b"".join(out)

    def _release_held(self, session: AmqpSession) -> None:
        held = session.held
        i = 0
        while i < len(held) and held[i][0] < session.remote_limit:
            data = held[i][1]
            self.out_bytes -= len(data)
            self.figures.outbox_bytes -= len(data)
            self._emit(data)
            i += 1
        del held[:i]

    def _on_disposition(self, session: AmqpSession, fields: list[Any], payload: bytes) -> None:
        if F.field(fields, 0) is not True:
            return  # about the client's own deliveries: we settle those at once
        first = F.field(fields, 1)
        last = F.field(fields, 2, first)
        if type(first) is not int or type(last) is not int or last < first:
            self.end_session(session, AmqpDecodeFailed("disposition: first and last"))
            return
        settled = F.field(fields, 3) is True
        state = F.field(fields, 4)
        code = F.descriptor_code(state)
        if code == F.MODIFIED:
            failed = F.field(state.value, 0) is True if isinstance(state.value, list) else False
            outcome = Outcome.MODIFIED if failed else Outcome.RELEASED
        elif code in _OUTCOMES:
            outcome = _OUTCOMES[code]
        elif settled:
            outcome = Outcome.RELEASED  # settled with no outcome: nothing was done with it
        else:
            return  # a received state: not an outcome
        if not settled:
            self._frame(session.ch, F.DISPOSITION, [False, Uint(first), Uint(last), True, state])
        unsettled = session.unsettled
        if not unsettled:
            return
        if last - first < len(unsettled):
            deliveries = [d for d in range(first, last + 1) if d in unsettled]
        else:
            deliveries = sorted(d for d in unsettled if first <= d <= last)
        by_link: dict[Link, list[str]] = {}
        for delivery in deliveries:
            link = unsettled.pop(delivery)
            by_link.setdefault(link, []).append(link.unsettled.pop(delivery))
        for link, ids in by_link.items():
            self._events.append(DeliveriesSettled(link, ids, outcome))

    def links(self) -> list[Link]:
        """Every attached link of the tenant's (not $cbs): what the figures count."""
        return [
            link
            for session in self.sessions.values()
            for link in session.links.values()
            if link.state is LinkState.ATTACHED and link.of_tenant
        ]


_HANDLERS: dict[int, Callable[..., None]] = {
    F.CLOSE: AmqpConnection._on_close,
    F.BEGIN: AmqpConnection._on_begin,
    F.END: AmqpConnection._on_end,
    F.ATTACH: AmqpConnection._on_attach,
    F.DETACH: AmqpConnection._on_detach,
    F.FLOW: AmqpConnection._on_flow,
    F.TRANSFER: AmqpConnection._on_transfer,
    F.DISPOSITION: AmqpConnection._on_disposition,
}
