"""The members of every address on Redis, shared by the gateway processes (``PresenceStore``).

A room is ``<address base>:pm`` (hash: member id -> ``{"o": owner, "m": member}``) and
``<address base>:pv`` (its version), in the address's slot (``keys.address_base``). ``owner``
is this process's random id; ``wsq:presence-owner:<owner>`` lives while the process refreshes
it (every third of ``lease_ms``). Whoever reads a room (``members``: a node watching it, an
HTTP occupancy request) drops the members whose owner's key is gone and bumps the version, so
every other node sees their leave at its next look.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from typing import Any

from wsq.broker.presence import PresenceStore
from wsq.broker.redis.client import DOWN, RedisClients, unavailable
from wsq.broker.redis.keys import address_base
from wsq.core.errors import BrokerUnavailable
from wsq.core.presence import Member

log = logging.getLogger("wsq.broker.presence")

#: How often a process watching a room asks for its version (s): the delay of a join or leave
#: made on another node.
POLL_S = 0.2
#: The most a close waits for the owner key's deletion (s).
CLOSE_S = 2.0


def _owner_key(owner: str) -> str:
    return f"wsq:presence-owner:{owner}"


class RedisPresenceStore(PresenceStore):
    def __init__(self, clients: RedisClients, lease_ms: int) -> None:
        self._clients = clients
        self.lease_ms = lease_ms
        self.owner = uuid.uuid4().hex
        self._refresher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._refresher is None:
            self._refresher = asyncio.get_running_loop().create_task(self._refresh_forever())

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None
            # Only a courtesy (the lease runs out anyway): bounded, so that a close never waits
            # on a cluster client refreshing its slots (a CI run hung here once, in teardown).
            with contextlib.suppress(BrokerUnavailable, TimeoutError):
                await asyncio.wait_for(self._call("delete", _owner_key(self.owner)), CLOSE_S)

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

    async def join(self, tenant: str, address: str, member: Member, max_members: int) -> bool:
        # The owner's lease is kept from the first join on, not from the broker's start: a
        # process with no present link sends nothing (a CI run hung on a cluster with a
        # refresher in every broker, present or not).
        if self._refresher is None:
            await self.start()
            await self._call("set", _owner_key(self.owner), "1", px=self.lease_ms)
        if self._refresher is not None and not await self._call("exists", _owner_key(self.owner)):
            # Our lease is not there yet (or was lost): members must never outlive it unseen.
            await self._call("set", _owner_key(self.owner), "1", px=self.lease_ms)
        value = json.dumps({"o": self.owner, "m": member.to_json()}, separators=(",", ":"))
        args = ["join", member.id, value, max_members]
        keys = self._keys(tenant, address)
        if await self._clients.run("presence", keys, args):
            return True
        # Full, perhaps of a dead process's members no one has read since: drop them, try again.
        await self.members(tenant, address)
        return bool(await self._clients.run("presence", keys, args))

    async def leave(self, tenant: str, address: str, member_id: str) -> None:
        await self._clients.run("presence", self._keys(tenant, address), ["drop", member_id])

    async def members(self, tenant: str, address: str) -> tuple[int, dict[str, Member]]:
        keys = self._keys(tenant, address)
        # The version first: a change made between the two reads shows as a newer version.
        version = int(await self._call("get", keys[1]) or 0)
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
        gone = broken + [m.id for o in dead for m in by_owner.pop(o)]
        if gone:
            # The version read before stays: the next look sees the drop's (and any other) change.
            await self._clients.run("presence", keys, ["drop", *gone])
        return version, {m.id: m for ms in by_owner.values() for m in ms}

    async def _alive(self, owner: str) -> bool:
        return bool(await self._call("exists", _owner_key(owner)))

    async def changed(self, tenant: str, address: str, version: int, timeout_s: float) -> None:
        key = self._keys(tenant, address)[1]
        loop = asyncio.get_running_loop()
        until = loop.time() + timeout_s
        while int(await self._call("get", key) or 0) == version:
            left = until - loop.time()
            if left <= 0:
                return
            await asyncio.sleep(min(POLL_S, left))
