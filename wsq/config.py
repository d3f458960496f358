"""Settings: one frozen object built from TOML, environment and CLI flags.

The dataclasses here are the whole configuration surface; ``load_settings`` (below) resolves
file < environment < flags into one ``Settings``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping


@dataclass(frozen=True, slots=True)
class KeyConfig:
    """One verification key of a tenant. Exactly one of secret / public_key / jwks_url is set."""

    alg: str
    kid: str | None = None
    secret: str | None = None
    public_key: str | None = None
    jwks_url: str | None = None


@dataclass(frozen=True, slots=True)
class TenantConfig:
    name: str
    issuer: str
    keys: tuple[KeyConfig, ...]
    # Retention of an address's history (feed reads from "^" or a position).
    retention_max_len: int = 10_000
    retention_max_age_ms: int = 24 * 3600 * 1000
    # A message_id already accepted on an address within this window is not stored again.
    dedup_window_ms: int = 10 * 60 * 1000
    # An address with no activity for this long disappears (Redis broker: keys expire).
    idle_expiry_ms: int = 7 * 24 * 3600 * 1000
    # Where move-mode "rejected" messages go: an address of the same tenant, or None to drop.
    dead_letter: str | None = None
    # How long a move-mode message settled "modified" waits before it is available again.
    redelivery_delay_ms: int = 1000
    # Publishes per second the tenant may make (HTTP bridge and WebSocket); 0 = unlimited.
    publish_rate: float = 0.0


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    idle_ms: int = 30_000
    max_sessions: int = 1024
    max_links_per_session: int = 256
    max_frame_bytes: int = 1_048_576
    # Bytes queued for one socket before its links pause (copy) and, past the hard cap, close.
    outbox_max_bytes: int = 4 * 1_048_576
    # Longest an open handshake may take (token verification included) before the socket drops.
    open_timeout_ms: int = 10_000
    # Node id advertised in "open"; empty = generated at start.
    node_id: str = ""


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    url: str = "memory://"


@dataclass(frozen=True, slots=True)
class Settings:
    server: ServerConfig = field(default_factory=ServerConfig)
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    tenants: Mapping[str, TenantConfig] = field(default_factory=lambda: MappingProxyType({}))
    # True when no configuration was given and a development tenant was generated.
    dev_mode: bool = False
