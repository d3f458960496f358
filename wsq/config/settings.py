"""The settings of a gateway: one frozen object, its parts, and the names they are given by.

``wsq.config.loading`` builds it from a TOML file, the environment and command-line flags.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType

from wsq.core.addresses import SYS_TENANT
from wsq.core.limits import DEFAULT_IDLE_MS, DEFAULT_SENDER_CREDIT
from wsq.core.policy import DEFAULT_POLICY, SYS_POLICY, StoragePolicies, StoragePolicy
from wsq.core.presence import DEFAULT_MEMBERS_PER_ADDRESS

BROKER_SCHEMES: tuple[str, ...] = ("memory", "redis", "rediss", "redis+cluster")

MIN_FRAME_BYTES = 1024
MAX_FRAME_BYTES = 64 * 1024 * 1024
MIN_IDLE_MS = 1000
MIN_OPEN_TIMEOUT_MS = 100
MIN_HANDSHAKE_TIMEOUT_MS = 100
#: ``[server] drain_timeout_ms``: long enough for a client to hear wsq:going-away and answer,
#: short enough that an orchestrator's own kill (Kubernetes: 30 s by default) is configurable
#: past it.
DRAIN_TIMEOUT_MS_BOUNDS = (500, 600_000)
MIN_RETENTION_BYTES = 1024
#: What a client may have to send before its ``open`` is verified beyond its first message (at
#: most ``max_frame_bytes``, counted twice when it arrives compressed: as received and inflated):
#: its upgrade request's head and one read (asyncio reads 256 KiB at a time) of what it
#: pipelines behind that message. ``[server] max_pending_bytes_per_ip`` is never below
#: ``2 * max_frame_bytes + PENDING_BYTES_SLACK`` (``min_pending_bytes``).
PENDING_BYTES_SLACK = 512 * 1024
#: ``[server] ws_compression``: whether a WebSocket client's offer of permessage-deflate
#: (RFC 7692; every browser makes it) is accepted.
WS_COMPRESSIONS: tuple[str, ...] = ("off", "deflate")
#: ``[server] log_format``: lines for people, or one JSON object per line (wsq.logs).
LOG_FORMATS: tuple[str, ...] = ("text", "json")
#: ``[server] metrics_allow`` unset: who may scrape /metrics (loopback and private ranges).
DEFAULT_METRICS_ALLOW: tuple[str, ...] = (
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fc00::/7",
)
MIN_QUOTA_LEASE_MS = 1000
#: A tenant's quotas (``TenantConfig``), each an integer of at least 1; docs/security.md.
QUOTA_SETTINGS: tuple[str, ...] = (
    "max_connections",
    "max_links",
    "max_addresses",
    "max_groups",
    "max_dedup_ids",
    "max_idempotency_keys",
    "max_presence_members",
    "max_members_per_address",
    "max_webhook_queue",
    "max_webhook_requests",
)


def min_pending_bytes(max_frame_bytes: int) -> int:
    """The least ``max_pending_bytes`` and ``max_pending_bytes_per_ip`` may be: one client's
    largest first message and what may come with it (``PENDING_BYTES_SLACK``)."""
    return 2 * max_frame_bytes + PENDING_BYTES_SLACK


DEV_TENANT = "dev"
DEV_KID = "dev"

ENV_CONFIG = "WSQ_CONFIG"
ENV_BROKER = "WSQ_BROKER"
ENV_HOST = "WSQ_HOST"
ENV_PORT = "WSQ_PORT"
ENV_WORKERS = "WSQ_WORKERS"
ENV_DEV_SECRET = "WSQ_DEV_SECRET"
#: The path of the file (mode 0600) in which ``wsq serve --workers N`` hands the resolved
#: settings (``settings_to_json``) to its worker processes: a path, never a secret, in their
#: environment.
ENV_SETTINGS_FILE = "WSQ_SETTINGS_FILE"


@dataclass(frozen=True, slots=True)
class KeyConfig:
    """One verification key of a tenant. Exactly one of secret / public_key / jwks_url is set."""

    alg: str
    kid: str | None = None
    secret: str | None = None
    public_key: str | None = None
    jwks_url: str | None = None


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """One ``[tenants.X] webhooks`` entry (docs/webhooks.md): where the tenant's events go."""

    url: str
    events: tuple[str, ...]
    # One or more ``whsec_`` secrets, space-separated (a rotation signs with each), resolved
    # from ``secret_env`` at load time; never shown nor logged.
    secret: str
    # One request's whole time; then it counts as failed and is retried.
    timeout_ms: int = 5_000
    # Attempts in all (the first and its retries) before the event is given up (counted).
    max_attempts: int = 5
    # The wait before the first retry, doubled at each next one (capped at a minute).
    backoff_ms: int = 500
    # Events waiting for this URL; past it, new ones are dropped and counted.
    max_queue: int = 1_000


