"""The WebSocket endpoint: drives one ``ServerConnection`` per socket. I/O only.

One reader (the socket's ASGI task) feeds the protocol object and answers its events in order.
Output is written on the event loop's next turn, every frame queued since the last write packed
into one WebSocket message: by a plain callback while the transport takes it (wsq's protocol,
``write_now``), else by a writer task that waits for the transport and drains the rest.
Heartbeats and token expiry are timers on the event loop, not tasks. An idle socket therefore
holds one task, and a delivery to a writable socket starts none.

This module is longer than 600 lines: a peer's lifecycle, writing, timers and event handlers
share its slots and its one ordering of events; split, each part would reach into the others.

The endpoint speaks raw ASGI (``wsq.endpoint.WebSocketEndpoint``, in front of the Starlette
app): no router, exception layers or ``WebSocket`` wrapper between uvicorn and the peer, whose
coroutine frames every socket would keep for its lifetime and whose wrappers every send would
pass through.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from starlette.types import Receive, Scope, Send

from wsq import present_links, subprotocols, sys_stats
from wsq.admission import SCOPE_KEY
from wsq.auth import Principal
from wsq.core.addresses import SYS_TENANT, is_sys_address
from wsq.core.errors import (
    BrokerUnavailable,
    Forbidden,
    GoingAway,
    IdleTimeout,
    InternalError,
    InvalidFrame,
    QuotaExceeded,
    ResourceLimitExceeded,
    TokenExpired,
    Unauthorized,
    WsqError,
)
from wsq.hub import Outlet
from wsq.logs import bind_connection
from wsq.node import Node
from wsq.origins import OriginPolicy, origin_and_host
from wsq.protocol.connection import Limits, ServerConnection
from wsq.protocol.events import (
    AttachRequested,
    ConnectionEnded,
    CreditGranted,
    DeliveriesSettled,
    LinkEnded,
    OpenRequested,
    PublishRequested,
    RefreshRequested,
)
from wsq.protocol.figures import Counts, Figures
from wsq.protocol.state import ConnectionState, Link, LinkState, Role
from wsq.quotas import Held
from wsq.ws_protocol import backlog_of

log = logging.getLogger("wsq.gateway")

SUBPROTOCOL = subprotocols.WSQ_V1
# Target size of one outgoing WebSocket message: large enough to carry hundreds of small
# deliveries per write, small enough that one slow socket's write does not hog the transport.
WRITE_BATCH_BYTES = 64 * 1024
# How long we wait for the client's answering close before dropping the socket.
CLOSE_GRACE_S = 1.0
# Our heartbeat goes once we have sent nothing for this share of the client's idle (the
# contract asks for something at least every half of it): the rest of the half is slack for a
# loop busy with a broadcast. A socket's timer fires when its heartbeat is due, not at a
# fixed pace: an idle socket wakes once per heartbeat (docs/performance.md, "Heartbeats").
HEARTBEAT_SHARE = 0.4
# The shortest wait between two ticks of a socket.
MIN_TICK_S = 0.05
# WebSocket close codes by condition (RFC 6455): lets a client tell a failure from a goodbye.
_CLOSE_CODES = {
    "wsq:frame-too-large": 1009,
    "wsq:internal-error": 1011,
    "wsq:going-away": 1001,
}


class Gateway:
    """The WebSocket side of one process: its sockets (for drains), and their shared limits."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.peers: set[Peer] = set()
        self.ids = itertools.count()
        # Set while no socket is open: what a drain waits for.
        self.no_peers = asyncio.Event()
        server = node.settings.server
        self.limits = Limits(
            max_frame_bytes=server.max_frame_bytes,
            max_sessions=server.max_sessions,
            max_links_per_session=server.max_links_per_session,
            sender_credit=server.sender_credit,
        )
        self.origins = OriginPolicy(server.allowed_origins)
        # Since the process started (wsq.stats): errors sent by condition (the node's, with the
        # bridge's), sockets closed by reason, dispositions by outcome.
        self.errors = node.errors
        self.closes: Counter[str] = Counter()
        self.dispositions: Counter[str] = Counter()
        # What the open sockets hold now, counted as it changes (wsq.protocol.figures): the
        # protocol objects count sessions, links and output; connections are counted here.
        self.figures = Figures()
        # Sockets with output to write on the loop's next turn (Peer._wake_writer), in order:
        # one callback for all of them, not a handle per socket (a broadcast wakes thousands).
        self._to_flush: list[Peer] = []

    def add_peer(self, peer: Peer) -> None:
        if peer in self.peers:
            return
        self.peers.add(peer)
        self.no_peers.clear()
        self.figures.subprotocols[peer.subprotocol or ""] += 1
        counts = peer.counted_in = self.figures.of("")
        counts.connections += 1

    def authenticated(self, peer: Peer, tenant: str) -> None:
        """The peer's token is good: its connection is ``tenant``'s from now on."""
        old = peer.counted_in
        if old is not None:
            old.connections -= 1
            counts = peer.counted_in = self.figures.of(tenant)
            counts.connections += 1
        peer.conn.count_as(tenant)

    def remove_peer(self, peer: Peer) -> None:
        if peer not in self.peers:
            return
        self.peers.discard(peer)
        if not self.peers:
            self.no_peers.set()
        self.figures.subprotocols[peer.subprotocol or ""] -= 1
        if peer.counted_in is not None:
            peer.counted_in.connections -= 1
            peer.counted_in = None

    def flush_soon(self, peer: Peer) -> None:
        """``peer._flush()`` on the loop's next turn, with every other socket's asked for in
        this one, in the order asked."""
        to_flush = self._to_flush
        if not to_flush:
            peer.loop.call_soon(self._flush_all)
        to_flush.append(peer)

    def flush_first(self, peer: Peer) -> None:
        """Move ``peer``, when it was the last socket asked for (``flush_soon``), to the front
        of the next flush."""
        to_flush = self._to_flush
        if len(to_flush) > 1 and to_flush[-1] is peer:
            to_flush.insert(0, to_flush.pop())

    def _flush_all(self) -> None:
        peers, self._to_flush = self._to_flush, []
        for peer in peers:
            try:
                peer._flush()
            except Exception:
                log.exception("peer %d: write failed", peer.id)


