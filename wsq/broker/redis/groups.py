"""Queues on Redis consumer groups: claim, settle, renew, and watching a group for work.

A leased message sits in its consumer's PEL with a lease deadline; released, expired and
filter-skipped ones are moved (XCLAIM) to the pseudo consumer ``~ready``, modified ones to
``~delay`` until their delay is over, rejected ones and those past the delivery limit to
``~dead`` until a process has copied them to the dead-letter address. ``claim`` serves
``~ready`` first (oldest first: everything there is older than what the group has not read yet),
then XREADGROUP. The group records who last held each message and which consumers want work,
so the queue rules of contract section 5 hold across processes. The Lua scripts
(``lua/group.lua`` and the scripts that need it) do each step atomically.

A group watched in this process has one timer for its next deadline (Redis time), polls at least
every ``GROUP_POLL_S``, and hears of publishes and releases through the live reader's notices.
See docs/design.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from wsq.broker.base import DeadLetterHook, Watch, dead_letter_copy
from wsq.broker.redis.client import RedisClients
from wsq.broker.redis.entries import entry_message
from wsq.broker.redis.keys import address_base, group_keys
from wsq.broker.redis.reader import GroupWatch, LiveReader
from wsq.core.addresses import Pattern
from wsq.core.errors import BrokerUnavailable
from wsq.core.limits import HANDOFF_MS
from wsq.core.messages import Delivery, NewMessage, Outcome, Published
from wsq.core.policy import StoragePolicies, StoragePolicy

log = logging.getLogger(__name__)

#: How often (s) a watched group is asked about due leases / released messages at the latest.
GROUP_POLL_S = 1.0
#: Entries claim looks at per call beyond what it leases (filter skips, expired).
CLAIM_SCAN = 1024
#: How long (ms) a process may take to copy a batch of dead letters before another may.
DEAD_LETTER_LEASE_MS = 30_000

_OUTCOME_CODES = {
    Outcome.ACCEPTED: "a",
    Outcome.REJECTED: "j",
    Outcome.RELEASED: "r",
    Outcome.MODIFIED: "m",
}


def _rules(cfg: StoragePolicy) -> tuple[int, int, int]:
    """The tenant's queue rules as the scripts take them (``policy`` in ``lua/group.lua``)."""
    return cfg.max_deliveries, 1 if cfg.dead_letter is not None else 0, HANDOFF_MS


