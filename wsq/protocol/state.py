"""The states of a connection, its sessions and its links, and every transition between them.

Everything that moves a state lives in the tables below (as in h11's ``_state.py``): the
connection calls ``advance`` (or a link's or session's ``advance``) with what happened, and an
edge the table does not have raises ``StateError`` here, in one place. Where a race makes an
event legitimately late (the gateway answers an attach the client has detached meanwhile), the
caller asks ``can`` first and ignores the event.

The process's running figures (``wsq.protocol.figures``) are counted here too, as the states
move: a session while it is BEGUN, a link while it is ATTACHED and its tenant's.

    connection: AWAIT_OPEN --open--> AUTHENTICATING --accept--> OPEN
                any but CLOSED --our close--> CLOSE_SENT;  any --peer's close--> CLOSED
    session:    BEGUN --our end--> END_SENT;  BEGUN/END_SENT --ended--> ENDED  (the peer's end,
                or its answer to ours, or the connection's end, frees the channel)
    link:       ATTACHING --accept--> ATTACHED;  ATTACHING/ATTACHED --ended--> DETACH_SENT
                (either side detached it, or its session or connection ended; the handle stays
                in use until the client's answering detach, or its session's end, frees it)
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol, TypeVar

from wsq.core.addresses import Pattern
from wsq.core.errors import StateError
from wsq.core.limits import DEFAULT_LEASE_MS
from wsq.core.messages import Outcome
from wsq.core.wire import transfer_head

if TYPE_CHECKING:
    from wsq.protocol.figures import Counts


class ConnectionState(enum.Enum):
    AWAIT_OPEN = "await-open"
    AUTHENTICATING = "authenticating"  # open received; later frames wait for the verdict
    OPEN = "open"
    CLOSE_SENT = "close-sent"  # we sent close; only the peer's close is still of interest
    CLOSED = "closed"


class ConnectionEvent(enum.Enum):
    OPEN_RECEIVED = "open-received"
    OPEN_ACCEPTED = "open-accepted"
    CLOSE_SENT = "close-sent"
    CLOSE_RECEIVED = "close-received"


class SessionState(enum.Enum):
    BEGUN = "begun"
    END_SENT = "end-sent"  # we ended it; the client's answering end frees the channel
    ENDED = "ended"  # out of the connection's table: its channel is free


class SessionEvent(enum.Enum):
    END_SENT = "end-sent"
    ENDED = "ended"  # the client's end (or its answer to ours), or the connection's end


class LinkState(enum.Enum):
    ATTACHING = "attaching"  # the client's attach awaits the gateway's answer
    ATTACHED = "attached"
    DETACH_SENT = "detach-sent"  # ended; the client's answering detach frees the handle


class LinkEvent(enum.Enum):
    ACCEPTED = "accepted"  # the gateway answered the attach
    ENDED = "ended"  # either side detached it, or its session or connection ended


_C, _CE = ConnectionState, ConnectionEvent
CONNECTION_TRANSITIONS: Mapping[tuple[ConnectionState, ConnectionEvent], ConnectionState] = (
    MappingProxyType(
        {
            (_C.AWAIT_OPEN, _CE.OPEN_RECEIVED): _C.AUTHENTICATING,
            (_C.AUTHENTICATING, _CE.OPEN_ACCEPTED): _C.OPEN,
            **{
                (state, _CE.CLOSE_SENT): _C.CLOSE_SENT
                for state in (_C.AWAIT_OPEN, _C.AUTHENTICATING, _C.OPEN)
            },
            **{(state, _CE.CLOSE_RECEIVED): _C.CLOSED for state in _C if state is not _C.CLOSED},
        }
    )
)
SESSION_TRANSITIONS: Mapping[tuple[SessionState, SessionEvent], SessionState] = MappingProxyType(
    {
        (SessionState.BEGUN, SessionEvent.END_SENT): SessionState.END_SENT,
        (SessionState.BEGUN, SessionEvent.ENDED): SessionState.ENDED,
        (SessionState.END_SENT, SessionEvent.ENDED): SessionState.ENDED,
    }
)
LINK_TRANSITIONS: Mapping[tuple[LinkState, LinkEvent], LinkState] = MappingProxyType(
    {
        (LinkState.ATTACHING, LinkEvent.ACCEPTED): LinkState.ATTACHED,
        (LinkState.ATTACHING, LinkEvent.ENDED): LinkState.DETACH_SENT,
        (LinkState.ATTACHED, LinkEvent.ENDED): LinkState.DETACH_SENT,
    }
)


S = TypeVar("S", ConnectionState, SessionState, LinkState)
E = TypeVar("E", ConnectionEvent, SessionEvent, LinkEvent)


def next_state(table: Mapping[tuple[S, E], S], state: S, event: E) -> S:
    """The state after ``event``; ``StateError`` for an edge the table does not have."""
    after = table.get((state, event))
    if after is None:
        raise StateError(f"{event.value} cannot happen in state {state.value}")
    return after


class Role(enum.Enum):
    RECEIVER = "receiver"  # the client subscribes
    SENDER = "sender"  # the client publishes


class Attachment(Protocol):
    """What the server side hangs on a link while it serves it (the hub's subscription): the
    gateway hands it the link's events."""

    def credit_granted(self) -> None: ...

    async def settled(self, ids: list[str], outcome: Outcome) -> None: ...

    async def ended(self, unsettled: list[str]) -> None: ...


class Link:
    """One link of a session. ``attachment`` belongs to the hub (its subscription)."""

    __slots__ = (
        "address",
        "attachment",
        "ch",
        "conflate_ms",
        "credit",
        "filter",
        "from_",
        "group",
        "handle",
        "lease_ms",
        "mode",
        "overdrawn",
        "pre_settled",
        "prefix",
        "presence",
        "rewind",
        "role",
        "session",
        "state",
        "unsettled",
    )

    def __init__(
        self,
        session: Session,
        handle: int,
        role: Role,
        address: str,
        *,
        mode: str = "copy",
        from_: str = "$",
        group: str = "default",
        lease_ms: int = DEFAULT_LEASE_MS,
        subject_filter: Pattern | None = None,
        pre_settled: bool = False,
        credit: int = 0,
    ) -> None:
        self.session = session
        self.ch = session.ch
        self.handle = handle
        self.role = role
        self.address = address
        self.mode = mode
        self.from_ = from_
        self.group = group
        self.lease_ms = lease_ms
        self.filter = subject_filter
        self.pre_settled = pre_settled
        self.credit = credit
        # Copy receivers' live-view additions: start with the last ``rewind`` retained messages;
        # at most one transfer per subject per ``conflate_ms``.
        self.rewind: int | None = None
        self.conflate_ms: int | None = None
        # A receiver attached with "presence": true is a member of its address while attached.
        self.presence = False
        self.state = LinkState.ATTACHING
        # Move-mode deliveries sent unsettled: delivery number -> message id.
        self.unsettled: dict[int, str] = {}
        # A client transfer (by delivery number) found beyond the credit while the transfers
        # before it were being gathered: a link error even if their settlement refills credit.
        self.overdrawn: int | None = None
        # The constant head of every transfer on this link; only the delivery number follows.
        self.prefix = transfer_head(self.ch, handle, pre_settled)
        self.attachment: Attachment | None = None

    @property
    def is_move(self) -> bool:
        return self.mode == "move"

    @property
    def of_tenant(self) -> bool:
        """Whether the link is its tenant's (AMQP's ``$cbs`` links are the connection's own):
        attached, it is one of ``links()`` and counts in the figures."""
        return True

    def can(self, event: LinkEvent) -> bool:
        return (self.state, event) in LINK_TRANSITIONS

    def advance(self, event: LinkEvent) -> None:
        before = self.state
        after = self.state = next_state(LINK_TRANSITIONS, before, event)
        # Every move of every link (wsq.v1's and AMQP's) comes here: the figures count it.
        if (before is LinkState.ATTACHED) is not (after is LinkState.ATTACHED):
            counts = self.session.counts
            if counts is not None and self.of_tenant:
                counts.link(self.role, 1 if after is LinkState.ATTACHED else -1)

    def __repr__(self) -> str:
        return (
            f"Link(ch={self.ch}, handle={self.handle}, {self.role.value}, "
            f"{self.address!r}, {self.state.value})"
        )


class Session:
    __slots__ = (
        "ch",
        "counts",
        "links",
        "next_incoming",
        "next_outgoing",
        "state",
        "unsettled",
    )

    def __init__(self, ch: int, counts: Counts | None = None) -> None:
        self.ch = ch
        self.state = SessionState.BEGUN
        # Where it (while BEGUN) and its links (while ATTACHED) are counted: its connection's
        # tenant's figures (wsq.protocol.figures); None for a session nobody counts.
        self.counts = counts
        if counts is not None:
            counts.sessions += 1
        self.links: dict[int, Link] = {}
        # Delivery numbers, per direction: the next the client must use, the next we use.
        self.next_incoming = 0
        self.next_outgoing = 0
        # Our unsettled move-mode deliveries on this session: delivery number -> link.
        self.unsettled: dict[int, Link] = {}

    def advance(self, event: SessionEvent) -> None:
        before = self.state
        self.state = next_state(SESSION_TRANSITIONS, before, event)
        if before is SessionState.BEGUN and self.counts is not None:
            self.counts.sessions -= 1

    def __repr__(self) -> str:
        return f"Session(ch={self.ch}, {self.state.value}, links={len(self.links)})"
