"""The Broker interface: what the hub, the gateway and the HTTP bridge need from storage.

Positions are strings ``<ms>-<seq>``, strictly increasing per (tenant, address). Every method
takes the tenant's name; a broker is built with the tenants' storage policies
(``wsq.core.policy``: retention, dedup window, dead-letter address). Implementations:
``memory.MemoryBroker`` (one process) and ``redis.RedisBroker`` (Redis streams, many processes).
What both do alike lives here once: tails and their fan-out, group watchers, dead-letter copies.

Two delivery models:
- copy (feed): ``read`` history after a position, ``tail`` to be called with every new message.
- move (queue): consumer groups; ``claim`` leases messages to one consumer, ``settle`` ends a
  lease with an outcome, ``watch_group`` is told when something may have become claimable.
  A group that does not exist yet is created on first use at the oldest retained message, so a
  queue keeps what was published before its first consumer came.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from wsq.broker.presence import PresenceStore
from wsq.broker.relay import LocalRelay, Relay
from wsq.core.addresses import Pattern
from wsq.core.limits import REWIND_PAGE_BYTES, REWIND_SCAN, REWIND_SCAN_BYTES
from wsq.core.messages import (
    Delivery,
    Message,
    NewMessage,
    Outcome,
    Published,
    PublishedOnce,
    ReadResult,
    message_size,
)
from wsq.core.positions import START, Position, format_position

log = logging.getLogger(__name__)


class Tail:
    """One ``tail`` registration, for either broker: its callback, and where it stands while
    the backlog before the live reader's position is read."""

    __slots__ = ("_detach", "after", "callback", "closed", "pending")

    def __init__(
        self, callback: Callable[[list[Message]], None], detach: Callable[[Tail], None]
    ) -> None:
        self.callback = callback
        self._detach = detach
        self.closed = False
        # The backlog being read or not yet handed over: live messages queue here behind it.
        self.pending: list[Message] | None = None
        # Tailing after a position newer than the live reader's: skip messages up to it.
        self.after: Position | None = None

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.pending = None
            with contextlib.suppress(ValueError):  # already out of its list
                self._detach(self)

    def hand_over(self, backlog: list[Message] | None = None) -> None:
        """The backlog is read: hand it over with what the live reader queued meanwhile."""
        if self.closed or self.pending is None:
            return
        batch = self.pending if not backlog else backlog + self.pending
        self.pending = None
        if batch:
            self.deliver(batch)

    def deliver(self, batch: list[Message]) -> None:
        try:
            self.callback(batch)
        except Exception:
            log.exception("tail callback failed")


def fan_out(tails: Sequence[Tail], messages: list[Message]) -> None:
    """New messages of an address (in order) to each of its tails: skipped up to a tail's
    ``after``, queued behind a backlog still being read, else handed over at once."""
    for t in tuple(tails):  # a callback may open or close tails
        if t.closed:
            continue
        batch = messages
        if t.after is not None:
            after = t.after
            batch = [m for m in messages if m.pos > after]
            if not batch:
                continue
            t.after = None
        if t.pending is not None:
            t.pending.extend(batch)
            continue
        t.deliver(batch)


class Watch:
    """One ``watch_group`` registration, for either broker."""

    __slots__ = ("_detach", "callback", "closed")

    def __init__(self, callback: Callable[[], None], detach: Callable[[Watch], None]) -> None:
        self.callback = callback
        self._detach = detach
        self.closed = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(ValueError):  # already out of its list
                self._detach(self)


class Watchers(list[Watch]):
    """The watchers of one consumer group in a broker process. However many reasons arise in
    one loop turn (publishes, releases, expiries), each watcher is told once, on the next turn,
    so that no caller's stack runs a consumer's claim."""

    __slots__ = ("pending",)

    def __init__(self) -> None:
        super().__init__()
        self.pending = False

    def notify(self) -> None:
        if self and not self.pending:
            asyncio.get_running_loop().call_soon(self._fire)
            self.pending = True

    def _fire(self) -> None:
        self.pending = False
        for w in tuple(self):
            if w.closed:
                continue
            try:
                w.callback()
            except Exception:
                log.exception("group watcher failed")


