"""The embedded broker: every address lives in this process's memory (``memory://``).

Per (tenant, address) there is one ``AddressLog`` (``log``): its messages, dedup map,
idempotency keys, live tails and consumer groups (``groups``).

Costs, per message: publishing appends, delivers to the tails synchronously and trims retention
lazily, all O(1) amortised; reads bisect on positions; a consumer group keeps state only for
messages it has handed out.

Memory is bounded: retention trims the log (by length, age and bytes; by age also for idle
addresses, by a periodic sweep) and releases what it trims, a message is kept as its wire text
alone (props encoded), the dedup map is pruned by age and capped in size, groups drop the state of
trimmed messages, and addresses idle for the tenant's ``idle_expiry_ms`` disappear.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from bisect import bisect_right
from collections.abc import Callable, Sequence

from wsq.background import stop
from wsq.broker.base import (
    DELIVERY_LIMIT,
    REJECTED,
    Broker,
    Tail,
    Watch,
    dead_letter_copy,
    fan_out,
)
from wsq.broker.memory.groups import Entry, EntryState, Group
from wsq.broker.memory.log import START_POS, AddressLog, pos_of
from wsq.broker.memory.presence import LocalPresenceStore
from wsq.broker.memory.quotas import LocalQuotaStore
from wsq.core.addresses import Pattern
from wsq.core.errors import BrokerUnavailable, IdempotencyKeyReused
from wsq.core.messages import (
    Delivery,
    Message,
    NewMessage,
    Outcome,
    Published,
    PublishedOnce,
    ReadResult,
    message_size,
    published_from_text,
    published_text,
    stored_size,
)
from wsq.core.policy import StoragePolicies
from wsq.core.positions import START, format_position, parse_position
from wsq.core.wire import stored_message, stored_props

log = logging.getLogger(__name__)

#: How often (seconds, at most) idle addresses are trimmed by age and expired.
_SWEEP_INTERVAL_S = 60.0
#: Addresses examined between two yields to the event loop during the sweep.
_SWEEP_BATCH = 1000


class MemoryBroker(Broker):
    """Every address in this process's memory: for one process (``memory://``) and tests.
    The tenant's ``max_*`` bound each address's dedup ids, idempotency keys and groups."""

    def __init__(
        self, policies: StoragePolicies, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._policies = policies
        self._clock = clock
        self._logs: dict[tuple[str, str], AddressLog] = {}
        self._closed = False
        self._sweeper: asyncio.Task[None] | None = None
        self.quota_store = LocalQuotaStore(clock)
        self.presence_store = LocalPresenceStore()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._closed = False
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def close(self) -> None:
        self._closed = True
        sweeper, self._sweeper = self._sweeper, None
        await stop([sweeper])
        for lg in self._logs.values():
            for g in lg.groups.values():
                if g.timer is not None:
                    g.timer.cancel()
                    g.timer = None

    async def ready(self) -> bool:
        return not self._closed

    # -- helpers -----------------------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _log(self, tenant: str, address: str, now_ms: int) -> AddressLog:
        key = (tenant, address)
        lg = self._logs.get(key)
        if lg is None:
            lg = self._logs[key] = AddressLog(self._policies.of(tenant), now_ms)
        return lg

    # -- publishing --------------------------------------------------------------------------

    async def publish(
        self, tenant: str, address: str, messages: Sequence[NewMessage]
    ) -> list[Published]:
        if self._closed:
            raise BrokerUnavailable("the broker is closed")
        now = self._now_ms()
        return self._publish(self._log(tenant, address, now), now, messages)

    async def publish_once(
        self,
        tenant: str,
        address: str,
        messages: Sequence[NewMessage],
        key: str,
        fingerprint: str,
    ) -> PublishedOnce:
        if self._closed:
            raise BrokerUnavailable("the broker is closed")
        now = self._now_ms()
        lg = self._log(tenant, address, now)
        if lg.cfg.dedup_window_ms <= 0:
            return PublishedOnce(self._publish(lg, now, messages))
        # No await from the check to the store: one publish per key, however many race.
        lg.prune_idem(now, lg.cfg.max_idempotency_keys)
        hit = lg.idem.get(key)
        if hit is not None:
            if hit[1] != fingerprint:
                raise IdempotencyKeyReused("the Idempotency-Key was used for another request")
            return PublishedOnce(published_from_text(hit[2]), replayed=True)
        results = self._publish(lg, now, messages)
        lg.idem[key] = (now, fingerprint, published_text(results))
        if len(lg.idem) > lg.cfg.max_idempotency_keys:
            lg.prune_idem(now, lg.cfg.max_idempotency_keys)
        return PublishedOnce(list(results))

    def _publish(
        self, lg: AddressLog, now: int, messages: Sequence[NewMessage], dedup: bool = True
    ) -> list[Published]:
        """Store ``messages``; ``dedup=False`` for dead letters, which are never duplicates."""
        lg.touched = now
        dedup_on = dedup and lg.cfg.dedup_window_ms > 0
        if dedup_on:
            lg.prune_dedup(now, lg.cfg.max_dedup_ids)
        seen = lg.dedup
        ms, seq = lg.last
        if now > ms:
            ms, seq = now, -1
        out: list[Published] = []
        new: list[Message] = []
        for nm in messages:
            mid = nm.message_id
            if mid is not None and dedup_on:
                hit = seen.get(mid)
                if hit is not None:
                    out.append(Published(hit[1], duplicate=True))
                    continue
            seq += 1
            id_ = f"{ms}-{seq}"
            # Kept as its wire tail alone, props encoded (as the Redis broker stores them):
            # no decoded headers, and the hub's encoding is this one.
            props = stored_props(nm.publisher, nm.subject, mid, nm.content_type, nm.headers)
            body = nm.body
            m = stored_message(id_, body, props, nm.subject, nm.ttl_ms, stored_size(body, props))
            new.append(m)
            out.append(Published(id_))
            if mid is not None and dedup_on:
                seen[mid] = (ms, id_)
                lg.dedup_order.append((ms, mid))
        if not new:
            return out
        lg.last = (ms, seq)
        lg.append(new)
        lg.trim(now)
        if dedup_on and len(seen) > lg.cfg.max_dedup_ids:
            lg.prune_dedup(now, lg.cfg.max_dedup_ids)
        if lg.tails:
            fan_out(lg.tails, new)
        if lg.groups:
            for g in lg.groups.values():
                if g.watchers:
                    g.watchers.notify()
        return out

    # -- copy (feed) -------------------------------------------------------------------------

    async def last_position(self, tenant: str, address: str) -> str:
        lg = self._logs.get((tenant, address))
        if lg is None or lg.last == START_POS:
            return START
        return format_position(lg.last)

    async def read(
        self, tenant: str, address: str, after: str, limit: int, max_bytes: int | None = None
    ) -> ReadResult:
        pos = parse_position(after)
        lg = self._logs.get((tenant, address))
        if lg is None:
            return ReadResult([])
        now = lg.touched = self._now_ms()
        lg.trim(now)
        # START asks for whatever is retained: nothing it names was lost.
        recovered = pos == START_POS or lg.dropped <= pos
        if limit <= 0:
            return ReadResult([], recovered)
        msgs = lg.msgs
        n = len(msgs)
        i = bisect_right(msgs, pos, lo=lg.head, key=pos_of)
        out: list[Message] = []
        used = 0
        while i < n and len(out) < limit:
            m = msgs[i]
            i += 1
            if m.expires_at is None or m.expires_at > now:
                if max_bytes is not None:
                    size = message_size(m)
                    if out and used + size > max_bytes:
                        break
                    used += size
                out.append(m)
        return ReadResult(out, recovered)

    async def read_back(
        self, tenant: str, address: str, before: str | None, limit: int, max_bytes: int
    ) -> list[Message]:
        lg = self._logs.get((tenant, address))
        return [] if lg is None else lg.newest_first(before, limit, max_bytes, self._now_ms())

    def tail(
        self,
        tenant: str,
        address: str,
        after: str,
        on_messages: Callable[[list[Message]], None],
    ) -> Tail:
        pos = parse_position(after)
        now = self._now_ms()
        key = (tenant, address)
        lg = self._log(tenant, address, now)
        lg.touched = now
        t = Tail(on_messages, lambda t: self._untail(key, lg, t))
        if pos > lg.last:
            t.after = pos
        elif pos < lg.last:
            lg.trim(now)
            msgs = lg.msgs
            i = bisect_right(msgs, pos, lo=lg.head, key=pos_of)
            backlog = [m for m in msgs[i:] if m.expires_at is None or m.expires_at > now]
            if backlog:
                t.pending = backlog
                try:
                    asyncio.get_running_loop().call_soon(t.hand_over)
                except RuntimeError:  # no loop running: hand the backlog over now
                    t.hand_over()
        lg.tails.append(t)
        return t

    def _untail(self, key: tuple[str, str], lg: AddressLog, t: Tail) -> None:
        """An address that never held anything is forgotten with its last tail."""
        lg.tails.remove(t)
        if not (lg.tails or lg.groups or lg.dedup or lg.idem) and lg.last == START_POS:
            self._logs.pop(key, None)

    # -- move (queue) ------------------------------------------------------------------------

    def _group(self, tenant: str, address: str, group: str, now: int) -> tuple[AddressLog, Group]:
        lg = self._log(tenant, address, now)
        lg.touched = now
        lg.trim(now)
        g = lg.group(group)
        lg.prune_group(g)
        return lg, g

    def _existing_group(
        self, tenant: str, address: str, group: str, now: int
    ) -> tuple[AddressLog, Group] | None:
        """The group if it exists: settling in one that does not creates nothing."""
        lg = self._logs.get((tenant, address))
        if lg is None or group not in lg.groups:
            return None
        return self._group(tenant, address, group, now)

    async def open_group(self, tenant: str, address: str, group: str) -> bool:
        lg = self._log(tenant, address, self._now_ms())
        if group in lg.groups or len(lg.groups) < lg.cfg.max_groups:
            return lg.group(group) is not None  # created now, or it was there
        return False

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
        now = self._now_ms()
        lg, g = self._group(tenant, address, group, now)
        self._expire(tenant, address, lg, g, now)
        out: list[Delivery] = []
        if count <= 0:
            return out
        ready = g.ready
        skipped: list[Entry] = []
        others_wanting = g.others_want(consumer)
        msgs = lg.msgs
        n = len(msgs)
        i = bisect_right(msgs, g.cursor, lo=lg.head, key=pos_of)
        deadline = now + lease_ms
        while len(out) < count:
            while ready and ready[0][2].state is not EntryState.READY:
                heapq.heappop(ready)  # settled, expired or trimmed since
            if i < n and (not ready or msgs[i].pos < ready[0][0]):
                m = msgs[i]
                i += 1
                g.cursor = m.pos
                if m.expires_at is not None and m.expires_at <= now:
                    continue
                e = Entry(m)
                g.entries[m.id] = e
                if subject_filter is not None and (
                    m.subject is None or not subject_filter.matches(m.subject)
                ):
                    skipped.append(e)
                    continue
            elif ready:
                e = heapq.heappop(ready)[2]
                m = e.msg
                if m.expires_at is not None and m.expires_at <= now:
                    g.remove(e)
                    continue
                if (
                    subject_filter is not None
                    and (m.subject is None or not subject_filter.matches(m.subject))
                ) or g.avoids(e, consumer, now, others_wanting):
                    skipped.append(e)
                    continue
            else:
                break
            e.state = EntryState.LEASED
            e.consumer = consumer
            e.deadline = deadline
            e.gen += 1
            g.add_timer(e, deadline)
            out.append(Delivery(m, e.count))
        for e in skipped:
            g.make_ready(e)
        if room is not None:
            g.record_want(consumer, len(out) < room)
        if out or skipped:
            g.compact_timers()
            self._arm(tenant, address, lg, g, now)
        return out

    async def settle(
        self,
        tenant: str,
        address: str,
        group: str,
        consumer: str,
        ids: Sequence[str],
        outcome: Outcome,
    ) -> None:
        now = self._now_ms()
        found = self._existing_group(tenant, address, group, now)
        if found is None:
            return
        lg, g = found
        entries = g.entries
        dead: list[tuple[Message, str]] = []
        available = False
        cfg = lg.cfg
        for id_ in ids:
            e = entries.get(id_)
            if e is None or e.state is not EntryState.LEASED or e.consumer != consumer:
                continue
            if outcome is Outcome.ACCEPTED:
                g.remove(e)
            elif outcome is Outcome.REJECTED:
                g.remove(e)
                dead.append((e.msg, REJECTED))
            else:
                modified = outcome is Outcome.MODIFIED
                fate = g.give_back(
                    e,
                    now,
                    failed=modified,
                    delay=cfg.redelivery_delay_ms if modified else 0,
                    max_deliveries=cfg.max_deliveries,
                )
                if fate is EntryState.REMOVED:
                    dead.append((e.msg, DELIVERY_LIMIT))
                elif fate is EntryState.READY:
                    available = True
        self._after_give_back(tenant, address, lg, g, now, available, dead)

    async def leave(
        self, tenant: str, address: str, group: str, consumer: str, unsettled: Sequence[str]
    ) -> None:
        now = self._now_ms()
        found = self._existing_group(tenant, address, group, now)
        if found is None:
            return
        lg, g = found
        g.record_want(consumer, False)
        dead: list[tuple[Message, str]] = []
        available = False
        for id_ in unsettled:
            e = g.entries.get(id_)
            if e is None or e.state is not EntryState.LEASED or e.consumer != consumer:
                continue
            fate = g.give_back(e, now, failed=True, delay=0, max_deliveries=lg.cfg.max_deliveries)
            if fate is EntryState.REMOVED:
                dead.append((e.msg, DELIVERY_LIMIT))
            else:
                available = True
        self._after_give_back(tenant, address, lg, g, now, available, dead)

    def _after_give_back(
        self,
        tenant: str,
        address: str,
        lg: AddressLog,
        g: Group,
        now: int,
        available: bool,
        dead: list[tuple[Message, str]],
    ) -> None:
        self._arm(tenant, address, lg, g, now)
        if available:
            g.watchers.notify()
        if dead:
            self._dead_letter(tenant, address, lg, now, dead)

    def _dead_letter(
        self, tenant: str, address: str, lg: AddressLog, now: int, dead: list[tuple[Message, str]]
    ) -> None:
        """Store what left a group for good at the tenant's dead-letter address (and tell
        ``on_dead_letter``), whatever their message_id; without one, count the drop."""
        target = lg.cfg.dead_letter
        if target is None:
            self.dead_letters_dropped += len(dead)
            return
        copies = [dead_letter_copy(m, address, reason) for m, reason in dead]
        self._publish(self._log(tenant, target, now), now, copies, dedup=False)
        if self.on_dead_letter is not None:
            self.on_dead_letter(tenant, address, target, dead)

    async def renew(
        self,
        tenant: str,
        address: str,
        group: str,
        consumer: str,
        ids: Sequence[str],
        lease_ms: int,
    ) -> list[str]:
        now = self._now_ms()
        found = self._existing_group(tenant, address, group, now)
        if found is None:
            return []
        lg, g = found
        entries = g.entries
        deadline = now + lease_ms
        renewed: list[str] = []
        for id_ in ids:
            e = entries.get(id_)
            if e is None or e.state is not EntryState.LEASED or e.consumer != consumer:
                continue
            e.deadline = deadline
            e.gen += 1
            g.add_timer(e, deadline)
            renewed.append(id_)
        if renewed:
            g.compact_timers()
            self._arm(tenant, address, lg, g, now)
        return renewed

    def watch_group(
        self, tenant: str, address: str, group: str, on_available: Callable[[], None]
    ) -> Watch:
        now = self._now_ms()
        lg = self._log(tenant, address, now)
        lg.touched = now
        g = lg.group(group)
        w = Watch(on_available, g.watchers.remove)
        g.watchers.append(w)
        # Something may already wait: say so once, so a late watcher does not sleep through it.
        if g.ready or lg.last > g.cursor:
            with contextlib.suppress(RuntimeError):
                g.watchers.notify()
        return w

    def _expire(self, tenant: str, address: str, lg: AddressLog, g: Group, now: int) -> None:
        """Serve the group's due deadlines; tell its watchers if anything became claimable
        (after the caller returns: a claim may leave some for others)."""
        available, dead = g.expire(now, lg.cfg.max_deliveries)
        if available:
            g.watchers.notify()
        if dead:
            self._dead_letter(tenant, address, lg, now, [(e.msg, DELIVERY_LIMIT) for e in dead])

    def _arm(self, tenant: str, address: str, lg: AddressLog, g: Group, now: int) -> None:
        """Keep one timer per group, set for its earliest deadline."""
        when = g.next_deadline()
        if when is None or self._closed:
            if g.timer is not None:
                g.timer.cancel()
                g.timer = None
            return
        if g.timer is not None:
            if g.timer_at <= when:
                return
            g.timer.cancel()
        # One ms late rather than early: the clock's ms are truncated.
        delay = max(0, when - now + 1) / 1000
        g.timer = asyncio.get_running_loop().call_later(
            delay, self._on_timer, tenant, address, lg, g
        )
        g.timer_at = when

    def _on_timer(self, tenant: str, address: str, lg: AddressLog, g: Group) -> None:
        g.timer = None
        now = self._now_ms()
        self._expire(tenant, address, lg, g, now)
        self._arm(tenant, address, lg, g, now)

    # -- reconciliation ----------------------------------------------------------------------

    async def lookup(self, tenant: str, address: str, message_id: str) -> Message | None:
        """From the dedup index only, never by scanning the log: past the dedup window (or
        capped out of it, or with no window), not found."""
        lg = self._logs.get((tenant, address))
        if lg is None:
            return None
        now = self._now_ms()
        lg.trim(now)
        hit = lg.dedup.get(message_id)
        if hit is None or hit[0] <= now - lg.cfg.dedup_window_ms:
            return None  # as the Redis broker's dedup keys expire (``prune_dedup``'s cutoff)
        return lg.find(parse_position(hit[1]))

    # -- background --------------------------------------------------------------------------

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_interval())
            await self.sweep()

    def _sweep_interval(self) -> float:
        interval = _SWEEP_INTERVAL_S
        for cfg in self._policies:
            if cfg.retention_max_age_ms > 0:
                interval = min(interval, cfg.retention_max_age_ms / 1000)
            if cfg.idle_expiry_ms > 0:
                interval = min(interval, cfg.idle_expiry_ms / 1000)
        return max(interval, 1.0)

    async def sweep(self) -> None:
        """Trim every address by age and forget the idle ones (run periodically after start)."""
        keys = list(self._logs)
        for k, key in enumerate(keys):
            if k and k % _SWEEP_BATCH == 0:
                await asyncio.sleep(0)
            lg = self._logs.get(key)
            if lg is None:
                continue
            now = self._now_ms()
            lg.trim(now)
            if lg.dedup_order:
                lg.prune_dedup(now, lg.cfg.max_dedup_ids)
            if lg.idem:
                lg.prune_idem(now, lg.cfg.max_idempotency_keys)
            for g in lg.groups.values():
                lg.prune_group(g)
            expiry = lg.cfg.idle_expiry_ms
            if expiry > 0 and now - lg.touched >= expiry and lg.idle():
                del self._logs[key]
