"""``[tenants.X] webhooks = [{url, events, secret_env, ...}]``: read strictly (docs/webhooks.md)."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from wsq.config.settings import SinkConfig, WebhookConfig
from wsq.config.table import Table, describe
from wsq.core.addresses import is_valid_address, is_valid_pattern
from wsq.core.errors import ConfigError
from wsq.webhooks.events import EVENT_TYPES
from wsq.webhooks.signing import secret_problem

#: A tenant's webhook entries: each holds a queue and a worker, so they are few.
MAX_WEBHOOKS = 16
#: Secrets one entry signs with at once: the current one and those of a rotation.
MAX_SECRETS = 4
MAX_URL_CHARS = 2048
#: Entries (addresses and patterns) one sink lists.
MAX_SINK_ADDRESSES = 64
#: The most addresses one sink may follow at once (``max_addresses``): each has a worker.
MAX_SINK_FOLLOWED = 1_000
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


def parse_sinks(
    raw: list[object] | None, source: str, where: str, environ: Mapping[str, str]
) -> tuple[SinkConfig, ...]:
    if raw is None:
        return ()
    if len(raw) > MAX_WEBHOOKS:
        raise ConfigError(f"{source}: {where}: at most {MAX_WEBHOOKS} entries, got {len(raw)}")
    sinks: list[SinkConfig] = []
    taken: set[tuple[str, str]] = set()
    for i, entry in enumerate(raw):
        entry_where = f"{where}[{i}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{source}: {entry_where}: expected a table, got {describe(entry)}")
        sink = _parse_sink(Table(entry, source, entry_where), environ)
        for address in sink.addresses:
            # One group is one reader of an address: two sinks in it would split its messages.
            if (address, sink.group) in taken:
                raise ConfigError(
                    f"{source}: {entry_where}.group: another sink reads {address!r} in group "
                    f"{sink.group!r}; give this one its own group"
                )
            taken.add((address, sink.group))
        sinks.append(sink)
    for i, sink in enumerate(sinks):
        # A pattern may match what another sink of the group reads: each needs its own group.
        if sink.patterns and any(o.group == sink.group for o in sinks if o is not sink):
            raise ConfigError(
                f"{source}: {where}[{i}].group: a sink with patterns needs a group no other "
                f"sink uses ({sink.group!r} is shared)"
            )
    return tuple(sinks)


def _parse_sink(t: Table, environ: Mapping[str, str]) -> SinkConfig:
    default = SinkConfig(url="", addresses=(), secret="")
    url = _parse_url(t)
    raw = t.get_list("addresses")
    if not raw or len(raw) > MAX_SINK_ADDRESSES:
        raise ConfigError(
            f"{t.where}: 'addresses' must list 1 to {MAX_SINK_ADDRESSES} addresses or patterns"
        )
    for value in raw:
        if not isinstance(value, str) or not is_valid_pattern(value):
            raise t.error("addresses", f"{describe(value)} is not an address nor a pattern")
    addresses = tuple(dict.fromkeys(raw))
    group = t.get_str("group", default.group)
    if not is_valid_address(group):
        raise t.error("group", "must be tokens of [A-Za-z0-9_-]")
    secret = _parse_secret(t, environ)
    timeout_ms = t.get_int("timeout_ms", default.timeout_ms, minimum=100, maximum=60_000)
    max_attempts = t.get_int("max_attempts", default.max_attempts, minimum=1, maximum=20)
    backoff_ms = t.get_int("backoff_ms", default.backoff_ms, minimum=10, maximum=60_000)
    max_addresses = t.get_int(
        "max_addresses", default.max_addresses, minimum=1, maximum=MAX_SINK_FOLLOWED
    )
    discover_ms = t.get_int("discover_ms", default.discover_ms, minimum=100, maximum=60_000)
    t.finish()
    if len(SinkConfig(url, addresses, "").literal) > max_addresses:
        raise t.error("max_addresses", "is less than the addresses the sink lists")
    return SinkConfig(
        url=url,
        addresses=addresses,
        secret=secret,
        group=group,
        timeout_ms=timeout_ms,
        max_attempts=max_attempts,
        backoff_ms=backoff_ms,
        max_addresses=max_addresses,
        discover_ms=discover_ms,
    )


def _parse_url(t: Table) -> str:
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
    return url


def _parse_webhook(t: Table, environ: Mapping[str, str]) -> WebhookConfig:
    default = WebhookConfig(url="", events=(), secret="")
    url = _parse_url(t)
    events = _parse_events(t)
    secret = _parse_secret(t, environ)
    timeout_ms = t.get_int("timeout_ms", default.timeout_ms, minimum=100, maximum=60_000)
    max_attempts = t.get_int("max_attempts", default.max_attempts, minimum=1, maximum=20)
    backoff_ms = t.get_int("backoff_ms", default.backoff_ms, minimum=10, maximum=60_000)
    max_queue = t.get_int("max_queue", default.max_queue, minimum=1, maximum=100_000)
    t.finish()
    return WebhookConfig(
        url=url,
        events=events,
        secret=secret,
        timeout_ms=timeout_ms,
        max_attempts=max_attempts,
        backoff_ms=backoff_ms,
        max_queue=max_queue,
    )


def _parse_secret(t: Table, environ: Mapping[str, str]) -> str:
    """The entry's secret(s), checked, space-separated; read before ``finish``."""
    given = {name: t.get_opt_str(name) for name in _SECRET_SOURCES}
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
    return " ".join(secrets)


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
