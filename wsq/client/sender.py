"""Publishing on the wire: a ``Sender`` is the sender link of one address. It holds that
address's publishes waiting for credit or a socket (in publish order), sends them as credit
allows, puts back the ones a lost socket never answered (their ``message_id`` makes the resend
harmless), and re-attaches after a retryable detach. ``Senders`` keeps one per address, at most
``max_senders``: past it the least recently used idle one is detached."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from wsq.core.limits import MAX_UINT32

from .errors import CLOSED, ClientError
from .wire import FINAL_LINK_CONDITIONS, from_wire, sender_frame, transfer_text

if TYPE_CHECKING:
    from .client import Client
    from .connection import Binding
    from .outbox import OutboxItem


class Sender:
    def __init__(self, client: Client, address: str) -> None:
        self.client = client
        self.address = address
        self.queue: list[OutboxItem] = []  # waiting for credit or a socket, in publish order
        self.inflight = 0  # sent, awaiting their disposition
        self._binding: Binding | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._retries = 0
        self.last_used = time.monotonic()

    @property
    def idle(self) -> bool:
        return not self.queue and self.inflight == 0

    @property
    def waiting_retry(self) -> bool:
        return self._retry is not None

    def attach_frame(self, b: Binding) -> dict[str, Any]:
        return sender_frame(b.session.ch, b.handle, self.address)

    def on_attached(self, b: Binding, f: object) -> None:
        self._retries = 0

    def on_flow(self, b: Binding, credit: int) -> None:
        b.credit = min(MAX_UINT32, b.credit + credit)
        self.pump()

    def pump(self) -> None:
        b = self._binding
        if b is None or not b.attached or not b.live:
            return
        session = b.session
        while b.credit > 0 and self.queue:
            item = self.queue.pop(0)
            delivery = session.next_delivery
            session.next_delivery += 1
            session.pending[delivery] = item
            item.binding = b
            self.inflight += 1
            b.credit -= 1
            b.conn.send_text(transfer_text(session.ch, b.handle, delivery, item.tail))

    def requeue(self, item: OutboxItem) -> None:
        """Back into the queue, in publish order: sent but never answered (it may have been
        stored; its message_id makes the retry harmless)."""
        item.binding = None
        self.inflight -= 1
        self.queue.append(item)
        self.queue.sort(key=lambda i: i.seq)

    def refuse(self, error: ClientError) -> None:
        """No room for the link on the socket: what waits for it fails."""
        self.client._senders.pop(self.address, None)
        self.fail_all(error)

    def on_lost(self, b: Binding) -> None:
        if self._binding is b:
            self._binding = None

    def on_detached(self, b: Binding, error: object) -> None:
        self.on_lost(b)
        pending = b.session.pending
        mine = [d for d, item in pending.items() if item.binding is b]
        for d in mine:
            self.requeue(pending.pop(d))
        if self.client._senders.get(self.address) is not self:
            # Evicted while idle, or the client closed: anything left fails.
            self.fail_all(ClientError(CLOSED, "the sender was closed", address=self.address))
            return
        failure = from_wire(
            error or {"condition": "wsq:not-found", "description": "detached"}, "link", self.address
        )
        if error and failure.condition in FINAL_LINK_CONDITIONS:
            self.client._senders.pop(self.address, None)
            self.fail_all(failure)
            return
        if not self.idle:
            self.client._emit("error", failure)
            delay = self.client._backoff.delay(self._retries)
            self._retries += 1
            if self._retry is not None:
                self._retry.cancel()
            self._retry = asyncio.get_running_loop().call_later(delay, self._retry_now)

    def _retry_now(self) -> None:
        self._retry = None
        if self.client._senders.get(self.address) is self and self._binding is None:
            self.client._place(self)

    def fail_all(self, error: ClientError) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        items, self.queue = self.queue, []
        for item in items:
            self.client._outbox.finish(item, error)


class Senders(dict[str, Sender]):
    """The client's senders by address, bounded: links per socket are a limited resource."""

    def __init__(self, maximum: int) -> None:
        super().__init__()
        self.maximum = maximum

    def of(self, client: Client, address: str) -> Sender:
        sender = self.get(address)
        if sender is None:
            if len(self) >= self.maximum:
                self._evict()
            sender = self[address] = Sender(client, address)
        return sender

    def _evict(self) -> None:
        """Detach the least recently used idle sender link."""
        idle = [s for s in self.values() if s.idle and not s.waiting_retry]
        if not idle:
            return
        oldest = min(idle, key=lambda s: s.last_used)
        del self[oldest.address]
        b = oldest._binding
        if b is not None and b.live:
            b.detaching = True
            b.conn.send({"op": "detach", "ch": b.session.ch, "handle": b.handle})