#: Entries one step of a rewind reads back.
REWIND_PAGE = 500
#: The greatest sequence part of a position (19 digits, the contract's bound): the position just
#: before ``<ms>-0`` is ``<ms - 1>-`` this.
_MAX_SEQ = 10**19 - 1


def position_before(pos: Position) -> str:
    """The greatest position before ``pos``: reading after it starts at ``pos``."""
    ms, seq = pos
    if seq > 0:
        return format_position((ms, seq - 1))
    return format_position((ms - 1, _MAX_SEQ)) if ms > 0 else START


@dataclass(frozen=True, slots=True)
class Rewind:
    """Where a rewound link starts (``after``), and, when it keeps only the last message of each
    subject, which messages up to ``upto`` it delivers (``keep``: their ids); the others up to
    there were superseded. Messages after ``upto`` came later and are delivered as usual."""

    after: str
    keep: frozenset[str] | None = None
    upto: Position = (0, 0)


#: ``dead_letter_reason`` of a dead letter (contract section 5, "Queue (move) rules").
REJECTED = "rejected"
DELIVERY_LIMIT = "delivery-limit"


def dead_letter_copy(m: Message, address: str, reason: str) -> NewMessage:
    """What goes to the tenant's dead-letter address for a message of ``address`` that was
    rejected or went past the delivery limit. Brokers store it without dedup: its
    ``message_id`` is kept for the reader, but two dead letters with one id both land."""
    props = m.props()  # decoded once (a stored message keeps them encoded)
    headers: dict[str, Any] = dict(props.get("headers") or {})
    headers["dead_letter_from"] = address
    headers["dead_letter_id"] = m.id
    headers["dead_letter_reason"] = reason
    return NewMessage(
        body=m.body,
        publisher=str(props.get("publisher", "")),
        subject=m.subject,
        message_id=props.get("message_id"),
        content_type=props.get("content_type"),
        headers=headers,
    )


class Handle(Protocol):
    """What ``tail`` and ``watch_group`` return: close it to stop the callbacks."""

    def close(self) -> None: ...


class QuotaStore(ABC):
    """The tenants' counts behind their quotas (``wsq.quotas``, docs/security.md): this
    process's own on ``memory://``, shared by every process using the broker on Redis."""

    @abstractmethod
    async def acquire(self, tenant: str, kind: str, limit: int) -> bool:
        """Count one more ``kind`` (connections, links) of ``tenant`` for this process, if the
        tenant's total stays within ``limit``; False (nothing counted) if it would not."""

    @abstractmethod
    def release(self, tenant: str, kind: str, n: int = 1) -> None:
        """``n`` of what this process acquired are given back (at once here; on Redis sent
        without waiting)."""

    @abstractmethod
    async def admit(self, tenant: str, address: str, limit: int, ttl_ms: int) -> int:
        """Count ``address`` live for ``ttl_ms`` from now, if it is live already or one more
        stays within ``limit``: answers 0. Else nothing changes and the answer is the ms until
        the tenant's oldest live address idles out (at least 1)."""

    @abstractmethod
    async def live_addresses(self, tenant: str, limit: int) -> list[str]:
        """At most ``limit`` of the tenant's live addresses (what ``admit`` counts): how a
        sink's patterns find the addresses they match (``wsq.webhooks.sinks``)."""


#: Told the messages of an address (tenant, address) copied to a dead-letter address (the
#: third argument), each with its reason: by the process that copied them, once per copy.
DeadLetterHook = Callable[[str, str, str, list[tuple[Message, str]]], None]


