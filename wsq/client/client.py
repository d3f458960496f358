"""The ``Client``: the public object that composes the rest. It checks its options, keeps the
subscriptions (``subscription.py``) and the senders (``sender.py``) across sockets, puts
publishes in the outbox (``outbox.py``), and owns the life cycle: connect, reconnect with
full-jitter backoff (``backoff.py``) when a socket (``connection.py``) is lost, give up on a
refused token (``token.py``), close."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Literal

import websockets
from websockets.exceptions import InvalidHandshake, InvalidURI

from . import errors
from .backoff import STABLE_S, Backoff
from .connection import Connection, Link
from .errors import ClientError
from .outbox import Outbox
from .sender import Senders
from .subscription import Handler, Subscription
from .token import Token, TokenSource
from .wire import (
    AUTH_CONDITIONS,
    DEFAULT_MAX_FRAME_BYTES,
    MAX_MESSAGE_BYTES,
    SUBPROTOCOL,
    OpenInfo,
    check_idle,
    from_wire,
    is_subscribable,
    open_frame,
    subscribe_options,
)

VERSION = "0.1.0"
log = logging.getLogger("wsq.client")

State = Literal["connecting", "connected", "disconnected", "closed"]
Event = Literal["state", "open", "refresh", "error", "gap"]
EVENTS: frozenset[str] = frozenset({"state", "open", "refresh", "error", "gap"})


def websocket_url(url: str) -> str:
    """``http(s)://`` becomes ``ws(s)://``; anything but ws/wss is refused."""
    if url.startswith("http://"):
        url = "ws://" + url[len("http://") :]
    elif url.startswith("https://"):
        url = "wss://" + url[len("https://") :]
    if not url.startswith(("ws://", "wss://")):
        raise ValueError(f"a ws:// or wss:// URL expected, got {url!r}")
    return url


