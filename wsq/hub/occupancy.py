"""Occupancy of addresses: whether any receiver, on any node, is attached to an address.

The gateway tells ``attached`` / ``detached`` for each receiver link (counted only for the
tenants ``counted`` says: those with occupancy webhooks); this process counts its own links
per address and keeps the store (``PresenceStore.occupy`` / ``vacate``) told whether
it holds the address at all, one call per change of that yes/no, never one per link. The store
answers when the address as a whole became occupied or vacated (on Redis, over every node),
and that is when ``tell`` is called: ``address.occupied`` / ``address.vacated``.

One task per address makes the calls, in turn, so that a quick attach and detach never reach
the store out of order; the count may change meanwhile, the task then goes on until the store
agrees with it. A node that dies leaves its hold behind: ``sweep`` (every third of the store's
lease) drops the holds of processes whose lease ran out, and tells the vacated addresses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from wsq.background import stop
from wsq.broker.presence import PresenceStore
from wsq.core.errors import BrokerUnavailable
from wsq.protocol.state import Link

log = logging.getLogger("wsq.occupancy")

#: Called with (tenant, address, occupied, number, reason): ``occupied`` True for occupied,
#: False for vacated; ``number`` the address's occupancy number (increasing); ``reason``
#: ``"detached"`` or ``"node-lost"`` for a vacated one ("" for occupied).
Tell = Callable[[str, str, bool, int, str], None]
#: Pause after the store failed before trying again (s).
RETRY_S = 1.0
#: The longest a close waits to give back what this process holds (s).
CLOSE_S = 2.0
#: Between two sweeps when the store has no leases (memory: nothing to sweep) (s).
IDLE_SWEEP_S = 60.0


class Occupancy:
    def __init__(self, store: PresenceStore, tell: Tell, counted: Callable[[str], bool]) -> None:
        self.store = store
        self.tell = tell
        self.counted = counted
        #: The receiver links counted, and the (tenant, address) each was counted in.
        self.links: dict[Link, tuple[str, str]] = {}
        #: This process's receivers per (tenant, address) (only addresses with at least one).
        self.counts: dict[tuple[str, str], int] = {}
        #: What the store was told this process holds.
        self.held: set[tuple[str, str]] = set()
        self._busy: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._closed = False

    def attached(self, tenant: str, link: Link) -> None:
        """A receiver link of ``tenant`` is attached (every receiver, present or not)."""
        if not self.counted(tenant) or link in self.links:
            return
        key = self.links[link] = (tenant, link.address)
        self.counts[key] = self.counts.get(key, 0) + 1
        self._kick(key)

    def detached(self, link: Link) -> None:
        """A link ended (any link: one never counted is no-op)."""
        key = self.links.pop(link, None)
        if key is None:
            return
        n = self.counts.get(key, 0) - 1
        if n > 0:
            self.counts[key] = n
        else:
            self.counts.pop(key, None)
        self._kick(key)

    def held_by_tenant(self) -> dict[str, int]:
        """tenant -> addresses this process holds (has receivers on) now."""
        counts: dict[str, int] = {}
        for tenant, _ in self.held:
            counts[tenant] = counts.get(tenant, 0) + 1
        return counts

    def start(self) -> None:
        """Sweep what dead processes held, every third of the store's lease."""
        if self._sweeper is None and self.store.lease_ms:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    def _kick(self, key: tuple[str, str]) -> None:
        if key not in self._busy and not self._closed:
            self._busy[key] = asyncio.get_running_loop().create_task(self._settle(key))

    async def _settle(self, key: tuple[str, str]) -> None:
        tenant, address = key
        try:
            while True:
                want = key in self.counts
                if want == (key in self.held):
                    return  # no await between this check and the ``finally``: nothing missed
                try:
                    if want:
                        number = await self.store.occupy(tenant, address)
                        self.held.add(key)
                    else:
                        number = await self.store.vacate(tenant, address)
                        self.held.discard(key)
                except Exception as exc:
                    # Broker down (or a failure of ours): the count stays the truth, tried
                    # again until the store agrees, never left half told.
                    log.warning("occupancy not stored: %s", type(exc).__name__)
                    await asyncio.sleep(RETRY_S)
                    continue
                if number:
                    self.tell(tenant, address, want, number, "" if want else "detached")
        finally:
            del self._busy[key]

    async def sweep(self) -> None:
        for tenant, address, number in await self.store.sweep():
            self.tell(tenant, address, False, number, "node-lost")

    async def _sweep_forever(self) -> None:
        every = self.store.lease_ms / 3000 if self.store.lease_ms else IDLE_SWEEP_S
        while True:
            await asyncio.sleep(every)
            try:
                await self.sweep()
            except BrokerUnavailable as exc:
                log.warning("occupancy sweep failed: %s", exc)
            except Exception:
                # A sweeper that died would leave dead nodes' addresses occupied: go on.
                log.exception("occupancy sweep failed")

    async def close(self) -> None:
        """Give back what this process holds (bounded: the lease ends it anyway)."""
        self._closed = True
        await stop([self._sweeper, *self._busy.values()])
        self.counts.clear()
        self.links.clear()
        with contextlib.suppress(BrokerUnavailable, TimeoutError):
            async with asyncio.timeout(CLOSE_S):
                await self._give_back()

    async def _give_back(self) -> None:
        for tenant, address in list(self.held):
            number = await self.store.vacate(tenant, address)
            self.held.discard((tenant, address))
            if number:
                self.tell(tenant, address, False, number, "detached")
