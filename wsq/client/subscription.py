"""Receiving: a ``Subscription`` is one receiver link that outlives sockets. It queues what the
gateway delivers (at most its credit window), hands messages out one at a time (to a handler, or
to an ``async for``), refills credit as they are consumed, keeps its resume position (copy mode)
and re-attaches after a retryable detach. Which socket and session it is on is
``connection.py``'s business."""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from . import errors
from .errors import ClientError
from .wire import (
    FINAL_LINK_CONDITIONS,
    LinkOptions,
    Outcome,
    Violation,
    check_transfer,
    from_wire,
    is_position,
    is_uint,
    position_key,
    receiver_frame,
)

if TYPE_CHECKING:
    from .client import Client
    from .connection import Binding

Handler = Callable[["Message"], Awaitable[None] | None]


class Message:
    """One delivery: ``id`` (its position), ``body``, ``props``; in move mode it is settled with
    ``accept``, ``release``, ``reject`` or ``modify``."""

    __slots__ = ("_binding", "_settled", "address", "body", "delivery", "id", "props")

    def __init__(self, binding: Binding, address: str, f: Mapping[str, Any], settled: bool) -> None:
        self.id: str = f["id"]
        self.body: Any = f.get("body")
        props = f.get("props")
        self.props: dict[str, Any] = props if isinstance(props, dict) else {}
        self.address = address
        self.delivery: int = f["delivery"]
        self._binding = binding
        self._settled = settled

    @property
    def subject(self) -> str | None:
        subject = self.props.get("subject")
        return subject if isinstance(subject, str) else None

    @property
    def message_id(self) -> str | None:
        mid = self.props.get("message_id")
        return mid if isinstance(mid, str) else None

    @property
    def headers(self) -> dict[str, Any]:
        headers = self.props.get("headers")
        return headers if isinstance(headers, dict) else {}

    @property
    def redelivered(self) -> int:
        """Earlier deliveries that ended without an outcome (move mode): >= 1 means this one
        may already have been processed."""
        n = self.props.get("redelivered")
        return n if is_uint(n) else 0

    @property
    def settled(self) -> bool:
        return self._settled

    def settle(self, outcome: Outcome = "accepted") -> bool:
        """Settle this delivery; answers whether a disposition went out (False when it was
        settled already, or its socket is gone: then the gateway gave it back to the group)."""
        if self._settled:
            return False
        self._settled = True
        b = self._binding
        if not b.live or b.link._binding is not b:
            return False
        b.conn.send({"op": "disposition", "ch": b.session.ch, "first": self.delivery,
                     "outcome": outcome})  # fmt: skip
        return True

    async def accept(self) -> bool:
        """Done: in move mode the message is removed from the queue."""
        return self.settle("accepted")

    async def release(self) -> bool:
        """Not mine: at once to another consumer of the group (not counted as a redelivery)."""
        return self.settle("released")

    async def reject(self) -> bool:
        """Never again: dead-lettered where the tenant has a dead-letter address."""
        return self.settle("rejected")

    async def modify(self) -> bool:
        """Later: redelivered after a delay, with ``redelivered`` counted."""
        return self.settle("modified")

    def __repr__(self) -> str:
        return f"Message(address={self.address!r}, id={self.id!r}, body={self.body!r})"


