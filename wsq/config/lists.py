"""The list settings of ``[server]``: networks (``trusted_proxies``, ``metrics_allow``) and
``allowed_origins``, each entry checked."""

from __future__ import annotations

import ipaddress

from wsq.config.table import Table, describe
from wsq.origins import ANY, normalize_origin, origin_problem


def networks(t: Table, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """A list of IP addresses or CIDRs (``trusted_proxies``, ``metrics_allow``), each checked."""
    entries = t.get_list(key)
    if entries is None:
        return default
    for i, entry in enumerate(entries):
        if not isinstance(entry, str):
            raise t.error(key, f"[{i}]: expected a string, got {describe(entry)}")
        try:
            ipaddress.ip_network(entry.strip(), strict=False)
        except ValueError:
            raise t.error(
                key,
                f"[{i}]: {entry!r} is not an IP address or a CIDR (10.0.0.0/8, fd00::/8)",
            ) from None
    return tuple(entry.strip() for entry in entries)


def allowed_origins_of(t: Table) -> tuple[str, ...] | None:
    """``allowed_origins``: None when unset (same-host pages only), else the origins normalized
    as browsers send them (``*`` kept as is), each checked."""
    raw = t.get_list("allowed_origins")
    if raw is None:
        return None
    origins: list[str] = []
    for i, value in enumerate(raw):
        if not isinstance(value, str):
            raise t.error(f"allowed_origins[{i}]", f"expected a string, got {describe(value)}")
        problem = origin_problem(value)
        if problem is not None:
            raise t.error(f"allowed_origins[{i}]", problem)
        normal = ANY if value == ANY else normalize_origin(value)
        if normal is not None and normal not in origins:
            origins.append(normal)
    return tuple(origins)
