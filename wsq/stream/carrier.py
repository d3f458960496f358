"""One HTTP stream as the ASGI WebSocket a ``wsq.gateway.Peer`` drives.

The peer (one per connection, whatever carries it) reads messages with ``receive`` and writes
them with ``send``; here those are the texts of the client's POSTs, put in order by their
sequence numbers, and ``text/event-stream`` events of the stream's response. So heartbeats,
credit, the idle and open timeouts, the outbox bound and the slow-reader rule, token expiry and
quotas are the peer's, exactly as over a WebSocket: nothing of the connection logic is here.

Upstream order: POST ``n`` carries sequence number ``n`` (1, 2, ...). A number already taken is
a replay (a retried POST whose answer was lost) and is dropped; one ahead of the next expected
waits in a small window for those before it (POSTs that took different nodes may overtake one
another on the way here); one beyond the window, or more waiting than ``MAX_AHEAD`` or
``max_inbox_bytes`` allow (a client that floods POSTs without waiting for their answers), ends
the connection with a ``wsq:`` error (``violation``).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from starlette.types import Message, Receive, Send

from wsq.core import codec
from wsq.core.errors import InvalidFrame, ResourceLimitExceeded, WsqError

#: POSTs that may wait for an earlier one (and how far ahead of it their numbers may be).
MAX_AHEAD = 16
#: Headers of the stream's response: an event stream no proxy should buffer or store.
STREAM_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),
]


def event(text: str, name: str | None = None) -> bytes:
    """One server-sent event carrying ``text`` (one line: the wire's JSON has no newline)."""
    head = b"event: " + name.encode() + b"\n" if name else b""
    return head + b"data: " + text.encode() + b"\n\n"


class StreamCarrier:
    """The receive and send of one HTTP stream, shaped as an ASGI WebSocket's."""

    __slots__ = (
        "_ahead",
        "_connected",
        "_gone",
        "_hello",
        "_http_receive",
        "_http_send",
        "_inbox",
        "_inbox_bytes",
        "_wake",
        "ended",
        "max_inbox_bytes",
        "next_seq",
        "replays",
        "started",
        "violation",
    )

    def __init__(
        self, http_receive: Receive, http_send: Send, first: str, hello: dict[str, Any],
        max_inbox_bytes: int,
    ) -> None:  # fmt: skip
        self._http_receive = http_receive
        self._http_send = http_send
        self._hello = hello
        self._connected = False
        #: Texts in order, for the peer; the opening request's body first.
        self._inbox: deque[str] = deque([first])
        self._inbox_bytes = len(first)
        self._ahead: dict[int, str] = {}
        self._wake = asyncio.Event()
        self._gone = False
        self.max_inbox_bytes = max_inbox_bytes
        #: The sequence number the next POST must carry.
        self.next_seq = 1
        self.replays = 0
        #: The response has started (the peer accepted).
        self.started = False
        #: The response's body has ended.
        self.ended = False
        #: Why the upstream was refused (the holder ends the connection with it), or None.
        self.violation: WsqError | None = None

    # -- upstream --------------------------------------------------------------------------

    def offer(self, seq: int, text: str) -> bool:
        """A POST's text; False when it was refused (``violation`` says why)."""
        if self._gone or self.violation is not None:
            return False
        if seq < self.next_seq or seq in self._ahead:
            self.replays += 1
            return True  # taken already: a retry's answer was lost
        if seq - self.next_seq > MAX_AHEAD or len(self._ahead) >= MAX_AHEAD:
            self.violation = InvalidFrame(f"POST {seq} came while POST {self.next_seq} is missing")
            return False
        if self._inbox_bytes + len(text) > self.max_inbox_bytes:
            self.violation = ResourceLimitExceeded(
                "too many POSTs waiting: send the next when the last was answered"
            )
            return False
        self._inbox_bytes += len(text)
        self._ahead[seq] = text
        while (ready := self._ahead.pop(self.next_seq, None)) is not None:
            self._inbox.append(ready)
            self.next_seq += 1
        self._wake.set()
        return True

    def end(self) -> None:
        """The client is gone (or the stream ends): the peer's next receive says so."""
        self._gone = True
        self._wake.set()

    async def watch_disconnect(self) -> None:
        """Wait for the client to go away (the request's receive answers once it does)."""
        while (await self._http_receive())["type"] != "http.disconnect":
            pass
        self.end()

    # -- the peer's side -------------------------------------------------------------------

    async def receive(self) -> Message:
        if not self._connected:
            self._connected = True
            return {"type": "websocket.connect"}
        while True:
            if self._inbox:
                text = self._inbox.popleft()
                self._inbox_bytes -= len(text)
                return {"type": "websocket.receive", "text": text}
            if self._gone:
                return {"type": "websocket.disconnect", "code": 1006}
            self._wake.clear()
            await self._wake.wait()

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "websocket.send":
            body = event(message["text"])
            await self._http_send({"type": "http.response.body", "body": body, "more_body": True})
        elif kind == "websocket.accept":
            self.started = True
            start = {"type": "http.response.start", "status": 200, "headers": STREAM_HEADERS}
            await self._http_send(start)
            hello = event(codec.dumps(self._hello), "stream")
            await self._http_send({"type": "http.response.body", "body": hello, "more_body": True})
        elif kind == "websocket.close":
            # Before the accept (the origin refused) the endpoint answers instead.
            self.end()
            if self.started and not self.ended:
                self.ended = True
                await self._http_send({"type": "http.response.body", "body": b""})