class ConsumerGroups:
    """The move-mode half of ``RedisBroker`` (a base class of it): claim, settle, renew and
    watch_group of the Broker interface."""

    _clients: RedisClients
    _reader: LiveReader
    _policies: StoragePolicies
    # The group watches of this process.
    _group_watches: dict[tuple[str, str, str], GroupWatch]
    # Groups whose dead letters this process is copying now: one copier per group.
    _dead_letterers: set[tuple[str, str, str]]
    dead_letters_dropped: int
    on_dead_letter: DeadLetterHook | None

    if TYPE_CHECKING:
        # RedisBroker's: dead letters are published as any message is, without dedup.
        async def _publish_dead(
            self, tenant: str, address: str, messages: Sequence[NewMessage]
        ) -> list[Published]: ...

    def _close_groups(self) -> None:
        for gw in self._group_watches.values():
            if gw.timer is not None:
                gw.timer.cancel()
                gw.timer = None

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
        if count <= 0:
            return []
        cfg = self._policies.of(tenant)
        base = address_base(tenant, address)
        keys = (f"{base}:s", *group_keys(base, group), f"{base}:m")
        rows = await self._clients.run(
            "claim",
            keys,
            (
                group,
                consumer,
                count,
                lease_ms,
                subject_filter.text if subject_filter is not None else "",
                cfg.idle_expiry_ms,
                count + CLAIM_SCAN,
                -1 if room is None else room,
                *_rules(cfg),
                f"{base}:p",
                self._clients.publish_verb,
            ),
        )
        self._deadline(tenant, address, group, rows[0], rows[1])
        self._after_group_change(tenant, address, group, bool(rows[2]), int(rows[3]))
        return [Delivery(entry_message(id_, flat), int(n)) for id_, flat, n in rows[4:]]

    async def open_group(self, tenant: str, address: str, group: str) -> bool:
        cfg = self._policies.of(tenant)
        base = address_base(tenant, address)
        keys = (f"{base}:s", *group_keys(base, group), f"{base}:m")
        created = await self._clients.run(
            "opengroup", keys, (group, cfg.max_groups, cfg.idle_expiry_ms)
        )
        return bool(created)

    async def settle(
        self,
        tenant: str,
        address: str,
        group: str,
        consumer: str,
        ids: Sequence[str],
        outcome: Outcome,
    ) -> None:
        if ids:
            await self._settle(tenant, address, group, consumer, ids, _OUTCOME_CODES[outcome])

    async def leave(
        self, tenant: str, address: str, group: str, consumer: str, unsettled: Sequence[str]
    ) -> None:
        await self._settle(tenant, address, group, consumer, unsettled, "x")

    async def _settle(
        self,
        tenant: str,
        address: str,
        group: str,
        consumer: str,
        ids: Sequence[str],
        code: str,
    ) -> None:
        cfg = self._policies.of(tenant)
        base = address_base(tenant, address)
        rows = await self._clients.run(
            "settle",
            (f"{base}:s", *group_keys(base, group)),
            (
                *(group, consumer, code, cfg.redelivery_delay_ms),
                *(f"{base}:p", self._clients.publish_verb, cfg.idle_expiry_ms),
                *_rules(cfg),
                *ids,
            ),
        )
        self._deadline(tenant, address, group, rows[0], rows[2])
        if rows[1]:
            gw = self._group_watches.get((tenant, address, group))
            if gw is not None:
                gw.watchers.notify()
        self._after_group_change(tenant, address, group, bool(rows[3]), int(rows[4]))

    def _after_group_change(
        self, tenant: str, address: str, group: str, dead: bool, dropped: int
    ) -> None:
        """A script moved messages out of the group: count the dropped, copy the dead."""
        self.dead_letters_dropped += dropped
        key = (tenant, address, group)
        if dead and key not in self._dead_letterers:
            self._dead_letterers.add(key)
            self._reader.spawn(self._dead_letter(key))

    async def _dead_letter(self, key: tuple[str, str, str]) -> None:
        """Copy the group's dead letters to the tenant's dead-letter address, then remove them
        from the group: a failure in between leaves them to copy again (never lost; a copy may
        land twice then, which dead letters allow)."""
        tenant, address, group = key
        base = address_base(tenant, address)
        keys = (f"{base}:s", group_keys(base, group)[0], group_keys(base, group)[2])
        try:
            while True:
                cfg = self._policies.of(tenant)
                rows = await self._clients.run(
                    "dead", keys, (group, "t", DEAD_LETTER_LEASE_MS, cfg.idle_expiry_ms)
                )
                if not rows:
                    return
                taken = [(entry_message(id_, flat), str(reason)) for id_, flat, reason in rows]
                if cfg.dead_letter is None:
                    self.dead_letters_dropped += len(taken)
                else:
                    await self._publish_dead(
                        tenant,
                        cfg.dead_letter,
                        [dead_letter_copy(m, address, reason) for m, reason in taken],
                    )
                    if self.on_dead_letter is not None:
                        self.on_dead_letter(tenant, address, cfg.dead_letter, taken)
                await self._clients.run(
                    "dead",
                    keys,
                    (group, "d", 0, cfg.idle_expiry_ms, *(m.id for m, _ in taken)),
                )
        except (BrokerUnavailable, RedisError):
            log.warning("dead-lettering failed for a group; it is tried again", exc_info=True)
        finally:
            self._dead_letterers.discard(key)

    async def renew(
        self,
        tenant: str,
        address: str,
        group: str,
        consumer: str,
        ids: Sequence[str],
        lease_ms: int,
    ) -> list[str]:
        if not ids:
            return []
        base = address_base(tenant, address)
        lease_key = group_keys(base, group)[0]
        rows = await self._clients.run(
            "renew", (f"{base}:s", lease_key), (group, consumer, lease_ms, *ids)
        )
        return [str(r) for r in rows]

    def watch_group(
        self, tenant: str, address: str, group: str, on_available: Callable[[], None]
    ) -> Watch:
        gw = self._group_watches.get((tenant, address, group))
        if gw is None:
            st = self._reader.streams.get((tenant, address)) or self._reader.add_stream(
                tenant, address, None
            )
            gw = self._group_watches[(tenant, address, group)] = GroupWatch(st, group)
            st.groups.append(gw)
        w = Watch(on_available, lambda w: self._unwatch(gw, w))
        gw.watchers.append(w)
        # Something may wait already (published before, or a lease runs out): say so once, and
        # learn the group's next deadline.
        with contextlib.suppress(RuntimeError):
            gw.watchers.notify()
            if gw.timer is None:
                self._reader.spawn(self._poll(gw))
        return w

    def _unwatch(self, gw: GroupWatch, w: Watch) -> None:
        with contextlib.suppress(ValueError):
            gw.watchers.remove(w)
        if gw.watchers:
            return
        if gw.timer is not None:
            gw.timer.cancel()
            gw.timer = None
        st = gw.stream
        key = (st.tenant, st.address, gw.group)
        if self._group_watches.get(key) is gw:
            del self._group_watches[key]
        with contextlib.suppress(ValueError):
            st.groups.remove(gw)
        self._reader.release(st)

    def _deadline(self, tenant: str, address: str, group: str, now: int, deadline: int) -> None:
        """A claim or settle told the group's next deadline (Redis time): wake up for it."""
        gw = self._group_watches.get((tenant, address, group))
        if gw is not None and deadline >= 0:
            # One ms late rather than early.
            self._arm(gw, max(0, int(deadline) - int(now) + 1) / 1000)

    def _arm(self, gw: GroupWatch, delay: float) -> None:
        if self._reader.closed or not gw.watchers:
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + min(delay, GROUP_POLL_S)
        if gw.timer is not None:
            if gw.timer_at <= when:
                return
            gw.timer.cancel()
        gw.timer = loop.call_at(when, self._on_timer, gw)
        gw.timer_at = when

    def _on_timer(self, gw: GroupWatch) -> None:
        gw.timer = None
        if gw.watchers and not self._reader.closed:
            self._reader.spawn(self._poll(gw))

    async def _poll(self, gw: GroupWatch) -> None:
        """Ask Redis whether anything became claimable (a lease ran out, here or elsewhere)."""
        delay = GROUP_POLL_S
        try:
            now, avail, deadline, dead = await self._clients.run("poll", gw.keys[:3], (gw.group,))
            if avail:
                gw.watchers.notify()
            if dead:
                st = gw.stream
                self._after_group_change(st.tenant, st.address, gw.group, True, 0)
            elif deadline >= 0:
                delay = max(0, int(deadline) - int(now) + 1) / 1000
        except (BrokerUnavailable, RedisError):
            log.debug("group poll failed", exc_info=True)
        self._arm(gw, delay)
