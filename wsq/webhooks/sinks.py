"""Message sinks: every message of some addresses POSTed to a URL, at least once, in order per
address (docs/webhooks.md, "Message sinks").

A sink lists addresses, followed from the start, and patterns: every ``discover_ms`` the
tenant's live addresses (those its quota counts, ``QuotaStore.live_addresses``) are listed and
each new one a pattern matches is followed, up to ``max_addresses`` per sink (the matches past
it are counted in ``refused`` and followed once room is made). Since a group starts at the
oldest retained message, what was published before the discovery is delivered too.

A sink reads each of its addresses as a consumer group of its own (``group``), through the
broker's claim and settle, one message at a time: a message is settled ``accepted`` once the
URL answered 2xx, so what is unsettled when a process dies is leased to the group's next
consumer when its lease runs out (on Redis: the next process, or this one restarted).
``max_attempts`` failed attempts, with doubling backoff, reject it: the tenant's dead-letter
address gets it. Its ``webhook-id`` is derived from the tenant, address, group and message
position, so it is the same on every attempt, from any process: the receiver dedups on it.

Order: one message at a time from one process at a time keeps it. Every process with the sink
follows the address, but only the one holding the address's *turn* (``_Turn``, a lease in the
presence store) claims from it; the turn is renewed before each wait and always outlasts the
lease of the message being sent, so a process that dies leaves a turn that runs out after its
message's lease: whoever takes the turn next claims that message first, then the next ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import orjson

from wsq.background import stop
from wsq.broker.base import Broker, Handle
from wsq.broker.presence import PresenceStore
from wsq.config.settings import SinkConfig, TenantConfig
from wsq.core.addresses import compile_pattern, matches_any
from wsq.core.messages import Delivery, Outcome
from wsq.webhooks.delivery import DELIVERED, FAILED, MAX_BACKOFF_S, RETRIED
from wsq.webhooks.events import iso_time
from wsq.webhooks.requests import Requests
from wsq.webhooks.signing import key_of

log = logging.getLogger("wsq.webhooks")

MESSAGE = "message.published"
#: A sink's lease on its message covers the next wait and attempt and this much more: a process
#: that died holding one lets it go that soon after (renewed before each wait while it retries).
LEASE_MARGIN_MS = 2_000
#: When nothing wakes an idle sink, it looks again after this (s).
IDLE_POLL_S = 5.0
IDLE_MS = int(IDLE_POLL_S * 1000)
#: A process waiting for its turn on an address asks again after this (s): how soon after a
#: holder's turn ran out (it died) or was given up (it stopped) another takes over.
TURN_POLL_S = 2.0
#: The longest a stopping sink waits to give its turn up (s); else it runs out.
GIVE_UP_S = 2.0


class _Turn:
    """One process's turn to read an address for a sink (``PresenceStore.hold``)."""

    __slots__ = ("address", "group", "holder", "mine", "store", "tenant")

    def __init__(
        self, store: PresenceStore, tenant: str, address: str, group: str, holder: str
    ) -> None:
        self.store = store
        self.tenant = tenant
        self.address = address
        self.group = group
        self.holder = holder
        self.mine = False

    async def keep(self, ms: int) -> bool:
        """Take or renew the turn for ``ms``; False while another process has it."""
        self.mine = await self.store.hold(
            self.tenant, self.address, f"sink.{self.group}", self.holder, ms
        )
        return self.mine

    async def give_up(self) -> None:
        await self.store.hold(self.tenant, self.address, f"sink.{self.group}", self.holder, 0)
        self.mine = False


def sink_message_id(tenant: str, address: str, group: str, position: str) -> str:
    """The ``webhook-id`` of one message for one sink: the same from any process, any attempt."""
    digest = hashlib.sha256(f"{tenant}\0{address}\0{group}\0{position}".encode()).hexdigest()
    return f"msg_{digest[:32]}"


