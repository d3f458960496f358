"""Drive the sans-I/O protocol core without sockets: JSON in, events and decoded frames out.

``Harness`` wraps one ``ServerConnection`` and plays the WebSocket on the client's side. It never
answers an event by itself (except in the ``open``/``begin``/``attach_*`` shortcuts), so a test
sees exactly what the protocol object does and answers like the gateway would.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from wsq.core.errors import WsqError
from wsq.core.messages import Message
from wsq.protocol.connection import Limits, ServerConnection
from wsq.protocol.events import AttachRequested, Event, OpenRequested, PublishItem
from wsq.protocol.state import ConnectionState, Link

#: What our fake gateway answers an open with (any fields: the protocol object just echoes them).
OPEN_ANSWER: dict[str, Any] = {
    "node": "node-1",
    "idle": 30_000,
    "max_sessions": 1024,
    "max_frame_bytes": 1_048_576,
    "tenant": "acme",
    "sub": "alice",
    "exp": 2_000_000_000,
}

#: A bound on next_event() calls for one drain: an endless loop is a bug, not a hang.
MAX_EVENTS = 100_000


class _AnyText:
    """Equal to any non-empty string: error descriptions are for humans, not for asserts."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and other != ""

    def __hash__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return "<any text>"


ANY_TEXT: Any = _AnyText()


def error(condition: str) -> dict[str, Any]:
    """The wire error object with ``condition`` (any description)."""
    return {"condition": condition, "description": ANY_TEXT}


def close(condition: str | None = None) -> dict[str, Any]:
    """A ``close`` frame, with an error when ``condition`` is given."""
    frame: dict[str, Any] = {"op": "close"}
    if condition is not None:
        frame["error"] = error(condition)
    return frame


def end(ch: int, condition: str | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"op": "end", "ch": ch}
    if condition is not None:
        frame["error"] = error(condition)
    return frame


def detach(ch: int, handle: int, condition: str | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"op": "detach", "ch": ch, "handle": handle}
    if condition is not None:
        frame["error"] = error(condition)
    return frame


def transfer(ch: int, handle: int, delivery: int, **fields: Any) -> dict[str, Any]:
    """A client transfer frame."""
    return {"op": "transfer", "ch": ch, "handle": handle, "delivery": delivery, **fields}


def message(
    id: str = "1732200000000-0",
    body: Any = None,
    *,
    ts: int = 1_732_200_000_000,
    publisher: str = "bob",
    **props: Any,
) -> Message:
    """A stored message as the broker hands it to the hub."""
    return Message(id, json.dumps(body), ts=ts, publisher=publisher, **props)


def accepted(items: list[PublishItem], first_position: int = 0) -> list[Any]:
    """``settle_publish`` results accepting every item at positions ``1-<n>``, ``1-<n+1>``…"""
    return [(item, f"1-{first_position + i}", None) for i, item in enumerate(items)]


def decode(text: str) -> Any:
    """Strictly decode one outgoing WebSocket message: valid UTF-8, standard JSON."""
    data = text.encode("utf-8")  # raises on lone surrogates: the wire is UTF-8
    return json.loads(data, parse_constant=_refuse)


def _refuse(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class Harness:
    """One server connection and the client's view of it."""

    def __init__(self, limits: Limits | None = None, **overrides: Any) -> None:
        self.limits = replace(limits or Limits(), **overrides)
        self.output_calls = 0
        self.conn = ServerConnection(self.limits, on_output=self._on_output)

    def _on_output(self) -> None:
        self.output_calls += 1

    # -- client to server --------------------------------------------------------------------

    def send(self, *frames: Any) -> None:
        """One WebSocket message: a lone frame as itself, several frames as one batch."""
        if len(frames) == 1:
            self.send_text(json.dumps(frames[0]))
        else:
            self.send_batch(*frames)

    def send_batch(self, *frames: Any) -> None:
        """One WebSocket message holding a JSON array (``send_batch()`` is the heartbeat)."""
        self.send_text(json.dumps(list(frames)))

    def send_text(self, text: str | bytes) -> None:
        self.conn.receive_text(text)

    # -- server to client --------------------------------------------------------------------

    def events(self) -> list[Event]:
        """Every event ready now (without answering any of them)."""
        events: list[Event] = []
        for _ in range(MAX_EVENTS):
            event = self.conn.next_event()
            if event is None:
                return events
            events.append(event)
        raise AssertionError("next_event() never returned None")

    def event(self) -> Event | None:
        return self.conn.next_event()

    def messages(self, max_bytes: int | None = None) -> list[str]:
        """The WebSocket messages ``data_to_send`` gives now, as texts."""
        texts = self.conn.data_to_send(max_bytes)
        assert all(isinstance(t, str) for t in texts)
        return texts

    def out(self, max_bytes: int | None = None) -> list[Any]:
        """The frames sent now, decoded, batches flattened (a heartbeat ``[]`` adds nothing)."""
        frames: list[Any] = []
        for text in self.messages(max_bytes):
            value = decode(text)
            if isinstance(value, list):
                frames.extend(value)
            else:
                frames.append(value)
        return frames

    def assert_quiet(self, state: ConnectionState) -> None:
        """No event and no frame now, and the connection in ``state``."""
        assert self.events() == []
        assert self.out() == []
        assert self.conn.state is state

    def exchange(self, *frames: Any) -> tuple[list[Event], list[Any]]:
        """Send one message, then collect the events and the frames that came out."""
        self.send(*frames)
        return self.events(), self.out()

    # -- shortcuts for the happy path -------------------------------------------------------

    def open(self, **fields: Any) -> dict[str, Any]:
        """The open handshake, accepted; returns the server's open frame."""
        self.send({"op": "open", "token": "token", **fields})
        events = self.events()
        assert len(events) == 1 and isinstance(events[0], OpenRequested), events
        self.conn.accept_open(OPEN_ANSWER)
        frames = self.out()
        assert frames == [{"op": "open", **OPEN_ANSWER}], frames
        return frames[0]  # type: ignore[no-any-return]

    def begin(self, ch: int = 1) -> None:
        assert self.exchange({"op": "begin", "ch": ch}) == ([], [{"op": "begin", "ch": ch}])

    def attach(self, ch: int, handle: int, role: str, address: str, **fields: Any) -> Link:
        """Send an attach and return the requested link, not yet answered."""
        self.send(
            {"op": "attach", "ch": ch, "handle": handle, "role": role, "address": address, **fields}
        )
        event = self.event()
        assert isinstance(event, AttachRequested), event
        return event.link

    def attach_receiver(
        self, ch: int = 1, handle: int = 0, address: str = "news.eu", **fields: Any
    ) -> Link:
        """An accepted receiver link (answered as the gateway would); output drained."""
        link = self.attach(ch, handle, "receiver", address, **fields)
        if link.mode == "copy":
            self.conn.accept_attach(link, from_="0-0", recovered=True)
        else:
            self.conn.accept_attach(link)
        self.out()
        assert self.events() == []
        return link

    def attach_sender(self, ch: int = 1, handle: int = 0, address: str = "chat.room1") -> Link:
        """An accepted sender link, its credit granted; output drained."""
        link = self.attach(ch, handle, "sender", address)
        self.conn.accept_attach(link)
        self.out()
        assert self.events() == []
        return link

    def link(self, ch: int, handle: int) -> Link:
        return self.conn.sessions[ch].links[handle]

    def fail(self, exc: WsqError) -> None:
        self.conn.close(exc)
