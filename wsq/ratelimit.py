"""Per-tenant publish rate limit: one token bucket per tenant in each gateway process.

A tenant's ``publish_rate`` (messages per second, 0 = unlimited) refills its bucket; the bucket
holds at most one second's worth (at least one message), so a tenant may burst that much after a
quiet spell. A publish costs one token per message. A batch larger than the bucket would never
fit, so a publish is admitted whenever the bucket holds what it needs *or is full*, and the
bucket then goes into debt: the average rate still holds, later publishes wait for the debt.

The limit is per process: with N gateway processes a tenant may publish up to N times its
rate in total (docs/http-api.md says so). Sharing it across processes would cost a broker round
trip per publish; the limit is there to keep one tenant from starving its neighbours on a node.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable

from wsq.config import TenantConfig
from wsq.core.errors import PublishRateExceeded


class TokenBucket:
    """``rate`` tokens per second, at most ``capacity`` held; starts full."""

    __slots__ = ("_clock", "_stamp", "capacity", "rate", "tokens")

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.capacity = max(rate, 1.0)
        self.tokens = self.capacity
        self._clock = clock
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        elapsed = now - self._stamp
        self._stamp = now
        if elapsed > 0:
            self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)

    def take(self, n: int) -> float:
        """Take ``n`` tokens: 0.0 when admitted, else the seconds until it would be."""
        self._refill()
        need = min(float(n), self.capacity)
        if self.tokens >= need:
            self.tokens -= n  # may go below zero: a batch larger than the bucket
            return 0.0
        return (need - self.tokens) / self.rate


class PublishRateLimiter:
    """The buckets of every tenant with a ``publish_rate``, in this process."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # Keyed by tenant name: bounded by the configured tenants.
        self._buckets: dict[str, TokenBucket] = {}
        #: Publishes (requests, not messages) refused by tenant (kind ``publish_rate``).
        self.refused: Counter[str] = Counter()

    def check(self, tenant: TenantConfig, n: int) -> None:
        """Admit ``n`` messages of ``tenant`` or raise ``PublishRateExceeded``."""
        rate = tenant.publish_rate
        if rate <= 0 or n <= 0:
            return
        bucket = self._buckets.get(tenant.name)
        if bucket is None or bucket.rate != rate:
            bucket = self._buckets[tenant.name] = TokenBucket(rate, self._clock)
        wait = bucket.take(n)
        if wait > 0:
            self.refused[tenant.name] += 1
            raise PublishRateExceeded(
                f"publish rate of tenant exceeded ({rate:g} messages/s)",
                retry_after_s=wait,
            )


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` takes whole seconds: round up, at least 1."""
    return str(max(1, math.ceil(seconds)))
