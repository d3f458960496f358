"""The members of every address on Redis, shared by the gateway processes (``PresenceStore``).

A room is ``<address base>:pm`` (hash: member id -> ``{"o": owner, "m": member}``) and
``<address base>:pv`` (its version), in the address's slot (``keys.address_base``). ``owner``
is this process's random id; ``wsq:presence-owner:<owner>`` lives while the process refreshes
it (every third of ``lease_ms``). Whoever reads a room (``members``: a node watching it, an
HTTP occupancy request) drops the members whose owner's key is gone and bumps the version, so
every other node sees their leave at its next look.

How a watching node hears of a change (``changed``): the presence script announces each new
version (``v:<version>``) on the address's notice channel (``…:p``, sharded on a cluster), which
the live reader's subscription brings to this process (``LiveReader.watch_room``): no command is
sent while a room does not change. A notice lost (sent while the subscription did not hold) is
repaired by the re-read at each (re)subscription, and at worst by the watcher's slow re-read
(``changed``'s timeout: ``PresenceHub.sweep_s``), which also finds a dead node's members. Past
``MAX_NOTICED_ROOMS`` watched rooms a room is polled instead (``POLL_S``).

Occupancy (``occupy``/``vacate``/``sweep``): ``<address base>:oc`` is the set of owners with
receivers on the address and ``:on`` its occupancy number (``lua/occupancy.lua``). So that a
process that dies is found with what it held, each owner lists its addresses in
``wsq:occupancy:<owner>`` and is listed in ``wsq:occupancy-owners`` (keys of their own slots,
written before the address's set, so a death in between leaves nothing unlisted; they have no
expiry, which could drop a long-lived holder's list: a sweep deletes them, and a list emptied
by vacating is gone by itself). ``sweep``,
run by every process with occupancy events, takes each owner whose lease key is gone out of
its addresses' sets (the script tells exactly one sweeper that an address became vacated),
reads those rooms (which drops the dead owner's members), then forgets the owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from wsq.background import stop
from wsq.broker.presence import PresenceStore
from wsq.broker.redis.client import DOWN, RedisClients, unavailable
from wsq.broker.redis.keys import address_base
from wsq.broker.redis.reader import LiveReader
from wsq.core.errors import BrokerUnavailable
from wsq.core.presence import Member

log = logging.getLogger("wsq.broker.presence")

#: How often a process asks for a room's version (s) when it cannot be told of changes: a room
#: watched past ``MAX_NOTICED_ROOMS``.
POLL_S = 0.2
#: Rooms one process watches through notices (one subscribed channel each, shared with the
#: address's live reading); more are polled.
MAX_NOTICED_ROOMS = 100_000
#: Longest notice read (bytes): ``v:`` and a version; anything longer is ignored.
MAX_NOTICE = 24
#: The most a close waits for the owner key's deletion (s).
CLOSE_S = 2.0


#: Every owner that holds (or held, and was not swept yet) an address's occupancy.
OWNERS_KEY = "wsq:occupancy-owners"


def _owner_key(owner: str) -> str:
    return f"wsq:presence-owner:{owner}"


def _held_key(owner: str) -> str:
    return f"wsq:occupancy:{owner}"


def _text(raw: bytes | str) -> str:
    # Replies are bytes or str depending on the client's decoding: read both.
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw


class _Watch:
    """A room this process watches through notices: the newest version announced, and whether
    a (re)subscription may have missed some."""

    __slots__ = ("changed", "missed", "noticed", "seq")

    def __init__(self) -> None:
        self.noticed = -1
        self.missed = False
        self.changed = asyncio.Event()  # set (and replaced) at each notice
        self.seq = 0  # notices taken (a read compares it before and after)

    def notice(self, data: str | None) -> None:
        if data is None:
            self.missed = True
        else:
            if len(data) > MAX_NOTICE:
                return
            try:
                version = int(data[2:])
            except ValueError:
                return
            if version <= self.noticed:
                return
            self.noticed = version
            self.seq += 1
        self.changed.set()
        self.changed = asyncio.Event()

    def read(self, version: int, seq: int) -> None:
        """The room was read at ``version`` by a GET sent when ``seq`` notices had been taken.
        A notice arrives after its change is made, so a GET sent after it and no newer notice
        meanwhile sees at least its version; one older means the notice was wrong (a version
        that restarted, a forged notice): it is forgotten, so that the watcher neither turns
        deaf to the notices below it nor reads the room again and again. (A notice taken during
        the GET may announce a change the GET ran before: then nothing is concluded.)"""
        if version < self.noticed and seq == self.seq:
            self.noticed = version


def _held_entry(raw: bytes | str) -> tuple[str, str] | None:
    """A (tenant, address) an owner listed; None for anything else (skipped)."""
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    if isinstance(doc, list) and len(doc) == 2 and all(isinstance(x, str) for x in doc):
        return doc[0], doc[1]
    return None


class RedisPresenceStore(PresenceStore):
    def __init__(self, clients: RedisClients, lease_ms: int, reader: LiveReader) -> None:
        self._clients = clients
        self._reader = reader
        self._watches: dict[tuple[str, str], _Watch] = {}
        self._polling = 0  # waits in ``_poll`` now
        self.lease_ms = lease_ms
        self.owner = uuid.uuid4().hex
        self._refresher: asyncio.Task[None] | None = None
        # Whether this owner is in OWNERS_KEY (added once; a sweep after a lost lease takes
        # it out, so a lease found lost lists it again).
        self._listed = False

    async def start(self) -> None:
        if self._refresher is None:
            self._refresher = asyncio.get_running_loop().create_task(self._refresh_forever())

    async def close(self) -> None:
        for tenant, address in list(self._watches):
            self.unwatch(tenant, address)
        if self._refresher is not None:
            await stop([self._refresher])
            self._refresher = None
            # Only a courtesy (the lease runs out anyway): bounded, so that a close never waits
            # on a cluster client refreshing its slots (a CI run hung here once, in teardown).
            with contextlib.suppress(BrokerUnavailable, TimeoutError):
                async with asyncio.timeout(CLOSE_S):
                    await self._call("delete", _owner_key(self.owner))

    async def _refresh_forever(self) -> None:
        while True:
            try:
                await self._call("set", _owner_key(self.owner), "1", px=self.lease_ms)
            except BrokerUnavailable as exc:
                log.warning("presence lease not refreshed: %s", exc)
            await asyncio.sleep(self.lease_ms / 3000)

    async def _call(self, verb: str, *args: Any, **kwargs: Any) -> Any:
        try:
            async with self._clients.gate:
                return await getattr(self._clients.redis, verb)(*args, **kwargs)
        except DOWN as exc:
            raise unavailable(exc) from exc

    @staticmethod
    def _keys(tenant: str, address: str) -> list[str]:
        base = address_base(tenant, address)
        return [f"{base}:pm", f"{base}:pv"]

    async def _ensure_lease(self) -> None:
        # The owner's lease is kept from the first join (or occupancy) on, not from the
        # broker's start: a process with no present link sends nothing (a CI run hung on a
        # cluster with a refresher in every broker, present or not).
        if self._refresher is None:
            await self.start()
            await self._call("set", _owner_key(self.owner), "1", px=self.lease_ms)
        elif not await self._call("exists", _owner_key(self.owner)):
            # Our lease was lost: what we hold must never outlive it unseen.
            await self._call("set", _owner_key(self.owner), "1", px=self.lease_ms)
            self._listed = False

    async def join(self, tenant: str, address: str, member: Member, max_members: int) -> bool:
        await self._ensure_lease()
        value = json.dumps({"o": self.owner, "m": member.to_json()}, separators=(",", ":"))
        keys = self._keys(tenant, address)
        args = [*self._announce(tenant, address), "join", member.id, value, max_members]
        if await self._clients.run("presence", keys, args):
            return True
        # Full, perhaps of a dead process's members no one has read since: drop them, try again.
        await self.members(tenant, address)
        return bool(await self._clients.run("presence", keys, args))

    async def leave(self, tenant: str, address: str, member_id: str) -> None:
        args = [*self._announce(tenant, address), "drop", member_id]
        await self._clients.run("presence", self._keys(tenant, address), args)

    async def members(self, tenant: str, address: str) -> tuple[int, dict[str, Member]]:
        keys = self._keys(tenant, address)
        # The version first: a change made between the two reads shows as a newer version.
        watch = self._watches.get((tenant, address))
        seq = watch.seq if watch is not None else 0
        version = int(await self._call("get", keys[1]) or 0)
        if watch is not None and self._watches.get((tenant, address)) is watch:
            watch.read(version, seq)
        rows: dict[bytes, bytes] = await self._call("hgetall", keys[0])
        by_owner: dict[str, list[Member]] = {}
        broken: list[str] = []
        for raw_id, raw in rows.items():
            try:
                doc = json.loads(raw)
                member = Member.from_json(doc.get("m"))
                owner = doc.get("o")
            except (ValueError, AttributeError):
                member, owner = None, None
            if member is None or not isinstance(owner, str):
                broken.append(raw_id.decode("utf-8", "replace"))
                continue
            by_owner.setdefault(owner, []).append(member)
        dead = [o for o in by_owner if o != self.owner and not await self._alive(o)]
        dead_members = {o: by_owner.pop(o) for o in dead}
        gone = broken + [m.id for o in dead for m in dead_members[o]]
        if gone:
            # The version read before stays: the next look sees the drop's (and any other) change.
            args = [*self._announce(tenant, address), "drop", *gone]
            removed = await self._clients.run("presence", keys, args)
            dropped = {_text(r) for r in removed or ()}
            lost = [m for o in dead for m in dead_members[o] if m.id in dropped]
            if lost and self.on_dropped is not None:
                self.on_dropped(tenant, address, lost)
        return version, {m.id: m for ms in by_owner.values() for m in ms}

    async def _alive(self, owner: str) -> bool:
        return bool(await self._call("exists", _owner_key(owner)))

    def _announce(self, tenant: str, address: str) -> tuple[str, str]:
        """The presence script's first arguments: where and how it announces a change."""
        return f"{address_base(tenant, address)}:p", self._clients.publish_verb

    async def changed(self, tenant: str, address: str, version: int, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        until = loop.time() + timeout_s
        watch = self._watches.get((tenant, address))
        if watch is None:
            if len(self._watches) >= MAX_NOTICED_ROOMS:
                await self._poll(tenant, address, version, until)
                return
            watch = self._watches[(tenant, address)] = _Watch()
            self._reader.watch_room(self._announce(tenant, address)[0], self._told(watch))
            # Told of every change from here on (once subscribed: that is told too); one look
            # for a change made before.
            if int(await self._call("get", self._keys(tenant, address)[1]) or 0) != version:
                return
        while True:
            if watch.missed:
                watch.missed = False
                return
            if watch.noticed > version:
                return
            left = until - loop.time()
            if left <= 0:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await watch.changed.wait()

    def _told(self, watch: _Watch) -> Callable[[str | None], None]:
        def told(data: str | None) -> None:
            if data is not None:
                self.notices += 1
            watch.notice(data)

        return told

    def rooms_watched(self) -> dict[str, int]:
        return {"notice": len(self._watches), "poll": self._polling}

    async def _poll(self, tenant: str, address: str, version: int, until: float) -> None:
        key = self._keys(tenant, address)[1]
        loop = asyncio.get_running_loop()
        self._polling += 1
        try:
            while int(await self._call("get", key) or 0) == version:
                left = until - loop.time()
                if left <= 0:
                    return
                await asyncio.sleep(min(POLL_S, left))
        finally:
            self._polling -= 1

    def unwatch(self, tenant: str, address: str) -> None:
        if self._watches.pop((tenant, address), None) is not None:
            self._reader.unwatch_room(self._announce(tenant, address)[0])

    @staticmethod
    def _occupancy_keys(tenant: str, address: str) -> list[str]:
        base = address_base(tenant, address)
        return [f"{base}:oc", f"{base}:on"]

    async def occupy(self, tenant: str, address: str) -> int:
        await self._ensure_lease()
        if not self._listed:
            await self._call("sadd", OWNERS_KEY, self.owner)
            self._listed = True
        await self._call("sadd", _held_key(self.owner), json.dumps([tenant, address]))
        keys = self._occupancy_keys(tenant, address)
        return int(await self._clients.run("occupancy", keys, ["add", self.owner]) or 0)

    async def vacate(self, tenant: str, address: str) -> int:
        keys = self._occupancy_keys(tenant, address)
        number = int(await self._clients.run("occupancy", keys, ["rem", self.owner]) or 0)
        await self._call("srem", _held_key(self.owner), json.dumps([tenant, address]))
        return number

    async def sweep(self) -> list[tuple[str, str, int]]:
        vacated: list[tuple[str, str, int]] = []
        owners: set[bytes | str] = await self._call("smembers", OWNERS_KEY)
        for raw_owner in owners:
            owner = _text(raw_owner)
            if owner == self.owner or await self._alive(owner):
                continue
            entries: set[bytes | str] = await self._call("smembers", _held_key(owner))
            for raw in entries:
                held = _held_entry(raw)
                if held is None:
                    continue
                tenant, address = held
                keys = self._occupancy_keys(tenant, address)
                number = int(await self._clients.run("occupancy", keys, ["rem", owner]) or 0)
                if number:
                    vacated.append((tenant, address, number))
                # A room nobody watches would keep the dead owner's members: read it (drops them).
                await self.members(tenant, address)
            await self._call("delete", _held_key(owner))
            await self._call("srem", OWNERS_KEY, owner)
        return vacated

    async def hold(self, tenant: str, address: str, name: str, holder: str, ms: int) -> bool:
        key = f"{address_base(tenant, address)}:h:{quote(name, safe='')}"
        return bool(await self._clients.run("hold", [key], [holder, ms]))