class Broker(ABC):
    """Storage of addresses for one gateway process. Every method is safe to call concurrently."""

    #: Told what this process dead-letters (the tenants' ``message.dead_lettered`` webhooks).
    on_dead_letter: DeadLetterHook | None = None

    #: Messages past ``max_deliveries`` dropped for want of a dead-letter address, and rejected
    #: ones likewise, by this process (counted, as the contract says).
    dead_letters_dropped: int = 0
    #: The tenants' quota counts (``wsq.quotas``).
    quota_store: QuotaStore
    #: The members of every address (``"presence": true`` receivers).
    presence_store: PresenceStore
    #: Where POSTs for HTTP streams reach the process holding the stream (``relay``).
    _relay: Relay | None = None

    @property
    def relay(self) -> Relay:
        """The broker's relay: this process's own unless the broker sets one (Redis)."""
        if self._relay is None:
            self._relay = LocalRelay()
        return self._relay

    @abstractmethod
    async def start(self) -> None:
        """Connect / start background work. Called once from the app's lifespan."""

    @abstractmethod
    async def close(self) -> None:
        """Stop background work and release connections."""

    @abstractmethod
    async def ready(self) -> bool:
        """True when publishes can be stored right now (``/readyz``)."""

    def reader_lag_s(self) -> float:
        """How far (s) the live reader of this process is behind what was published: 0 where
        publishes are passed on as they are stored (the memory broker)."""
        return 0.0

    # -- publishing ------------------------------------------------------------------------

    @abstractmethod
    async def publish(
        self, tenant: str, address: str, messages: Sequence[NewMessage]
    ) -> list[Published]:
        """Store messages in order; answers once they are stored (durably, where the broker is).

        A message whose ``message_id`` was accepted on this address within the tenant's dedup
        window is not stored again: its answer is the first position with ``duplicate=True``.
        Raises ``BrokerUnavailable`` when nothing could be stored.
        """

    @abstractmethod
    async def publish_once(
        self,
        tenant: str,
        address: str,
        messages: Sequence[NewMessage],
        key: str,
        fingerprint: str,
    ) -> PublishedOnce:
        """``publish`` under an idempotency key (the HTTP bridge's ``Idempotency-Key``).

        The first call with ``key`` on the address publishes and stores its results with the
        key, atomically, for the tenant's dedup window (0: nothing is stored). A later call
        with the same key and ``fingerprint`` (what the request was) answers the stored
        results with ``replayed=True`` and stores nothing; with another fingerprint it raises
        ``IdempotencyKeyReused``. Keys are per (tenant, address) and shared by every process
        using the broker.
        """

    # -- copy (feed) -----------------------------------------------------------------------

    @abstractmethod
    async def last_position(self, tenant: str, address: str) -> str:
        """The newest position of the address, ``START`` when it has none."""

    @abstractmethod
    async def read(
        self, tenant: str, address: str, after: str, limit: int, max_bytes: int | None = None
    ) -> ReadResult:
        """Up to ``limit`` retained, unexpired messages with a position after ``after``, in order.

        ``after`` is a position (``START`` reads from the oldest retained). With ``max_bytes``,
        messages are added while their sizes (``message_size``; the Redis broker counts the
        stored bytes) sum to at most ``max_bytes``, and always at least one: what a caller
        holds in memory per read stays bounded, and it reads on after the last one.
        """

    @abstractmethod
    async def read_back(
        self, tenant: str, address: str, before: str | None, limit: int, max_bytes: int
    ) -> list[Message]:
        """Up to ``limit`` retained, unexpired messages with a position before ``before`` (None:
        from the newest), newest first, while their sizes (``message_size``) sum to at most
        ``max_bytes`` (always at least one). One bounded step of ``rewind``."""

    async def rewind(
        self,
        tenant: str,
        address: str,
        n: int,
        subject_filter: Pattern | None = None,
        by_subject: bool = False,
    ) -> Rewind:
        """Where a link starts to get the last ``n`` retained messages matching
        ``subject_filter`` (contract section 5, ``rewind``); ``by_subject``: the last message of
        each of the last ``n`` subjects instead. Reads back at most ``REWIND_SCAN`` entries and
        about ``REWIND_SCAN_BYTES``: what matches within them is what the link gets."""
        picked: list[Message] = []  # newest first
        subjects: set[str] = set()
        before: str | None = None
        scanned = scanned_bytes = 0
        newest: Message | None = None
        while scanned < REWIND_SCAN and scanned_bytes < REWIND_SCAN_BYTES and len(picked) < n:
            ask = min(REWIND_PAGE, REWIND_SCAN - scanned)
            page = await self.read_back(tenant, address, before, ask, REWIND_PAGE_BYTES)
            if not page:
                break
            newest = newest or page[0]
            scanned += len(page)
            scanned_bytes += sum(map(message_size, page))
            for m in page:
                subject = m.subject
                if subject_filter is not None and (
                    subject is None or not subject_filter.matches(subject)
                ):
                    continue
                if by_subject:
                    if (subject or "") in subjects:
                        continue
                    subjects.add(subject or "")
                picked.append(m)
                if len(picked) == n:
                    break
            before = page[-1].id
        if not picked:
            # Nothing to rewind to: live from the newest retained (as "$").
            return Rewind(newest.id if newest is not None else START)
        after = position_before(picked[-1].pos)
        if not by_subject:
            return Rewind(after)
        assert newest is not None
        return Rewind(after, frozenset(m.id for m in picked), newest.pos)

    @abstractmethod
    def tail(
        self,
        tenant: str,
        address: str,
        after: str,
        on_messages: Callable[[list[Message]], None],
    ) -> Handle:
        """Call ``on_messages`` with every message after ``after``, in order, each exactly once.

        The one live reader of this process for the address: the hub calls it once per address
        however many links it serves. ``on_messages`` is called on the event loop and must not
        block.
        """

    # -- move (queue) ----------------------------------------------------------------------

    @abstractmethod
    async def claim(
        self,
        tenant: str,
        address: str,
        group: str,
        consumer: str,
        count: int,
        lease_ms: int,
        subject_filter: Pattern | None = None,
        room: int | None = None,
    ) -> list[Delivery]:
        """Lease up to ``count`` available messages (matching the filter) to ``consumer``.

        Messages a filter does not match stay available to the group's other consumers. A
        message that ``consumer`` released, or whose lease ran out on it, is left for another
        consumer that wants work, for up to ``HANDOFF_MS`` (contract section 5).

        ``room``: a standing consumer (a link) says how many it could take in all; the group
        then records, across processes, whether it still wants work after this claim (it got
        fewer than ``room``) until its next claim or ``leave``. None: a one-off consumer (an
        HTTP claim), recorded as nothing.
        """

    @abstractmethod
    async def open_group(self, tenant: str, address: str, group: str) -> bool:
        """Create the consumer group unless it exists (at the oldest retained message, as a
        first ``claim`` would). False, creating nothing, when the address has the tenant's
        ``max_groups`` groups already."""

    @abstractmethod
    async def leave(
        self, tenant: str, address: str, group: str, consumer: str, unsettled: Sequence[str]
    ) -> None:
        """``consumer`` is gone (its link, session or connection ended): it wants no more work,
        and its ``unsettled`` deliveries ended without an outcome: each is counted in
        ``redelivered`` and goes to another consumer first (or is dead-lettered past the
        tenant's ``max_deliveries``)."""

    @abstractmethod
    async def settle(
        self,
        tenant: str,
        address: str,
        group: str,
        consumer: str,
        ids: Sequence[str],
        outcome: Outcome,
    ) -> None:
        """End the leases ``consumer`` holds on ``ids`` with ``outcome``.

        ``released``: available at once, to another consumer first. ``modified``: counted in
        ``redelivered``, available after the redelivery delay (dead-lettered past the tenant's
        ``max_deliveries``). ``rejected``: dead-lettered, or dropped without a dead-letter
        address. An id the consumer no longer holds (its lease expired and it went to another)
        is ignored.
        """

    @abstractmethod
    async def renew(
        self,
        tenant: str,
        address: str,
        group: str,
        consumer: str,
        ids: Sequence[str],
        lease_ms: int,
    ) -> list[str]:
        """Extend leases ``consumer`` still holds; answers the ids renewed."""

    @abstractmethod
    def watch_group(
        self, tenant: str, address: str, group: str, on_available: Callable[[], None]
    ) -> Handle:
        """Call ``on_available`` whenever a message may have become claimable in the group:
        published, released, modified past its delay, or its lease expired."""

    # -- reconciliation --------------------------------------------------------------------

    @abstractmethod
    async def lookup(self, tenant: str, address: str, message_id: str) -> Message | None:
        """The retained message with this ``message_id`` on the address, if any."""
