"""Events the protocol core hands to the gateway: what the client asked for, already validated.

Frozen, slotted dataclasses (as in h11): cheap to build, impossible to mutate by accident.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from wsq.core.limits import DEFAULT_IDLE_MS
from wsq.core.props import NO_PROPS, Props

if TYPE_CHECKING:
    from wsq.core.messages import Outcome
    from wsq.protocol.state import Link


@dataclass(frozen=True, slots=True)
class OpenRequested:
    """The client's ``open``. Answer with ``accept_open`` or ``reject_open``."""

    token: str = field(repr=False)  # never in a log line
    idle_ms: int = DEFAULT_IDLE_MS
    client: str | None = None


@dataclass(frozen=True, slots=True)
class RefreshRequested:
    """A new token for the live connection. Answer with ``accept_refresh`` or ``close``."""

    token: str = field(repr=False)  # never in a log line


@dataclass(frozen=True, slots=True)
class AttachRequested:
    """A link asks to attach. Answer with ``accept_attach`` or ``detach`` (with an error)."""

    link: Link


@dataclass(frozen=True, slots=True)
class CreditGranted:
    """The client granted ``credit`` more transfers on a receiver link (``link.credit`` counts it)."""

    link: Link
    credit: int


@dataclass(frozen=True, slots=True)
class PublishItem:
    """One message of a client transfer. ``body`` is its JSON text; ``error`` set when invalid."""

    delivery: int
    settled: bool
    body: str
    props: Props = NO_PROPS
    error: str | None = None


@dataclass(frozen=True, slots=True)
class PublishRequested:
    """Consecutive transfers on one sender link, in order. Answer with ``settle_publish``."""

    link: Link
    items: list[PublishItem]


@dataclass(frozen=True, slots=True)
class DeliveriesSettled:
    """The client settled move-mode deliveries of ``link``: message ``ids`` with ``outcome``."""

    link: Link
    ids: list[str]
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class LinkEnded:
    """A link is gone (either side detached it, or its session or connection ended).

    ``unsettled`` are the ids of its move-mode deliveries the client never settled.
    """

    link: Link
    unsettled: list[str]


@dataclass(frozen=True, slots=True)
class ConnectionEnded:
    """The connection is over: ``close`` was sent (with ``error`` when it failed). Drop the
    socket once the outgoing frames are flushed."""

    error: dict[str, Any] | None
    by_peer: bool


Event = (
    OpenRequested
    | RefreshRequested
    | AttachRequested
    | CreditGranted
    | PublishRequested
    | DeliveriesSettled
    | LinkEnded
    | ConnectionEnded
)
