"""The Broker interface: what the hub, the gateway and the HTTP bridge need from storage.

Positions are strings ``<ms>-<seq>``, strictly increasing per (tenant, address). Every method
takes the tenant's name; a broker is built with the settings and finds each tenant's retention,
dedup window and dead-letter address there. Implementations: ``memory.MemoryBroker`` (one process)
and the Redis streams broker.

Two delivery models:
- copy (feed): ``read`` history after a position, ``tail`` to be called with every new message.
- move (queue): consumer groups; ``claim`` leases messages to one consumer, ``settle`` ends a
  lease with an outcome, ``watch_group`` is told when something may have become claimable.
  A group that does not exist yet is created on first use at the oldest retained message, so a
  queue keeps what was published before its first consumer came.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from wsq.protocol import codec
from wsq.protocol.addresses import Pattern

#: The position before every message: reading after it reads from the oldest retained.
START = "0-0"


#: Digits of each half of a position at most: every such number fits the 64 bits a Redis
#: stream id holds, so every broker takes every position the contract does.
MAX_POSITION_DIGITS = 19


def parse_position(value: str) -> tuple[int, int]:
    """``"<ms>-<seq>"`` -> ``(ms, seq)``; raises ValueError when malformed."""
    ms, sep, seq = value.partition("-")
    if (
        not sep
        or not 0 < len(ms) <= MAX_POSITION_DIGITS
        or not 0 < len(seq) <= MAX_POSITION_DIGITS
        or not ms.isascii()
        or not seq.isascii()
        or not ms.isdigit()
        or not seq.isdigit()
    ):
        raise ValueError(f"invalid position: {value!r}")
    return int(ms), int(seq)


def is_valid_position(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        parse_position(value)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message offered for publishing. ``body`` is the JSON text of the body, encoded once."""

    body: str
    publisher: str
    subject: str | None = None
    message_id: str | None = None
    content_type: str | None = None
    headers: Mapping[str, Any] | None = None
    ttl_ms: int | None = None


class Message:
    """A stored message as read back. ``wire`` caches its encoding for the hub (encode once).

    ``stored``: the props as a broker stored them, JSON text of ``publisher``, ``message_id``,
    ``content_type`` and ``headers`` (``wsq.protocol.wire.stored_props``), decoded only when one
    of them is asked for: live fan-out needs none of them once ``wire`` is built.
    """

    __slots__ = (
        "_content_type",
        "_headers",
        "_message_id",
        "_publisher",
        "_stored",
        "body",
        "expires_at",
        "id",
        "pos",
        "subject",
        "ts",
        "wire",
    )

    def __init__(
        self,
        id: str,
        body: str,
        *,
        ts: int,
        publisher: str,
        subject: str | None = None,
        message_id: str | None = None,
        content_type: str | None = None,
        headers: Mapping[str, Any] | None = None,
        expires_at: int | None = None,
        pos: tuple[int, int] | None = None,
        wire: str | None = None,
        stored: str | None = None,
    ) -> None:
        self.id = id
        # ``pos`` when the caller has parsed ``id`` already (a broker reading its own ids).
        self.pos = parse_position(id) if pos is None else pos
        self.body = body
        self.ts = ts
        self._publisher = publisher
        self.subject = subject
        self._message_id = message_id
        self._content_type = content_type
        self._headers = headers
        self.expires_at = expires_at
        self.wire = wire
        self._stored = stored

    def _decode(self, stored: str) -> None:
        props = codec.loads(stored)
        if not isinstance(props, dict):
            props = {}
        self._stored = None
        self._publisher = str(props.get("publisher", ""))
        self._message_id = props.get("message_id")
        self._content_type = props.get("content_type")
        self._headers = props.get("headers")

    @property
    def publisher(self) -> str:
        if self._stored is not None:
            self._decode(self._stored)
        return self._publisher

    @property
    def message_id(self) -> str | None:
        if self._stored is not None:
            self._decode(self._stored)
        return self._message_id

    @property
    def content_type(self) -> str | None:
        if self._stored is not None:
            self._decode(self._stored)
        return self._content_type

    @property
    def headers(self) -> Mapping[str, Any] | None:
        if self._stored is not None:
            self._decode(self._stored)
        return self._headers

    def props(self) -> dict[str, Any]:
        """The ``props`` object of the wire (absent fields left out)."""
        props: dict[str, Any] = {"ts": self.ts, "publisher": self.publisher}
        if self.subject is not None:
            props["subject"] = self.subject
        if self.message_id is not None:
            props["message_id"] = self.message_id
        if self.content_type is not None:
            props["content_type"] = self.content_type
        if self.headers is not None:
            props["headers"] = dict(self.headers)
        if self.expires_at is not None:
            props["expires"] = self.expires_at
        return props

    def __repr__(self) -> str:
        return f"Message({self.id!r}, subject={self.subject!r})"


def message_size(m: Message) -> int:
    """What a read's byte budget counts of a message: the JSON text of its body and of its
    headers (the parts that can be large; each is bounded by max_frame_bytes on the way in)."""
    size = len(m.body)
    if m.headers is not None:
        size += len(codec.dumps(dict(m.headers)))
    return size


class Watcher(Protocol):
    """One ``watch_group`` registration as ``Watchers`` sees it."""

    closed: bool

    def callback(self) -> None: ...


class Watchers(list[Watcher]):
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
                logging.getLogger(__name__).exception("group watcher failed")


@dataclass(frozen=True, slots=True)
class Published:
    """The answer to one published message: its position, and whether it was a duplicate."""

    id: str
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class PublishedOnce:
    """The answer to a publish under an idempotency key: the results of the first publish with
    that key, and whether this call only replayed them (stored and delivered nothing)."""

    results: list[Published]
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class ReadResult:
    """History after a position. ``recovered`` is False when retention dropped messages after it."""

    messages: list[Message]
    recovered: bool = True


@dataclass(frozen=True, slots=True)
class Delivery:
    """A message leased to one consumer of a group. ``redelivered``: failed deliveries before."""

    message: Message
    redelivered: int


class Outcome(enum.Enum):
    ACCEPTED = "accepted"  # done: removed from the group
    RELEASED = "released"  # not processed: available again at once, not counted
    REJECTED = "rejected"  # never again: dead-lettered where the tenant configures it
    MODIFIED = "modified"  # failed: available again after the redelivery delay, counted


class Handle(Protocol):
    """What ``tail`` and ``watch_group`` return: close it to stop the callbacks."""

    def close(self) -> None: ...


class Broker(ABC):
    """Storage of addresses for one gateway process. Every method is safe to call concurrently."""

    @abstractmethod
    async def start(self) -> None:
        """Connect / start background work. Called once from the app's lifespan."""

    @abstractmethod
    async def close(self) -> None:
        """Stop background work and release connections."""

    @abstractmethod
    async def ready(self) -> bool:
        """True when publishes can be stored right now (``/readyz``)."""

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
    ) -> list[Delivery]:
        """Lease up to ``count`` available messages (matching the filter) to ``consumer``.

        Messages a filter does not match stay available to the group's other consumers.
        """

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

        An id the consumer no longer holds (its lease expired and it went to another) is ignored.
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
