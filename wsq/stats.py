"""The figures of one gateway process, at one moment: ``NodeStats.snapshot()``.

One plain, JSON-serialisable dict, read from the counts the gateway, the hub, the publishing
service, the quotas and the admission keep anyway (plain ints and Counters on their hot paths):
nothing here runs per message, nor per socket. The ``/metrics`` collector (``wsq.metrics``)
reads it at scrape time; an operator view may publish it every second. What the sockets hold
now is the running figures of ``wsq.protocol.figures``: its cost grows with the tenants, never
with the sockets, their links or the messages.

Keys (every count since the process started unless it says "now"):
``node``, ``pid``, ``time`` (Unix s); ``ready``, ``draining`` (bools), ``not_ready`` (reasons);
``connections`` {tenant: now} (``""``: sockets not yet authenticated); ``subprotocols``
{"wsq.v1"|"amqp": now} (open sockets by what they speak); ``sessions`` (now, begun: not those
the gateway ended and awaits the client's answer of); ``links`` {tenant: {"sender"|"receiver":
now}} (attached); ``outbox_bytes`` (now, queued for sockets);
``deliveries``, ``publishes`` {tenant: n}; ``dispositions`` {outcome: n}; ``errors``
{condition: n} (sent to clients); ``closes`` {reason: n}; ``stream_posts`` {outcome: n}
(POSTs to HTTP streams, wsq.stream); ``refusals`` {tenant: {kind: n}}
(``""``: refused before authentication); ``broker`` {"status": "up"|"down"|"unknown",
"reader_lag_s": s}; ``webhook_deliveries`` {tenant: {outcome: n}} (wsq.webhooks.delivery:
delivered, retried, failed, dropped); ``webhook_queued`` {tenant: now, events waiting to be sent};
``webhook_requests`` {tenant: {result: n}} (wsq.webhooks.requests: ok, status, timeout,
error); ``webhook_sink_addresses`` {tenant: now, addresses its sinks follow};
``dead_lettered`` {tenant: n} (messages copied to a dead-letter address); ``presence_members``
{tenant: now, present links of this process}; ``presence_joins`` {tenant: n};
``presence_leaves`` {tenant: {"left"|"node-lost": n}}; ``presence_rooms`` {"notice"|"poll":
now, rooms watched and how their changes are heard of (Redis)}; ``presence_notices`` (n, notices
of such a change heard); ``occupied_addresses`` {tenant: now,
addresses this process has receivers on, for tenants with occupancy webhooks}.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from wsq.admission import Admission
from wsq.core.errors import SINK_ADDRESSES, WEBHOOK_QUEUE, WEBHOOK_REQUESTS
from wsq.protocol.state import Role

if TYPE_CHECKING:
    from wsq.gateway import Gateway
    from wsq.readiness import Readiness

#: ``refusals`` kind of a publish refused for the tenant's ``publish_rate``.
PUBLISH_RATE = "publish_rate"


def _nested(counts: Counter[tuple[str, str]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for (outer, inner), n in counts.items():
        out.setdefault(outer, {})[inner] = n
    return out


class NodeStats:
    """Where the figures of one process are kept, read at once by ``snapshot``."""

    def __init__(self, gateway: Gateway, admission: Admission, readiness: Readiness) -> None:
        self.gateway = gateway
        self.admission = admission
        self.readiness = readiness

    def snapshot(self) -> dict[str, Any]:
        gateway = self.gateway
        node = gateway.node
        # What the sockets hold now: running figures, counted where sockets, sessions and links
        # open and close (wsq.protocol.figures). Walking every socket and its links here was a
        # third of an idle worker's CPU at 10,000 sockets (twice a second with --workers).
        figures = gateway.figures
        connections: dict[str, int] = {}
        links: dict[str, dict[str, int]] = {}
        sessions = 0
        for tenant, counts in figures.tenants.items():
            if counts.connections:
                connections[tenant] = counts.connections
            sessions += counts.sessions
            roles = {
                role.value: n
                for role, n in ((Role.SENDER, counts.senders), (Role.RECEIVER, counts.receivers))
                if n
            }
            if roles:
                links[tenant] = roles
        subprotocols = {name: n for name, n in figures.subprotocols.items() if n}
        refusals: Counter[tuple[str, str]] = Counter(node.quotas.refusals)
        for tenant, n in node.publishing.rate.refused.items():
            refusals[tenant, PUBLISH_RATE] += n
        for kind, n in self.admission.refused.items():
            refusals["", kind] += n
        for kind, refused in (
            (WEBHOOK_QUEUE, node.webhooks.refused),
            (WEBHOOK_REQUESTS, node.webhook_requests.waited),
            (SINK_ADDRESSES, node.sinks.refused),
        ):
            for tenant, n in refused.items():
                refusals[tenant, kind] += n
        presence = node.presence
        readiness = self.readiness
        lag = node.broker.reader_lag_s()
        not_ready = readiness.reasons(lag)
        broker_ok = readiness.broker_ok
        return {
            "node": node.node_id,
            "pid": os.getpid(),
            "time": round(time.time(), 3),
            "ready": not not_ready,
            "draining": readiness.draining,
            "not_ready": not_ready,
            "connections": connections,
            "subprotocols": subprotocols,
            "sessions": sessions,
            "links": links,
            "outbox_bytes": figures.outbox_bytes,
            "deliveries": dict(node.hub.deliveries()),
            "publishes": dict(node.publishing.published),
            "dispositions": dict(gateway.dispositions),
            "errors": dict(gateway.errors),
            "closes": dict(gateway.closes),
            "stream_posts": dict(node.stream_posts),
            "conflated": node.hub.conflated,
            "conflate_dropped": node.hub.conflate_dropped,
            "refusals": _nested(refusals),
            "webhook_deliveries": _nested(node.webhooks.deliveries + node.sinks.deliveries),
            "webhook_queued": node.webhooks.queued_by_tenant(),
            "webhook_requests": _nested(node.webhook_requests.results),
            "webhook_sink_addresses": {t: node.sinks.followed(t) for t in node.settings.tenants},
            "dead_lettered": dict(node.webhooks.dead_letters),
            "presence_members": dict(presence.members()),
            "presence_joins": dict(presence.joins),
            "presence_leaves": _nested(presence.leaves),
            "presence_rooms": presence.store.rooms_watched(),
            "presence_notices": presence.store.notices,
            "occupied_addresses": node.occupancy.held_by_tenant(),
            "broker": {
                "status": "unknown" if broker_ok is None else "up" if broker_ok else "down",
                "reader_lag_s": round(lag, 3),
            },
        }
