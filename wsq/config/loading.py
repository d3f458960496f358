"""Loading the settings: TOML file < environment < command-line flags, each value checked, each
problem a ``ConfigError`` that names where it is; and the settings as JSON for worker processes.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from wsq.config.lists import allowed_origins_of, networks
from wsq.config.settings import (
    BROKER_SCHEMES,
    DEV_KID,
    DEV_TENANT,
    DRAIN_TIMEOUT_MS_BOUNDS,
    ENV_BROKER,
    ENV_CONFIG,
    ENV_DEV_SECRET,
    ENV_HOST,
    ENV_PORT,
    ENV_WORKERS,
    LOG_FORMATS,
    MAX_FRAME_BYTES,
    MIN_FRAME_BYTES,
    MIN_HANDSHAKE_TIMEOUT_MS,
    MIN_IDLE_MS,
    MIN_OPEN_TIMEOUT_MS,
    MIN_QUOTA_LEASE_MS,
    MIN_RETENTION_BYTES,
    QUOTA_SETTINGS,
    WS_COMPRESSIONS,
    BrokerConfig,
    KeyConfig,
    ServerConfig,
    Settings,
    TenantConfig,
    min_pending_bytes,
)
from wsq.config.table import Table, describe
from wsq.config.webhooks import parse_sinks, parse_webhooks
from wsq.core.addresses import is_valid_address
from wsq.core.errors import ConfigError
from wsq.core.limits import MAX_SENDER_CREDIT
from wsq.keys import ALGORITHMS, HMAC_ALGORITHMS, public_key_problem

_SETTINGS_FORMAT = "wsq.settings/1"
_NODE_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_KEY_SOURCES = ("secret", "secret_env", "public_key", "public_key_file", "jwks_url")
_SERVER_ENV: tuple[tuple[str, str], ...] = (
    (ENV_HOST, "host"),
    (ENV_PORT, "port"),
    (ENV_WORKERS, "workers"),
)


# -- server and broker -----------------------------------------------------------------------


def _parse_server(
    doc: Mapping[str, Any],
    source: str,
    layers: Mapping[str, tuple[Any, str]],
) -> ServerConfig:
    """``[server]`` of the file with ``layers`` (environment, then overrides) applied on top.

    ``layers`` maps a field to ``(value, origin)``; ``origin`` names where the value came from in
    error messages (``WSQ_PORT``, ``port (from the command line)``).
    """
    merged: dict[str, Any] = dict(doc)
    origins: dict[str, str] = {}
    for key, (value, origin) in layers.items():
        merged[key] = value
        origins[key] = origin
    t = Table(merged, source, "server", origins)
    default = ServerConfig()
    host = t.get_str("host", default.host)
    port = t.get_int("port", default.port, minimum=1, maximum=65535)
    workers = t.get_int("workers", default.workers, minimum=1, maximum=1024)
    idle_ms = t.get_int("idle_ms", default.idle_ms, minimum=MIN_IDLE_MS)
    max_sessions = t.get_int("max_sessions", default.max_sessions, minimum=1)
    max_links = t.get_int("max_links_per_session", default.max_links_per_session, minimum=1)
    sender_credit = t.get_int(
        "sender_credit", default.sender_credit, minimum=1, maximum=MAX_SENDER_CREDIT
    )
    max_frame_bytes = t.get_int(
        "max_frame_bytes", default.max_frame_bytes, minimum=MIN_FRAME_BYTES, maximum=MAX_FRAME_BYTES
    )
    outbox_max_bytes = t.get_int("outbox_max_bytes", default.outbox_max_bytes, minimum=1)
    if outbox_max_bytes < max_frame_bytes:
        raise t.error(
            "outbox_max_bytes",
            f"must be at least max_frame_bytes ({max_frame_bytes}), got {outbox_max_bytes}: "
            "one frame must fit in a socket's outbox",
        )
    open_timeout_ms = t.get_int(
        "open_timeout_ms", default.open_timeout_ms, minimum=MIN_OPEN_TIMEOUT_MS
    )
    node_id = t.get_str("node_id", default.node_id, allow_empty=True)
    if node_id and _NODE_ID_RE.fullmatch(node_id) is None:
        raise t.error("node_id", "must be 1 to 64 characters of A-Z a-z 0-9 _ - (or empty)")
    handshake_timeout_ms = t.get_int(
        "handshake_timeout_ms",
        default.handshake_timeout_ms,
        minimum=MIN_HANDSHAKE_TIMEOUT_MS,
        maximum=600_000,
    )
    max_connections = t.get_int("max_connections", default.max_connections, minimum=1)
    max_pending = t.get_int("max_pending", min(default.max_pending, max_connections), minimum=1)
    if max_pending > max_connections:
        raise t.error(
            "max_pending",
            f"must be at most max_connections ({max_connections}), got {max_pending}",
        )
    max_pending_per_ip = t.get_int(
        "max_pending_per_ip", min(default.max_pending_per_ip, max_pending), minimum=1
    )
    if max_pending_per_ip > max_pending:
        raise t.error(
            "max_pending_per_ip",
            f"must be at most max_pending ({max_pending}), got {max_pending_per_ip}",
        )
    max_pending_bytes, max_pending_bytes_per_ip = _pending_bytes(t, default, max_frame_bytes)
    trusted_proxies = networks(t, "trusted_proxies", default.trusted_proxies)
    allowed_origins = allowed_origins_of(t)
    ws_compression = t.get_str("ws_compression", default.ws_compression)
    metrics_allow = networks(t, "metrics_allow", default.metrics_allow)
    ready_max_lag_ms = t.get_int(
        "ready_max_lag_ms", default.ready_max_lag_ms, minimum=1, maximum=3_600_000
    )
    log_format = t.get_str("log_format", default.log_format)
    if log_format not in LOG_FORMATS:
        raise t.error(
            "log_format", f"expected one of {', '.join(map(repr, LOG_FORMATS))}, got {log_format!r}"
        )
    if ws_compression not in WS_COMPRESSIONS:
        raise t.error(
            "ws_compression",
            f"expected one of {', '.join(map(repr, WS_COMPRESSIONS))}, got {ws_compression!r}",
        )
    lo, hi = DRAIN_TIMEOUT_MS_BOUNDS
    drain_ms = t.get_int("drain_timeout_ms", default.drain_timeout_ms, minimum=lo, maximum=hi)
    interval = t.get_int("stats_interval_ms", default.stats_interval_ms, minimum=0, maximum=60_000)
    if 0 < interval < 100:
        raise t.error("stats_interval_ms", f"must be 0 (off) or at least 100, got {interval}")
    access_log = t.get_bool("access_log", default.access_log)
    t.finish()
    return ServerConfig(
        host=host,
        port=port,
        workers=workers,
        idle_ms=idle_ms,
        max_sessions=max_sessions,
        max_links_per_session=max_links,
        sender_credit=sender_credit,
        max_frame_bytes=max_frame_bytes,
        outbox_max_bytes=outbox_max_bytes,
        open_timeout_ms=open_timeout_ms,
        node_id=node_id,
        handshake_timeout_ms=handshake_timeout_ms,
        max_connections=max_connections,
        max_pending=max_pending,
        max_pending_per_ip=max_pending_per_ip,
        max_pending_bytes=max_pending_bytes,
        max_pending_bytes_per_ip=max_pending_bytes_per_ip,
        trusted_proxies=trusted_proxies,
        allowed_origins=allowed_origins,
        ws_compression=ws_compression,
        drain_timeout_ms=drain_ms,
        stats_interval_ms=interval,
        metrics_allow=metrics_allow,
        ready_max_lag_ms=ready_max_lag_ms,
        log_format=log_format,
        access_log=access_log,
    )


def _pending_bytes(t: Table, default: ServerConfig, max_frame_bytes: int) -> tuple[int, int]:
    """``max_pending_bytes`` and ``max_pending_bytes_per_ip``: each at least one client's
    largest first message and what comes with it (``min_pending_bytes``); unset, the total is
    64 MiB (or 8 of that least, when larger) and the share of one source an eighth of it."""
    least = min_pending_bytes(max_frame_bytes)
    why = (
        f"must be at least 2 x max_frame_bytes + 512 KiB ({least} with max_frame_bytes "
        f"{max_frame_bytes}): a client's largest first message must fit"
    )
    total = t.get_int("max_pending_bytes", max(default.max_pending_bytes, 8 * least), minimum=1)
    if total < least:
        raise t.error("max_pending_bytes", f"{why}, got {total}")
    per_ip = t.get_int("max_pending_bytes_per_ip", max(total // 8, least), minimum=1)
    if per_ip < least:
        raise t.error("max_pending_bytes_per_ip", f"{why}, got {per_ip}")
    if per_ip > total:
        raise t.error(
            "max_pending_bytes_per_ip",
            f"must be at most max_pending_bytes ({total}), got {per_ip}",
        )
    return total, per_ip


def _broker_url_problem(url: str) -> str | None:
    """Why ``url`` is not a broker URL, or None when it is one."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        return f"not a valid URL ({e})"
    scheme = parts.scheme.lower()
    if scheme not in BROKER_SCHEMES:
        shown = f"scheme {scheme + '://'!r}" if scheme else "no scheme"
        return (
            f"unsupported broker URL {url!r} ({shown}); use memory://, redis://host:6379/0, "
            "rediss://host:6380/0 (TLS) or redis+cluster://host:7000"
        )
    if scheme == "memory":
        if parts.netloc or parts.path or parts.query or parts.fragment:
            return (
                f"the memory broker takes no host, path or options: write 'memory://', not {url!r}"
            )
        return None
    if not parts.hostname:
        return f"{url!r} names no host; write {scheme}://host:port"
    if port == 0:
        return f"{url!r}: port 0 is not a port"
    db = parts.path.lstrip("/")
    if scheme == "redis+cluster":
        if db not in ("", "0"):
            return f"{url!r}: a Redis Cluster has only database 0"
    elif db and not db.isdigit():
        return f"{url!r}: the path must be a database number (redis://host:6379/0)"
    return None


