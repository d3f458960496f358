"""Origin policy: which web pages may open a socket to the gateway or read the bridge's answers.

A browser names the page that makes a request in its ``Origin`` header (``scheme://host[:port]``)
on every WebSocket handshake and on every cross-origin HTTP request; programs that are not
browsers send none. ``[server] allowed_origins`` decides:

- unset (the default): pages of the gateway's own host (the ``Origin`` names the host and port of
  the request's ``Host``: the demo page at http://127.0.0.1:8000 talks to ws://127.0.0.1:8000),
  and clients that send no ``Origin``;
- a list: exactly those origins (compared normalized: lowercase, no default port), ``"*"`` any
  origin, and clients that send no ``Origin``. An empty list refuses every browser page.

One module that the configuration (which refuses a malformed origin, naming where it is), the
WebSocket handshake, the bridge's CORS answers and ``/dev/token`` share.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.types import Scope

ANY = "*"
#: A host name or IPv4 address (lowercased), or an IPv6 address without its brackets.
_HOST_RE = re.compile(r"[a-z0-9_](?:[a-z0-9_.-]*[a-z0-9_])?|[0-9a-f:.]*:[0-9a-f:.]*")
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
#: Host names that only ever mean this machine (``/dev/token`` answers only them).
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def _host_port(host: str, scheme: str) -> tuple[str, int | None] | None:
    """``host[:port]`` (a ``Host`` header or the netloc of an origin) as (lowercase host without
    brackets, port), the port defaulting to the scheme's (None for a scheme with no default, as
    ``chrome-extension``); None when it is not one."""
    try:
        parts = urlsplit(f"//{host}")
        port = parts.port
    except ValueError:
        return None
    name = parts.hostname
    if not name or parts.username is not None or parts.password is not None:
        return None
    if _HOST_RE.fullmatch(name) is None:
        return None
    if port is None:
        port = _DEFAULT_PORTS.get(scheme)
    return name.lower(), port


def _parse(origin: str) -> tuple[str, str, int | None] | None:
    """(scheme, host, port) of a serialized origin, or None when ``origin`` is not one (``null``,
    a path, a query, credentials)."""
    try:
        parts = urlsplit(origin.strip())
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if not scheme or parts.path or parts.query or parts.fragment or "?" in origin:
        return None
    where = _host_port(parts.netloc, scheme)
    if where is None:
        return None
    return scheme, where[0], where[1]


def normalize_origin(origin: str) -> str | None:
    """``origin`` as a browser serializes it (``https://app.example.com``, ``http://[::1]:8000``)
    or None when it is not an origin."""
    parsed = _parse(origin)
    if parsed is None:
        return None
    scheme, host, port = parsed
    shown = f"[{host}]" if ":" in host else host
    if port is not None and _DEFAULT_PORTS.get(scheme) != port:
        shown = f"{shown}:{port}"
    return f"{scheme}://{shown}"


def origin_problem(value: str) -> str | None:
    """Why ``value`` cannot stand in ``allowed_origins``, or None when it can."""
    if value == ANY:
        return None
    if normalize_origin(value) is not None:
        return None
    try:
        parts = urlsplit(value)
    except ValueError:
        parts = None
    if parts is not None and parts.scheme and parts.netloc and parts.path:
        return (
            f"{value!r} is not an origin: an origin has no path; write "
            f"{parts.scheme}://{parts.netloc!s}"
        )
    return (
        f"{value!r} is not an origin: write scheme://host or scheme://host:port "
        '(e.g. "https://app.example.com"), or "*" for any origin'
    )


def is_local_host(host: str | None) -> bool:
    """True for a ``Host`` header naming this machine: localhost, 127.0.0.1 or [::1], any port."""
    if not host:
        return False
    where = _host_port(host, "http")
    return where is not None and where[0] in LOCAL_HOSTS


def is_local_origin(origin: str | None) -> bool:
    """True for no ``Origin`` at all, or an http(s) origin on localhost, 127.0.0.1 or [::1]."""
    if origin is None:
        return True
    parsed = _parse(origin)
    return parsed is not None and parsed[0] in ("http", "https") and parsed[1] in LOCAL_HOSTS


class OriginPolicy:
    """``[server] allowed_origins`` as a check: ``allows(origin, host)``."""

    __slots__ = ("allowed", "any", "same_host")

    def __init__(self, allowed: Iterable[str] | None) -> None:
        #: None: the default, same-host pages only.
        self.same_host = allowed is None
        listed = list(allowed or ())
        self.any = ANY in listed
        self.allowed = frozenset(
            n for n in (normalize_origin(o) for o in listed if o != ANY) if n is not None
        )

    def allows(self, origin: str | None, host: str | None) -> bool:
        """Whether a request whose ``Origin`` header is ``origin`` (None: absent) and whose
        ``Host`` header is ``host`` comes from a page allowed here."""
        if origin is None or self.any:
            return True
        parsed = _parse(origin)
        if parsed is None:
            return False  # "null" (sandboxed frames, file: pages) and anything malformed
        if not self.same_host:
            return normalize_origin(origin) in self.allowed
        if not host:
            return False
        return _host_port(host, parsed[0]) == (parsed[1], parsed[2])

    def cors_origins(self) -> list[str] | None:
        """The origins the bridge answers CORS requests for: None for none (same-host pages need
        no CORS), ``["*"]`` for any."""
        if self.same_host:
            return None
        if self.any:
            return [ANY]
        return sorted(self.allowed)


def origin_and_host(scope: Scope) -> tuple[str | None, str | None]:
    """The ``Origin`` and ``Host`` headers of a request (None where absent)."""
    origin = host = None
    for name, value in scope.get("headers") or ():
        if name == b"origin":
            origin = value.decode("latin-1")
        elif name == b"host":
            host = value.decode("latin-1")
    return origin, host