class Client:
    """One wsq.v1 connection that outlives its sockets. Times are in seconds.

    ``async with Client(url, token=...) as client:`` connects (and raises ``ClientError`` if
    the first connection fails for good, or does not open within ``connect_timeout``).
    """

    def __init__(
        self,
        url: str,
        *,
        token: TokenSource,
        idle: float = 30.0,
        connect_timeout: float = 10.0,
        reconnect_delay: float = 0.5,
        max_reconnect_delay: float = 30.0,
        credit: int = 100,
        outbox_size: int = 1000,
        outbox_bytes: int = 16 * 1_048_576,
        links_per_session: int = 64,
        max_sessions: int = 64,
        max_senders: int = 64,
        refresh_before: float = 60.0,
        close_timeout: float = 1.0,
        client_name: str = f"wsq-python/{VERSION}",
        message_id_prefix: str | None = None,
        compact: bool = True,
    ) -> None:
        self.url = websocket_url(url)
        self.idle_ms = check_idle(round(idle * 1000))
        for name, value in (
            ("connect_timeout", connect_timeout),
            ("close_timeout", close_timeout),
            ("reconnect_delay", reconnect_delay),
        ):
            if not value > 0:
                raise ValueError(f"{name}: > 0 s")
        for name, count in (
            ("credit", credit),
            ("links_per_session", links_per_session),
            ("max_sessions", max_sessions),
            ("max_senders", max_senders),
            ("outbox_size", outbox_size),
        ):
            if not (type(count) is int and count >= 1):
                raise ValueError(f"{name}: an integer >= 1")
        self.connect_timeout = connect_timeout
        self.close_timeout = close_timeout
        self.credit = credit
        self.client_name = client_name[:256]
        if type(compact) is not bool:
            raise ValueError("compact: a bool")
        #: Ask for the compact delivery form in ``open``; the handlers see the same messages.
        self.compact = compact
        self._links_per_session = links_per_session
        self._max_sessions_option = max_sessions
        self._max_sessions = max_sessions
        self._max_frame_bytes = DEFAULT_MAX_FRAME_BYTES
        self._token = Token(self, token, refresh_before)
        self._backoff = Backoff(reconnect_delay, max_reconnect_delay)
        self._outbox = Outbox(outbox_size, outbox_bytes, message_id_prefix)
        self._subscriptions: set[Subscription] = set()
        self._senders = Senders(max_senders)
        self._listeners: dict[str, list[Callable[[Any], object]]] = {e: [] for e in EVENTS}
        self._state: State = "disconnected"
        self._conn: Connection | None = None
        self._info: OpenInfo | None = None
        self._closed = False
        self._fatal: ClientError | None = None
        self._run_task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._connected = asyncio.Event()
        #: Sockets opened so far (a refresh keeps the socket: this does not move).
        self.connections = 0

    # -- public ------------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def connected(self) -> bool:
        return self._state == "connected"

    @property
    def info(self) -> OpenInfo | None:
        """The server's ``open`` answer on the current socket (node, tenant, sub, exp, ...)."""
        return self._info if self.connected else None

    @property
    def pending_publishes(self) -> int:
        """Publishes not yet confirmed: waiting in the outbox or sent and unanswered."""
        return self._outbox.count

    def on(self, event: Event, callback: Callable[[Any], object]) -> Callable[[], None]:
        """Call ``callback(arg)`` on ``event``; answers a function that removes it.
        ``state``: the new state; ``open``: the ``OpenInfo``; ``refresh``: the new ``exp``;
        ``error``: a ``ClientError``; ``gap``: ``{address, from, subscription}``."""
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r}; one of {sorted(EVENTS)}")
        self._listeners[event].append(callback)
        return lambda: self._listeners[event].remove(callback)

    def start(self) -> None:
        """Start connecting in the background (``connect`` also waits for the first open)."""
        if self._closed:
            raise ClientError(errors.CLOSED, "the client is closed")
        if self._run_task is None:
            self._set_state("connecting")
            self._run_task = asyncio.create_task(self._run())

    async def connect(self) -> None:
        """Start, and wait until the gateway opened the connection (at most
        ``connect_timeout``); on failure the client is closed and ``ClientError`` raised."""
        self.start()
        try:
            async with asyncio.timeout(self.connect_timeout):
                await self.wait_connected()
        except TimeoutError:
            await self.close()
            raise ClientError(
                errors.SOCKET, f"not connected within {self.connect_timeout} s", scope="connection"
            ) from None
        except BaseException:
            await self.close()
            raise

    async def wait_connected(self) -> None:
        """Wait until connected; ``ClientError`` when the client closed meanwhile."""
        while not self.connected:
            if self._closed:
                raise self._fatal or ClientError(errors.CLOSED, "the client is closed")
            waiter = asyncio.ensure_future(self._connected.wait())
            stopper = asyncio.ensure_future(self._stop.wait())
            try:
                await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                stopper.cancel()

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def subscribe(
        self,
        address: str,
        handler: Handler | None = None,
        *,
        from_: str | None = None,
        rewind: int | None = None,
        conflate: float | None = None,
        filter: str | None = None,
        credit: int | None = None,
        settled: bool = False,
        mode: Literal["copy", "move"] = "copy",
        group: str | None = None,
        lease: float | None = None,
    ) -> Subscription:
        """A receiver link on ``address``, attached (``ClientError`` when the gateway refuses
        it). Without ``handler``, read it with ``async for msg in sub``. Copy mode (a feed):
        ``from_`` ("$" new only, "^" oldest retained, or a position), ``rewind`` (the last N
        retained), ``conflate`` (s: at most one message per subject per period). ``filter``: a
        subject pattern."""
        if self._closed:
            raise ClientError(errors.CLOSED, "the client is closed")
        if not is_subscribable(address):
            raise ClientError(
                "wsq:invalid-frame", f"not an address: {address!r}", scope="link", address=address
            )
        opts = subscribe_options(
            mode=mode,
            from_=from_,
            rewind=rewind,
            conflate=None if conflate is None else round(conflate * 1000),
            filter=filter,
            group=group,
            lease=lease,
            credit=credit,
            settled=settled,
        )
        sub = Subscription(self, address, opts, handler)
        self._subscriptions.add(sub)
        sub.start()
        self._place(sub)
        try:
            await sub.wait_ready()
        except asyncio.CancelledError:
            # The caller gave up waiting: the link must not live on unseen.
            sub.detach()
            raise
        return sub

    async def consume(
        self,
        address: str,
        handler: Handler | None = None,
        *,
        group: str = "default",
        lease: float | None = None,
        credit: int | None = None,
        filter: str | None = None,
    ) -> Subscription:
        """A competing consumer of ``group`` on the queue ``address`` (move mode). With a
        handler, each message is accepted when it returns and released when it raises; in an
        ``async for``, settle each one: ``await msg.accept()`` (or release, reject, modify)."""
        return await self.subscribe(
            address, handler, mode="move", group=group, lease=lease, credit=credit, filter=filter
        )

    async def publish(
        self,
        address: str,
        body: Any,
        *,
        subject: str | None = None,
        message_id: str | None = None,
        ttl: float | None = None,
        content_type: str | None = None,
        headers: Mapping[str, Any] | None = None,
    ) -> str:
        """Publish ``body`` to ``address``; answers its position once the gateway stored it.
        Made while disconnected, it waits in the outbox and goes after the reconnect; a
        generated ``message_id`` makes a resend after a lost answer be stored once."""
        if self._closed:
            raise ClientError(errors.CLOSED, "the client is closed", address=address)
        item = self._outbox.add(
            address,
            body,
            max_frame_bytes=self._max_frame_bytes,
            subject=subject,
            message_id=message_id,
            ttl=ttl,
            content_type=content_type,
            headers=headers,
        )
        sender = self._senders.of(self, address)
        sender.last_used = time.monotonic()
        sender.queue.append(item)
        if sender._binding is None and not sender.waiting_retry:
            self._place(sender)
        else:
            sender.pump()
        return await item.future

    async def close(self) -> None:
        """Close for good; pending publishes raise ``wsq-client:closed``."""
        self._shutdown(ClientError(errors.CLOSED, "the client was closed"))
        task = self._run_task
        if task is not None:
            # The close handshake takes at most close_timeout twice (ours, then the socket's);
            # a connect stuck on a silent host is not waited for.
            await asyncio.wait({task}, timeout=2 * self.close_timeout + 0.5)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._set_state("closed")

    # -- connecting --------------------------------------------------------------------------

    def _set_state(self, state: State) -> None:
        if self._state != state:
            self._state = state
            if state == "connected":
                self._connected.set()
            else:
                self._connected.clear()
            self._emit("state", state)

    def _emit(self, event: str, arg: object) -> None:
        for callback in list(self._listeners[event]):
            try:
                callback(arg)
            except Exception:
                log.exception("a %s listener failed", event)  # a listener's bug is not ours
        if event == "error" and not self._listeners[event]:
            log.debug("wsq client: %s", arg)

    async def _sleep(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._stop.wait()

    async def _run(self) -> None:
        try:
            while not self._closed:
                delay = await self._connect_once()
                if delay is None:
                    return
                self._set_state("disconnected")
                await self._sleep(delay)
        finally:
            self._conn = None
            self._set_state("closed")

    async def _connect_once(self) -> float | None:
        """One socket from connect to loss; answers how long to wait before the next, or
        None when the client is done."""
        self._set_state("connecting")
        try:
            token = await self._token.get()
        except Exception as exc:
            self._emit("error", ClientError(errors.TOKEN, repr(exc)))
            return self._backoff.next()
        if self._closed:
            return None
        if self._token.is_refused(token):
            self._give_up(
                ClientError(
                    "wsq:unauthorized",
                    "the token was refused and no other token is available",
                    scope="connection",
                    fatal=True,
                )
            )
            return None
        try:
            async with asyncio.timeout(self.connect_timeout):
                ws = await websockets.connect(
                    self.url,
                    subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                    max_size=MAX_MESSAGE_BYTES,
                    ping_interval=None,  # wsq.v1 heartbeats instead (what the gateway counts)
                    close_timeout=self.close_timeout,
                    open_timeout=None,
                )
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            self._emit("error", ClientError(errors.SOCKET, repr(exc), scope="connection"))
            return self._backoff.next()
        if self._closed:
            await ws.close()
            return None
        if ws.subprotocol != SUBPROTOCOL:
            self._emit(
                "error",
                ClientError("wsq:invalid-frame", "the server chose no wsq.v1", scope="connection"),
            )
            await ws.close()
            return self._backoff.next()
        conn = Connection(self, ws, token)
        self._conn = conn
        self.connections += 1
        # Pipelined: the gateway applies these in order once the token is verified.
        conn.send(open_frame(token, self.idle_ms, self.client_name, self.compact))
        for sub in list(self._subscriptions):
            if not sub.waiting_retry:
                self._place(sub)
        for sender in list(self._senders.values()):
            if not sender.idle and not sender.waiting_retry:
                self._place(sender)
        await conn.run()
        self._conn = None
        return self._after_loss(conn)

    def _after_loss(self, conn: Connection) -> float | None:
        if self._closed:
            return None
        error = conn.close_received if isinstance(conn.close_received, dict) else None
        condition = error.get("condition") if error else None
        if condition in AUTH_CONDITIONS:
            failure = from_wire(error, "connection")
            if not self._token.retry_after_refusal(conn):
                failure.fatal = True
                self._give_up(failure)
                return None
            self._emit("error", failure)  # ask the token callable once more
            return 0.0
        if error:
            self._emit("error", from_wire(error, "connection"))
        if conn.opened and time.monotonic() - conn.opened_at >= STABLE_S:
            self._backoff.attempts = 0
        if condition == "wsq:going-away" and conn.opened:
            return self._backoff.soon()  # the node is draining: come back promptly
        return self._backoff.next()

    def _place(self, link: Link) -> None:
        """A link onto the current socket; refused when the socket has no room left."""
        conn = self._conn
        if conn is None or not conn.usable:
            return
        error = conn.place(link, self._links_per_session, self._max_sessions)
        if error is not None:
            link.refuse(error)

    # -- what the socket tells ---------------------------------------------------------------

    def _opened(self, conn: Connection) -> None:
        assert conn.info is not None
        self._info = conn.info
        self._max_frame_bytes = conn.info.max_frame_bytes
        self._max_sessions = min(self._max_sessions_option, conn.info.max_sessions)
        self._token.accepted()
        self._token.schedule(conn)
        self._set_state("connected")
        self._emit("open", conn.info)

    def _refreshed(self, conn: Connection, exp: int) -> None:
        if conn.info is not None:
            conn.info = dataclasses.replace(conn.info, exp=exp)
            self._info = conn.info
        self._token.schedule(conn)
        self._emit("refresh", exp)

    # -- closing -----------------------------------------------------------------------------

    def _give_up(self, error: ClientError) -> None:
        self._fatal = error
        self._emit("error", error)
        self._shutdown(error)

    def _shutdown(self, error: ClientError) -> None:
        """Stop for good: fail what is pending, close the socket, end every subscription."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        conn = self._conn
        if conn is not None:
            conn.unbind()  # unanswered publishes back in their queues, to fail below
        senders = list(self._senders.values())
        self._senders.clear()
        for sender in senders:
            sender.fail_all(
                error
                if error.fatal
                else ClientError(error.condition, error.description, address=sender.address)
            )
        for sub in list(self._subscriptions):
            sub._end(error if error.fatal else None)
        if conn is not None:
            conn.send_close(None)
