"""Where the members of every address are kept (``PresenceStore``), one per broker.

On ``memory://`` the process's own table; on Redis a hash per address that every gateway
process shares. There each member is leased by the process that added it: a process refreshes
its lease while it lives, and whoever reads a room drops the members of a process whose lease
ran out (``members``), so that a gateway that dies takes its members with it within
``lease_ms`` plus one sweep.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from wsq.core.presence import Member


class PresenceStore(ABC):
    #: How long the members of a process that stopped refreshing stay (0: no leases).
    lease_ms: int = 0

    async def start(self) -> None:  # noqa: B027 (a store with nothing to start)
        """Start refreshing this process's lease."""

    async def close(self) -> None:  # noqa: B027
        """Stop refreshing it and give it up (the process's members are gone)."""

    @abstractmethod
    async def join(self, tenant: str, address: str, member: Member, max_members: int) -> bool:
        """Add ``member``; False (nothing done) when the room holds ``max_members`` already."""

    @abstractmethod
    async def leave(self, tenant: str, address: str, member_id: str) -> None:
        """Remove a member (no-op when it is not there)."""

    @abstractmethod
    async def members(self, tenant: str, address: str) -> tuple[int, dict[str, Member]]:
        """The room's version and its live members by id (members of dead processes dropped)."""

    @abstractmethod
    async def changed(self, tenant: str, address: str, version: int, timeout_s: float) -> None:
        """Return once the room's version differs from ``version``, or after ``timeout_s``."""
