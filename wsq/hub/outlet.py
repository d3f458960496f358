"""What the hub writes to, and what it hangs on a link.

``Transfers`` is the hub's whole view of a socket's protocol connection: how much output waits,
what a transfer adds to its message's tail, and sending deliveries on a receiver link.
``Outlet`` adds the socket's backpressure: how full the outbox may get before deliveries pause,
and the subscriptions that paused for it. ``Subscription`` is what the hub hangs on a link
(``Link.attachment``): the gateway hands it the link's events, and each kind (copy, move)
answers them its own way.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Protocol

from wsq.core.messages import Outcome
from wsq.protocol.state import Link


class Transfers(Protocol):
    """The protocol connection of one socket, as the hub sees it."""

    @property
    def out_bytes(self) -> int:
        """Bytes of output queued and not yet handed to the transport."""
        ...

    def transfer_overhead(self, link: Link) -> int:
        """The most bytes a transfer on ``link`` adds to its message's tail."""
        ...

    def send_transfer(self, link: Link, wire: str, message_id: str | None = None) -> None: ...

    def send_transfers(
        self, link: Link, tails: Sequence[str], message_ids: Sequence[str] | None = None
    ) -> None: ...


class Subscription(ABC):
    """A receiver link served by the hub: a copy (feed) or a move (queue) subscription."""

    __slots__ = ()

    link: Link
    outlet: Outlet

    @abstractmethod
    def credit_granted(self) -> None:
        """The client granted credit on the link."""

    @abstractmethod
    def resume(self) -> None:
        """The socket's outbox has room again (the subscription had paused for it)."""

    @abstractmethod
    async def settled(self, ids: list[str], outcome: Outcome) -> None:
        """The client settled deliveries of the link (move mode)."""

    @abstractmethod
    async def ended(self, unsettled: list[str]) -> None:
        """The link is gone; ``unsettled``: its move-mode deliveries never settled."""


class Outlet:
    """Where one socket's deliveries go: its protocol connection and how full its outbox may get."""

    __slots__ = ("conn", "high_water", "stalled")

    def __init__(self, conn: Transfers, high_water: int) -> None:
        self.conn = conn
        self.high_water = high_water
        # Subscriptions that stopped because the outbox was full; resumed on ``drained``.
        self.stalled: set[Subscription] = set()

    def has_room(self) -> bool:
        return self.conn.out_bytes < self.high_water

    def drained(self) -> None:
        """The socket's outbox has room again: resume what stopped for lack of it."""
        stalled = self.stalled
        self.stalled = set()
        for sub in stalled:
            sub.resume()
