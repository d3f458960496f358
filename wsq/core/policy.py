"""What a tenant's addresses keep: retention (length, age, bytes), dedup, idle expiry, dead
letters, redelivery, delivery limit, and the per-address bounds of groups, dedup ids and keys.

The brokers and the hub get this small policy, never the whole configuration (which holds JWT
keys they have no business with). ``wsq.config`` builds it from each tenant's settings.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class StoragePolicy:
    """The storage rules of one tenant's addresses."""

    #: Retention of an address's history (feed reads from "^" or a position): at most this many
    #: messages, none older than ``retention_max_age_ms``, and at most ``retention_max_bytes``
    #: of them (``wsq.core.messages.stored_size``: the UTF-8 bytes of each body's JSON text and
    #: stored props), the newest message always kept whatever its size.
    retention_max_len: int = 10_000
    retention_max_age_ms: int = 24 * 3600 * 1000
    #: 64 MiB: 64 messages of the largest default frame (1 MiB), or the 10,000 messages of
    #: ``retention_max_len`` up to ~6.5 KiB each. Without it one address could hold 10,000 x
    #: max_frame_bytes (10 GiB at the defaults).
    retention_max_bytes: int = 64 * 1024 * 1024
    #: A message_id already accepted on an address within this window is not stored again;
    #: Idempotency-Keys are kept as long. 0: no dedup.
    dedup_window_ms: int = 10 * 60 * 1000
    #: An address with no activity for this long disappears (Redis: its keys expire).
    idle_expiry_ms: int = 7 * 24 * 3600 * 1000
    #: Where move-mode messages go that are rejected or past ``max_deliveries``: an address of
    #: the same tenant, or None to drop them (counted).
    dead_letter: str | None = None
    #: How long a move-mode message settled "modified" waits before it is available again.
    redelivery_delay_ms: int = 1000
    #: Move mode: the most deliveries of a message that end without an outcome (``redelivered``
    #: counts them) before it is dead-lettered instead of delivered again. 0: no limit.
    max_deliveries: int = 0
    #: Per address (docs/security.md, "Per-tenant quotas"): consumer groups (one more is
    #: refused), message ids remembered for dedup and Idempotency-Keys (past these the oldest
    #: are forgotten before their window ends).
    max_groups: int = 32
    max_dedup_ids: int = 10_000
    max_idempotency_keys: int = 1_000


DEFAULT_POLICY = StoragePolicy()

#: What ``$sys.`` addresses keep: 15 minutes of one node at one snapshot a second (fewer per node
#: with many), at most 16 MiB; no dedup (a snapshot is never sent twice), gone a day after the
#: last gateway stopped.
SYS_POLICY = StoragePolicy(
    retention_max_len=900,
    retention_max_age_ms=15 * 60 * 1000,
    retention_max_bytes=16 * 1024 * 1024,
    dedup_window_ms=0,
    idle_expiry_ms=24 * 3600 * 1000,
)


class StoragePolicies:
    """Every tenant's policy; a tenant without one (not configured) gets the defaults."""

    __slots__ = ("_by_tenant", "default")

    def __init__(
        self,
        by_tenant: Mapping[str, StoragePolicy] | None = None,
        default: StoragePolicy = DEFAULT_POLICY,
    ) -> None:
        self._by_tenant = MappingProxyType(dict(by_tenant or {}))
        self.default = default

    def of(self, tenant: str) -> StoragePolicy:
        return self._by_tenant.get(tenant, self.default)

    def __iter__(self) -> Iterator[StoragePolicy]:
        """The configured policies (not the default)."""
        return iter(self._by_tenant.values())
