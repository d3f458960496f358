"""The members of every address of this process (``memory://``): no other process, no lease."""

from __future__ import annotations

import asyncio
import contextlib
import itertools

from wsq.broker.presence import PresenceStore
from wsq.core.presence import Member


class _Room:
    __slots__ = ("changed", "members", "version")

    def __init__(self) -> None:
        self.members: dict[str, Member] = {}
        self.version = 0
        # Set (and replaced) at every change: what ``changed`` waits on.
        self.changed = asyncio.Event()

    def bump(self, version: int) -> None:
        self.version = version
        self.changed.set()
        self.changed = asyncio.Event()


class LocalPresenceStore(PresenceStore):
    def __init__(self) -> None:
        self._rooms: dict[tuple[str, str], _Room] = {}
        # One sequence for every room: a room forgotten and made again never repeats a version.
        self._versions = itertools.count(1)
        # Occupancy: the addresses with receivers; one sequence for all (increasing per address).
        self._occupied: set[tuple[str, str]] = set()
        self._occupancy = itertools.count(1)
        # Leases: (tenant, address, name) -> (holder, until loop time).
        self._held: dict[tuple[str, str, str], tuple[str, float]] = {}

    def _room(self, tenant: str, address: str) -> _Room:
        room = self._rooms.get((tenant, address))
        if room is None:
            room = self._rooms[(tenant, address)] = _Room()
        return room

    async def join(self, tenant: str, address: str, member: Member, max_members: int) -> bool:
        room = self._room(tenant, address)
        if member.id not in room.members and len(room.members) >= max_members:
            return False
        room.members[member.id] = member
        room.bump(next(self._versions))
        return True

    async def leave(self, tenant: str, address: str, member_id: str) -> None:
        room = self._rooms.get((tenant, address))
        if room is None or room.members.pop(member_id, None) is None:
            return
        room.bump(next(self._versions))
        if not room.members:
            del self._rooms[(tenant, address)]  # its waiters were woken by the bump

    async def members(self, tenant: str, address: str) -> tuple[int, dict[str, Member]]:
        room = self._rooms.get((tenant, address))
        if room is None:
            return 0, {}
        return room.version, dict(room.members)

    async def changed(self, tenant: str, address: str, version: int, timeout_s: float) -> None:
        room = self._room(tenant, address)
        if room.version != version:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await room.changed.wait()

    async def occupy(self, tenant: str, address: str) -> int:
        if (tenant, address) in self._occupied:
            return 0
        self._occupied.add((tenant, address))
        return next(self._occupancy)

    async def vacate(self, tenant: str, address: str) -> int:
        if (tenant, address) not in self._occupied:
            return 0
        self._occupied.discard((tenant, address))
        return next(self._occupancy)

    async def hold(self, tenant: str, address: str, name: str, holder: str, ms: int) -> bool:
        key = (tenant, address, name)
        now = asyncio.get_running_loop().time()
        current = self._held.get(key)
        if current is not None and current[0] != holder and current[1] > now:
            return False
        if ms == 0:
            self._held.pop(key, None)
        else:
            self._held[key] = (holder, now + ms / 1000)
        return True
