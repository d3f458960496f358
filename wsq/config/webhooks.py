"""``[tenants.X] webhooks = [{url, events, secret_env, ...}]``: read strictly (docs/webhooks.md)."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from wsq.config.settings import WebhookConfig
from wsq.config.table import Table, describe
from wsq.core.errors import ConfigError
from wsq.webhooks.events import EVENT_TYPES
from wsq.webhooks.signing import secret_problem

#: A tenant's webhook entries: each holds a queue and a worker, so they are few.
MAX_WEBHOOKS = 16
#: Secrets one entry signs with at once: the current one and those of a rotation.
MAX_SECRETS = 4
MAX_URL_CHARS = 2048
_SECRET_SOURCES = ("secret", "secret_env")


def parse_webhooks(
    raw: list[object] | None, source: str, where: str, environ: Mapping[str, str]
) -> tuple[WebhookConfig, ...]:
    if raw is None:
        return ()
    if len(raw) > MAX_WEBHOOKS:
        raise ConfigError(f"{source}: {where}: at most {MAX_WEBHOOKS} entries, got {len(raw)}")
    hooks = []
    for i, entry in enumerate(raw):
        entry_where = f"{where}[{i}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{source}: {entry_where}: expected a table, got {describe(entry)}")
        hooks.append(_parse_webhook(Table(entry, source, entry_where), environ))
    return tuple(hooks)


def _parse_webhook(t: Table, environ: Mapping[str, str]) -> WebhookConfig:
    default = WebhookConfig(url="", events=(), secret="")
    url = t.get_opt_str("url")
    if url is None:
        raise ConfigError(f"{t.where}: missing 'url' (an http:// or https:// URL)")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(url) > MAX_URL_CHARS:
        raise t.error(
            "url", f"expected an http:// or https:// URL of at most {MAX_URL_CHARS} characters"
        )
    if parts.username or parts.password:
        raise t.error("url", "must not hold a user or password (the signature authenticates)")
    events = _parse_events(t)
    given = {name: t.get_opt_str(name) for name in _SECRET_SOURCES}
    timeout_ms = t.get_int("timeout_ms", default.timeout_ms, minimum=100, maximum=60_000)
    max_attempts = t.get_int("max_attempts", default.max_attempts, minimum=1, maximum=20)
    backoff_ms = t.get_int("backoff_ms", default.backoff_ms, minimum=10, maximum=60_000)
    max_queue = t.get_int("max_queue", default.max_queue, minimum=1, maximum=100_000)
    t.finish()
    present = [name for name, value in given.items() if value is not None]
    if len(present) != 1:
        raise ConfigError(f"{t.where}: give exactly one of secret_env or secret")
    name = present[0]
    value = given[name]
    assert value is not None
    if name == "secret_env":
        secret = environ.get(value, "")
        if not secret.strip():
            raise t.error(name, f"environment variable {value} is not set or empty")
    else:
        secret = value
    secrets = secret.split()
    if len(secrets) > MAX_SECRETS:
        raise t.error(name, f"at most {MAX_SECRETS} secrets (space-separated), got {len(secrets)}")
    for n, one in enumerate(secrets, 1):
        problem = secret_problem(one)
        if problem is not None:
            raise t.error(name, f"secret {n}: {problem}")
    return WebhookConfig(
        url=url,
        events=events,
        secret=" ".join(secrets),
        timeout_ms=timeout_ms,
        max_attempts=max_attempts,
        backoff_ms=backoff_ms,
        max_queue=max_queue,
    )


def _parse_events(t: Table) -> tuple[str, ...]:
    raw = t.get_list("events")
    if not raw:
        raise ConfigError(f"{t.where}: 'events' must list at least one of {', '.join(EVENT_TYPES)}")
    events: list[str] = []
    for value in raw:
        if not isinstance(value, str) or value not in EVENT_TYPES:
            raise t.error(
                "events", f"unknown event {describe(value)}; known: {', '.join(EVENT_TYPES)}"
            )
        if value not in events:
            events.append(value)
    return tuple(events)