def _parse_broker(
    doc: Mapping[str, Any], source: str, layer: tuple[Any, str] | None
) -> BrokerConfig:
    merged = dict(doc)
    origins: dict[str, str] = {}
    if layer is not None:
        merged["url"], origins["url"] = layer
    t = Table(merged, source, "broker", origins)
    url = t.get_str("url", BrokerConfig().url)
    problem = _broker_url_problem(url)
    if problem is not None:
        raise t.error("url", problem)
    default = BrokerConfig()
    quota_lease_ms = t.get_int(
        "quota_lease_ms", default.quota_lease_ms, minimum=MIN_QUOTA_LEASE_MS, maximum=3_600_000
    )
    t.finish()
    return BrokerConfig(url=url, quota_lease_ms=quota_lease_ms)


def broker_scheme(url: str) -> str:
    """The scheme of a (valid) broker URL: ``memory``, ``redis``, ``rediss``, ``redis+cluster``."""
    return urlsplit(url).scheme.lower()


# -- tenants and keys ------------------------------------------------------------------------


def _parse_key(t: Table, environ: Mapping[str, str], base_dir: Path) -> KeyConfig:
    alg = t.get_opt_str("alg")
    if alg is None:
        raise ConfigError(f"{t.where}: missing 'alg' (one of {', '.join(ALGORITHMS)})")
    if alg not in ALGORITHMS:
        close = [a for a in ALGORITHMS if a.lower() == alg.lower()]
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise t.error("alg", f"unknown algorithm {alg!r}; {hint}allowed: {', '.join(ALGORITHMS)}")
    kid = t.get_opt_str("kid")
    given = {name: t.get_opt_str(name) for name in _KEY_SOURCES}
    t.finish()
    present = [name for name, value in given.items() if value is not None]
    hmac = alg in HMAC_ALGORITHMS
    if not present:
        needs = "secret or secret_env" if hmac else "public_key, public_key_file or jwks_url"
        raise ConfigError(f"{t.where}: no key material; {alg} needs {needs}")
    if len(present) > 1:
        raise ConfigError(
            f"{t.where}: give exactly one of {', '.join(_KEY_SOURCES)}; found {', '.join(present)}"
        )
    source = present[0]
    value = given[source]
    assert value is not None
    if hmac and source not in ("secret", "secret_env"):
        raise t.error(source, f"{alg} is an HMAC algorithm: it needs secret or secret_env")
    if not hmac and source in ("secret", "secret_env"):
        raise t.error(
            source,
            f"{alg} verifies with a public key: give public_key, public_key_file or jwks_url, "
            "not a shared secret",
        )
    if source in ("secret", "secret_env"):
        if source == "secret_env":
            secret = environ.get(value)
            if not secret:
                raise t.error(source, f"environment variable {value} is not set or empty")
        else:
            secret = value
        if secret.lstrip().startswith("-----BEGIN"):
            raise t.error(source, f"looks like a PEM key; {alg} needs a shared secret string")
        return KeyConfig(alg=alg, kid=kid, secret=secret)
    if source == "jwks_url":
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise t.error(source, f"expected an https:// URL, got {value!r}")
        return KeyConfig(alg=alg, kid=kid, jwks_url=value)
    if source == "public_key_file":
        path = base_dir / Path(value).expanduser()
        try:
            pem = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise t.error(source, f"cannot read {str(path)!r}: {reason}") from e
    else:
        pem = value
    problem = public_key_problem(alg, pem)
    if problem is not None:
        raise t.error(source, problem)
    return KeyConfig(alg=alg, kid=kid, public_key=pem)


