"""Where the members of every address are kept (``PresenceStore``), one per broker.

On ``memory://`` the process's own table; on Redis a hash per address that every gateway
process shares. There each member is leased by the process that added it: a process refreshes
its lease while it lives, and whoever reads a room drops the members of a process whose lease
ran out (``members``), so that a gateway that dies takes its members with it within
``lease_ms`` plus one sweep.

It also keeps leases of one holder at a time on something of an address (``hold``: a sink's
turn to read it). The same store counts which processes have receivers on an address (its *occupancy*,
``wsq.hub.occupancy``): ``occupy`` and ``vacate`` answer when the address as a whole became
occupied or vacated, and ``sweep`` drops what processes that died held (on Redis, by their
lease, as for members).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

from wsq.core.presence import Member


class PresenceStore(ABC):
    #: How long the members of a process that stopped refreshing stay (0: no leases).
    lease_ms: int = 0
    #: Told the members a read dropped because their process died: (tenant, address, members).
    #: Only the reader whose drop removed them is told, so each such leave is told once.
    on_dropped: Callable[[str, str, list[Member]], None] | None = None
    #: Notices of a change to a watched room this process was told (Redis).
    notices: int = 0

    def rooms_watched(self) -> dict[str, int]:
        """Rooms this process waits on now, by how it hears of their changes: ``notice``
        (Redis Pub/Sub) or ``poll`` (past ``MAX_NOTICED_ROOMS``). Empty where nothing is sent."""
        return {}

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
        """Return once the room's version differs from ``version``, or after ``timeout_s``.
        The caller watches the room from then on, until ``unwatch``."""

    def unwatch(self, tenant: str, address: str) -> None:  # noqa: B027 (nothing to forget)
        """This process no longer watches the room (frees what ``changed`` took for it)."""

    @abstractmethod
    async def occupy(self, tenant: str, address: str) -> int:
        """This process has receivers on ``address`` now: the address's new occupancy number
        when no process had any before (it became occupied), else 0."""

    @abstractmethod
    async def vacate(self, tenant: str, address: str) -> int:
        """This process has no receiver on ``address`` any more: the new occupancy number when
        no process has any now (it became vacated), else 0."""

    @abstractmethod
    async def hold(self, tenant: str, address: str, name: str, holder: str, ms: int) -> bool:
        """A lease ``name`` on ``address`` for ``holder``, for ``ms`` from now: taken when it is
        free or ``holder``'s already (renewed); False when another holds it. ``ms`` 0 gives it
        up (when ``holder``'s). What makes one process at a time read a sink's address."""

    async def sweep(self) -> list[tuple[str, str, int]]:
        """Drop the occupancy (and members) of processes that died: the addresses that became
        vacated by it, each with its occupancy number. Nothing where there is one process."""
        return []
