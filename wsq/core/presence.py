"""Presence: the members of an address, as the contract shows them (docs/protocol.md, "Presence").

A receiver attached with ``"presence": true`` makes its link a member of the address while it
is attached. A member is ``{"id", "sub", "client", "node"}``: ``client`` is the connection's
id (``<node>-<n>``, the gateway's own, never chosen by the client), ``id`` names the link
(``<client>.<ch>.<handle>``) so that one connection may be present twice. Rooms are bounded
(``max_members_per_address``): every answer carries the count and at most one page.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: The most members one answer lists (the attach's snapshot, an HTTP page): the rest is counted.
MAX_PRESENCE_PAGE = 100
#: A tenant's ``max_members_per_address`` unless its configuration says otherwise.
DEFAULT_MEMBERS_PER_ADDRESS = 1_000
#: The longest member id (node id, connection number, channel and handle, well within it).
MAX_MEMBER_ID = 256
#: The longest ``sub`` kept in a member (a token's sub is longer only if hostile).
MAX_MEMBER_SUB = 256


@dataclass(frozen=True, slots=True)
class Member:
    """One present link."""

    id: str
    sub: str
    client: str
    node: str

    def to_json(self) -> dict[str, str]:
        return {"id": self.id, "sub": self.sub, "client": self.client, "node": self.node}

    @classmethod
    def from_json(cls, doc: Any) -> Member | None:
        """A member read back from storage; None for anything that is not one (skipped)."""
        if not isinstance(doc, dict):
            return None
        id_, sub, client, node = (doc.get(k) for k in ("id", "sub", "client", "node"))
        if (
            not (
                isinstance(id_, str)
                and isinstance(sub, str)
                and isinstance(client, str)
                and isinstance(node, str)
            )
            or max(len(id_), len(sub), len(client), len(node)) > MAX_MEMBER_ID
        ):
            return None
        return cls(id_, sub, client, node)


def page(members: Mapping[str, Member], limit: int, after: str = "") -> list[Member]:
    """At most ``limit`` members, by id, those after ``after`` (a cursor: the last id seen)."""
    ids = sorted(i for i in members if i > after)
    return [members[i] for i in ids[:limit]]


def diff(old: Mapping[str, Member], new: Mapping[str, Member]) -> tuple[list[Member], list[Member]]:
    """The members that joined and left between two views of a room, each by id."""
    joins = [new[i] for i in sorted(new.keys() - old.keys())]
    leaves = [old[i] for i in sorted(old.keys() - new.keys())]
    return joins, leaves