def _parse_tenant(
    name: str, doc: object, source: str, environ: Mapping[str, str], base_dir: Path
) -> TenantConfig:
    where = f"tenants.{name}"
    if not is_valid_address(name):
        raise ConfigError(
            f"{source}: tenants.{name!r}: a tenant name must be an address "
            "(dot-separated tokens of A-Z a-z 0-9 _ -, at most 255 characters)"
        )
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{source}: {where}: expected a table, got {describe(doc)}")
    t = Table(doc, source, where)
    default = TenantConfig(name=name, issuer=name, keys=())
    issuer = t.get_str("issuer", name)
    raw_keys = t.get_list("keys")
    if not raw_keys:
        raise ConfigError(
            f"{source}: {where}.keys: a tenant needs at least one key, "
            'e.g. keys = [{ kid = "k1", alg = "HS256", secret_env = "ACME_SECRET" }]'
        )
    keys: list[KeyConfig] = []
    kids: set[str] = set()
    for i, raw in enumerate(raw_keys):
        key_where = f"{where}.keys[{i}]"
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{source}: {key_where}: expected a table, got {describe(raw)}")
        key = _parse_key(Table(raw, source, key_where), environ, base_dir)
        if key.kid is not None:
            if key.kid in kids:
                raise ConfigError(
                    f"{source}: {key_where}.kid: duplicate kid {key.kid!r} in tenant {name!r}"
                )
            kids.add(key.kid)
        keys.append(key)
    retention_max_len = t.get_int("retention_max_len", default.retention_max_len, minimum=1)
    retention_max_age_ms = t.get_int(
        "retention_max_age_ms", default.retention_max_age_ms, minimum=1
    )
    # At least a KiB: the newest message is kept whatever its size, so a smaller bound would
    # only mean "the newest message" (say retention_max_len = 1 for that).
    retention_max_bytes = t.get_int(
        "retention_max_bytes", default.retention_max_bytes, minimum=MIN_RETENTION_BYTES
    )
    dedup_window_ms = t.get_int("dedup_window_ms", default.dedup_window_ms, minimum=0)
    idle_expiry_ms = t.get_int("idle_expiry_ms", default.idle_expiry_ms, minimum=1000)
    dead_letter = t.get_opt_str("dead_letter")
    if dead_letter is not None and not is_valid_address(dead_letter):
        raise t.error(
            "dead_letter",
            f"{dead_letter!r} is not an address (dot-separated tokens of A-Z a-z 0-9 _ -, "
            "no wildcards)",
        )
    redelivery_delay_ms = t.get_int("redelivery_delay_ms", default.redelivery_delay_ms, minimum=0)
    # 0: no limit. Bounded so that a typo cannot mean "forever" in disguise.
    max_deliveries = t.get_int(
        "max_deliveries", default.max_deliveries, minimum=0, maximum=1_000_000
    )
    publish_rate = t.get_float("publish_rate", default.publish_rate, minimum=0.0)
    quotas = {name: t.get_int(name, getattr(default, name), minimum=1) for name in QUOTA_SETTINGS}
    ops = t.get_bool("ops", default.ops)
    webhooks = parse_webhooks(t.get_list("webhooks"), source, f"{where}.webhooks", environ)
    sinks = parse_sinks(t.get_list("sinks"), source, f"{where}.sinks", environ)
    t.finish()
    return TenantConfig(
        name=name,
        issuer=issuer,
        keys=tuple(keys),
        retention_max_len=retention_max_len,
        retention_max_age_ms=retention_max_age_ms,
        retention_max_bytes=retention_max_bytes,
        dedup_window_ms=dedup_window_ms,
        idle_expiry_ms=idle_expiry_ms,
        dead_letter=dead_letter,
        redelivery_delay_ms=redelivery_delay_ms,
        max_deliveries=max_deliveries,
        publish_rate=publish_rate,
        ops=ops,
        webhooks=webhooks,
        sinks=sinks,
        **quotas,
    )