def sink_body(address: str, delivery: Delivery, now: float) -> bytes:
    """The event body; the message's own body goes in as the JSON text it was published as."""
    m = delivery.message
    head = orjson.dumps(
        {
            "type": MESSAGE,
            "timestamp": iso_time(now),
            "data": {
                "address": address,
                "position": m.id,
                "message_id": m.message_id,
                "redelivered": delivery.redelivered,
            },
        }
    )
    # {"type":..,"data":{...}} -> {"type":..,"data":{..., "body": <body>}}
    return head[:-2] + b',"body":' + m.body.encode() + b"}}"


@dataclass
class Sinks:
    """Every tenant's sinks in this process: one task per (sink, address) followed."""

    tenants: Mapping[str, TenantConfig]
    broker: Broker
    node_id: str
    #: The HTTP client and the tenants' bounds on concurrent requests (the node's, shared).
    requests: Requests | None = None
    #: (tenant, outcome) -> messages (DELIVERED, RETRIED, FAILED).
    deliveries: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: tenant -> addresses a sink's pattern matched but which it did not follow, because it
    #: followed ``max_addresses`` already (counted at each discovery that found them so).
    refused: Counter[str] = field(default_factory=Counter)
    #: (tenant, sink index, address) -> the worker that reads it.
    _followed: dict[tuple[str, int, str], asyncio.Task[None]] = field(default_factory=dict)
    _discoverers: list[asyncio.Task[None]] = field(default_factory=list)
    _owns_requests: bool = False
    #: Who holds this process's turns: unique per process, even with a node id reused.
    _holder: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self) -> None:
        if self.requests is None:  # else the node's, which the node closes
            self.requests = Requests(self.tenants)
            self._owns_requests = True

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for tenant, config in self.tenants.items():
            for i, sink in enumerate(config.sinks):
                for address in sink.literal:
                    self._follow(tenant, i, sink, address)
            if any(sink.patterns for sink in config.sinks):
                self._discoverers.append(loop.create_task(self._discover(tenant, config)))

    def followed(self, tenant: str) -> int:
        """Addresses the tenant's sinks follow in this process (now)."""
        return sum(1 for t, _, _ in self._followed if t == tenant)

    def _follow(self, tenant: str, i: int, sink: SinkConfig, address: str) -> None:
        key = (tenant, i, address)
        if key not in self._followed:
            task = asyncio.get_running_loop().create_task(self._run(tenant, sink, address))
            self._followed[key] = task

    async def _discover(self, tenant: str, config: TenantConfig) -> None:
        """List the tenant's live addresses every ``discover_ms`` (the least of its sinks'):
        follow the new ones a pattern matches, let go of those no longer live."""
        every = min(s.discover_ms for s in config.sinks if s.patterns) / 1000
        while True:
            try:
                live = await self.broker.quota_store.live_addresses(tenant, config.max_addresses)
                self.match(tenant, config, live)
            except Exception as exc:
                # Broker down, or a reply we did not expect: look again next time (a
                # discoverer that died would leave new addresses unsent for good).
                log.warning("sink discovery of a tenant failed: %s", type(exc).__name__)
            await asyncio.sleep(every)

    def match(self, tenant: str, config: TenantConfig, live: list[str]) -> None:
        """Follow what the patterns match among ``live``; stop following pattern matches that
        are not live any more (an address idled out: its messages are gone with it)."""
        now_live = set(live)
        for i, sink in enumerate(config.sinks):
            if not sink.patterns:
                continue
            patterns = tuple(compile_pattern(p) for p in sink.patterns)
            mine = [a for t, j, a in self._followed if t == tenant and j == i]
            for address in mine:
                if address not in now_live and address not in sink.literal:
                    self._followed.pop((tenant, i, address)).cancel()
            count = sum(1 for t, j, _ in self._followed if t == tenant and j == i)
            for address in sorted(now_live):
                if (tenant, i, address) in self._followed or not matches_any(patterns, address):
                    continue
                # The dead-letter address is followed only when listed: a pattern matching
                # it would send the sink's own failures round again.
                if address == config.dead_letter:
                    continue
                if count >= sink.max_addresses:
                    self.refused[tenant] += 1
                    continue
                self._follow(tenant, i, sink, address)
                count += 1

    async def close(self) -> None:
        await stop([*self._discoverers, *self._followed.values()])
        self._discoverers.clear()
        self._followed.clear()
        if self._owns_requests and self.requests is not None:
            await self.requests.close()

    async def _run(self, tenant: str, sink: SinkConfig, address: str) -> None:
        wake = asyncio.Event()
        consumer = f"sink.{self.node_id}"
        lease_ms = sink.timeout_ms + LEASE_MARGIN_MS
        keys = tuple(key_of(s) for s in sink.secret.split())
        watch: Handle | None = None
        held: list[str] = []
        turn = _Turn(self.broker.presence_store, tenant, address, sink.group, self._holder)
        try:
            while True:
                try:
                    # Only the process whose turn it is reads the address: the order holds
                    # across processes. The turn outlasts the idle wait and a claimed
                    # message's lease, so that whoever takes it next finds that lease over.
                    if not await turn.keep(IDLE_MS + lease_ms + LEASE_MARGIN_MS):
                        await asyncio.sleep(TURN_POLL_S)
                        continue
                    if watch is None:
                        await self.broker.open_group(tenant, address, sink.group)
                        watch = self.broker.watch_group(tenant, address, sink.group, wake.set)
                    wake.clear()
                    got = await self.broker.claim(
                        tenant, address, sink.group, consumer, 1, lease_ms
                    )
                    if not got:
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(IDLE_POLL_S):
                                await wake.wait()
                        continue
                    delivery = got[0]
                    held = [delivery.message.id]
                    outcome = await self._deliver(tenant, sink, address, delivery, keys, turn)
                    if outcome is None:
                        # Our turn was taken (we could not renew it in time): the message
                        # goes back to the group for whoever has the turn now.
                        await self.broker.leave(tenant, address, sink.group, consumer, held)
                    else:
                        await self.broker.settle(
                            tenant, address, sink.group, consumer, held, outcome
                        )
                    held = []
                except Exception:
                    # The broker failed (Redis down, a failover): what is held comes back when
                    # its lease runs out, to this consumer or another.
                    log.warning("sink on %s: the broker failed; trying again", address)
                    held = []
                    await asyncio.sleep(1.0)
        finally:
            if watch is not None:
                watch.close()
            with contextlib.suppress(Exception):
                if held:
                    # Not settled: back to the group at once, for the next consumer.
                    await self.broker.leave(tenant, address, sink.group, consumer, held)
                if turn.mine:
                    async with asyncio.timeout(GIVE_UP_S):
                        await turn.give_up()

    async def _deliver(
        self,
        tenant: str,
        sink: SinkConfig,
        address: str,
        delivery: Delivery,
        keys: tuple[bytes, ...],
        turn: _Turn,
    ) -> Outcome | None:
        """The message's outcome once sent or given up; None when the turn was lost."""
        position = delivery.message.id
        msg_id = sink_message_id(tenant, address, sink.group, position)
        body = sink_body(address, delivery, time.time())
        delay = sink.backoff_ms / 1000
        consumer = f"sink.{self.node_id}"
        for attempt in range(1, sink.max_attempts + 1):
            if await self._attempt(tenant, sink, msg_id, body, keys):
                self.deliveries[tenant, DELIVERED] += 1
                return Outcome.ACCEPTED
            if attempt == sink.max_attempts:
                break
            self.deliveries[tenant, RETRIED] += 1
            lease_ms = int(delay * 1000) + sink.timeout_ms + LEASE_MARGIN_MS
            # The turn first, and longer: it must never end before the message's lease.
            if not await turn.keep(lease_ms + LEASE_MARGIN_MS):
                return None
            await self.broker.renew(tenant, address, sink.group, consumer, [position], lease_ms)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF_S)
        self.deliveries[tenant, FAILED] += 1
        log.warning("sink message %s given up after %d attempts", msg_id, sink.max_attempts)
        return Outcome.REJECTED

    async def _attempt(
        self, tenant: str, sink: SinkConfig, msg_id: str, body: bytes, keys: tuple[bytes, ...]
    ) -> bool:
        assert self.requests is not None
        return await self.requests.post(tenant, sink.url, msg_id, body, keys, sink.timeout_ms)
