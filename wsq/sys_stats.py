"""The gateway's own figures over wsq.v1: every process publishes a snapshot of itself once a
second on ``$sys.stats`` (subject: its node id), and a token with the ``ops`` right receives them
(the operator view at ``/ops`` is such a client). docs/protocol.md, "Operator figures".

The figures live in a namespace of their own (``SYS_TENANT``): no tenant can publish there or
read them without the right, and they count against no tenant's quotas. Retention is short and
bounded in bytes, so a rewind gives the last minutes of every node for the charts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from wsq.auth import Principal
from wsq.background import stop
from wsq.broker.base import Broker
from wsq.config import TenantConfig
from wsq.core.addresses import SYS_STATS_ADDRESS, SYS_TENANT, is_valid_address
from wsq.core.messages import NewMessage
from wsq.protocol.state import Link, Role

log = logging.getLogger("wsq.sys_stats")

#: Bound of one snapshot's JSON: a snapshot past it is replaced by a short notice (a node with
#: very many tenants), never a message as large as the broker allows.
MAX_SNAPSHOT_BYTES: Final = 256 * 1024
JSON_TYPE: Final = "application/json"


def may_receive(link: Link, principal: Principal, tenants: Mapping[str, TenantConfig]) -> bool:
    """Whether ``principal`` may attach ``link`` on a ``$sys.`` address: a copy receiver, with
    the ``ops`` right, of a tenant configured with ``ops = true``. Nobody publishes there."""
    tenant = tenants.get(principal.tenant)
    return (
        link.role is Role.RECEIVER
        and link.mode == "copy"
        and principal.rights.ops
        and tenant is not None
        and tenant.ops
    )


def stats_subject(node_id: str) -> str:
    """The subject of a node's snapshots: its id where that is an address, else a safe form."""
    if is_valid_address(node_id):
        return node_id
    cleaned = "".join(c if c.isalnum() or c in "-_." else "-" for c in node_id).strip(".")
    return cleaned[:255] or "node"


class SysStatsPublisher:
    """Publishes ``snapshot()`` on ``$sys.stats`` every ``interval_s`` until closed.

    A failed publish (broker down) is logged once per outage and retried at the next tick: the
    figures are a view, never a reason to stop serving.
    """

    def __init__(
        self,
        broker: Broker,
        node_id: str,
        snapshot: Callable[[], Mapping[str, Any]],
        interval_s: float = 1.0,
    ) -> None:
        self._broker = broker
        self._node_id = node_id
        self._subject = stats_subject(node_id)
        self._snapshot = snapshot
        self._interval = interval_s
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self.published = 0

    def start(self) -> None:
        if self._task is None and self._interval > 0:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="sys-stats")

    async def close(self) -> None:
        task, self._task = self._task, None
        await stop([task])

    def message(self) -> NewMessage:
        """This node's snapshot now, as the message to publish."""
        body: dict[str, Any] = {"node": self._node_id, "time": time.time()}
        body.update(self._snapshot())
        text = json.dumps(body, separators=(",", ":"))
        if len(text) > MAX_SNAPSHOT_BYTES:
            body = {"node": self._node_id, "time": body["time"], "truncated": len(text)}
            text = json.dumps(body, separators=(",", ":"))
        return NewMessage(
            body=text, publisher=self._node_id, subject=self._subject, content_type=JSON_TYPE
        )

    async def publish_once(self) -> None:
        await self._broker.publish(SYS_TENANT, SYS_STATS_ADDRESS, [self.message()])
        self.published += 1

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            try:
                await self.publish_once()
                if self._failing:
                    log.info("publishing figures on %s again", SYS_STATS_ADDRESS)
                self._failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self._failing:
                    log.warning("figures not published on %s: %s", SYS_STATS_ADDRESS, exc)
                self._failing = True
            # On the beat, not drifting; a stalled loop skips the beats it missed.
            next_at = max(next_at + self._interval, loop.time())
            await asyncio.sleep(next_at - loop.time())
