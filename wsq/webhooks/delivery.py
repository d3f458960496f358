"""Sending the tenants' events: one bounded queue and one worker per webhook entry.

``emit`` never waits: it puts the event in the queue of every entry of the tenant that asked
for its type, or drops it and counts it when that queue is full (a slow or dead receiver must
not hold sockets nor memory). A worker sends its queue in order, one request at a time (the
tenant's concurrent requests are bounded by its entries), each with the entry's timeout;
a failed attempt (a transport error, a timeout, an answer other than 2xx) is retried after
``backoff_ms``, doubled each time up to ``MAX_BACKOFF_S``, until ``max_attempts``; then the
event is given up and counted. Every attempt of one event carries the same ``webhook-id``
and a fresh ``webhook-timestamp`` and signature. Nothing is logged of a body nor a secret.

Lifecycle events are best effort: they live in this process's memory and a restart loses
what was queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from wsq.background import stop
from wsq.config.settings import TenantConfig, WebhookConfig
from wsq.core.messages import Message
from wsq.core.presence import Member
from wsq.webhooks.events import (
    ADDRESS_OCCUPIED,
    ADDRESS_VACATED,
    CONNECTION_CLOSED,
    CONNECTION_OPENED,
    MESSAGE_DEAD_LETTERED,
    OCCUPANCY_EVENTS,
    PRESENCE_JOIN,
    PRESENCE_LEAVE,
    event_body,
)
from wsq.webhooks.requests import Requests
from wsq.webhooks.signing import key_of

log = logging.getLogger("wsq.webhooks")

MAX_BACKOFF_S = 60.0
#: ``deliveries`` outcomes (wsq_webhook_deliveries_total{tenant,outcome}).
DELIVERED = "delivered"  # a 2xx answer
RETRIED = "retried"  # an attempt failed; another follows
FAILED = "failed"  # the last attempt failed: the event is given up
DROPPED = "dropped"  # the entry's queue was full
#: The longest a close waits for the queued events to be sent (s).
FLUSH_S = 2.0


@dataclass(frozen=True, slots=True)
class Event:
    msg_id: str
    body: bytes


@dataclass
class _Endpoint:
    tenant: str
    config: WebhookConfig
    keys: tuple[bytes, ...]
    queue: asyncio.Queue[Event] | None = None
    worker: asyncio.Task[None] | None = None
    #: Events in the queue and the one being sent (bounded by ``max_queue``).
    pending: int = 0


@dataclass
class Webhooks:
    """Every tenant's webhook entries in this process, and their counts."""

    tenants: Mapping[str, TenantConfig]
    node_id: str
    #: The HTTP client and the tenants' bounds on concurrent requests (shared with the sinks).
    requests: Requests | None = None
    #: (tenant, outcome) -> events (``outcome``: DELIVERED, RETRIED, FAILED, DROPPED).
    deliveries: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: tenant -> events dropped because the tenant had ``max_webhook_queue`` events queued.
    refused: Counter[str] = field(default_factory=Counter)
    #: tenant -> messages this process copied to a dead-letter address.
    dead_letters: Counter[str] = field(default_factory=Counter)
    #: tenant -> events queued or being sent, all its entries together.
    _pending: Counter[str] = field(default_factory=Counter)
    _by_type: dict[tuple[str, str], list[_Endpoint]] = field(default_factory=dict)
    _endpoints: list[_Endpoint] = field(default_factory=list)
    _closed: bool = False
    _owns_requests: bool = False
    _occupancy_tenants: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.requests is None:  # else the node's, which the node closes
            self.requests = Requests(self.tenants)
            self._owns_requests = True
        for name, tenant in self.tenants.items():
            for hook in tenant.webhooks:
                keys = tuple(key_of(s) for s in hook.secret.split())
                endpoint = _Endpoint(name, hook, keys)
                self._endpoints.append(endpoint)
                for event_type in hook.events:
                    self._by_type.setdefault((name, event_type), []).append(endpoint)
        self._occupancy_tenants = frozenset(
            name for name, event_type in self._by_type if event_type in OCCUPANCY_EVENTS
        )

    def wanted(self, tenant: str, event_type: str) -> bool:
        return (tenant, event_type) in self._by_type

    def emit(self, tenant: str, event_type: str, data: dict[str, Any]) -> None:
        """Queue ``event_type`` for every entry of ``tenant`` that asked for it; never waits."""
        endpoints = self._by_type.get((tenant, event_type))
        if not endpoints or self._closed:
            return
        event = Event(f"msg_{secrets.token_hex(12)}", event_body(event_type, data, time.time()))
        config = self.tenants.get(tenant)
        tenant_max = config.max_webhook_queue if config is not None else 0
        for endpoint in endpoints:
            if endpoint.pending >= endpoint.config.max_queue:
                self.deliveries[tenant, DROPPED] += 1
                continue
            if self._pending[tenant] >= tenant_max:
                # The tenant's bound over all its entries (its quota), past each one's own.
                self.deliveries[tenant, DROPPED] += 1
                self.refused[tenant] += 1
                continue
            if endpoint.queue is None:
                endpoint.queue = asyncio.Queue()
                endpoint.worker = asyncio.get_running_loop().create_task(self._work(endpoint))
            endpoint.pending += 1
            self._pending[tenant] += 1
            endpoint.queue.put_nowait(event)

    def connection_opened(self, tenant: str, sub: str, peer_id: int) -> None:
        if self.wanted(tenant, CONNECTION_OPENED):
            self.emit(tenant, CONNECTION_OPENED, self._connection(tenant, sub, peer_id))

    def connection_closed(self, tenant: str, sub: str, peer_id: int, reason: str) -> None:
        if self.wanted(tenant, CONNECTION_CLOSED):
            data = self._connection(tenant, sub, peer_id)
            data["reason"] = reason
            self.emit(tenant, CONNECTION_CLOSED, data)

    def wants_occupancy(self, tenant: str) -> bool:
        """Whether ``tenant``'s receivers are counted per address (``wsq.hub.occupancy``): a
        store call per address that changes hands, paid only by tenants that asked."""
        return tenant in self._occupancy_tenants

    def address_changed(
        self, tenant: str, address: str, occupied: bool, number: int, reason: str
    ) -> None:
        event_type = ADDRESS_OCCUPIED if occupied else ADDRESS_VACATED
        if self.wanted(tenant, event_type):
            # ``occupancy`` orders one address's events (they may come from different nodes).
            data: dict[str, Any] = {
                "tenant": tenant,
                "address": address,
                "occupancy": number,
                "node": self.node_id,
            }
            if not occupied:
                data["reason"] = reason
            self.emit(tenant, event_type, data)

    def presence_changed(
        self, tenant: str, address: str, member: Member, joined: bool, reason: str = ""
    ) -> None:
        event_type = PRESENCE_JOIN if joined else PRESENCE_LEAVE
        if self.wanted(tenant, event_type):
            data: dict[str, Any] = {
                "tenant": tenant,
                "address": address,
                "member": member.to_json(),
                "node": self.node_id,
            }
            if not joined:
                data["reason"] = reason
            self.emit(tenant, event_type, data)

    def dead_lettered(
        self, tenant: str, address: str, target: str, dead: list[tuple[Message, str]]
    ) -> None:
        """Messages of ``address`` copied to ``target``: their positions, never their bodies."""
        self.dead_letters[tenant] += len(dead)
        if not self.wanted(tenant, MESSAGE_DEAD_LETTERED):
            return
        for message, reason in dead:
            data = {
                "tenant": tenant,
                "address": address,
                "position": message.id,
                "message_id": message.message_id,
                "reason": reason,
                "dead_letter": target,
                "node": self.node_id,
            }
            self.emit(tenant, MESSAGE_DEAD_LETTERED, data)

    def _connection(self, tenant: str, sub: str, peer_id: int) -> dict[str, Any]:
        # "connection" is unique across nodes and restarts of a node id only with the node.
        return {
            "tenant": tenant,
            "sub": sub,
            "node": self.node_id,
            "connection": f"{self.node_id}/{peer_id}",
        }

    def queued(self) -> int:
        """Events waiting or being sent, all entries together (now)."""
        return sum(e.pending for e in self._endpoints)

    def queued_by_tenant(self) -> dict[str, int]:
        """tenant -> its events waiting or being sent (now): what ``max_webhook_queue`` bounds."""
        return {t: n for t, n in self._pending.items() if n}

    async def close(self, flush_s: float = FLUSH_S) -> None:
        """Stop every worker once its queue is sent or ``flush_s`` passed; what is left is lost
        (best effort, said so above): the events of a drain (closed, vacated) mostly go out."""
        self._closed = True
        queues = [e.queue.join() for e in self._endpoints if e.queue is not None]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(flush_s):
                await asyncio.gather(*queues)
        await stop(e.worker for e in self._endpoints)
        if self._owns_requests and self.requests is not None:
            await self.requests.close()

    async def _work(self, endpoint: _Endpoint) -> None:
        assert endpoint.queue is not None
        while True:
            event = await endpoint.queue.get()
            try:
                await self._deliver(endpoint, event)
            finally:
                endpoint.pending -= 1
                self._pending[endpoint.tenant] -= 1
                endpoint.queue.task_done()

    async def _deliver(self, endpoint: _Endpoint, event: Event) -> None:
        config = endpoint.config
        delay = config.backoff_ms / 1000
        for attempt in range(1, config.max_attempts + 1):
            if await self._attempt(endpoint, event):
                self.deliveries[endpoint.tenant, DELIVERED] += 1
                return
            if attempt == config.max_attempts:
                break
            self.deliveries[endpoint.tenant, RETRIED] += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF_S)
        self.deliveries[endpoint.tenant, FAILED] += 1
        log.warning(
            "webhook event %s of tenant %s given up after %d attempts",
            event.msg_id,
            endpoint.tenant,
            config.max_attempts,
        )

    async def _attempt(self, endpoint: _Endpoint, event: Event) -> bool:
        config = endpoint.config
        assert self.requests is not None
        return await self.requests.post(
            endpoint.tenant, config.url, event.msg_id, event.body, endpoint.keys, config.timeout_ms
        )