@dataclass(frozen=True, slots=True)
class SinkConfig:
    """One ``[tenants.X] sinks`` entry (docs/webhooks.md): every message of ``addresses``
    POSTed to ``url`` at least once, in order per address, by the consumer group ``group``."""

    url: str
    # Addresses and patterns (``*``, ``>``): a pattern follows the tenant's live addresses
    # that match it, found every ``discover_ms``.
    addresses: tuple[str, ...]
    secret: str
    group: str = "webhook-sink"
    timeout_ms: int = 5_000
    # Attempts of one message before it is rejected (dead-lettered where the tenant says).
    max_attempts: int = 5
    backoff_ms: int = 500
    # The most addresses the sink follows at once (each a worker); matches past it wait.
    max_addresses: int = 64
    # How often the tenant's live addresses are listed for the sink's patterns.
    discover_ms: int = 1_000

    @property
    def patterns(self) -> tuple[str, ...]:
        """The entries of ``addresses`` with wildcards."""
        return tuple(a for a in self.addresses if "*" in a.split(".") or a.endswith(">"))

    @property
    def literal(self) -> tuple[str, ...]:
        """The entries of ``addresses`` without wildcards: followed from the start."""
        patterns = self.patterns
        return tuple(a for a in self.addresses if a not in patterns)


