"""A ``Broker`` that times every command of the broker it wraps (``wsq_broker_command_seconds``).

Thin on purpose: one clock read before and after each awaited command and one call of the
``observe`` it is given (a histogram's, per command, resolved once). The live readers
(``tail``, ``watch_group``) are not commands: they are handed through untimed.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from wsq.broker.base import Broker, DeadLetterHook, Handle, QuotaStore
from wsq.broker.presence import PresenceStore
from wsq.core.addresses import Pattern
from wsq.core.messages import (
    Delivery,
    Message,
    NewMessage,
    Outcome,
    Published,
    PublishedOnce,
    ReadResult,
)

#: The commands timed, as the ``command`` label names them.
COMMANDS: tuple[str, ...] = (
    "publish",
    "publish_once",
    "last_position",
    "read",
    "read_back",
    "claim",
    "open_group",
    "leave",
    "settle",
    "renew",
    "lookup",
    "ready",
)

Observe = Callable[[float], None]
T = TypeVar("T")


async def _timed(observe: Observe, command: Awaitable[T]) -> T:
    """``command`` awaited, its time (failures too) given to ``observe``. The coroutine is made
    before the clock starts, but none of it runs until awaited here."""
    t = time.perf_counter()
    try:
        return await command
    finally:
        observe(time.perf_counter() - t)


class TimedBroker(Broker):
    """``inner``, each command timed into ``observers[command]`` (seconds, failures too)."""

    def __init__(self, inner: Broker, observers: dict[str, Observe]) -> None:
        self.inner = inner
        self.quota_store: QuotaStore = inner.quota_store
        self.presence_store: PresenceStore = inner.presence_store
        self._relay = inner.relay
        self._publish = observers["publish"]
        self._publish_once = observers["publish_once"]
        self._last_position = observers["last_position"]
        self._read = observers["read"]
        self._read_back = observers["read_back"]
        self._claim = observers["claim"]
        self._open_group = observers["open_group"]
        self._leave = observers["leave"]
        self._settle = observers["settle"]
        self._renew = observers["renew"]
        self._lookup = observers["lookup"]
        self._ready = observers["ready"]

    @property
    def dead_letters_dropped(self) -> int:  # type: ignore[override]
        return self.inner.dead_letters_dropped

    @property
    def on_dead_letter(self) -> DeadLetterHook | None:
        return self.inner.on_dead_letter

    @on_dead_letter.setter
    def on_dead_letter(self, hook: DeadLetterHook | None) -> None:
        # The inner broker dead-letters: it is the one to tell.
        self.inner.on_dead_letter = hook

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    def reader_lag_s(self) -> float:
        return self.inner.reader_lag_s()

    async def ready(self) -> bool:
        return await _timed(self._ready, self.inner.ready())

    async def publish(
        self, tenant: str, address: str, messages: Sequence[NewMessage]
    ) -> list[Published]:
        return await _timed(self._publish, self.inner.publish(tenant, address, messages))

    async def publish_once(
        self,
        tenant: str,
        address: str,
        messages: Sequence[NewMessage],
        key: str,
        fingerprint: str,
    ) -> PublishedOnce:
        return await _timed(
            self._publish_once, self.inner.publish_once(tenant, address, messages, key, fingerprint)
        )

    async def last_position(self, tenant: str, address: str) -> str:
        return await _timed(self._last_position, self.inner.last_position(tenant, address))

    async def read(
        self, tenant: str, address: str, after: str, limit: int, max_bytes: int | None = None
    ) -> ReadResult:
        return await _timed(self._read, self.inner.read(tenant, address, after, limit, max_bytes))

    async def read_back(
        self, tenant: str, address: str, before: str | None, limit: int, max_bytes: int
    ) -> list[Message]:
        return await _timed(
            self._read_back, self.inner.read_back(tenant, address, before, limit, max_bytes)
        )

    def tail(
        self,
        tenant: str,
        address: str,
        after: str,
        on_messages: Callable[[list[Message]], None],
    ) -> Handle:
        return self.inner.tail(tenant, address, after, on_messages)

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
        return await _timed(
            self._claim,
            self.inner.claim(
                tenant, address, group, consumer, count, lease_ms, subject_filter, room
            ),
        )

    async def open_group(self, tenant: str, address: str, group: str) -> bool:
        return await _timed(self._open_group, self.inner.open_group(tenant, address, group))

    async def leave(
        self, tenant: str, address: str, group: str, consumer: str, unsettled: Sequence[str]
    ) -> None:
        await _timed(self._leave, self.inner.leave(tenant, address, group, consumer, unsettled))

    async def settle(
        self,
        tenant: str,
        address: str,
        group: str,
        consumer: str,
        ids: Sequence[str],
        outcome: Outcome,
    ) -> None:
        await _timed(
            self._settle, self.inner.settle(tenant, address, group, consumer, ids, outcome)
        )

    async def renew(
        self,
        tenant: str,
        address: str,
        group: str,
        consumer: str,
        ids: Sequence[str],
        lease_ms: int,
    ) -> list[str]:
        return await _timed(
            self._renew, self.inner.renew(tenant, address, group, consumer, ids, lease_ms)
        )

    def watch_group(
        self, tenant: str, address: str, group: str, on_available: Callable[[], None]
    ) -> Handle:
        return self.inner.watch_group(tenant, address, group, on_available)

    async def lookup(self, tenant: str, address: str, message_id: str) -> Message | None:
        return await _timed(self._lookup, self.inner.lookup(tenant, address, message_id))
