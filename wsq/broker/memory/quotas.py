"""The quota counts of ``memory://``: this process's own (``QuotaStore``)."""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable

from wsq.broker.base import QuotaStore


class LocalQuotaStore(QuotaStore):
    """Counts in this process. Live addresses: per tenant, address -> ms it idles out, oldest
    first (every address of a tenant lives as long after its last admission)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.counts: Counter[tuple[str, str]] = Counter()
        self.live: dict[str, OrderedDict[str, int]] = {}

    async def acquire(self, tenant: str, kind: str, limit: int) -> bool:
        key = (tenant, kind)
        if self.counts[key] >= limit:
            return False
        self.counts[key] += 1
        return True

    def release(self, tenant: str, kind: str, n: int = 1) -> None:
        key = (tenant, kind)
        left = self.counts[key] - n
        if left > 0:
            self.counts[key] = left
        else:
            del self.counts[key]

    async def admit(self, tenant: str, address: str, limit: int, ttl_ms: int) -> int:
        now = int(self._clock() * 1000)
        live = self.live.setdefault(tenant, OrderedDict())
        while live:
            oldest = next(iter(live.values()))
            if oldest > now:
                break
            live.popitem(last=False)
        if address not in live and len(live) >= limit:
            return max(next(iter(live.values())) - now, 1)
        live[address] = now + ttl_ms
        live.move_to_end(address)
        return 0

    async def live_addresses(self, tenant: str, limit: int) -> list[str]:
        now = int(self._clock() * 1000)
        live = self.live.get(tenant)
        if live is None:
            return []
        return [a for a, until in live.items() if until > now][:limit]