class Subscription:
    """A receiver link: ``async for msg in sub`` or a handler. ``position`` is the position of
    the last message handed out (copy mode)."""

    def __init__(
        self, client: Client, address: str, opts: LinkOptions, handler: Handler | None
    ) -> None:
        self.client = client
        self.address = address
        self.options = opts
        self.mode = opts.mode
        self._window = opts.credit or client.credit
        self._handler = handler
        self.position: str | None = None
        self._resume: str | None = None  # the last position received (or where we started)
        self._queue: deque[Message] = deque()
        self._wake = asyncio.Event()
        self._binding: Binding | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._retries = 0
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pump: asyncio.Task[None] | None = None
        self._error: ClientError | None = None
        self._detached = asyncio.Event()
        #: The subscription ended: unsubscribed, refused, or its client closed.
        self.closed = False
        #: Attached on the current socket.
        self.attached = False
        self.recovered = True

    # -- the user's side ---------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        while not self._queue:
            if self.closed:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            self._wake.clear()
            await self._wake.wait()
        msg = self._queue.popleft()
        if self.mode == "copy":
            self.position = msg.id
        self._refill()
        return msg

    async def get(self) -> Message:
        """The next message (``async for`` one at a time)."""
        return await self.__anext__()

    async def unsubscribe(self) -> None:
        """Stop receiving; returns once the gateway confirmed (or at once when offline)."""
        if self.detach():
            await self._detached.wait()

    def detach(self) -> bool:
        """End the subscription and send its detach; answers whether one went out."""
        b = self._binding
        self._end(None)
        if b is None or not b.live:
            return False
        b.detaching = True
        b.conn.send({"op": "detach", "ch": b.session.ch, "handle": b.handle})
        return True

    # -- the client's side -------------------------------------------------------------------

    def start(self) -> None:
        if self._handler is not None:
            self._pump = asyncio.create_task(self._run_handler(self._handler))

    async def wait_ready(self) -> None:
        await asyncio.shield(self._ready)

    def attach_frame(self, b: Binding) -> dict[str, Any]:
        credit = max(0, self._window - len(self._queue))
        b.credit = credit
        return receiver_frame(
            b.session.ch, b.handle, self.address, self.options, credit=credit, resume=self._resume
        )

    def on_attached(self, b: Binding, f: Mapping[str, Any]) -> None:
        self.attached = True
        self._retries = 0
        start = f.get("from")
        if self.mode == "copy" and self._resume is None and is_position(start):
            self._resume = start  # what "$" or "^" resolved to
        if not self._ready.done():
            self._ready.set_result(None)
        if f.get("recovered") is False:
            # Retention dropped messages between our position and the oldest one retained.
            self.recovered = False
            info = {"address": self.address, "from": start, "subscription": self}
            self.client._emit("gap", info)

    def on_transfer(self, b: Binding, f: Mapping[str, Any]) -> None:
        # The gateway sends only against the credit we granted; ours never lags its view.
        if b.credit <= 0:
            raise Violation("transfers beyond the credit granted")
        b.credit -= 1
        check_transfer(f)
        if self.closed:
            return
        if self.mode == "copy":
            # Resume and crossing frames must never hand a message out twice.
            if self._resume is not None and position_key(f["id"]) <= position_key(self._resume):
                self._refill()
                return
            self._resume = f["id"]
        settled = self.mode != "move" or f.get("settled") is True
        self._queue.append(Message(b, self.address, f, settled))
        self._wake.set()

    def on_lost(self, b: Binding) -> None:
        if self._binding is not b:
            return
        self._binding = None
        self.attached = False
        # Move deliveries of a lost link went back to the group: they are not ours any more.
        if self.mode == "move":
            self._queue.clear()
        self._detached.set()

    def on_detached(self, b: Binding, error: object) -> None:
        self.on_lost(b)
        if self.closed:
            return
        failure = from_wire(
            error or {"condition": "wsq:not-found", "description": "detached"}, "link", self.address
        )
        if error and failure.condition in FINAL_LINK_CONDITIONS:
            self._end(failure)
            return
        # Storage trouble or a limit: try again later on whatever socket is current.
        self.client._emit("error", failure)
        self.retry_later()

    def retry_later(self) -> None:
        delay = self.client._backoff.delay(self._retries)
        self._retries += 1
        if self._retry is not None:
            self._retry.cancel()
        self._retry = asyncio.get_running_loop().call_later(delay, self._retry_now)

    def _retry_now(self) -> None:
        self._retry = None
        if not self.closed and self._binding is None:
            self.client._place(self)

    @property
    def waiting_retry(self) -> bool:
        return self._retry is not None

    def refuse(self, error: ClientError) -> None:
        """No room for the link on the socket: the subscription ends."""
        self._end(error)

    def _end(self, error: ClientError | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.attached = False
        self._error = error
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self.mode == "move":
            self._queue.clear()  # their leases give them back to the group
        self.client._subscriptions.discard(self)
        if not self._ready.done():
            self._ready.set_exception(error or ClientError(errors.CLOSED, "unsubscribed"))
            self._ready.exception()  # retrieved: nobody may be waiting for it
        if error is not None:
            self.client._emit("error", error)
        self._wake.set()
        if self._binding is None:
            self._detached.set()

    async def _run_handler(self, handler: Handler) -> None:
        """Hand messages to the handler one at a time, in order; in move mode settle each one
        it did not settle: accepted when it returns, released when it raises."""
        try:
            async for msg in self:
                failure: BaseException | None = None
                try:
                    result = handler(msg)
                    if inspect.isawaitable(result):
                        await result
                except Exception as exc:
                    failure = exc
                    self.client._emit(
                        "error",
                        ClientError(
                            errors.HANDLER, repr(exc), scope="handler", address=self.address
                        ),
                    )
                if not msg.settled:
                    msg.settle("accepted" if failure is None else "released")
        except ClientError:
            pass  # said by the "error" event already

    def _refill(self) -> None:
        b = self._binding
        if b is None or not b.live or self.closed:
            return
        have = b.credit + len(self._queue)
        if have > self._window // 2:
            return
        grant = self._window - have
        if grant > 0:
            b.credit += grant
            b.conn.send({"op": "flow", "ch": b.session.ch, "handle": b.handle, "credit": grant})
