"""``/metrics``: the figures of ``wsq.stats`` in the Prometheus text format (prometheus-client).

Nothing on the per-message path calls prometheus-client: the gateway, hub and publishing
service count in plain ints, and this module reads them when asked (``METRICS`` says how each
family is read from a snapshot). One process: a custom collector builds the families from a
snapshot at scrape time. ``wsq serve --workers N``: the parent points
``PROMETHEUS_MULTIPROC_DIR`` at a private directory, every worker copies its snapshot into
prometheus-client's multiprocess values (one mmap file per worker) every ``SYNC_S`` and before
it answers a scrape, and the scrape sums the files of every worker: gauges of the live workers
only (``livesum``; ``livemax`` for the lag and draining, ``livemin`` for ready: one worker
not ready makes the node not ready), counters of every worker that ever ran. The broker
command histogram is observed directly (one observation per command, never per delivery).
The tenant label takes the configured tenants only (``""``: before authentication); no label
ever names a sub or an address.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from wsq.admission import Network
from wsq.background import stop
from wsq.stats import NodeStats
from wsq.timed_broker import COMMANDS, Observe

log = logging.getLogger("wsq.metrics")

ENV_MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: How often a worker copies its figures into the multiprocess files (s).
SYNC_S = 1.0
#: Broker command latency buckets (s): tens of microseconds (memory) to seconds (a failover).
BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)

Samples = list[tuple[tuple[str, ...], float]]
Mode = Literal["livesum", "livemax", "livemin"]


def _flat(d: dict[str, int]) -> Samples:
    return [((k,), float(v)) for k, v in d.items()]


def _pairs(d: dict[str, dict[str, int]]) -> Samples:
    return [((a, b), float(v)) for a, inner in d.items() for b, v in inner.items()]


def _one(key: str) -> Callable[[dict[str, Any]], Samples]:
    return lambda s: [((), float(s[key]))]


@dataclass(frozen=True)
class Family:
    """One metric: its name (a counter's without ``_total``), labels, how to read it."""

    name: str
    kind: str  # "gauge" | "counter"
    help: str
    labels: tuple[str, ...]
    read: Callable[[dict[str, Any]], Samples]
    mode: Mode = "livesum"  # gauges under --workers: how the workers' values combine
    per_tenant: bool = False  # every configured tenant shown, at 0 when it has none


#: Every family /metrics serves, once (docs/operations.md has the table).
METRICS: tuple[Family, ...] = (
    Family(
        "wsq_connections",
        "gauge",
        "Open WebSocket connections (tenant empty: not yet authenticated).",
        ("tenant",),
        lambda s: _flat(s["connections"]),
        per_tenant=True,
    ),
    Family(
        "wsq_connections_by_subprotocol",
        "gauge",
        "Open WebSocket connections by subprotocol (wsq.v1, or amqp: AMQP 1.0, docs/amqp.md).",
        ("subprotocol",),
        lambda s: _flat(s["subprotocols"]),
    ),
    Family("wsq_sessions", "gauge", "Open sessions.", (), _one("sessions")),
    Family(
        "wsq_links",
        "gauge",
        "Attached links by role (sender: the client publishes; receiver: it subscribes).",
        ("tenant", "role"),
        lambda s: _pairs(s["links"]),
    ),
    Family(
        "wsq_outbox_bytes",
        "gauge",
        "Bytes queued for sockets, not yet written.",
        (),
        _one("outbox_bytes"),
    ),
    Family(
        "wsq_broker_reader_lag_seconds",
        "gauge",
        "How far the broker's live reader is behind what was published.",
        (),
        lambda s: [((), float(s["broker"]["reader_lag_s"]))],
        mode="livemax",
    ),
    Family("wsq_ready", "gauge", "1 when /readyz answers ready.", (), _one("ready"), "livemin"),
    Family("wsq_draining", "gauge", "1 while the node drains.", (), _one("draining"), "livemax"),
    Family(
        "wsq_deliveries",
        "counter",
        "Messages delivered to links.",
        ("tenant",),
        lambda s: _flat(s["deliveries"]),
        per_tenant=True,
    ),
    Family(
        "wsq_publishes",
        "counter",
        "Messages published (WebSocket and HTTP bridge) and stored.",
        ("tenant",),
        lambda s: _flat(s["publishes"]),
        per_tenant=True,
    ),
    Family(
        "wsq_dispositions",
        "counter",
        "Deliveries settled by clients, by outcome.",
        ("outcome",),
        lambda s: _flat(s["dispositions"]),
    ),
    Family(
        "wsq_errors",
        "counter",
        "Errors answered to clients (WebSocket and HTTP bridge), by wsq condition.",
        ("condition",),
        lambda s: _flat(s["errors"]),
    ),
    Family(
        "wsq_refusals",
        "counter",
        "Refusals past a quota or bound, by kind (tenant empty: before authentication).",
        ("tenant", "kind"),
        lambda s: _pairs(s["refusals"]),
    ),
    Family(
        "wsq_closes",
        "counter",
        "WebSocket connections closed, by reason.",
        ("reason",),
        lambda s: _flat(s["closes"]),
    ),
    Family(
        "wsq_stream_posts",
        "counter",
        "POSTs to HTTP streams (wsq.v1 over HTTP), by outcome: taken (the stream is here), "
        "relayed (to the node holding it), replayed (a number taken before: dropped), "
        "unknown (no such stream: 404), refused (a bad POST, or one that ended its stream).",
        ("outcome",),
        lambda s: _flat(s.get("stream_posts", {})),  # absent from older nodes
    ),
    Family(
        "wsq_conflated",
        "counter",
        "Messages a conflating link superseded with a newer one of their subject (never sent).",
        (),
        _one("conflated"),
    ),
    Family(
        "wsq_conflate_dropped",
        "counter",
        "Messages a conflating link dropped: it held all the subjects or bytes it may.",
        (),
        _one("conflate_dropped"),
    ),
    Family(
        "wsq_webhook_deliveries",
        "counter",
        "Webhook events by outcome: delivered (2xx), retried (an attempt failed, another "
        "follows), failed (given up after max_attempts), dropped (the entry's queue was full).",
        ("tenant", "outcome"),
        lambda s: _pairs(s["webhook_deliveries"]),
    ),
    Family(
        "wsq_webhook_queued",
        "gauge",
        "Webhook events waiting to be sent or being sent (bounded by max_webhook_queue).",
        ("tenant",),
        lambda s: _flat(s["webhook_queued"]),
        per_tenant=True,
    ),
    Family(
        "wsq_webhook_requests",
        "counter",
        "Webhook HTTP requests (events and sinks, every attempt) by result: ok (2xx), status "
        "(another answer), timeout, error (the connection failed).",
        ("tenant", "result"),
        lambda s: _pairs(s["webhook_requests"]),
    ),
    Family(
        "wsq_webhook_sink_addresses",
        "gauge",
        "Addresses the tenant's sinks follow in this process.",
        ("tenant",),
        lambda s: _flat(s["webhook_sink_addresses"]),
    ),
    Family(
        "wsq_dead_lettered",
        "counter",
        "Queue messages this process copied to the tenant's dead-letter address.",
        ("tenant",),
        lambda s: _flat(s["dead_lettered"]),
    ),
    Family(
        "wsq_presence_members",
        "gauge",
        "Present links (members) of this process.",
        ("tenant",),
        lambda s: _flat(s["presence_members"]),
        per_tenant=True,
    ),
    Family(
        "wsq_presence_joins",
        "counter",
        "Members this process added.",
        ("tenant",),
        lambda s: _flat(s["presence_joins"]),
    ),
    Family(
        "wsq_presence_leaves",
        "counter",
        "Members this process removed: its own that left, and dead processes' it dropped.",
        ("tenant", "reason"),
        lambda s: _pairs(s["presence_leaves"]),
    ),
    Family(
        "wsq_presence_rooms_watched",
        "gauge",
        "Rooms this process watches (Redis), by how it hears of changes: notice or poll.",
        ("how",),
        lambda s: _flat(s["presence_rooms"]),
    ),
    Family(
        "wsq_presence_notices",
        "counter",
        "Notices of a change to a room this process watches (Redis Pub/Sub).",
        (),
        _one("presence_notices"),
    ),
    Family(
        "wsq_occupied_addresses",
        "gauge",
        "Addresses this process has receivers on (tenants with occupancy webhooks only).",
        ("tenant",),
        lambda s: _flat(s["occupied_addresses"]),
    ),
)


def samples(family: Family, snapshot: dict[str, Any], tenants: Iterable[str]) -> Samples:
    """The family's samples in ``snapshot``; configured tenants without any shown at 0."""
    found = family.read(snapshot)
    if family.per_tenant:
        seen = {labels[0] for labels, _ in found}
        found += [((t,), 0.0) for t in tenants if t not in seen]
    return found


class SnapshotCollector(Collector):
    """One process: the families, built from a snapshot when scraped."""

    def __init__(self, stats: NodeStats, tenants: Iterable[str]) -> None:
        self.stats = stats
        self.tenants = tuple(tenants)

    def collect(self) -> Iterator[Metric]:
        snapshot = self.stats.snapshot()
        for family in METRICS:
            metric: GaugeMetricFamily | CounterMetricFamily
            if family.kind == "gauge":
                metric = GaugeMetricFamily(family.name, family.help, labels=family.labels)
            else:
                metric = CounterMetricFamily(family.name, family.help, labels=family.labels)
            for labels, value in samples(family, snapshot, self.tenants):
                metric.add_metric(list(labels), value)
            yield metric


class WorkerMirror:
    """``--workers N``: this worker's figures, copied into its multiprocess files."""

    def __init__(self, stats: NodeStats, tenants: Iterable[str]) -> None:
        self.stats = stats
        self.tenants = tuple(tenants)
        self._metrics: list[tuple[Family, Gauge | Counter]] = []
        for family in METRICS:
            if family.kind == "gauge":
                metric: Gauge | Counter = Gauge(
                    family.name,
                    family.help,
                    family.labels,
                    registry=None,
                    multiprocess_mode=family.mode,
                )
            else:
                metric = Counter(family.name, family.help, family.labels, registry=None)
            self._metrics.append((family, metric))
        # What was copied last, per family and labels: counters add the difference, gauges
        # whose labels went away are set to 0.
        self._copied: dict[str, dict[tuple[str, ...], float]] = {}

    def sync(self) -> None:
        snapshot = self.stats.snapshot()
        for family, metric in self._metrics:
            copied = self._copied.setdefault(family.name, {})
            now = dict(samples(family, snapshot, self.tenants))
            if isinstance(metric, Gauge):
                for labels in copied.keys() - now.keys():
                    now[labels] = 0.0
                for labels, value in now.items():
                    (metric.labels(*labels) if labels else metric).set(value)
            else:
                for labels, value in now.items():
                    delta = value - copied.get(labels, 0.0)
                    if delta > 0:
                        (metric.labels(*labels) if labels else metric).inc(delta)
            copied.update(now)


class Metrics:
    """The ``/metrics`` of one process: its registry, and the broker command histogram."""

    def __init__(self, tenants: Iterable[str]) -> None:
        self.multiprocess = bool(os.environ.get(ENV_MULTIPROC_DIR))
        self.tenants = tuple(tenants)
        self.registry = CollectorRegistry()
        self.mirror: WorkerMirror | None = None
        if self.multiprocess:
            MultiProcessCollector(self.registry)  # type: ignore[no-untyped-call]
        self.histogram = Histogram(
            "wsq_broker_command_seconds",
            "Broker commands by command: how long each took (failures too).",
            ("command",),
            # Under --workers the histogram's values live in this worker's files.
            registry=None if self.multiprocess else self.registry,
            buckets=BUCKETS,
        )
        self._sync_task: asyncio.Task[None] | None = None

    def collect_from(self, stats: NodeStats) -> None:
        """Serve the figures of ``stats`` (once, after the node is built)."""
        if self.multiprocess:
            self.mirror = WorkerMirror(stats, self.tenants)
        else:
            self.registry.register(SnapshotCollector(stats, self.tenants))

    def observers(self) -> dict[str, Observe]:
        """Per broker command, the histogram's ``observe`` (labels resolved once)."""
        return {command: self.histogram.labels(command).observe for command in COMMANDS}

    def render(self) -> bytes:
        if self.mirror is not None:
            self.mirror.sync()
        return generate_latest(self.registry)

    def start(self) -> None:
        if self.mirror is not None:
            # At once: until its first copy a worker's gauges read 0 in the files (prometheus-
            # client makes an unlabelled value when the gauge is made), and wsq_ready, summed
            # with livemin, would say the whole node is not ready for a SYNC_S after each start.
            self.mirror.sync()
            self._sync_task = asyncio.get_running_loop().create_task(self._sync_forever())

    async def stop(self) -> None:
        task, self._sync_task = self._sync_task, None
        await stop([task])
        if self.multiprocess:
            # This worker's live gauges leave the sums (its counters stay counted).
            with contextlib.suppress(Exception):
                mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]

    async def _sync_forever(self) -> None:
        mirror = self.mirror
        assert mirror is not None
        while True:
            await asyncio.sleep(SYNC_S)
            try:
                mirror.sync()
            except Exception:
                log.exception("copying the figures for /metrics failed")


def allowed(client: str | None, networks: tuple[Network, ...]) -> bool:
    """Whether a scrape from ``client`` (an IP) is allowed by ``[server] metrics_allow``."""
    if not client:
        return False
    try:
        ip = ipaddress.ip_address(client)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == n.version and ip in n for n in networks)