def _parse_tenants(
    doc: Mapping[str, Any], source: str, environ: Mapping[str, str], base_dir: Path
) -> dict[str, TenantConfig]:
    tenants: dict[str, TenantConfig] = {}
    issuers: dict[str, str] = {}
    for name, tenant_doc in doc.items():
        tenant = _parse_tenant(name, tenant_doc, source, environ, base_dir)
        if tenant.issuer in issuers:
            raise ConfigError(
                f"{source}: tenants.{name}.issuer: issuer {tenant.issuer!r} is already the issuer "
                f"of tenant {issuers[tenant.issuer]!r}; each tenant needs its own"
            )
        issuers[tenant.issuer] = name
        tenants[name] = tenant
    return tenants


def _dev_tenant(environ: Mapping[str, str]) -> TenantConfig:
    secret = environ.get(ENV_DEV_SECRET) or secrets.token_urlsafe(32)
    key = KeyConfig(alg="HS256", kid=DEV_KID, secret=secret)
    return TenantConfig(name=DEV_TENANT, issuer=DEV_TENANT, keys=(key,), ops=True)


def _check_whole(server: ServerConfig, broker: BrokerConfig) -> None:
    if server.workers > 1 and broker_scheme(broker.url) == "memory":
        raise ConfigError(
            f"workers = {server.workers} needs a shared broker: the memory:// broker lives inside "
            "one process, so workers would not see each other's messages; "
            "use redis://host:6379/0 (--broker or WSQ_BROKER) or run one worker"
        )


