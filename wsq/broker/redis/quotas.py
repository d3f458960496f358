"""The tenants' quota counts on Redis, shared by every gateway process of the broker.

Connections and links (``lua/count.lua``): per tenant and kind one hash (``tenant_key``, one
slot per tenant on a cluster) with a field per process, ``<count> <ms its share expires>``.
The script sums the shares that have not expired, drops those that have, and grants or refuses
in one atomic step: one round trip per connect or attach. What a process gives back is sent
without waiting (together with what else was given back in the same loop turn, or with its
next acquire). Every third of ``lease_ms`` each process sets its share again to what it holds,
with a fresh expiry: a share that a failed call left wrong is right again, and the share of a
process that died (it refreshes no more) stops counting ``lease_ms`` after its last refresh.

Live addresses (``lua/admit.lua``): per tenant one sorted set, scored by the ms each address
idles out (``wsq.quotas`` asks only for an address it has not confirmed lately).

When Redis cannot be reached, an acquire or an admission is granted (an acquire counted here,
and sent with the next refresh): a gateway whose broker is down serves nothing anyway, and the
reconnections that follow an outage must not be refused for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

from redis.exceptions import RedisError

from wsq.background import stop
from wsq.broker.base import QuotaStore
from wsq.broker.redis.client import DOWN, RedisClients, unavailable
from wsq.broker.redis.keys import tenant_key
from wsq.core.errors import BrokerUnavailable

log = logging.getLogger(__name__)


class _Share:
    """What this process holds of one tenant's count of one kind."""

    __slots__ = ("busy", "changed", "held", "unsent")

    def __init__(self) -> None:
        self.held = 0  # acquired and not given back
        self.unsent = 0  # given back, not yet sent
        self.busy = 0  # calls in flight
        self.changed = False  # held moved while a refresh was in flight: send it again


class RedisQuotaStore(QuotaStore):
    def __init__(self, clients: RedisClients, lease_ms: int) -> None:
        self._clients = clients
        self.lease_ms = lease_ms
        #: This process's field in the tenants' hashes.
        self.member = uuid.uuid4().hex
        self._shares: dict[tuple[str, str], _Share] = {}
        self._flush: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._refresher is None:
            self._refresher = asyncio.get_running_loop().create_task(self._refresh_forever())

    async def close(self) -> None:
        await stop([self._refresher, self._flush])
        self._refresher = self._flush = None

    def _share(self, tenant: str, kind: str) -> _Share:
        share = self._shares.get((tenant, kind))
        if share is None:
            share = self._shares[(tenant, kind)] = _Share()
        return share

    async def _count(
        self, tenant: str, kind: str, share: _Share, back: int, want: int, limit: int, *, set_: bool
    ) -> bool:
        share.busy += 1
        try:
            granted, _ = await self._clients.run(
                "count",
                (tenant_key(tenant, kind),),
                (self.member, back, want, limit, self.lease_ms, 1 if set_ else 0),
            )
            return bool(granted)
        finally:
            share.busy -= 1

    async def acquire(self, tenant: str, kind: str, limit: int) -> bool:
        share = self._share(tenant, kind)
        back, share.unsent = share.unsent, 0
        try:
            granted = await self._count(tenant, kind, share, back, 1, limit, set_=False)
        except BrokerUnavailable:
            log.warning("quota counts unavailable (Redis): %s of %r counted here", kind, tenant)
            share.changed = True
            granted = True
        if granted:
            share.held += 1
            share.changed = True
        return granted

    def release(self, tenant: str, kind: str, n: int = 1) -> None:
        share = self._share(tenant, kind)
        share.held = max(share.held - n, 0)
        share.unsent += n
        share.changed = True
        if self._flush is None:
            self._flush = asyncio.get_running_loop().create_task(self._flush_releases())

    async def _flush_releases(self) -> None:
        """Send what was given back, once per loop turn however many releases came."""
        await asyncio.sleep(0)
        self._flush = None
        for (tenant, kind), share in list(self._shares.items()):
            back, share.unsent = share.unsent, 0
            if back:
                # Lost when Redis is down: the next refresh sets the share right.
                with contextlib.suppress(BrokerUnavailable, RedisError):
                    await self._count(tenant, kind, share, back, 0, -1, set_=False)

    async def admit(self, tenant: str, address: str, limit: int, ttl_ms: int) -> int:
        try:
            wait: Any = await self._clients.run(
                "admit", (tenant_key(tenant, "addresses"),), (address, limit, ttl_ms)
            )
        except BrokerUnavailable:
            return 0
        return int(wait)

    async def live_addresses(self, tenant: str, limit: int) -> list[str]:
        key = tenant_key(tenant, "addresses")
        try:
            async with self._clients.gate:
                raw = await self._clients.redis.zrangebyscore(
                    key, int(time.time() * 1000), "+inf", start=0, num=limit
                )
        except DOWN as exc:
            raise unavailable(exc) from exc
        return [r.decode("utf-8", "replace") if isinstance(r, bytes) else str(r) for r in raw]

    async def refresh(self) -> None:
        """Set this process's shares to what it holds, with a fresh expiry."""
        for (tenant, kind), share in list(self._shares.items()):
            if share.busy or share.unsent:
                continue  # a call in flight: refreshed next time
            held = share.held
            share.changed = False
            try:
                await self._count(tenant, kind, share, 0, held, -1, set_=True)
            except (BrokerUnavailable, RedisError):
                share.changed = True
                continue
            if not share.held and not share.changed and not share.busy and not share.unsent:
                del self._shares[(tenant, kind)]

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.lease_ms / 3000)
            try:
                await self.refresh()
            except Exception:
                log.exception("refreshing the quota counts failed")
