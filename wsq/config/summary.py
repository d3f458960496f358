"""What ``wsq check-config`` prints of the settings: every value for people, never a secret."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from wsq.config.settings import DEV_TENANT, ENV_DEV_SECRET, KeyConfig, Settings


def redact_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``: for printing broker URLs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid URL>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _describe_key(key: KeyConfig) -> str:
    kid = f"key {key.kid!r}" if key.kid is not None else "key (no kid)"
    if key.secret is not None:
        material = f"shared secret ({len(key.secret.encode())} bytes)"
    elif key.jwks_url is not None:
        material = f"JWKS {redact_url(key.jwks_url)}"
    else:
        material = "public key"
    return f"{kid}: {key.alg}, {material}"


def _describe_origins(origins: tuple[str, ...] | None) -> str:
    if origins is None:
        return "(unset: pages of the gateway's own host, and clients that send no Origin)"
    if not origins:
        return "[] (no browser page; clients that send no Origin only)"
    if "*" in origins:
        return "* (any page of any site)"
    return ", ".join(origins)


def describe_settings(settings: Settings, source: str | None) -> list[str]:
    """A summary of ``settings`` for people: every value, never a secret."""
    s = settings.server
    lines = [
        f"configuration: {source or 'no file (defaults and environment)'}",
        f"server: {s.host}:{s.port}, {s.workers} worker(s), node_id {s.node_id or '(generated)'}",
        f"  idle_ms {s.idle_ms}, open_timeout_ms {s.open_timeout_ms}, max_sessions "
        f"{s.max_sessions}, max_links_per_session {s.max_links_per_session}",
        f"  max_frame_bytes {s.max_frame_bytes}, outbox_max_bytes {s.outbox_max_bytes}, "
        f"sender_credit {s.sender_credit}",
        f"  handshake_timeout_ms {s.handshake_timeout_ms}, max_connections {s.max_connections}, "
        f"max_pending {s.max_pending}, max_pending_per_ip {s.max_pending_per_ip}",
        f"  max_pending_bytes {s.max_pending_bytes}, max_pending_bytes_per_ip "
        f"{s.max_pending_bytes_per_ip}",
        "  trusted_proxies "
        + (", ".join(s.trusted_proxies) or "none (X-Forwarded-For is not believed)"),
        f"  allowed_origins {_describe_origins(s.allowed_origins)}",
        f"  stats_interval_ms {s.stats_interval_ms or '0 (no figures on $sys.stats)'}",
        f"  ws_compression {s.ws_compression} ("
        + (
            "permessage-deflate accepted when offered"
            if s.ws_compression == "deflate"
            else "permessage-deflate declined"
        )
        + ")",
        "  metrics_allow "
        + (", ".join(s.metrics_allow) or "[] (/metrics is not served)")
        + f", ready_max_lag_ms {s.ready_max_lag_ms}, log_format {s.log_format}, access_log "
        + ("on" if s.access_log else "off (per-socket lines at debug)"),
        f"  drain_timeout_ms {s.drain_timeout_ms} (on SIGTERM: clients told wsq:going-away, "
        "the process gone by then)",
        f"broker: {redact_url(settings.broker.url)}, quota_lease_ms "
        f"{settings.broker.quota_lease_ms}",
    ]
    if settings.dev_mode:
        lines.append(
            f"tenants: none configured: development mode, `wsq serve` serves tenant "
            f"{DEV_TENANT!r} with a random secret (or {ENV_DEV_SECRET}) and prints it"
        )
        return lines
    for tenant in settings.tenants.values():
        lines.append(f"tenant {tenant.name}: issuer {tenant.issuer!r}")
        lines.extend(f"  {_describe_key(key)}" for key in tenant.keys)
        rate = f"{tenant.publish_rate:g}/s" if tenant.publish_rate else "unlimited"
        lines.append(
            f"  retention_max_len {tenant.retention_max_len}, retention_max_age_ms "
            f"{tenant.retention_max_age_ms}, retention_max_bytes {tenant.retention_max_bytes}, "
            f"dedup_window_ms {tenant.dedup_window_ms}, idle_expiry_ms {tenant.idle_expiry_ms}"
        )
        limit = tenant.max_deliveries or "0 (no limit)"
        lines.append(
            f"  dead_letter {tenant.dead_letter or '(none: dead letters are dropped)'}, "
            f"redelivery_delay_ms {tenant.redelivery_delay_ms}, max_deliveries {limit}, "
            f"publish_rate {rate}, ops {'yes' if tenant.ops else 'no'}"
        )
        lines.append(
            f"  quotas: max_connections {tenant.max_connections}, max_links {tenant.max_links}, "
            f"max_addresses {tenant.max_addresses}; per address max_groups {tenant.max_groups}, "
            f"max_dedup_ids {tenant.max_dedup_ids}, max_idempotency_keys "
            f"{tenant.max_idempotency_keys}"
        )
        lines.append(
            f"  presence: max_presence_members {tenant.max_presence_members}; per address "
            f"max_members_per_address {tenant.max_members_per_address}"
        )
        if tenant.webhooks or tenant.sinks:
            lines.append(
                f"  webhooks: max_webhook_queue {tenant.max_webhook_queue}, max_webhook_requests "
                f"{tenant.max_webhook_requests} (per process)"
            )
        for hook in tenant.webhooks:
            n = len(hook.secret.split())
            lines.append(
                f"  webhook {hook.url}: events {', '.join(hook.events)}; {n} secret"
                f"{'s' if n > 1 else ''}; timeout_ms {hook.timeout_ms}, max_attempts "
                f"{hook.max_attempts}, backoff_ms {hook.backoff_ms}, max_queue {hook.max_queue}"
            )
        for sink in tenant.sinks:
            n = len(sink.secret.split())
            lines.append(
                f"  sink {sink.url}: addresses {', '.join(sink.addresses)} in group {sink.group}; "
                f"{n} secret{'s' if n > 1 else ''}; timeout_ms {sink.timeout_ms}, max_attempts "
                f"{sink.max_attempts}, backoff_ms {sink.backoff_ms}, max_addresses "
                f"{sink.max_addresses}"
                + (f", discover_ms {sink.discover_ms}" if sink.patterns else "")
            )
    return lines