class Peer:
    """One client socket."""

    __slots__ = (
        "_backlog",
        "_close_code",
        "_close_reason",
        "_closing",
        "_events_lock",
        "_flush_scheduled",
        "_receive",
        "_send",
        "_tick_handle",
        "_writable_now",
        "_write_now",
        "_writer",
        "conn",
        "counted_in",
        "gateway",
        "held",
        "id",
        "last_recv",
        "last_sent",
        "loop",
        "node",
        "outbox_cap",
        "outlet",
        "principal",
        "scope",
        "started",
        "subprotocol",
        "writing_since",
    )

    def __init__(self, gateway: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
        self.gateway = gateway
        self.node = gateway.node
        self.scope = scope
        self._receive = receive
        self._send = send
        self.id = next(gateway.ids)
        self.loop = asyncio.get_running_loop()
        server = gateway.node.settings.server
        # wsq.v1 where the client offers it, else AMQP 1.0 (docs/amqp.md): both protocol
        # objects answer the same events and serve the same hub.
        self.subprotocol = subprotocols.choose(scope.get("subprotocols") or ())
        self.conn = subprotocols.connection(self.subprotocol, gateway, self._wake_writer)
        # Deliveries pause at half of outbox_max_bytes. The hard cap leaves room beyond that for
        # the one delivery that crossed the mark (up to a frame) and for control frames, so
        # only a client that floods us with requests without reading ever reaches it.
        self.outlet = Outlet(self.conn, server.outbox_max_bytes // 2)
        self.outbox_cap = server.outbox_max_bytes + server.max_frame_bytes
        self.principal: Principal | None = None
        self.started = self.loop.time()
        self.last_recv = self.started
        self.last_sent = self.started
        # When the running writer started, or the client last took some of what waits: with
        # last_sent, how long output has waited with none of it written (_stalled).
        self.writing_since = self.started
        # What the transport and the kernel held for the client at the last look (-1: none).
        self._backlog = -1
        # Runs while there is output to write (see _wake_writer); None when the socket is idle.
        self._writer: asyncio.Task[None] | None = None
        # wsq's protocol writes a message at once when its transport takes it (_flush); None
        # elsewhere (the writer task does it all). _flush_scheduled: a _flush is on its way.
        proto = getattr(send, "__self__", None)
        # Text messages only: an AMQP socket's binary output always goes through the writer.
        text = isinstance(self.conn, ServerConnection)
        self._write_now: Callable[[list[bytes]], None] | None = (
            getattr(proto, "write_now", None) if text else None
        )
        self._writable_now: Callable[[], bool] | None = getattr(proto, "writable_now", None)
        if text and proto is not None and hasattr(proto, "on_heartbeat"):
            # The client's heartbeats, read alone, are answered without this socket's task.
            proto.on_heartbeat = self._heard
        self._flush_scheduled = False
        self._tick_handle: asyncio.TimerHandle | None = None
        self._closing = False
        self._close_code = 1000
        # Why the socket closed (wsq_closes_total): set by whoever closes it first.
        self._close_reason = ""
        # The reader and timer-driven closes both answer events: one at a time, in order.
        self._events_lock = asyncio.Lock()
        # What the socket holds of its tenant's max_connections and max_links (wsq.quotas).
        self.held = Held(self.node.quotas)
        # Where the gateway counts this connection while it is open (its tenant's figures).
        self.counted_in: Counts | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self) -> None:
        if not self._origin_allowed():
            # Before accept: uvicorn answers the handshake 403 and closes.
            await self._send({"type": "websocket.close", "code": 1008})
            return
        if self.subprotocol is None:
            await self._send(
                {
                    "type": "websocket.close",
                    "code": 1002,
                    "reason": "subprotocol wsq.v1 or amqp required",
                }
            )
            return
        if (await self._receive())["type"] != "websocket.connect":
            return  # gone before the handshake was answered
        await self._send({"type": "websocket.accept", "subprotocol": self.subprotocol})
        self.gateway.add_peer(self)
        bind_connection(self.id)  # this task's log lines name the socket (wsq.logs)
        self._schedule_tick()
        try:
            await self._read_loop()
        except OSError:
            pass  # the socket is gone (uvicorn's ClientDisconnected is an OSError)
        except Exception:
            log.exception("peer %d failed", self.id)
            self.conn.close(InternalError("internal error"))
        finally:
            await self._shutdown()

    def _origin_allowed(self) -> bool:
        """``[server] allowed_origins`` (wsq.origins). A function of its own, so that the
        headers it reads are not kept in ``run``'s frame for the socket's whole life."""
        origin, host = origin_and_host(self.scope)
        if self.gateway.origins.allows(origin, host):
            return True
        log.info("refused a WebSocket handshake from origin %.200r (host %.200r)", origin, host)
        return False

    async def _read_loop(self) -> None:
        receive = self._receive
        conn = self.conn
        grace_deadline: float | None = None
        while True:
            if self._closing:
                if conn.state is ConnectionState.CLOSED:
                    return
                if grace_deadline is None:
                    grace_deadline = self.loop.time() + CLOSE_GRACE_S
                remaining = grace_deadline - self.loop.time()
                if remaining <= 0:
                    return
                try:
                    async with asyncio.timeout(remaining):
                        message = await receive()
                except TimeoutError:
                    return
            else:
                message = await receive()
            if message["type"] != "websocket.receive":
                return  # websocket.disconnect
            self.last_recv = self.loop.time()
            subprotocols.receive(conn, message, self.id)
            # Not kept while the socket waits for its next message: with the client's
            # heartbeats taken without this task, that wait is most of a socket's life, and
            # the last message (the attach, say) would be held for it (0.65 KiB a socket).
            del message
            await self._process_events()
            if conn.out_bytes > self.outbox_cap and not self._closing:
                self._close_reason = "outbox-overflow"
                conn.close(ResourceLimitExceeded("outbox overflow: the client does not read"))
                await self._process_events()

    def _heard(self) -> bool:
        """A heartbeat ``[]`` the client sent alone, taken by the WebSocket protocol as it read
        it (wsq.ws_protocol): the socket is not silent, and that is all a heartbeat says. False
        (read it as any message) unless the connection is open and not closing."""
        if self._closing or self.conn.state is not ConnectionState.OPEN:
            return False
        self.last_recv = self.loop.time()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("peer %d < []", self.id)
        return True

    async def _process_events(self) -> None:
        async with self._events_lock:
            await self._answer_events()

    async def _answer_events(self) -> None:
        conn = self.conn
        while (event := conn.next_event()) is not None:
            try:
                if isinstance(event, PublishRequested):
                    await self._on_publish(event)
                elif isinstance(event, CreditGranted):
                    subprotocols.credit_granted(conn, event.link, self.node.hub)
                elif isinstance(event, DeliveriesSettled):
                    self.gateway.dispositions[event.outcome.value] += len(event.ids)
                    await self.node.hub.settle(event.link, event.ids, event.outcome)
                elif isinstance(event, AttachRequested):
                    await self._on_attach(event.link)
                elif isinstance(event, LinkEnded):
                    self.held.ended(event.link)
                    self.node.occupancy.detached(event.link)
                    await present_links.leave(self.node, self._tenant(), event.link)
                    await self.node.hub.detach(event.link, event.unsettled)
                elif isinstance(event, OpenRequested):
                    await self._on_open(event)
                elif isinstance(event, RefreshRequested):
                    await self._on_refresh(event)
                elif isinstance(event, ConnectionEnded):
                    self._on_ended(event)
            except BrokerUnavailable as exc:
                log.warning("broker unavailable: %s", exc, extra={"condition": exc.condition})
                if isinstance(event, AttachRequested):
                    conn.detach(event.link, exc)
            except WsqError as exc:
                if isinstance(event, AttachRequested):
                    conn.detach(event.link, exc)
                else:
                    log.warning("peer %d: %s", self.id, exc, extra={"condition": exc.condition})

    async def _shutdown(self) -> None:
        self.gateway.remove_peer(self)
        # A socket that dropped with neither side's close counts as the client's doing.
        self.gateway.closes[self._close_reason or "client"] += 1
        if (who := self.principal) is not None:
            reason = self._close_reason or "client"
            self.node.webhooks.connection_closed(who.tenant, who.sub, self.id, reason)
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        proto = getattr(self._send, "__self__", None)
        if getattr(proto, "on_heartbeat", None) is not None:
            proto.on_heartbeat = None  # type: ignore[union-attr]
        if self.conn.state not in (ConnectionState.CLOSED, ConnectionState.CLOSE_SENT):
            # The socket dropped without a close: end every link so the hub lets go.
            self.conn.close()
        try:
            await self._process_events()
            self.held.release()
            self._closing = True
            if self._flush_scheduled:
                await asyncio.sleep(0)  # the flush, scheduled before this, runs first
            writer = self._writer
            if writer is not None:
                try:
                    await asyncio.wait_for(writer, CLOSE_GRACE_S)
                except (TimeoutError, asyncio.CancelledError):
                    writer.cancel()
                except Exception:
                    pass
            await self._close_ws()
        finally:
            # What it still queued will never be written: out of the figures.
            self.conn.stop_counting()

    async def _close_ws(self) -> None:
        with contextlib.suppress(Exception):  # already gone
            await self._send({"type": "websocket.close", "code": self._close_code})

    # -- writing ---------------------------------------------------------------------------

    def _wake_writer(self) -> None:
        """The protocol has output where it had none: write it on the loop's next turn (so that
        what else is queued in this one goes in the same message), unless a writer runs."""
        if self._writer is None and not self._flush_scheduled:
            self.writing_since = self.loop.time()
            self._backlog = -1
            if self._write_now is None:
                self._writer = self.loop.create_task(self._write_loop())
            else:
                self._flush_scheduled = True
                self.gateway.flush_soon(self)

    def _flush(self) -> None:
        """What the protocol has, written now while the transport takes it, without a task:
        a broadcast to 20,000 sockets made a writer task (and its coroutines) per socket, and
        the collector walked them (docs/performance.md, "Scale"). When the transport takes no
        more, or the socket is gone, the writer task takes the rest over (and waits for it)."""
        self._flush_scheduled = False
        if self._writer is not None:
            return
        write = self._write_now
        writable = self._writable_now
        assert write is not None and writable is not None
        conn = self.conn
        assert isinstance(conn, ServerConnection)  # _write_now is set for wsq.v1 sockets only
        outlet = self.outlet
        try:
            while writable():
                pieces = conn.next_output(WRITE_BATCH_BYTES)
                if pieces is None:
                    return
                write(pieces)
                self._written(pieces, outlet)
                if not conn.has_output:
                    return  # all of it written, the common case: no second look
        except Exception:
            pass  # the socket is gone: the writer task meets that and stays as the writer
        self._writer = self.loop.create_task(self._write_loop())

    def _written(self, text: str | bytes | list[bytes], outlet: Outlet) -> None:
        self.last_sent = self.loop.time()
        if log.isEnabledFor(logging.DEBUG):
            subprotocols.sent(b"".join(text).decode() if isinstance(text, list) else text, self.id)
        if outlet.stalled and self.conn.out_bytes < outlet.high_water // 2:
            self.node.hub.drained(outlet)

    async def _write_loop(self) -> None:
        conn = self.conn
        send = self._send
        outlet = self.outlet
        next_message = conn.next_message
        key = "text" if isinstance(conn, ServerConnection) else "bytes"
        try:
            # One message at a time: send() waits while the transport is full, and what waits
            # meanwhile stays counted in out_bytes, where the hub sees it. Output queued while a
            # send waits is taken by the next round, so one writer serves the socket until
            # nothing is left.
            while (text := next_message(WRITE_BATCH_BYTES)) is not None:
                await send({"type": "websocket.send", key: text})
                self._written(text, outlet)
        except Exception:
            # The socket is gone; the reader notices. Keep this finished task as the writer,
            # so that no other starts writing to a dead socket.
            return
        self._writer = None

    # -- timers ----------------------------------------------------------------------------

    def _tick_delay(self, now: float, quiet_since: float) -> float:
        """How long until the socket's next tick: when the client will have been silent for our
        idle, when our heartbeat is due (nothing sent since ``quiet_since`` for our share of
        the client's idle), when the open or the token times out, whichever comes first; while
        output waits to be written, at least every quarter of our idle (``_stalled``)."""
        server = self.node.settings.server
        idle_s = server.idle_ms / 1000
        delay = self.last_recv + idle_s - now
        if self.principal is None:
            delay = min(delay, self.started + server.open_timeout_ms / 1000 - now)
        else:
            delay = min(delay, self.principal.exp - time.time())
        if self._writer is not None:
            delay = min(delay, idle_s / 4)
        client_idle_ms = self.conn.client_idle_ms
        if client_idle_ms:
            delay = min(delay, quiet_since + client_idle_ms * HEARTBEAT_SHARE / 1000 - now)
        return max(delay, MIN_TICK_S)

    def _schedule_tick(self) -> None:
        """The next tick (``_tick_delay``): one timer per socket does every timeout and its
        heartbeats."""
        delay = self._tick_delay(self.loop.time(), self.last_sent)
        self._tick_handle = self.loop.call_later(delay, self._tick)

    def _reschedule_tick(self) -> None:
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        self._schedule_tick()

    def _tick(self) -> None:
        now = self.loop.time()
        conn = self.conn
        if conn.state in (ConnectionState.CLOSED, ConnectionState.CLOSE_SENT):
            return
        server = self.node.settings.server
        waiting_open = conn.state in (ConnectionState.AWAIT_OPEN, ConnectionState.AUTHENTICATING)
        if waiting_open and now - self.started > server.open_timeout_ms / 1000:
            self._fail(IdleTimeout("no open within the open timeout"), reason="open-timeout")
            return
        if now - self.last_recv > server.idle_ms / 1000:
            self._fail(IdleTimeout(f"nothing received for {server.idle_ms} ms"), reason="heartbeat")
            return
        if self._stalled(now, server.idle_ms / 1000):
            # Contract section 3: a client that stops reading is dead, heartbeats or not. Its
            # close cannot be written either: do not wait for the writer.
            self._fail(
                IdleTimeout(f"nothing could be written for {server.idle_ms} ms"),
                flush=False,
                reason="stall",
            )
            return
        if self.principal is not None and time.time() >= self.principal.exp:
            self._fail(TokenExpired("the token expired"), reason="token-expired")
            return
        quiet_since = self.last_sent
        client_idle_ms = conn.client_idle_ms
        # Due now (or within the shortest tick: a timer may fire a little early).
        if client_idle_ms and (
            now - quiet_since >= client_idle_ms * HEARTBEAT_SHARE / 1000 - MIN_TICK_S
        ):
            conn.heartbeat()  # written on the loop's next turn: count it as sent now
            quiet_since = now
        delay = self._tick_delay(now, quiet_since)
        self._tick_handle = self.loop.call_later(delay, self._tick)

    def _stalled(self, now: float, idle_s: float) -> bool:
        """Whether output has waited ``idle_s`` with none of it taken by the client (contract
        section 3). The writer runs while there is output, and each message it gets written
        moves ``last_sent``; while it waits, the client reading what the transport and the
        kernel hold for it (their backlog shrinks) counts as taking output too."""
        writer = self._writer
        if writer is None or writer.done():
            return False
        backlog = backlog_of(self._send)
        if backlog is not None:
            if 0 <= backlog < self._backlog:
                self.writing_since = now
            self._backlog = backlog
        return now - max(self.last_sent, self.writing_since) > idle_s

    def _fail(self, error: WsqError, *, flush: bool = True, reason: str = "error") -> None:
        """Close from a timer: the reader may be parked in receive(), so answer the events
        (every one still queued: settlements too, then the links ending) from here. ``flush``:
        give what is queued a moment to be written first (not for a client that reads nothing).
        ``reason``: what ``wsq_closes_total`` counts it as."""
        if not self._close_reason and not self._closing:
            self._close_reason = reason
        self.conn.close(error)
        self.node.hub.spawn(self._process_events())
        # Do not wait for the client's close: it has been silent, or its token is dead.
        self.loop.call_later(0.2, self._force_close, flush)

    def _force_close(self, flush: bool = True) -> None:
        # Through the hub's task set: the loop keeps only a weak reference to a task.
        self.node.hub.spawn(self._close_socket(flush))

    async def _close_socket(self, flush: bool = True) -> None:
        if flush and self._flush_scheduled:
            await asyncio.sleep(0)  # the flush, scheduled before this, runs first
        if flush and self._writer is not None and not self._writer.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._writer), CLOSE_GRACE_S)
        await self._close_ws()

    # -- events ----------------------------------------------------------------------------

    def _tenant(self) -> str:
        return self.principal.tenant if self.principal is not None else ""

    async def _on_open(self, event: OpenRequested) -> None:
        try:
            principal = await self.node.auth.verify(event.token)
        except (Unauthorized, TokenExpired) as exc:
            # The contract answers a refused open with wsq:unauthorized, whatever the cause.
            self.conn.reject_open(Unauthorized(exc.description))
            return
        try:
            await self.held.connect(principal.tenant)
        except QuotaExceeded as exc:
            self.conn.reject_open(exc)  # in place of our open (max_connections)
            return
        if self.conn.state is not ConnectionState.AUTHENTICATING:
            self.held.release()  # closed while the quota was asked
            return
        self.principal = principal
        self.gateway.authenticated(self, principal.tenant)
        bind_connection(self.id, principal.tenant, principal.sub)
        server = self.node.settings.server
        self.conn.accept_open(
            {
                "node": self.node.node_id,
                "idle": server.idle_ms,
                "max_sessions": server.max_sessions,
                "max_frame_bytes": server.max_frame_bytes,
                "tenant": principal.tenant,
                "sub": principal.sub,
                "exp": principal.exp,
            }
        )
        self.node.webhooks.connection_opened(principal.tenant, principal.sub, self.id)
        # The client's idle and the token's expiry are known now: tick at their pace.
        self._reschedule_tick()
        ticket = self.scope.get(SCOPE_KEY)
        if ticket is not None:
            ticket.authenticated()  # no longer pending (wsq.admission)

    async def _on_refresh(self, event: RefreshRequested) -> None:
        old = self.principal
        try:
            principal = await self.node.auth.verify(event.token)
        except (Unauthorized, TokenExpired) as exc:
            self.conn.close(Unauthorized(f"refresh refused: {exc.description}"))
            return
        if old is None or principal.tenant != old.tenant or principal.sub != old.sub:
            self.conn.close(Unauthorized("refresh must keep the same tenant and sub"))
            return
        self.principal = principal
        self.conn.accept_refresh(principal.exp)
        self._reschedule_tick()  # the expiry moved
        for link in self.conn.links():
            if not self._allowed(link):
                self.conn.detach(link, Forbidden(f"the new token does not allow {link.address}"))

    def _allowed(self, link: Link) -> bool:
        assert self.principal is not None
        rights = self.principal.rights
        if is_sys_address(link.address):
            return sys_stats.may_receive(link, self.principal, self.node.settings.tenants)
        if link.role is Role.SENDER:
            return rights.can_publish(link.address)
        return rights.can_subscribe(link.address)

    async def _on_attach(self, link: Link) -> None:
        if not self._allowed(link):
            verb = "publish to" if link.role is Role.SENDER else "subscribe to"
            self.conn.detach(link, Forbidden(f"the token may not {verb} {link.address}"))
            return
        hub = self.node.hub
        # The gateway's own figures ($sys.) are in no tenant's namespace nor address quota.
        tenant = SYS_TENANT if is_sys_address(link.address) else self._tenant()
        quotas = self.node.quotas
        # max_links, then max_addresses and max_groups: QuotaExceeded detaches the link
        # (_answer_events); its LinkEnded gives back what it took.
        await self.held.attach(link)
        if link.role is Role.SENDER:
            # A sender's address is admitted by its publishes (PublishService).
            self.conn.accept_attach(link)
            return
        if link.presence:
            assert self.principal is not None
            client = f"{self.node.node_id}-{self.id}"
            assert isinstance(self.conn, ServerConnection)  # AMQP links have no presence
            await present_links.join(self.node, self.conn, self.principal, client, link)
        if link.mode == "copy":
            if tenant is not SYS_TENANT:
                await quotas.address(tenant, link.address)
            after, recovered = await hub.attach_copy(tenant, link, self.outlet)
            if link.state is not LinkState.ATTACHING:
                await hub.detach(link, [])
                return
            self.conn.accept_attach(link, from_=after, recovered=recovered)
        else:
            await quotas.group(tenant, link.address, link.group)
            consumer = f"{self.node.node_id}-{self.id}-{link.ch}-{link.handle}"
            await hub.attach_move(tenant, link, self.outlet, consumer)
            self.conn.accept_attach(link)
        hub.activate(link)
        self.node.presence.greet(link)
        if tenant is not SYS_TENANT:
            self.node.occupancy.attached(tenant, link)

    async def _on_publish(self, event: PublishRequested) -> None:
        link = event.link
        principal = self.principal
        assert principal is not None
        items = event.items
        valid = [item for item in items if item.error is None]
        positions: dict[int, str] = {}
        failure: WsqError | None = None
        if valid:
            messages = [item.props.message(item.body, principal.sub) for item in valid]
            try:
                published = await self.node.publishing.publish(principal, link.address, messages)
                for item, result in zip(valid, published.results, strict=True):
                    positions[item.delivery] = result.id
            except WsqError as exc:
                failure = exc
            except Exception:
                # A result per message or none: these transfers are refused, the link goes on.
                log.exception("publish on %s answered unexpectedly", link.address)
                failure = InternalError("the message could not be stored")
        results: list[tuple[Any, str | None, WsqError | None]] = []
        for item in items:
            if item.error is not None:
                results.append((item, None, InvalidFrame(item.error)))
            elif failure is not None:
                results.append((item, None, failure))
            else:
                results.append((item, positions[item.delivery], None))
        self.conn.settle_publish(link, results)
        # The publisher's answer (its credit) goes out before the deliveries this publish woke,
        # not after a write to each of their sockets: it may publish on meanwhile.
        self.gateway.flush_first(self)

    def _on_ended(self, event: ConnectionEnded) -> None:
        self._closing = True
        error = event.error
        if not self._close_reason:
            self._close_reason = (
                "client" if event.by_peer else "server" if error is None else "error"
            )
        if error is not None:
            self._close_code = _CLOSE_CODES.get(str(error.get("condition")), 1008)

    def refuse(self, error: WsqError, reason: str) -> None:
        """End the connection from outside its reader (its carrier refused what came)."""
        self._fail(error, reason=reason)

    def going_away(self) -> None:
        """The node drains: tell the client to reconnect elsewhere."""
        self._fail(GoingAway("the node is shutting down; reconnect"), reason="going-away")
