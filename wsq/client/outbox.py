"""The outbox: every publish from ``Client.publish`` until the gateway answers it. A publish is
checked and encoded once here (so a bad one is refused before it can break the socket), gets a
``message_id`` (so a retry after an unknown outcome is stored once: the gateway's dedup), and
counts against the bounds ``size`` and ``max_bytes`` until it is settled."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import ClientError
from .wire import TRANSFER_OVERHEAD, publish_tail

if TYPE_CHECKING:
    from .connection import Binding


@dataclass(eq=False, slots=True)
class OutboxItem:
    """One publish: its encoded tail and the future its caller awaits (the position)."""

    seq: int
    address: str
    tail: str
    size: int
    message_id: str
    future: asyncio.Future[str]
    binding: Binding | None = field(default=None)


class Outbox:
    """At most ``size`` publishes and ``max_bytes`` bytes unconfirmed; generated message ids
    are ``<prefix>-<n>``, a random prefix per client unless one is given."""

    def __init__(self, size: int, max_bytes: int, message_id_prefix: str | None = None) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self.prefix = message_id_prefix or uuid.uuid4().hex
        self.count = 0
        self.used = 0
        self._seq = itertools.count(1)
        self._generated = itertools.count(1)

    def add(
        self,
        address: str,
        body: Any,
        *,
        max_frame_bytes: int,
        subject: str | None = None,
        message_id: str | None = None,
        ttl: float | None = None,
        content_type: str | None = None,
        headers: Mapping[str, Any] | None = None,
    ) -> OutboxItem:
        """A publish as an item, counted; raises (and counts nothing) when it is invalid, too
        large for the gateway, or the outbox is full."""
        mid = message_id if message_id is not None else f"{self.prefix}-{next(self._generated)}"
        tail = publish_tail(
            address,
            body,
            message_id=mid,
            subject=subject,
            ttl_ms=None if ttl is None else round(ttl * 1000),
            content_type=content_type,
            headers=headers,
        )
        size = len(tail.encode()) + TRANSFER_OVERHEAD
        if size > max_frame_bytes:
            raise ClientError(
                "wsq:frame-too-large",
                f"the message has {size} bytes, the gateway takes {max_frame_bytes}",
                scope="message",
                address=address,
            )
        if self.count >= self.size or self.used + size > self.max_bytes:
            raise ClientError(
                "wsq:resource-limit-exceeded",
                f"the outbox is full ({self.count} messages, {self.used} bytes unconfirmed)",
                scope="message",
                address=address,
            )
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        item = OutboxItem(next(self._seq), address, tail, size, mid, future)
        self.count += 1
        self.used += size
        return item

    def finish(self, item: OutboxItem, error: BaseException | None, position: str = "") -> None:
        """Settled: out of the outbox; its publish answers ``position`` or raises ``error``."""
        self.count -= 1
        self.used -= item.size
        if item.future.done():  # the caller gave up waiting (cancelled)
            return
        if error is not None:
            item.future.set_exception(error)
        else:
            item.future.set_result(position)
