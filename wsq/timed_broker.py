"""A ``Broker`` that times every command of the broker it wraps (``wsq_broker_command_seconds``).

Thin on purpose: one clock read before and after each awaited command and one call of the
``observe`` it is given (a histogram's, per command, resolved once). The live readers
(``tail``, ``watch_group``) are not commands: they are handed through untimed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from wsq.broker.base import Broker, Handle, QuotaStore
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


class TimedBroker(Broker):
    """``inner``, each command timed into ``observers[command]`` (seconds, failures too)."""

    def __init__(self, inner: Broker, observers: dict[str, Observe]) -> None:
        self.inner = inner
        self.quota_store: QuotaStore = inner.quota_store
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

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    def reader_lag_s(self) -> float:
        return self.inner.reader_lag_s()

    async def ready(self) -> bool:
        t = time.perf_counter()
        try:
            return await self.inner.ready()
        finally:
            self._ready(time.perf_counter() - t)

    async def publish(
        self, tenant: str, address: str, messages: Sequence[NewMessage]
    ) -> list[Published]:
        t = time.perf_counter()
        try:
            return await self.inner.publish(tenant, address, messages)
        finally:
            self._publish(time.perf_counter() - t)

    async def publish_once(
        self,
        tenant: str,
        address: str,
        messages: Sequence[NewMessage],
        key: str,
        fingerprint: str,
    ) -> PublishedOnce:
        t = time.perf_counter()
        try:
            return await self.inner.publish_once(tenant, address, messages, key, fingerprint)
        finally:
            self._publish_once(time.perf_counter() - t)

    async def last_position(self, tenant: str, address: str) -> str:
        t = time.perf_counter()
        try:
            return await self.inner.last_position(tenant, address)
        finally:
            self._last_position(time.perf_counter() - t)

    async def read(
        self, tenant: str, address: str, after: str, limit: int, max_bytes: int | None = None
    ) -> ReadResult:
        t = time.perf_counter()
        try:
            return await self.inner.read(tenant, address, after, limit, max_bytes)
        finally:
            self._read(time.perf_counter() - t)

    async def read_back(
        self, tenant: str, address: str, before: str | None, limit: int, max_bytes: int
    ) -> list[Message]:
        t = time.perf_counter()
        try:
            return await self.inner.read_back(tenant, address, before, limit, max_bytes)
        finally:
            self._read_back(time.perf_counter() - t)

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
        t = time.perf_counter()
        try:
            return await self.inner.claim(
                tenant, address, group, consumer, count, lease_ms, subject_filter, room
            )
        finally:
            self._claim(time.perf_counter() - t)

    async def open_group(self, tenant: str, address: str, group: str) -> bool:
        t = time.perf_counter()
        try:
            return await self.inner.open_group(tenant, address, group)
        finally:
            self._open_group(time.perf_counter() - t)

    async def leave(
        self, tenant: str, address: str, group: str, consumer: str, unsettled: Sequence[str]
    ) -> None:
        t = time.perf_counter()
        try:
            await self.inner.leave(tenant, address, group, consumer, unsettled)
        finally:
            self._leave(time.perf_counter() - t)

    async def settle(
        self,
        tenant: str,
        address: str,
        group: str,
        consumer: str,
        ids: Sequence[str],
        outcome: Outcome,
    ) -> None:
        t = time.perf_counter()
        try:
            await self.inner.settle(tenant, address, group, consumer, ids, outcome)
        finally:
            self._settle(time.perf_counter() - t)

    async def renew(
        self,
        tenant: str,
        address: str,
        group: str,
        consumer: str,
        ids: Sequence[str],
        lease_ms: int,
    ) -> list[str]:
        t = time.perf_counter()
        try:
            return await self.inner.renew(tenant, address, group, consumer, ids, lease_ms)
        finally:
            self._renew(time.perf_counter() - t)

    def watch_group(
        self, tenant: str, address: str, group: str, on_available: Callable[[], None]
    ) -> Handle:
        return self.inner.watch_group(tenant, address, group, on_available)

    async def lookup(self, tenant: str, address: str, message_id: str) -> Message | None:
        t = time.perf_counter()
        try:
            return await self.inner.lookup(tenant, address, message_id)
        finally:
            self._lookup(time.perf_counter() - t)
