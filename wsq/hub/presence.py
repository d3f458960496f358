"""Presence of one process: its present links by room, and the joins and leaves they are told.

A room this process has present links in is watched by one task (``_watch``): it waits for the
room's version to change in the store (``PresenceStore.changed``: at once on ``memory://``, a
notice on Redis), or for ``sweep_s`` (a dead node's members are dropped by whoever reads), then
reads the members and tells every local present link what joined and left since its last
look. Reads and the links' snapshots happen under the room's lock, so that a link's snapshot
and the events after it never miss nor repeat a change.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

from wsq.broker.presence import PresenceStore
from wsq.core.errors import BrokerUnavailable, ResourceLimitExceeded
from wsq.core.presence import MAX_PRESENCE_PAGE, Member, diff, page
from wsq.protocol.state import Link

log = logging.getLogger("wsq.presence")

#: Sends a ``presence`` frame's body on a link (the gateway's protocol connection).
Send = Callable[[Link, dict[str, Any]], None]
#: How long a watcher waits at most between two reads of its room (s), when the store has no
#: leases (on Redis: a third of the lease, so a dead node's members go within 4/3 of it).
SWEEP_S = 5.0
#: Each slow re-read comes up to this share of ``sweep_s`` early, at random: rooms watched from
#: the same moment (a node's start, a reconnecting crowd) would otherwise all be read in the
#: same instant, every ``sweep_s``, for as long as they are watched. Early, never late: a dead
#: node's members still go within 4/3 of the lease.
SWEEP_JITTER = 0.25
#: Pause after the store failed, before the watcher looks again (s).
RETRY_S = 1.0
#: Why a member left: its link ended, or its process died (dropped by another).
LEFT = "left"
NODE_LOST = "node-lost"
#: Told each member this process adds or removes: (tenant, address, member, joined, reason);
#: ``reason`` ``"left"`` for a leave ("" for a join). Dead nodes' members are the store's
#: (``PresenceStore.on_dropped``).
Changed = Callable[[str, str, Member, bool, str], None]


def _nobody(tenant: str, address: str, member: Member, joined: bool, reason: str) -> None:
    pass


class Room:
    __slots__ = ("address", "known", "links", "lock", "task", "tenant", "version")

    def __init__(self, tenant: str, address: str) -> None:
        self.tenant = tenant
        self.address = address
        self.known: dict[str, Member] = {}
        self.version = -1
        self.links: dict[Link, tuple[Member, Send]] = {}
        self.lock = asyncio.Lock()
        self.task: asyncio.Task[None] | None = None


class PresenceHub:
    """The rooms of one process."""

    def __init__(self, store: PresenceStore, on_change: Changed = _nobody) -> None:
        self.store = store
        self.on_change = on_change
        #: tenant -> members this process added; (tenant, reason) -> members it removed, its
        #: own (``left``) and those of dead processes it dropped (``node-lost``).
        self.joins: Counter[str] = Counter()
        self.leaves: Counter[tuple[str, str]] = Counter()
        store.on_dropped = self.members_lost
        self.rooms: dict[tuple[str, str], Room] = {}
        self._room_of: dict[Link, Room] = {}
        self.sweep_s = store.lease_ms / 3000 if store.lease_ms else SWEEP_S

    async def join(
        self, tenant: str, link: Link, member: Member, max_members: int, send: Send
    ) -> None:
        """Make ``link`` a member of its address; ``ResourceLimitExceeded`` when the room is
        full. Its snapshot is sent by ``greet`` once the attach is answered."""
        key = (tenant, link.address)
        room = self.rooms.get(key)
        if room is None:
            room = self.rooms[key] = Room(tenant, link.address)
        self._room_of[link] = room
        room.links[link] = (member, send)  # before any await: ``leave`` finds it
        async with room.lock:
            if link not in room.links:
                return  # left meanwhile (``leave`` gave back what it took)
            try:
                joined = await self.store.join(tenant, link.address, member, max_members)
            except BaseException:
                room.links.pop(link, None)
                raise
            if not joined:
                del room.links[link]
                raise ResourceLimitExceeded(f"at most {max_members} present members per address")
            await self._refresh(room, skip=link)
        self.joins[tenant] += 1
        self.on_change(tenant, link.address, member, True, "")
        if room.task is None:
            room.task = asyncio.get_running_loop().create_task(self._watch(room))

    def holds(self, link: Link) -> bool:
        """Whether ``link`` is (being made) a member, to be given back by ``leave``."""
        room = self._room_of.get(link)
        return room is not None and link in room.links

    def greet(self, link: Link) -> None:
        """Send the link its room: the count and the first page of members."""
        room = self._room_of.get(link)
        if room is None or link not in room.links:
            return
        members = [m.to_json() for m in page(room.known, MAX_PRESENCE_PAGE)]
        room.links[link][1](link, {"count": len(room.known), "members": members})

    async def leave(self, link: Link) -> bool:
        """The link is gone: it leaves its room. False for a link that was no member."""
        room = self._room_of.pop(link, None)
        if room is None:
            return False
        entry = room.links.pop(link, None)
        if not room.links:
            self._forget(room)
        if entry is None:
            return False
        async with room.lock:  # after a join still under way, never before it
            try:
                await self.store.leave(room.tenant, room.address, entry[0].id)
            except BrokerUnavailable as exc:
                # The member stays until our lease runs out (Redis), or the store returns.
                log.warning("presence leave not stored: %s", exc)
        self.leaves[room.tenant, LEFT] += 1
        self.on_change(room.tenant, room.address, entry[0], False, LEFT)
        return True

    def members_lost(self, tenant: str, address: str, members: list[Member]) -> None:
        """Members of a process that died, dropped by this one (``PresenceStore.on_dropped``)."""
        for member in members:
            self.leaves[tenant, NODE_LOST] += 1
            self.on_change(tenant, address, member, False, NODE_LOST)

    def members(self) -> Counter[str]:
        """tenant -> this process's present links (now)."""
        counts: Counter[str] = Counter()
        for (tenant, _), room in self.rooms.items():
            counts[tenant] += len(room.links)
        return counts

    def _forget(self, room: Room) -> None:
        if self.rooms.get((room.tenant, room.address)) is room:
            del self.rooms[(room.tenant, room.address)]
        if room.task is not None:
            room.task.cancel()
            room.task = None
            self.store.unwatch(room.tenant, room.address)

    async def close(self) -> None:
        for room in list(self.rooms.values()):
            self._forget(room)

    async def _watch(self, room: Room) -> None:
        while room.links:
            try:
                wait = self.sweep_s * (1.0 - SWEEP_JITTER * random.random())
                await self.store.changed(room.tenant, room.address, room.version, wait)
                async with room.lock:
                    await self._refresh(room)
            except BrokerUnavailable as exc:
                log.warning("presence of a room unreadable: %s", exc)
                await asyncio.sleep(RETRY_S)
            except Exception:
                # A watcher that died would leave its links deaf to the room: log, look again.
                log.exception("presence watcher failed")
                await asyncio.sleep(RETRY_S)

    async def _refresh(self, room: Room, skip: Link | None = None) -> None:
        """Read the room; tell its links (but ``skip``, not greeted yet) what changed."""
        version, members = await self.store.members(room.tenant, room.address)
        joins, leaves = diff(room.known, members)
        room.known = members
        room.version = version
        for link, (_, send) in list(room.links.items()):
            if link is skip:
                continue
            for m in leaves:
                send(link, {"leave": m.to_json()})
            for m in joins:
                send(link, {"join": m.to_json()})


async def occupancy(
    store: PresenceStore, tenant: str, address: str, limit: int, after: str
) -> dict[str, Any]:
    """An address's count and one page of its members (``GET /v1/addresses/{a}/presence``)."""
    _, members = await store.members(tenant, address)
    listed = page(members, limit, after)
    answer: dict[str, Any] = {
        "address": address,
        "count": len(members),
        "members": [m.to_json() for m in listed],
    }
    if listed and len(members) > 0 and listed[-1].id < max(members):
        answer["next"] = listed[-1].id
    return answer
