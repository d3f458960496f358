"""The server side of one wsq.v1 connection, as a state machine that does no I/O.

Text in with ``receive_text``; events out with ``next_event`` (one at a time, so the gateway
answers an attach before the next frame is looked at); frames to write with ``data_to_send``.
The gateway answers events by calling ``accept_open``, ``accept_attach``, ``detach``,
``settle_publish`` … and pushes deliveries with ``send_transfer``.

Errors are mapped to the narrowest scope the contract allows: a link error detaches the link, a
session error ends the session, a connection error closes the connection. Nothing here raises to
the caller for bad input.

Why this module is longer than ~600 lines: it is one state machine whose frame handlers all share
the connection's sessions, links, delivery numbering and credit. What does not share them has
left it: frame field checks (``frames``), the output queue (``output``), the state tables
(``state``); splitting the handlers further would spread one machine over several files.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from wsq.core import codec
from wsq.core.errors import (
    FrameTooLarge,
    InvalidFrame,
    ResourceLimitExceeded,
    TransferLimitExceeded,
    Unauthorized,
    WsqError,
)
from wsq.core.fifo import Fifo
from wsq.core.limits import (
    DEFAULT_IDLE_MS,
    DEFAULT_SENDER_CREDIT,
    MAX_CHANNEL,
    MAX_CLIENT_NAME,
    MAX_DELIVERY,
    MAX_IDLE_MS,
    MAX_TOKEN_CHARS,
    MAX_UINT32,
    MIN_IDLE_MS,
)
from wsq.core.messages import Outcome
from wsq.core.wire import (
    SharedTails,
    compact_frames,
    compact_head_of,
    rows_frames,
    shared_frame,
)
from wsq.protocol.events import (
    AttachRequested,
    ConnectionEnded,
    CreditGranted,
    DeliveriesSettled,
    Event,
    LinkEnded,
    OpenRequested,
    PublishItem,
    PublishRequested,
    RefreshRequested,
)
from wsq.protocol.figures import Figures
from wsq.protocol.frames import (
    BrokenMessage,
    Refused,
    configure_link,
    int_field,
    invalid,
    opt_str,
    publish_item,
)
from wsq.protocol.output import OutgoingFrames
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

_OUTCOMES = {o.value: o for o in Outcome}


@dataclass(frozen=True, slots=True)
class Limits:
    """What one connection may use.

    ``sender_credit`` is what we grant each sender link: how many publishes a client may have
    on the way (docs/performance.md, "The publisher's window", says why 1024). It bounds no
    memory of ours: the gateway takes a socket's next WebSocket message only once the publishes
    of the one before are answered, so what a connection holds unanswered is the message being
    published and one waiting (each at most ``max_frame_bytes``) whatever its credit; the rest
    waits in the client's socket.
    ``max_publish_batch`` is how many consecutive transfers of one link become one publish (one
    broker write): the broker's bound, so that a larger credit is not a larger write.
    """

    max_frame_bytes: int = 1_048_576
    max_sessions: int = 1024
    max_links_per_session: int = 256
    sender_credit: int = DEFAULT_SENDER_CREDIT
    max_publish_batch: int = 256


def publish_requests(
    link: Link, items: list[PublishItem], limits: Limits
) -> list[PublishRequested]:
    """The publishes of ``items``, transfers of ``link`` that arrived together and were checked
    against its credit together (a refill sent for the first publish must not excuse a transfer
    past it): in turn, each one broker write of at most ``max_publish_batch``, whatever the
    credit. For wsq.v1 and AMQP alike."""
    step = limits.max_publish_batch
    return [PublishRequested(link, items[i : i + step]) for i in range(0, len(items), step)]


def too_many_links(links: Iterable[Link], limits: Limits) -> WsqError | None:
    """The answer to an attach that takes a session past ``max_links_per_session`` (the new
    link among ``links``; one whose detach is on its way no longer counts), else None. For
    wsq.v1 and AMQP alike."""
    attached = sum(1 for lk in links if lk.state is not LinkState.DETACH_SENT)
    if attached <= limits.max_links_per_session:
        return None
    return ResourceLimitExceeded(f"at most {limits.max_links_per_session} links per session")


class ServerConnection(OutgoingFrames):
    """The server end of one wsq.v1 connection."""

    # Compact rows (docs/protocol.md 6.4): whether the client's open asked (None: not
    # mentioned) and whether they are on. Class defaults: set on a connection only when asked,
    # so that the many that never ask carry no more attributes.
    rows_asked: bool | None = None
    rows: bool = False

    def __init__(
        self,
        limits: Limits,
        on_output: Callable[[], None] | None = None,
        errors: Counter[str] | None = None,
        figures: Figures | None = None,
    ) -> None:
        # figures: the process's running figures, which this connection counts in.
        super().__init__(on_output, figures)
        self.limits = limits
        # Errors sent to the client, by condition: a counter shared by the process (metrics).
        self.errors = errors
        self.state = ConnectionState.AWAIT_OPEN
        self.sessions: dict[int, Session] = {}
        self.client_idle_ms = DEFAULT_IDLE_MS
        # The compact delivery form (``transfers``): None when the client's open did not
        # mention it (our open answer does not either), else whether it is on.
        self.compact: bool | None = None
        self._begun = 0
        # Frames received and not yet applied; events not yet taken. Not deques: an empty
        # deque holds a 64-slot block (760 bytes), and an idle connection keeps both.
        self._pending: Fifo[Any] = Fifo()
        self._events: Fifo[Event] = Fifo()

    def _error(self, error: WsqError) -> dict[str, Any]:
        """``error`` as the wire's error object, counted by condition."""
        wire = error.to_error()
        if self.errors is not None:
            self.errors[error.condition] += 1
        return wire

    def _max_message_bytes(self) -> int:
        return self.limits.max_frame_bytes

    def _can(self, event: ConnectionEvent) -> bool:
        return (self.state, event) in CONNECTION_TRANSITIONS

    def _advance(self, event: ConnectionEvent) -> None:
        self.state = next_state(CONNECTION_TRANSITIONS, self.state, event)

    # -- input -----------------------------------------------------------------------------

    def receive_text(self, text: str | bytes) -> None:
        """One WebSocket message from the client: a frame, a batch, or ``[]`` (heartbeat).

        Nothing is applied here: ``next_event`` applies the frames, in order, messages that
        break the contract included (a broken message does not overtake the frames before it).
        """
        if self.state is ConnectionState.CLOSED:
            return
        limit = self.limits.max_frame_bytes
        # A character is 1..4 UTF-8 bytes: encode only when the length alone cannot decide.
        size = len(text)
        if size > limit or (
            isinstance(text, str)
            and size * 4 > limit
            and len(text.encode("utf-8", "surrogatepass")) > limit
        ):
            error: WsqError = FrameTooLarge(f"message larger than max_frame_bytes ({limit})")
            self._pending.append(BrokenMessage(error))
            return
        try:
            value = codec.loads(text)
        except codec.DecodeError:
            self._pending.append(BrokenMessage(InvalidFrame("message is not valid JSON")))
            return
        if isinstance(value, dict):
            self._pending.append(value)
        elif isinstance(value, list):
            self._pending.extend(value)
        else:
            error = InvalidFrame("a message must hold a JSON object or an array of them")
            self._pending.append(BrokenMessage(error))

    def next_event(self) -> Event | None:
        """The next event, processing queued frames as far as needed; None when none is ready."""
        events = self._events
        pending = self._pending
        while not events and pending:
            state = self.state
            if state is ConnectionState.AUTHENTICATING:
                break
            frame = pending.popleft()
            if state is ConnectionState.CLOSE_SENT:
                # After our close only the peer's answering close matters.
                if isinstance(frame, dict) and frame.get("op") == "close":
                    self._advance(ConnectionEvent.CLOSE_RECEIVED)
                    pending.clear()
                continue
            self._dispatch(frame)
        return events.popleft() if events else None

    def _dispatch(self, frame: Any) -> None:
        if type(frame) is BrokenMessage:
            self._fail(frame.error)
            return
        if not isinstance(frame, dict):
            self._fail(InvalidFrame("a frame must be a JSON object"))
            return
        op = frame.get("op")
        handler = _HANDLERS.get(op) if isinstance(op, str) else None
        if handler is None:
            self._fail(InvalidFrame(f"unknown op {op!r}" if isinstance(op, str) else "missing op"))
            return
        if self.state is ConnectionState.AWAIT_OPEN and op not in ("open", "close"):
            self._fail(InvalidFrame("the first frame must be open"))
            return
        try:
            handler(self, frame)
        except Refused as refused:
            self._fail(refused.error)

    # -- connection ------------------------------------------------------------------------

    def _on_open(self, frame: dict[str, Any]) -> None:
        if not self._can(ConnectionEvent.OPEN_RECEIVED):
            raise invalid("open was already received")
        token = frame.get("token")
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            raise Refused(Unauthorized("open needs a token"))
        idle = frame.get("idle", DEFAULT_IDLE_MS)
        if type(idle) is not int or not (idle == 0 or MIN_IDLE_MS <= idle <= MAX_IDLE_MS):
            raise invalid(f"open: 'idle' must be 0 or an integer in {MIN_IDLE_MS}..{MAX_IDLE_MS}")
        client = opt_str(frame.get("client"), "client", MAX_CLIENT_NAME)
        compact = frame.get("compact")
        if compact is not None and type(compact) is not bool:
            raise invalid("open: 'compact' must be a boolean")
        rows = frame.get("rows")
        if rows is not None and type(rows) is not bool:
            raise invalid("open: 'rows' must be a boolean")
        self.compact = compact
        if rows is not None:
            self.rows_asked = rows
            self.rows = rows and compact is True
        self.client_idle_ms = idle
        self._advance(ConnectionEvent.OPEN_RECEIVED)
        self._events.append(OpenRequested(token, idle, client))

    def accept_open(self, answer: dict[str, Any]) -> None:
        """The token is good: send our ``open`` (node, idle, limits, tenant, sub, exp)."""
        if not self._can(ConnectionEvent.OPEN_ACCEPTED):
            return  # closed while the token was being verified
        self._advance(ConnectionEvent.OPEN_ACCEPTED)
        if self.compact is not None:
            answer = {**answer, "compact": self.compact}
        if self.rows_asked is not None:
            answer = {**answer, "rows": self.rows}
        self._emit({"op": "open", **answer})

    def reject_open(self, error: WsqError) -> None:
        self._pending.clear()
        self._fail(error)

    def _on_refresh(self, frame: dict[str, Any]) -> None:
        token = frame.get("token")
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            raise invalid("refresh needs a token")
        self._events.append(RefreshRequested(token))

    def accept_refresh(self, exp: int) -> None:
        if self.state is not ConnectionState.OPEN:
            return  # closed while the token was being verified: nothing may follow our close
        self._emit({"op": "refresh", "exp": exp})

    def _on_close(self, frame: dict[str, Any]) -> None:
        error = frame.get("error")
        if not isinstance(error, dict):
            error = None
        self._end_all_links()
        self._emit({"op": "close"})
        self._advance(ConnectionEvent.CLOSE_RECEIVED)
        self._pending.clear()
        self._events.append(ConnectionEnded(error, by_peer=True))

    def close(self, error: WsqError | None = None) -> None:
        """Close the connection from our side (with an error, or for a clean shutdown)."""
        self._fail(error)

    def _fail(self, error: WsqError | None) -> None:
        if not self._can(ConnectionEvent.CLOSE_SENT):
            return
        self._end_all_links()
        frame: dict[str, Any] = {"op": "close"}
        if error is not None:
            frame["error"] = self._error(error)
        self._emit(frame)
        self._advance(ConnectionEvent.CLOSE_SENT)
        self._pending.clear()
        self._events.append(ConnectionEnded(frame.get("error"), by_peer=False))

    def _end_all_links(self) -> None:
        for session in self.sessions.values():
            self._end_links(session)
            session.advance(SessionEvent.ENDED)
        self.sessions.clear()
        self._begun = 0

    # -- sessions --------------------------------------------------------------------------

    def _channel(self, frame: dict[str, Any]) -> int:
        return int_field(frame, "ch", 0, MAX_CHANNEL)

    def _session(self, frame: dict[str, Any]) -> Session | None:
        """The begun session a frame names; None when we ended it and await the answer."""
        ch = self._channel(frame)
        session = self.sessions.get(ch)
        if session is None:
            raise invalid(f"{frame['op']} on channel {ch}, which is not begun")
        if session.state is SessionState.END_SENT:
            return None
        return session

    def _on_begin(self, frame: dict[str, Any]) -> None:
        ch = self._channel(frame)
        existing = self.sessions.get(ch)
        if existing is not None:
            if existing.state is not SessionState.END_SENT:
                raise invalid(f"begin on channel {ch}, which is in use")
            # A client that never answered our end reuses the channel: take that as the answer.
            del self.sessions[ch]
            existing.advance(SessionEvent.ENDED)
        session = Session(ch, self.counts)
        self.sessions[ch] = session
        if self._begun >= self.limits.max_sessions:
            session.advance(SessionEvent.END_SENT)
            self._emit(
                {
                    "op": "end",
                    "ch": ch,
                    "error": self._error(
                        ResourceLimitExceeded(
                            f"at most {self.limits.max_sessions} sessions per connection"
                        )
                    ),
                }
            )
            return
        self._begun += 1
        self._emit({"op": "begin", "ch": ch})

    def _on_end(self, frame: dict[str, Any]) -> None:
        ch = self._channel(frame)
        session = self.sessions.get(ch)
        if session is None:
            raise invalid(f"end on channel {ch}, which is not begun")
        del self.sessions[ch]
        if session.state is SessionState.END_SENT:
            session.advance(SessionEvent.ENDED)
            return  # the answer to our end
        self._begun -= 1
        self._end_links(session)
        session.advance(SessionEvent.ENDED)
        self._emit({"op": "end", "ch": ch})

    def end_session(self, session: Session, error: WsqError | None = None) -> None:
        """End a session from our side (a session error, or a shutdown)."""
        if session.state is not SessionState.BEGUN or self.sessions.get(session.ch) is not session:
            return
        self._begun -= 1
        self._end_links(session)
        session.advance(SessionEvent.END_SENT)
        frame: dict[str, Any] = {"op": "end", "ch": session.ch}
        if error is not None:
            frame["error"] = self._error(error)
        self._emit(frame)

    def _end_links(self, session: Session) -> None:
        for link in session.links.values():
            if link.can(LinkEvent.ENDED):
                self._link_ended(link)
                link.advance(LinkEvent.ENDED)
        session.links.clear()
        session.unsettled.clear()

    def _link_ended(self, link: Link) -> None:
        unsettled = list(link.unsettled.values())
        if link.unsettled:
            session_unsettled = link.session.unsettled
            for delivery in link.unsettled:
                session_unsettled.pop(delivery, None)
            link.unsettled.clear()
        self._events.append(LinkEnded(link, unsettled))

    # -- links -----------------------------------------------------------------------------

    def _session_handle(self, frame: dict[str, Any]) -> tuple[Session, int] | None:
        """The begun session and the handle a link frame names; a malformed handle ends the
        session. None when there is nothing more to do with the frame."""
        session = self._session(frame)
        if session is None:
            return None
        try:
            return session, int_field(frame, "handle", 0, MAX_UINT32)
        except Refused as refused:
            self.end_session(session, refused.error)
            return None

    def _on_attach(self, frame: dict[str, Any]) -> None:
        named = self._session_handle(frame)
        if named is None:
            return
        session, handle = named
        if handle in session.links:
            self.end_session(session, InvalidFrame(f"attach on handle {handle}, which is in use"))
            return
        if len(session.links) >= 2 * self.limits.max_links_per_session:
            # Refused links wait for the client's answering detach; a client that never answers
            # must not grow the table without bound.
            self.end_session(session, ResourceLimitExceeded("too many links awaiting detach"))
            return
        role = frame.get("role")
        link = Link(session, handle, Role.SENDER if role == "sender" else Role.RECEIVER, "")
        session.links[handle] = link
        try:
            configure_link(link, frame)
        except Refused as refused:
            self.detach(link, refused.error)
            return
        if (error := too_many_links(session.links.values(), self.limits)) is not None:
            self.detach(link, error)
            return
        self._events.append(AttachRequested(link))

    def accept_attach(
        self, link: Link, *, from_: str | None = None, recovered: bool | None = None
    ) -> None:
        """Answer an attach. A copy receiver names the position it starts after."""
        if not link.can(LinkEvent.ACCEPTED):
            return  # the client detached it meanwhile, or its session or connection ended
        link.advance(LinkEvent.ACCEPTED)
        answer: dict[str, Any] = {
            "op": "attach",
            "ch": link.ch,
            "handle": link.handle,
            "role": link.role.value,
            "address": link.address,
        }
        if link.role is Role.RECEIVER:
            answer["mode"] = link.mode
            if link.mode == "copy":
                answer["from"] = from_
                answer["recovered"] = recovered
            else:
                answer["group"] = link.group
            answer["settled"] = link.pre_settled
        self._emit(answer)
        if link.role is Role.SENDER:
            link.credit = self.limits.sender_credit
            self._emit({"op": "flow", "ch": link.ch, "handle": link.handle, "credit": link.credit})

    def detach(self, link: Link, error: WsqError | None = None) -> None:
        """Detach a link from our side (refusing an attach, a link error, lost rights)."""
        if not link.can(LinkEvent.ENDED) or link.session.links.get(link.handle) is not link:
            return
        self._link_ended(link)
        link.advance(LinkEvent.ENDED)
        frame: dict[str, Any] = {"op": "detach", "ch": link.ch, "handle": link.handle}
        if error is not None:
            frame["error"] = self._error(error)
        self._emit(frame)

    def _link(self, frame: dict[str, Any]) -> Link | None:
        """The link a frame names; None when it is one we detached (frames crossing ours)."""
        named = self._session_handle(frame)
        if named is None:
            return None
        session, handle = named
        link = session.links.get(handle)
        if link is None:
            self.end_session(
                session, InvalidFrame(f"{frame['op']} on handle {handle}, which is not attached")
            )
            return None
        if link.state is LinkState.DETACH_SENT:
            return None
        return link

    def _on_detach(self, frame: dict[str, Any]) -> None:
        named = self._session_handle(frame)
        if named is None:
            return
        session, handle = named
        link = session.links.pop(handle, None)
        if link is None:
            self.end_session(
                session, InvalidFrame(f"detach on handle {handle}, which is not attached")
            )
            return
        if link.state is LinkState.DETACH_SENT:
            return  # the answer to our detach
        self._link_ended(link)
        link.advance(LinkEvent.ENDED)
        self._emit({"op": "detach", "ch": link.ch, "handle": handle})

    def _on_flow(self, frame: dict[str, Any]) -> None:
        link = self._link(frame)
        if link is None:
            return
        try:
            credit = int_field(frame, "credit", 0, MAX_UINT32)
        except Refused as refused:
            self.detach(link, refused.error)
            return
        if link.role is not Role.RECEIVER:
            return  # credit on sender links is ours to grant
        link.credit = min(link.credit + credit, MAX_UINT32)
        self._events.append(CreditGranted(link, credit))

    # -- transfers from the client (publishing) ---------------------------------------------

    def _on_transfer(self, frame: dict[str, Any]) -> None:
        link = self._accept_transfer(frame)
        if link is None:
            return
        items = [publish_item(frame)]
        # Consecutive transfers on the same link become one event: one broker write for many.
        # Only a transfer that passes every check joins: one that breaks a rule is left for the
        # next round, after the gateway has published and settled the ones before it (taking
        # it here would end the link first, and their dispositions would be lost).
        pending = self._pending
        session = link.session
        ch = link.ch
        handle = link.handle
        while pending:
            nxt = pending.peek()
            if not (
                type(nxt) is dict
                and nxt.get("op") == "transfer"
                and type(nxt.get("ch")) is int
                and nxt["ch"] == ch
                and type(nxt.get("handle")) is int
                and nxt["handle"] == handle
                and type(nxt.get("delivery")) is int
                and nxt["delivery"] == session.next_incoming
            ):
                break
            if link.credit <= 0:
                # Beyond the credit granted so far: the refill that settling the others sends
                # cannot have reached the client, so it stays a link error.
                link.overdrawn = nxt["delivery"]
                break
            pending.popleft()
            if self._accept_transfer(nxt) is not link:
                break
            items.append(publish_item(nxt))
        self._events.extend(publish_requests(link, items, self.limits))

    def _accept_transfer(self, frame: dict[str, Any]) -> Link | None:
        """Numbering and credit checks; the link the transfer may be published on, or None."""
        session = self._session(frame)
        if session is None:
            return None
        try:
            delivery = int_field(frame, "delivery", 0, MAX_DELIVERY)
        except Refused as refused:
            self.end_session(session, refused.error)
            return None
        if delivery != session.next_incoming:
            self.end_session(
                session,
                InvalidFrame(f"transfer delivery {delivery}, expected {session.next_incoming}"),
            )
            return None
        session.next_incoming = delivery + 1
        link = self._link(frame)
        if link is None:
            return None
        if link.role is not Role.SENDER:
            self.detach(link, InvalidFrame("transfer on a receiver link"))
            return None
        if link.credit <= 0 or link.overdrawn == delivery:
            self.detach(link, TransferLimitExceeded("transfer beyond the credit granted"))
            return None
        link.credit -= 1
        return link

    def settle_publish(
        self, link: Link, results: Sequence[tuple[PublishItem, str | None, WsqError | None]]
    ) -> None:
        """Answer published items: ``(item, position, None)`` accepted, ``(item, None, error)``
        rejected. Unsettled items get dispositions; the link's credit is refilled."""
        if link.state is not LinkState.ATTACHED:
            return
        ch = link.ch
        run: list[tuple[int, str]] = []

        def flush_run() -> None:
            if run:
                self._emit(
                    {
                        "op": "disposition",
                        "ch": ch,
                        "first": run[0][0],
                        "last": run[-1][0],
                        "outcome": "accepted",
                        "settled": True,
                        "ids": [pos for _, pos in run],
                    }
                )
                run.clear()

        for item, position, error in results:
            if item.settled:
                continue
            if error is None and position is not None:
                if run and run[-1][0] + 1 != item.delivery:
                    flush_run()
                run.append((item.delivery, position))
                continue
            flush_run()
            self._emit(
                {
                    "op": "disposition",
                    "ch": ch,
                    "first": item.delivery,
                    "last": item.delivery,
                    "outcome": "rejected",
                    "settled": True,
                    "error": self._error(error or InvalidFrame("rejected")),
                }
            )
        flush_run()
        if results:
            link.credit += len(results)
            self._emit({"op": "flow", "ch": ch, "handle": link.handle, "credit": len(results)})

    # -- transfers to the client (delivering) ----------------------------------------------

    def transfer_overhead(self, link: Link) -> int:
        """What a transfer on ``link`` adds to its message's tail: the link's constant head and
        a delivery number (12 characters is a generous bound for the numbers in use)."""
        return len(link.prefix) + 12

    def send_transfer(self, link: Link, wire: str, message_id: str | None = None) -> None:
        """Send one delivery on a receiver link; spends one credit.

        ``wire`` is the message's encoded tail (``"id":…,"body":…,"props":{…}}``). Pass
        ``message_id`` for a move-mode delivery the client must settle.
        """
        session = link.session
        delivery = session.next_outgoing
        session.next_outgoing = delivery + 1
        link.credit -= 1
        if message_id is not None and not link.pre_settled:
            link.unsettled[delivery] = message_id
            session.unsettled[delivery] = link
        self._emit_raw(link.prefix + str(delivery) + "," + wire)

    def send_transfers(
        self, link: Link, tails: Sequence[str], message_ids: Sequence[str] | None = None
    ) -> None:
        """Send deliveries (pre-encoded tails, in order) on a receiver link at once: one credit
        each, numbered as a range. The hub's fan-out path: one call per link per broker batch
        instead of one per delivery, the frames formatted in one comprehension, or, when the
        client chose the compact form, as few ``transfers`` frames as ``max_frame_bytes``
        allows (a whole ``SharedTails`` batch as a ``SharedFrame``: its messages' bytes shared
        with every other socket). ``message_ids`` (one per tail) for move-mode deliveries the
        client must settle.
        """
        n = len(tails)
        if not n:
            return
        session = link.session
        first = session.next_outgoing
        session.next_outgoing = first + n
        link.credit -= n
        if message_ids is not None and not link.pre_settled:
            link_unsettled = link.unsettled
            session_unsettled = session.unsettled
            for delivery, message_id in zip(range(first, first + n), message_ids, strict=True):
                link_unsettled[delivery] = message_id
                session_unsettled[delivery] = link
        out = self._out
        was_empty = not out
        frames: list[str]
        if self.compact:
            head = compact_head_of(link.prefix)
            limit = self.limits.max_frame_bytes
            one = (
                shared_frame(head, first, tails, limit, self.rows)
                if type(tails) is SharedTails
                else None
            )
            if one is not None:
                # The whole broker batch: its messages' bytes are the same for every socket.
                out.append(one)
                self._shared += 1
                self.out_bytes += one.chars
                self.figures.outbox_bytes += one.chars
                if was_empty and self._on_output is not None:
                    self._on_output()
                return
            if self.rows and type(tails) is SharedTails and tails.messages:
                # Too long for one frame: split, each part its own rows.
                frames = rows_frames(head, first, tails, limit)
            else:
                frames = compact_frames(head, first, tails, limit)
        else:
            prefix = link.prefix
            frames = [
                f"{prefix}{d},{t}" for d, t in zip(range(first, first + n), tails, strict=True)
            ]
        out += frames
        size = sum(map(len, frames))
        self.out_bytes += size
        self.figures.outbox_bytes += size
        if was_empty and self._on_output is not None:
            self._on_output()

    def _on_disposition(self, frame: dict[str, Any]) -> None:
        session = self._session(frame)
        if session is None:
            return
        try:
            first = int_field(frame, "first", 0, MAX_DELIVERY)
            last = int_field(frame, "last", first, MAX_DELIVERY, first)
            name = frame.get("outcome", "accepted")
            outcome = _OUTCOMES.get(name) if isinstance(name, str) else None
            if outcome is None:
                raise invalid(
                    "disposition: 'outcome' must be accepted, released, rejected or modified"
                )
        except Refused as refused:
            self.end_session(session, refused.error)
            return
        unsettled = session.unsettled
        if not unsettled:
            return  # copy-mode acknowledgements change nothing
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

    def heartbeat(self) -> None:
        """Ask for an empty batch ``[]`` to be sent, unless a frame goes out anyway."""
        if self.state is ConnectionState.OPEN:
            self._ask_heartbeat()

    def links(self) -> list[Link]:
        """Every attached link (for rights re-checks after a refresh): what the figures count
        (wsq.protocol.figures)."""
        return [
            link
            for session in self.sessions.values()
            for link in session.links.values()
            if link.state is LinkState.ATTACHED and link.of_tenant
        ]


# Frame handlers by op: one table for every connection (bound methods per connection cost ~1 KiB).
_HANDLERS: dict[str, Callable[[ServerConnection, dict[str, Any]], None]] = {
    "open": ServerConnection._on_open,
    "close": ServerConnection._on_close,
    "refresh": ServerConnection._on_refresh,
    "begin": ServerConnection._on_begin,
    "end": ServerConnection._on_end,
    "attach": ServerConnection._on_attach,
    "detach": ServerConnection._on_detach,
    "flow": ServerConnection._on_flow,
    "transfer": ServerConnection._on_transfer,
    "disposition": ServerConnection._on_disposition,
}
