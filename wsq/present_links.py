"""The gateway's side of presence: a ``"presence": true`` receiver's member, its quotas, its
frames (the rooms themselves are ``wsq.hub.presence``'s)."""

from __future__ import annotations

from wsq.auth import Principal
from wsq.core.errors import MEMBERS_PER_ADDRESS, ResourceLimitExceeded
from wsq.core.presence import DEFAULT_MEMBERS_PER_ADDRESS, MAX_MEMBER_SUB, Member
from wsq.node import Node
from wsq.protocol.connection import ServerConnection
from wsq.protocol.state import Link


async def join(
    node: Node, conn: ServerConnection, principal: Principal, client: str, link: Link
) -> None:
    """Make ``link`` present: ``QuotaExceeded`` past the tenant's ``max_presence_members``,
    ``ResourceLimitExceeded`` past the address's ``max_members_per_address``."""
    tenant = principal.tenant
    await node.quotas.present(tenant)
    member = Member(
        id=f"{client}.{link.ch}.{link.handle}",
        sub=principal.sub[:MAX_MEMBER_SUB],
        client=client,
        node=node.node_id,
    )
    config = node.settings.tenants.get(tenant)
    limit = config.max_members_per_address if config else DEFAULT_MEMBERS_PER_ADDRESS
    try:
        await node.presence.join(tenant, link, member, limit, conn.send_presence)
    except ResourceLimitExceeded:
        node.quotas.refusals[tenant, MEMBERS_PER_ADDRESS] += 1  # the room is full
        if not node.presence.holds(link):
            node.quotas.absent(tenant)
        raise
    except BaseException:
        if not node.presence.holds(link):
            node.quotas.absent(tenant)  # else ``leave`` gives it back
        raise


async def leave(node: Node, tenant: str, link: Link) -> None:
    if link.presence and await node.presence.leave(link):
        node.quotas.absent(tenant)
