"""Who may hold a connection before authentication: the bounds of ``[server]`` and their counts.

A connection is *pending* from the moment it is accepted until it is worth its file descriptor:
a WebSocket until it sent a valid ``open``, an HTTP request until its body is in. Pending
connections are bounded per source IP (``max_pending_per_ip``) and in total (``max_pending``),
and all connections by ``max_connections``. ``wsq.http_protocol`` asks ``Admission.admit`` at
accept time, before any parsing, and refuses there at the cost of one static write and a close;
``Ticket.on_request`` judges each request head (the client behind a trusted proxy is known only
then); the gateway calls ``Ticket.authenticated`` on a valid ``open``.

A pending WebSocket also holds what it sends before its ``open`` is verified (a message may be up
to ``max_frame_bytes``, drip-fed for ``open_timeout_ms``): ``wsq.ws_protocol`` counts every byte
it receives by ``Ticket.hold``, against ``max_pending_bytes`` in total and
``max_pending_bytes_per_ip`` per source, before the bytes are parsed; the bytes are released when
the connection is authenticated or closes, and a connection whose bytes do not fit is refused.

``/healthz`` and ``/readyz`` keep ``HEADROOM`` connections of their own past ``max_pending`` and
``max_connections``: a connection accepted there serves those two paths only (anything else is
answered 503), so a load balancer still sees the node while the bounds are hit.

Refusals and deadline closes are counted here (``refused``, ``timed_out``), for metrics; the log
says so at most once per ``LOG_EVERY`` of them, never once per refusal.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from collections import Counter
from collections.abc import Iterable

from wsq.config import ServerConfig

log = logging.getLogger("wsq.admission")

#: Connections past max_pending and past max_connections kept for the health paths.
HEADROOM = 8
#: Answered whatever the bounds (GET or HEAD, not an upgrade): /metrics too, since a flood is
#: when the operators need to see the refusals (its ``metrics_allow`` is checked by the app).
HEALTH_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
#: One log line per this many refusals (and per this many deadline closes).
LOG_EVERY = 1000
#: Where the lifespan puts the admission for uvicorn's protocols (``scope["state"]``).
STATE_KEY = "wsq.admission"
#: Where the WebSocket protocol puts a socket's ticket in its ASGI scope, for the gateway.
SCOPE_KEY = "wsq.ticket"

#: The reasons a connection is refused (keys of ``Admission.refused``).
MAX_CONNECTIONS = "max_connections"
MAX_PENDING = "max_pending"
MAX_PENDING_PER_IP = "max_pending_per_ip"
MAX_PENDING_BYTES = "max_pending_bytes"
MAX_PENDING_BYTES_PER_IP = "max_pending_bytes_per_ip"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """``entries`` (IP addresses or CIDRs) as networks; ValueError names a bad one."""
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries)


def source_key(ip: str) -> str:
    """What one source counts under: an IPv4 address as such (IPv4-mapped IPv6 included), an
    IPv6 address by its /64 (one host can have a whole /64), anything else verbatim."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


def _uncount(counter: Counter[str], key: str, n: int) -> None:
    """``counter[key] -= n``, the key dropped at zero: a source with nothing pending costs
    nothing."""
    left = counter[key] - n
    if left:
        counter[key] = left
    else:
        del counter[key]


class Admission:
    """The bounds of one process, the connections they hold, and what they refused."""

    def __init__(self, server: ServerConfig) -> None:
        self.handshake_timeout_s = server.handshake_timeout_ms / 1000
        self.max_connections = server.max_connections
        self.max_pending = server.max_pending
        self.max_pending_per_ip = server.max_pending_per_ip
        self.max_pending_bytes = server.max_pending_bytes
        self.max_pending_bytes_per_ip = server.max_pending_bytes_per_ip
        self.trusted_proxies = parse_networks(server.trusted_proxies)
        self.is_trusted = functools.lru_cache(maxsize=1024)(self._is_trusted)
        #: Open connections (each admitted one until it closes).
        self.open = 0
        #: Pending connections, in total and by source (``source_key``).
        self.pending = 0
        self.pending_by_ip: Counter[str] = Counter()
        #: Bytes received by pending WebSockets (``Ticket.hold``), in total and by source.
        self.pending_bytes = 0
        self.pending_bytes_by_ip: Counter[str] = Counter()
        #: Connections refused, by reason (MAX_CONNECTIONS, MAX_PENDING, MAX_PENDING_PER_IP,
        #: MAX_PENDING_BYTES, MAX_PENDING_BYTES_PER_IP).
        self.refused: Counter[str] = Counter()
        #: Connections closed because their request (or upgrade) missed handshake_timeout_ms.
        self.timed_out = 0

    def _is_trusted(self, ip: str | None) -> bool:
        if not ip or not self.trusted_proxies:
            return False
        try:
            addr = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self.trusted_proxies)

    def client_ip(self, peer: str | None, forwarded_for: str | None) -> str | None:
        """The client's address: the peer's, or, when the peer is a trusted proxy, the nearest
        address of ``X-Forwarded-For`` that is not itself a trusted proxy."""
        if forwarded_for is None or not self.is_trusted(peer):
            return peer
        hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
        for hop in reversed(hops):
            if not self.is_trusted(hop):
                return hop
        return hops[0] if hops else peer

    # -- accept time ---------------------------------------------------------------------------

    def admit(self, peer: str | None) -> Ticket | None:
        """A ticket for a connection just accepted from ``peer``, or None: refuse it now."""
        if self.open >= self.max_connections + HEADROOM:
            self._refuse(MAX_CONNECTIONS)
            return None
        if self.pending >= self.max_pending + HEADROOM:
            self._refuse(MAX_PENDING)
            return None
        # A trusted proxy speaks for many clients: its connections count per client once the
        # request head names the client (Ticket.on_request).
        key = None if peer is None or self.is_trusted(peer) else source_key(peer)
        if key is not None and self.pending_by_ip[key] >= self.max_pending_per_ip:
            self._refuse(MAX_PENDING_PER_IP)
            return None
        reserve = None
        if self.open >= self.max_connections:
            reserve = MAX_CONNECTIONS
        elif self.pending >= self.max_pending:
            reserve = MAX_PENDING
        self.open += 1
        return Ticket(self, peer, key, reserve)

    def _refuse(self, reason: str) -> None:
        self.refused[reason] += 1
        total = self.refused.total()
        if total % LOG_EVERY == 1:
            log.warning(
                "refused %d connection(s) before authentication so far (%s); the bounds are "
                "[server] max_connections, max_pending, max_pending_per_ip, max_pending_bytes "
                "and max_pending_bytes_per_ip (docs/security.md)",
                total,
                ", ".join(f"{k} {v}" for k, v in sorted(self.refused.items())),
            )

    def deadline_passed(self) -> None:
        """Count a connection closed by handshake_timeout_ms (logged once per LOG_EVERY)."""
        self.timed_out += 1
        if self.timed_out % LOG_EVERY == 1:
            log.warning(
                "closed %d connection(s) that sent no complete request within "
                "handshake_timeout_ms (%d ms) so far",
                self.timed_out,
                round(self.handshake_timeout_s * 1000),
            )