# -- the public entry points -----------------------------------------------------------------


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a configuration file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text: {e}") from None


def _env_int(var: str, text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ConfigError(f"{var}: expected an integer, got {text!r}") from None


_OVERRIDABLE = frozenset(f.name for f in fields(ServerConfig)) | {"broker"}


def load_settings(
    *,
    config_path: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve the settings: TOML file < environment < ``overrides`` (command-line flags).

    The file is ``config_path``, else ``$WSQ_CONFIG``, else none. The environment gives
    ``WSQ_BROKER`` (broker URL), ``WSQ_HOST``, ``WSQ_PORT``, ``WSQ_WORKERS``, the variables that
    ``secret_env`` keys name and ``WSQ_DEV_SECRET``; empty variables count as unset.
    ``overrides`` takes ``broker`` and any ``ServerConfig`` field; ``None`` values are skipped.
    A relative ``public_key_file`` is read relative to the file's directory.

    With no tenant configured the result is in dev mode: one tenant ``dev`` (issuer ``dev``) with
    one HS256 key ``dev`` whose secret is ``$WSQ_DEV_SECRET`` or a fresh random one.
    Every problem raises ConfigError with a message naming where it is.
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    path = config_path if config_path is not None else (env.get(ENV_CONFIG) or None)
    if path is not None:
        doc = _read_toml(path)
        source = path
        base_dir = Path(path).expanduser().resolve().parent
    else:
        doc, source, base_dir = {}, "configuration", Path.cwd()

    top = Table(doc, source)
    server_doc = top.get_table("server")
    broker_doc = top.get_table("broker")
    tenants_doc = top.get_table("tenants")
    top.finish()

    server_layers: dict[str, tuple[Any, str]] = {}
    broker_layer: tuple[Any, str] | None = None
    for var, key in _SERVER_ENV:
        text = env.get(var)
        if text:
            server_layers[key] = (text if key == "host" else _env_int(var, text), var)
    if env.get(ENV_BROKER):
        broker_layer = (env[ENV_BROKER], ENV_BROKER)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        origin = f"{key} (from the command line)"
        if key not in _OVERRIDABLE:
            known = ", ".join(sorted(_OVERRIDABLE))
            raise ConfigError(f"{origin}: unknown setting; known: {known}")
        if key == "broker":
            broker_layer = (value, origin)
        else:
            server_layers[key] = (value, origin)

    server = _parse_server(server_doc, source, server_layers)
    broker = _parse_broker(broker_doc, source, broker_layer)
    tenants = _parse_tenants(tenants_doc, source, env, base_dir)
    dev_mode = not tenants
    if dev_mode:
        tenants = {DEV_TENANT: _dev_tenant(env)}
    _check_whole(server, broker)
    return Settings(
        server=server, broker=broker, tenants=MappingProxyType(tenants), dev_mode=dev_mode
    )


def _drop_none(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def settings_to_json(s: Settings) -> str:
    """``s`` as JSON text that ``settings_from_json`` turns back into an equal ``Settings``.

    It holds the secrets: it is meant for the gateway's own worker processes (a file only the
    user can read, ``WSQ_SETTINGS_FILE``), never for logs nor an environment.
    """
    tenants: dict[str, Any] = {}
    for name, tenant in s.tenants.items():
        doc = asdict(tenant)
        del doc["name"]
        doc["keys"] = [_drop_none(asdict(key)) for key in tenant.keys]
        tenants[name] = _drop_none(doc)
    return json.dumps(
        {
            "format": _SETTINGS_FORMAT,
            "dev_mode": s.dev_mode,
            "server": asdict(s.server),
            "broker": asdict(s.broker),
            "tenants": tenants,
        },
        separators=(",", ":"),
    )


def settings_from_json(text: str) -> Settings:
    """The ``Settings`` that ``settings_to_json`` wrote, validated again; ConfigError if not."""
    source = "resolved settings"
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{source}: invalid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: expected a JSON object, got {describe(doc)}")
    top = Table(doc, source)
    fmt = top.get_opt_str("format")
    if fmt != _SETTINGS_FORMAT:
        raise top.error("format", f"expected {_SETTINGS_FORMAT!r}, got {fmt!r}")
    dev_mode = top.get_bool("dev_mode", False)
    server = _parse_server(top.get_table("server"), source, {})
    broker = _parse_broker(top.get_table("broker"), source, None)
    # Secrets and key files were resolved when the settings were loaded: nothing is looked up now.
    tenants = _parse_tenants(top.get_table("tenants"), source, {}, Path.cwd())
    top.finish()
    if not tenants:
        raise ConfigError(f"{source}: tenants: no tenant")
    _check_whole(server, broker)
    return Settings(
        server=server, broker=broker, tenants=MappingProxyType(tenants), dev_mode=dev_mode
    )
