"""Queues on Redis consumer groups: claim, settle, renew, and watching a group for work.

A leased message sits in its consumer's PEL with a lease deadline; released, expired and
filter-skipped ones are moved (XCLAIM) to the pseudo consumer ``~ready``, modified ones to
``~delay`` until their delay is over. ``claim`` serves ``~ready`` first (oldest first: everything
there is older than what the group has not read yet), then XREADGROUP. The Lua scripts
(``lua/claim.lua``, ``settle.lua``, ``renew.lua``, ``poll.lua``) do each step atomically.

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

from wsq.broker.base import Watch, dead_letter_copy
from wsq.broker.redis.client import RedisClients
from wsq.broker.redis.entries import entry_message
from wsq.broker.redis.keys import address_base, group_keys
from wsq.broker.redis.reader import GroupWatch, LiveReader
from wsq.core.addresses import Pattern
from wsq.core.errors import BrokerUnavailable
from wsq.core.messages import Delivery, NewMessage, Outcome, Published
from wsq.core.policy import StoragePolicies

log = logging.getLogger(__name__)

#: How often (s) a watched group is asked about due leases / released messages at the latest.
GROUP_POLL_S = 1.0
#: Entries claim looks at per call beyond what it leases (filter skips, expired).
CLAIM_SCAN = 1024


class ConsumerGroups:
    """The move-mode half of ``RedisBroker`` (a base class of it): claim, settle, renew and
    watch_group of the Broker interface."""

    _clients: RedisClients
    _reader: LiveReader
    _policies: StoragePolicies
    # The group watches of this process.
    _group_watches: dict[tuple[str, str, str], GroupWatch]

    if TYPE_CHECKING:
        # RedisBroker's: dead letters are published as any message is.
        async def publish(
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
            ),
        )
        self._deadline(tenant, address, group, rows[0], rows[1])
        return [Delivery(entry_message(id_, flat), int(n)) for id_, flat, n in rows[2:]]

    async def settle(
        self,
        tenant: str,
        address: str,
        group: str,
        consumer: str,
        ids: Sequence[str],
        outcome: Outcome,
    ) -> None:
        if not ids:
            return
        cfg = self._policies.of(tenant)
        base = address_base(tenant, address)
        keys = (f"{base}:s", *group_keys(base, group))
        code = {
            Outcome.ACCEPTED: "a",
            Outcome.RELEASED: "r",
            Outcome.MODIFIED: "m",
            Outcome.REJECTED: "a",
        }[outcome]
        if outcome is Outcome.REJECTED and cfg.dead_letter is not None:
            # Dead-letter first, then remove: a failure in between redelivers, never loses.
            held = await self._clients.run(
                "settle",
                keys,
                (
                    group,
                    consumer,
                    "h",
                    0,
                    f"{base}:p",
                    self._clients.publish_verb,
                    cfg.idle_expiry_ms,
                    *ids,
                ),
            )
            dead = [entry_message(id_, flat) for id_, flat in held[3:]]
            if not dead:
                return
            await self.publish(
                tenant, cfg.dead_letter, [dead_letter_copy(m, address) for m in dead]
            )
            ids = [m.id for m in dead]
        rows = await self._clients.run(
            "settle",
            keys,
            (
                *(group, consumer, code, cfg.redelivery_delay_ms),
                *(f"{base}:p", self._clients.publish_verb, cfg.idle_expiry_ms),
                *ids,
            ),
        )
        self._deadline(tenant, address, group, rows[0], rows[2])
        if rows[1]:
            gw = self._group_watches.get((tenant, address, group))
            if gw is not None:
                gw.watchers.notify()

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
            now, avail, deadline = await self._clients.run("poll", gw.keys[:3], (gw.group,))
            if avail:
                gw.watchers.notify()
            elif deadline >= 0:
                delay = max(0, int(deadline) - int(now) + 1) / 1000
        except (BrokerUnavailable, RedisError):
            log.debug("group poll failed", exc_info=True)
        self._arm(gw, delay)
