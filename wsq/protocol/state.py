"""Sessions and links of one connection, and the states they move through.

Link states (a handle stays in use until both sides have detached):

    ATTACHING --accept_attach--> ATTACHED --detach (either side)--> gone / DETACH_SENT
    ATTACHING --detach(error)--> DETACH_SENT --client detach--> gone

Session states: BEGUN --end (either side)--> gone / END_SENT --client end--> gone.
"""

from __future__ import annotations

import enum
from typing import Protocol

from wsq.core.addresses import Pattern
from wsq.core.limits import DEFAULT_LEASE_MS
from wsq.core.messages import Outcome


class Attachment(Protocol):
    """What the server side hangs on a link while it serves it (the hub's subscription): the
    gateway hands it the link's events."""

    def credit_granted(self) -> None: ...

    async def settled(self, ids: list[str], outcome: Outcome) -> None: ...

    async def ended(self, unsettled: list[str]) -> None: ...


class LinkState(enum.Enum):
    ATTACHING = "attaching"  # the client's attach awaits the gateway's answer
    ATTACHED = "attached"
    DETACH_SENT = "detach-sent"  # we detached; the client's answering detach frees the handle


class SessionState(enum.Enum):
    BEGUN = "begun"
    END_SENT = "end-sent"  # we ended it; the client's answering end frees the channel


class Role(enum.Enum):
    RECEIVER = "receiver"  # the client subscribes
    SENDER = "sender"  # the client publishes


class Link:
    """One link of a session. ``attachment`` belongs to the hub (its subscription)."""

    __slots__ = (
        "address",
        "attachment",
        "ch",
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
        self.state = LinkState.ATTACHING
        # Move-mode deliveries sent unsettled: delivery number -> message id.
        self.unsettled: dict[int, str] = {}
        # A client transfer (by delivery number) found beyond the credit while the transfers
        # before it were being gathered: a link error even if their settlement refills credit.
        self.overdrawn: int | None = None
        # The constant head of every transfer on this link; only the delivery number follows.
        self.prefix = (
            f'{{"op":"transfer","ch":{self.ch},"handle":{handle},'
            f'"settled":{"true" if pre_settled else "false"},"delivery":'
        )
        self.attachment: Attachment | None = None

    @property
    def is_move(self) -> bool:
        return self.mode == "move"

    def __repr__(self) -> str:
        return (
            f"Link(ch={self.ch}, handle={self.handle}, {self.role.value}, "
            f"{self.address!r}, {self.state.value})"
        )


class Session:
    __slots__ = (
        "ch",
        "links",
        "next_incoming",
        "next_outgoing",
        "state",
        "unsettled",
    )

    def __init__(self, ch: int) -> None:
        self.ch = ch
        self.state = SessionState.BEGUN
        self.links: dict[int, Link] = {}
        # Delivery numbers, per direction: the next the client must use, the next we use.
        self.next_incoming = 0
        self.next_outgoing = 0
        # Our unsettled move-mode deliveries on this session: delivery number -> link.
        self.unsettled: dict[int, Link] = {}

    def __repr__(self) -> str:
        return f"Session(ch={self.ch}, {self.state.value}, links={len(self.links)})"