@dataclass(frozen=True, slots=True)
class TenantConfig:
    name: str
    issuer: str
    keys: tuple[KeyConfig, ...]
    # What the tenant's addresses keep (wsq.core.policy.StoragePolicy says what each means).
    retention_max_len: int = DEFAULT_POLICY.retention_max_len
    retention_max_age_ms: int = DEFAULT_POLICY.retention_max_age_ms
    retention_max_bytes: int = DEFAULT_POLICY.retention_max_bytes
    dedup_window_ms: int = DEFAULT_POLICY.dedup_window_ms
    idle_expiry_ms: int = DEFAULT_POLICY.idle_expiry_ms
    dead_letter: str | None = DEFAULT_POLICY.dead_letter
    redelivery_delay_ms: int = DEFAULT_POLICY.redelivery_delay_ms
    max_deliveries: int = DEFAULT_POLICY.max_deliveries
    max_groups: int = DEFAULT_POLICY.max_groups
    max_dedup_ids: int = DEFAULT_POLICY.max_dedup_ids
    max_idempotency_keys: int = DEFAULT_POLICY.max_idempotency_keys
    # Quotas of the tenant as a whole (docs/security.md, "Per-tenant quotas"), across every
    # gateway process sharing a Redis broker: authenticated sockets, attached links, and live
    # addresses (an address is live from a publish, attach or claim until idle_expiry_ms).
    max_connections: int = 1_000
    max_links: int = 10_000
    max_addresses: int = 10_000
    # Presence (docs/protocol.md, "Presence"): present links of the tenant, over every
    # process, and of one address (what bounds a room's snapshot work and join/leave fan-out).
    max_presence_members: int = 10_000
    max_members_per_address: int = DEFAULT_MEMBERS_PER_ADDRESS
    # Webhooks (docs/webhooks.md), in each process: lifecycle events queued over all the
    # tenant's entries (past it dropped and counted, whatever each entry's max_queue), and
    # requests in flight at once, events and sinks together (past it they wait their turn).
    max_webhook_queue: int = 10_000
    max_webhook_requests: int = 8
    # Publishes per second the tenant may make (HTTP bridge and WebSocket); 0 = unlimited.
    publish_rate: float = 0.0
    # Whether the tenant's tokens may carry the operator right ("wsq":{"ops":true}): the
    # gateway's own figures on the $sys. addresses, every tenant's counts among them.
    ops: bool = False
    # Where the tenant's lifecycle events are POSTed (wsq.webhooks).
    webhooks: tuple[WebhookConfig, ...] = ()
    # Where every message of some addresses is POSTed (wsq.webhooks.sinks).
    sinks: tuple[SinkConfig, ...] = ()

    @property
    def storage(self) -> StoragePolicy:
        """The part of this tenant's settings that the brokers and the hub need."""
        return StoragePolicy(**{f.name: getattr(self, f.name) for f in fields(StoragePolicy)})


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    idle_ms: int = DEFAULT_IDLE_MS
    max_sessions: int = 1024
    max_links_per_session: int = 256
    # Credit granted to each sender link, and refilled as its publishes are answered.
    sender_credit: int = DEFAULT_SENDER_CREDIT
    max_frame_bytes: int = 1_048_576
    # Bytes queued for one socket before its links pause (copy) and, past the hard cap, close.
    outbox_max_bytes: int = 4 * 1_048_576
    # Longest an open handshake may take (token verification included) before the socket drops.
    open_timeout_ms: int = 10_000
    # Node id advertised in "open"; empty = generated at start.
    node_id: str = ""
    # Before authentication (docs/security.md): a request (head and body) or a WebSocket upgrade
    # must be in within handshake_timeout_ms of the connection or of the previous response;
    # connections not yet authenticated are bounded per source IP and in total, all of them by
    # max_connections. X-Forwarded-For is believed from trusted_proxies (IPs or CIDRs) only.
    handshake_timeout_ms: int = 5_000
    max_connections: int = 10_000
    max_pending: int = 2_048
    max_pending_per_ip: int = 256
    # Bytes received by WebSocket connections before their open is verified, in total and per
    # source IP (docs/security.md): 64 of the largest first message, 8 per source (the loader
    # raises both when max_frame_bytes needs more: min_pending_bytes).
    max_pending_bytes: int = 64 * 1_048_576
    max_pending_bytes_per_ip: int = 8 * 1_048_576
    trusted_proxies: tuple[str, ...] = ("127.0.0.1", "::1")
    # Browser origins that may open a socket and get CORS answers from the bridge (wsq.origins):
    # None = pages of the gateway's own host only; "*" = any. No Origin header is always allowed.
    allowed_origins: tuple[str, ...] | None = None
    # permessage-deflate (WS_COMPRESSIONS): "deflate" accepts a client's offer, "off" declines
    # it. Off by default, from measurement (every browser offers it; accepted, it doubles the
    # CPU per delivery and triples an idle socket's memory): docs/performance.md, "WebSocket
    # compression".
    ws_compression: str = "off"
    # On SIGTERM, the whole graceful drain (wsq.drain): clients told wsq:going-away and gone,
    # in-flight requests finished, the broker closed; the process exits by then at the latest.
    drain_timeout_ms: int = 8_000
    # How often this process publishes its figures on $sys.stats (wsq.sys_stats, /ops); 0: never.
    stats_interval_ms: int = 1000
    # Who may scrape /metrics (IPs or CIDRs, as the client address reads after trusted_proxies);
    # empty: /metrics is not served (404).
    metrics_allow: tuple[str, ...] = DEFAULT_METRICS_ALLOW
    # /readyz answers 503 "reader-lag" while the broker's live reader lags more than this.
    ready_max_lag_ms: int = 5_000
    # "text" or "json" (LOG_FORMATS): the format of wsq's and uvicorn's log lines.
    log_format: str = "text"
    # Per-request and per-WebSocket log lines (uvicorn's access log, a socket's "[accepted]",
    # "connection open/closed", a refused handshake's status): off, they are debug lines. At
    # 100k sockets, two INFO lines each are noise and CPU; /metrics counts them instead.
    access_log: bool = False


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    url: str = "memory://"
    # On Redis: how long a gateway process that stops refreshing its share of the tenants'
    # connection and link counts (it died) keeps it counted (docs/security.md).
    quota_lease_ms: int = 30_000


@dataclass(frozen=True, slots=True)
class Settings:
    server: ServerConfig = field(default_factory=ServerConfig)
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    tenants: Mapping[str, TenantConfig] = field(default_factory=lambda: MappingProxyType({}))
    # True when no configuration was given and a development tenant was generated.
    dev_mode: bool = False

    def storage_policies(self) -> StoragePolicies:
        """Every tenant's storage policy, for the brokers and the hub."""
        policies = {name: t.storage for name, t in self.tenants.items()}
        policies[SYS_TENANT] = SYS_POLICY  # the gateway's own figures (wsq.sys_stats)
        return StoragePolicies(policies)