class Ticket:
    """One admitted connection: pending (counted under ``key``, None while uncounted) until
    authenticated or its request is in, open until closed."""

    __slots__ = ("_admission", "_closed", "held", "key", "peer", "pending", "reserve")

    def __init__(
        self, admission: Admission, peer: str | None, key: str | None, reserve: str | None
    ) -> None:
        self._admission = admission
        self.peer = peer
        self.key = key
        #: The bound this connection was accepted past (health paths only), or None.
        self.reserve = reserve
        self.pending = False
        #: Bytes received while pending and counted (``hold``), until released.
        self.held = 0
        self._closed = False
        self._enter_pending()

    def _enter_pending(self) -> None:
        a = self._admission
        self.pending = True
        a.pending += 1
        if self.key is not None:
            a.pending_by_ip[self.key] += 1

    def _leave_pending(self) -> None:
        if not self.pending:
            return
        a = self._admission
        self._release()
        self.pending = False
        a.pending -= 1
        if self.key is not None:
            _uncount(a.pending_by_ip, self.key, 1)

    def on_request(self, method: str, path: str, upgrade: bool, forwarded_for: str | None) -> bool:
        """A request head arrived: True to serve it, False to answer 503 (counted)."""
        a = self._admission
        if not upgrade and method in ("GET", "HEAD") and path in HEALTH_PATHS:
            self._leave_pending()
            self.reserve = None
            return True
        if self.reserve is not None:
            a._refuse(self.reserve)
            return False
        if self.pending and self.key is not None:
            return True  # counted at accept time, and within the bounds then
        key = source_key(a.client_ip(self.peer, forwarded_for) or "")
        if not self.pending:
            # A further request on a kept-alive connection is pending again.
            if a.pending >= a.max_pending:
                a._refuse(MAX_PENDING)
                return False
            self.key = None
            self._enter_pending()
        if a.pending_by_ip[key] >= a.max_pending_per_ip:
            a._refuse(MAX_PENDING_PER_IP)
            return False
        self.key = key
        a.pending_by_ip[key] += 1
        return True

    def hold(self, size: int) -> bool:
        """``size`` more bytes received before authentication, not yet parsed: True when they
        fit ``max_pending_bytes`` and the source's ``max_pending_bytes_per_ip`` (counted until
        the connection is authenticated or closed), False to refuse the connection (counted
        as a refusal). Not pending (authenticated), nothing is counted."""
        if not self.pending:
            return True
        a = self._admission
        key = self.key
        if a.pending_bytes + size > a.max_pending_bytes:
            a._refuse(MAX_PENDING_BYTES)
            return False
        if key is not None and a.pending_bytes_by_ip[key] + size > a.max_pending_bytes_per_ip:
            a._refuse(MAX_PENDING_BYTES_PER_IP)
            return False
        self.held += size
        a.pending_bytes += size
        if key is not None:
            a.pending_bytes_by_ip[key] += size
        return True

    def _release(self) -> None:
        """Let go of the bytes ``hold`` counted."""
        held, self.held = self.held, 0
        if not held:
            return
        a = self._admission
        a.pending_bytes -= held
        if self.key is not None:
            _uncount(a.pending_bytes_by_ip, self.key, held)

    def request_done(self) -> None:
        """An HTTP request's body is in: the rest is the application's."""
        self._leave_pending()

    def authenticated(self) -> None:
        """The WebSocket sent a valid ``open``."""
        self._leave_pending()

    def closed(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._leave_pending()
        self._admission.open -= 1
