"""One socket: a ``Connection`` owns one WebSocket from ``open`` to its loss. It batches what the
client sends (under the gateway's ``max_frame_bytes``), heartbeats at a little under half the
server's idle, notices the server's silence, answers ``close``, keeps the sessions and links of
this socket, and drops the socket with ``wsq:invalid-frame`` when the server breaks the contract
(``wire.py`` says what breaks it). Whether and when to reconnect is ``client.py``'s business."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from wsq.core import codec
from wsq.core.limits import MAX_CHANNEL, MAX_UINT32

from .errors import ClientError
from .sender import Sender
from .subscription import Subscription
from .wire import (
    OpenInfo,
    Violation,
    channel,
    check_frame,
    disposition_range,
    expand_transfers,
    flow_credit,
    from_wire,
    handle,
    is_uint,
    parse_message,
    read_open,
)

if TYPE_CHECKING:
    from .client import Client
    from .outbox import OutboxItem

Link = Subscription | Sender

#: Heartbeats go at this fraction of the server's idle: under the half the contract asks, with
#: room for a loaded event loop.
HEARTBEAT_FRACTION = 0.4


@dataclass(eq=False)
class Session:
    ch: int
    links: dict[int, Binding] = field(default_factory=dict)
    next_handle: int = 0
    next_delivery: int = 0  # our numbering of transfers on this session
    pending: dict[int, OutboxItem] = field(default_factory=dict)  # delivery -> publish
    ending: bool = False


@dataclass(eq=False)
class Binding:
    """One link (a Subscription or a Sender) attached on one session of one socket."""

    conn: Connection
    session: Session
    handle: int
    link: Link
    attached: bool = False  # the server answered our attach
    detaching: bool = False  # we sent detach; frames crossing ours are ignored
    credit: int = 0  # receiver: credit the server holds; sender: credit it gave us

    @property
    def live(self) -> bool:
        return not self.detaching and self.conn.usable and self.conn.client._conn is self.conn


class Connection:
    def __init__(self, client: Client, ws: ClientConnection, token: str) -> None:
        self.client = client
        self.ws = ws
        self.token = token
        self.info: OpenInfo | None = None
        self.opened_at = 0.0
        self.max_frame_bytes = client._max_frame_bytes
        self.sessions: dict[int, Session] = {}
        self._next_ch = 0
        self._out: list[str] = []
        self._wake = asyncio.Event()
        self.close_sent = False
        #: The server's close: its error (a dict), or True without one.
        self.close_received: dict[str, Any] | bool | None = None
        self.dead = False
        self.refresh_task: asyncio.Task[None] | None = None

    @property
    def opened(self) -> bool:
        return self.info is not None

    @property
    def usable(self) -> bool:
        return not self.dead and not self.close_sent and not self.close_received

    # -- sending -----------------------------------------------------------------------------

    def send(self, f: dict[str, Any]) -> None:
        self.send_text(codec.dumps(f))

    def send_text(self, text: str) -> None:
        if self.usable:
            self._out.append(text)
            self._wake.set()

    def send_close(self, error: dict[str, Any] | None) -> None:
        """Our close; nothing queued after it goes out."""
        if self.dead or self.close_sent:
            return
        self._out.append(codec.dumps({"op": "close", "error": error} if error else {"op": "close"}))
        self.close_sent = True
        self._wake.set()

    def _batches(self) -> list[str]:
        """What is queued, in as few WebSocket messages as max_frame_bytes allows."""
        out, self._out = self._out, []
        batches: list[str] = []
        batch: list[str] = []
        size = 2
        for text in out:
            n = len(text.encode())
            if batch and size + n + 1 > self.max_frame_bytes:
                batches.append(batch[0] if len(batch) == 1 else f"[{','.join(batch)}]")
                batch, size = [], 2
            batch.append(text)
            size += n + 1
        if batch:
            batches.append(batch[0] if len(batch) == 1 else f"[{','.join(batch)}]")
        return batches

    async def _write(self) -> None:
        last_sent = time.monotonic()
        while True:
            timeout: float | None = None
            if self.info is not None and self.info.idle_ms > 0:
                period = self.info.idle_ms / 1000 * HEARTBEAT_FRACTION
                timeout = max(0.0, last_sent + period - time.monotonic())
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                if not self._out and not self.close_sent:
                    self._out.append("[]")  # nothing to say: a heartbeat
            self._wake.clear()
            for text in self._batches():
                await self.ws.send(text)
                last_sent = time.monotonic()
            if self.close_sent and not self._out:
                return  # our close is out: nothing more goes on this socket

    # -- receiving ---------------------------------------------------------------------------

    async def _read(self) -> None:
        client = self.client
        started = time.monotonic()
        while True:
            timeout: float | None
            if self.info is None:
                timeout = max(0.0, started + client.connect_timeout - time.monotonic())
            else:
                timeout = client.idle_ms / 1000 if client.idle_ms else None
            try:
                async with asyncio.timeout(timeout):
                    data = await self.ws.recv()
            except TimeoutError:
                what = "the gateway did not answer open" if self.info is None else "silence"
                client._emit("error", ClientError("wsq:idle-timeout", what, scope="connection"))
                self.send_close(
                    {"condition": "wsq:idle-timeout", "description": "nothing received"}
                )
                return
            try:
                for f in parse_message(data):
                    if self.close_received:
                        break  # nothing counts after the server's close
                    self._on_frame(f)
            except Exception as exc:
                # A frame we failed on, whatever the reason, ends this socket, never the client.
                what = (
                    str(exc)
                    if isinstance(exc, Violation)
                    else f"a frame the client failed on: {exc!r}"
                )
                error = {"condition": "wsq:invalid-frame", "description": f"the server sent {what}"}
                client._emit("error", from_wire(error, "connection"))
                self.send_close(error)
                return
            if self.close_received and self.close_sent:
                return

    async def run(self) -> None:
        """Drive the socket until it is lost or closed; everything bound to it is unbound."""
        reader = asyncio.create_task(self._read())
        writer = asyncio.create_task(self._write())
        try:
            await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
            if self.close_sent:
                # Our close goes out, and the server has close_timeout to answer it (or to
                # close the socket after our answer to its close).
                with contextlib.suppress(TimeoutError, ConnectionClosed, OSError):
                    async with asyncio.timeout(self.client.close_timeout):
                        if not writer.done():
                            await writer
                        if not reader.done():
                            await reader
        finally:
            self.dead = True
            for task in (reader, writer, self.refresh_task):
                if task is not None:
                    task.cancel()
            for task in (reader, writer):
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed, OSError):
                    await task
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.client.close_timeout):
                    await self.ws.close()
            self.unbind()

    # -- sessions and links ------------------------------------------------------------------

    def place(self, link: Link, links_per_session: int, max_sessions: int) -> ClientError | None:
        """Attach ``link`` on a session with room (a new one begun when needed); the error when
        the socket has no room left for it."""
        if not self.usable or link._binding is not None:
            return None
        session = next(
            (
                s
                for s in self.sessions.values()
                if not s.ending and len(s.links) < links_per_session and s.next_handle <= MAX_UINT32
            ),
            None,
        )
        if session is None:
            if len(self.sessions) >= max_sessions:
                return ClientError(
                    "wsq:resource-limit-exceeded",
                    f"more than {max_sessions * links_per_session} links",
                    scope="link",
                    address=link.address,
                )
            ch = self._next_ch
            while ch % (MAX_CHANNEL + 1) in self.sessions:
                ch += 1
            ch %= MAX_CHANNEL + 1
            self._next_ch = ch + 1
            session = self.sessions[ch] = Session(ch)
            self.send({"op": "begin", "ch": ch})
        b = Binding(self, session, session.next_handle, link)
        session.next_handle += 1
        session.links[b.handle] = b
        link._binding = b
        self.send(link.attach_frame(b))
        return None

    def unbind(self) -> None:
        """Every link unbound, and its unanswered publishes back in their senders' queues."""
        for session in self.sessions.values():
            self._drop_session(session)
        self.sessions.clear()

    def _drop_session(self, session: Session) -> None:
        for b in session.links.values():
            b.link.on_lost(b)
        for item in session.pending.values():
            assert item.binding is not None
            link = item.binding.link
            assert isinstance(link, Sender)
            link.requeue(item)
        session.pending.clear()

    # -- what the server sends ---------------------------------------------------------------

    def _session(self, f: dict[str, Any]) -> Session:
        session = self.sessions.get(channel(f))
        if session is None:
            raise Violation(f"{f['op']!r} on a channel that is not begun")
        return session

    def _binding(self, f: dict[str, Any]) -> Binding:
        b = self._session(f).links.get(handle(f))
        if b is None:
            raise Violation(f"{f['op']!r} on a handle that is not attached")
        return b

    def _on_frame(self, raw: Any) -> None:
        f = check_frame(raw, self.opened)
        op = f["op"]
        if op == "open":
            if self.info is not None:
                raise Violation("a second open")
            self.info = read_open(f)
            self.opened_at = time.monotonic()
            self.max_frame_bytes = self.info.max_frame_bytes
            self._wake.set()  # the heartbeat period is known now
            self.client._opened(self)
        elif op == "refresh":
            exp = f.get("exp")
            if not is_uint(exp):
                raise Violation("a refresh without exp")
            self.client._refreshed(self, exp)
        elif op == "close":
            error = f.get("error")
            self.close_received = error if isinstance(error, dict) else True
            self.send_close(None)  # our answer; then the server closes the socket
        elif op == "begin":
            self._session(f)
        elif op == "end":
            self._on_end(f)
        elif op == "attach":
            b = self._binding(f)
            if b.detaching:
                return
            if b.attached:
                raise Violation("a second attach")
            b.attached = True
            b.link.on_attached(b, f)
            if isinstance(b.link, Subscription):
                b.link._refill()
        elif op == "flow":
            b = self._binding(f)
            credit = flow_credit(f)
            if not b.detaching and isinstance(b.link, Sender):
                b.link.on_flow(b, credit)
        elif op == "transfer":
            b = self._binding(f)
            if b.detaching:
                return
            if not isinstance(b.link, Subscription):
                raise Violation("a transfer on a sender link")
            b.link.on_transfer(b, f)
        elif op == "transfers":
            # The compact form: the same deliveries, the shared fields said once.
            b = self._binding(f)
            if b.detaching:
                return
            if not isinstance(b.link, Subscription):
                raise Violation("a transfer on a sender link")
            for t in expand_transfers(f):
                b.link.on_transfer(b, t)
        elif op == "disposition":
            self._on_disposition(f)
        elif op == "detach":
            self._on_detach(f)
        # "presence" frames: links of this client never ask for them; ignored.

    def _on_end(self, f: dict[str, Any]) -> None:
        session = self._session(f)
        del self.sessions[session.ch]
        self._drop_session(session)
        if session.ending:
            return
        # The server ended a session of ours: a limit, or a mistake of ours. Start afresh.
        if f.get("error"):
            self.client._emit("error", from_wire(f.get("error"), "session"))
        self.send({"op": "end", "ch": session.ch})
        self.send_close(None)

    def _on_disposition(self, f: dict[str, Any]) -> None:
        session = self._session(f)
        first, last = disposition_range(f)
        pending = session.pending
        if not pending:
            return
        outcome = f.get("outcome", "accepted")
        ids = f.get("ids")
        outbox = self.client._outbox
        for d in [d for d in pending if first <= d <= last]:
            item = pending[d]
            assert item.binding is not None
            sender = item.binding.link
            assert isinstance(sender, Sender)
            if outcome == "accepted":
                position = (
                    ids[d - first] if isinstance(ids, list) and d - first < len(ids) else None
                )
                if not isinstance(position, str):
                    raise Violation("an accepted disposition without its ids")
                del pending[d]
                sender.inflight -= 1
                outbox.finish(item, None, position)
            else:
                del pending[d]
                sender.inflight -= 1
                error = from_wire(f.get("error"), "message", item.address)
                outbox.finish(item, error)

    def _on_detach(self, f: dict[str, Any]) -> None:
        b = self._binding(f)
        del b.session.links[b.handle]
        if b.detaching:
            b.link.on_detached(b, None)  # the answer to ours
            return
        b.detaching = True
        self.send({"op": "detach", "ch": b.session.ch, "handle": b.handle})
        error = f.get("error")
        b.link.on_detached(b, error if isinstance(error, dict) else None)
