"""Per-tenant quotas (docs/security.md, "Per-tenant quotas"): what one tenant may hold of a
gateway, checked where it is asked for, refused at the narrowest scope, and counted here.

- ``max_connections``: authenticated sockets (``connect`` when a socket's ``open`` is good).
- ``max_links``: attached links, over all the tenant's sockets (``attach``).
- ``max_addresses``: live addresses. An address is live from a publish, an attach of a receiver
  or a claim until it idles out (the tenant's ``idle_expiry_ms`` after the last of them);
  ``address`` admits one, and confirms a live one at most every ``CONFIRM_S`` (a publish to an
  address confirmed lately costs one dict lookup, no broker call).
- ``max_groups`` per address: ``group`` opens a consumer group (and admits its address).
- ``max_presence_members``: links attached with ``"presence": true`` (``present``); the
  per-address bound, ``max_members_per_address``, is the presence store's (``wsq.hub.presence``).

The counts are the broker's ``QuotaStore``: this process's on ``memory://``, shared by every
process on Redis. Every refusal raises ``QuotaExceeded`` after ``refused`` counted it by
tenant and kind (``refusals``, for metrics) and logged it, without token, address or body.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Hashable, Mapping

from wsq.broker.base import Broker
from wsq.config import TenantConfig
from wsq.core.errors import (
    ADDRESSES,
    CONNECTIONS,
    GROUPS,
    LINKS,
    PRESENCE_MEMBERS,
    QuotaExceeded,
)

log = logging.getLogger("wsq.quotas")

#: Longest (s) an address or group confirmed live is taken as live without asking the broker
#: again (never more than a quarter of the tenant's idle_expiry_ms).
CONFIRM_S = 60.0
#: Refusals of one tenant and kind are logged at most once per this many seconds.
LOG_EVERY_S = 10.0


class Quotas:
    """The quotas of every tenant in this process."""

    def __init__(
        self,
        tenants: Mapping[str, TenantConfig],
        broker: Broker,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tenants = tenants
        self._broker = broker
        self._store = broker.quota_store
        self._clock = clock
        #: Refusals by (tenant, kind), since the process started.
        self.refusals: Counter[tuple[str, str]] = Counter()
        self._logged: dict[tuple[str, str], tuple[float, int]] = {}
        # (tenant, address) or (tenant, address, group) -> until when it is known to be live.
        self._confirmed: dict[tuple[str, ...], float] = {}
        self._prune_at = 1024

    def refused(self, exc: QuotaExceeded) -> QuotaExceeded:
        """Count and log a refusal; answers it, to raise."""
        key = (exc.tenant, exc.kind)
        self.refusals[key] += 1
        total = self.refusals[key]
        now = self._clock()
        last = self._logged.get(key)
        if last is None or now - last[0] >= LOG_EVERY_S:
            since = total - (last[1] if last is not None else 0)
            log.info(
                "tenant %r: %d refused past its quota of %d %s (%d in all)",
                exc.tenant,
                since,
                exc.limit,
                exc.kind,
                total,
                extra={"tenant": exc.tenant, "condition": exc.condition},
            )
            self._logged[key] = (now, total)
        return exc

    # -- connections and links --------------------------------------------------------------

    async def connect(self, tenant: str) -> None:
        """One more authenticated socket of ``tenant``, or ``QuotaExceeded``."""
        config = self._tenants.get(tenant)
        if config is None:
            return  # not a configured tenant (tests): no quota
        limit = config.max_connections
        if not await self._store.acquire(tenant, CONNECTIONS, limit):
            raise self.refused(QuotaExceeded(tenant, CONNECTIONS, limit))

    def disconnect(self, tenant: str) -> None:
        if tenant in self._tenants:
            self._store.release(tenant, CONNECTIONS)

    async def attach(self, tenant: str) -> None:
        """One more attached link of ``tenant``, or ``QuotaExceeded``."""
        config = self._tenants.get(tenant)
        if config is None:
            return
        limit = config.max_links
        if not await self._store.acquire(tenant, LINKS, limit):
            raise self.refused(QuotaExceeded(tenant, LINKS, limit))

    def detach(self, tenant: str, n: int = 1) -> None:
        if n and tenant in self._tenants:
            self._store.release(tenant, LINKS, n)

    async def present(self, tenant: str) -> None:
        """One more present link of ``tenant`` (presence), or ``QuotaExceeded``."""
        config = self._tenants.get(tenant)
        if config is None:
            return
        limit = config.max_presence_members
        if not await self._store.acquire(tenant, PRESENCE_MEMBERS, limit):
            raise self.refused(QuotaExceeded(tenant, PRESENCE_MEMBERS, limit))

    def absent(self, tenant: str) -> None:
        if tenant in self._tenants:
            self._store.release(tenant, PRESENCE_MEMBERS)

    # -- addresses and groups ---------------------------------------------------------------

    def _fresh(self, key: tuple[str, ...], now: float) -> bool:
        return self._confirmed.get(key, 0.0) > now

    def _confirm(self, key: tuple[str, ...], now: float, idle_ms: int) -> None:
        confirmed = self._confirmed
        if len(confirmed) >= self._prune_at:
            for k in [k for k, until in confirmed.items() if until <= now]:
                del confirmed[k]
            self._prune_at = max(1024, 2 * len(confirmed))
        confirmed[key] = now + min(CONFIRM_S, idle_ms / 4000)

    async def address(self, tenant: str, address: str) -> None:
        """``address`` is (made) live for ``tenant``, or ``QuotaExceeded`` when it would be
        one more than ``max_addresses``."""
        now = self._clock()
        key = (tenant, address)
        config = self._tenants.get(tenant)
        if config is None or self._fresh(key, now):
            return
        limit = config.max_addresses
        wait_ms = await self._store.admit(tenant, address, limit, config.idle_expiry_ms)
        if wait_ms:
            raise self.refused(QuotaExceeded(tenant, ADDRESSES, limit, wait_ms / 1000))
        self._confirm(key, now, config.idle_expiry_ms)

    async def group(self, tenant: str, address: str, group: str) -> None:
        """The consumer group exists (created now if need be, its address admitted), or
        ``QuotaExceeded`` when it would be one more than ``max_groups`` of the address."""
        await self.address(tenant, address)
        now = self._clock()
        key = (tenant, address, group)
        config = self._tenants.get(tenant)
        if config is None or self._fresh(key, now):
            return
        if not await self._broker.open_group(tenant, address, group):
            raise self.refused(QuotaExceeded(tenant, GROUPS, config.max_groups))
        self._confirm(key, now, config.idle_expiry_ms)


class Held:
    """What one socket holds of its tenant's quotas: its connection (once its ``open`` was
    good) and the links that took a slot; all given back when the socket goes."""

    __slots__ = ("links", "quotas", "tenant")

    def __init__(self, quotas: Quotas) -> None:
        self.quotas = quotas
        self.tenant: str | None = None
        self.links: set[Hashable] = set()

    async def connect(self, tenant: str) -> None:
        await self.quotas.connect(tenant)
        self.tenant = tenant

    async def attach(self, link: Hashable) -> None:
        assert self.tenant is not None
        await self.quotas.attach(self.tenant)
        self.links.add(link)

    def ended(self, link: Hashable) -> None:
        if link in self.links and self.tenant is not None:
            self.links.discard(link)
            self.quotas.detach(self.tenant)

    def release(self) -> None:
        if self.tenant is not None:
            self.quotas.detach(self.tenant, len(self.links))
            self.links.clear()
            self.quotas.disconnect(self.tenant)
            self.tenant = None
