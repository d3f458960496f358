"""wsq.stream.carrier: the order of a stream's POSTs, its bounds, and the peer's view of it."""

from __future__ import annotations

from typing import Any

from wsq.core.errors import InvalidFrame, ResourceLimitExceeded
from wsq.stream.carrier import MAX_AHEAD, StreamCarrier, event
from wsq.stream.endpoints import channel_of


async def _never() -> dict[str, Any]:
    raise AssertionError("not read in these tests")


async def _sent(message: dict[str, Any]) -> None:
    SENT.append(message)


SENT: list[dict[str, Any]] = []


def carrier(max_inbox_bytes: int = 1000) -> StreamCarrier:
    return StreamCarrier(_never, _sent, "first", {"id": "i", "secret": "s"}, max_inbox_bytes)


async def texts(c: StreamCarrier, n: int) -> list[str]:
    out = []
    for _ in range(n):
        message = await c.receive()
        if message["type"] == "websocket.receive":
            out.append(message["text"])
    return out


async def test_the_peer_sees_a_connect_then_the_opening_body_then_posts_in_order() -> None:
    c = carrier()
    assert (await c.receive())["type"] == "websocket.connect"
    assert c.offer(2, "b") and c.offer(1, "a") and c.offer(3, "c")
    assert await texts(c, 4) == ["first", "a", "b", "c"]
    assert c.next_seq == 4


async def test_repeats_are_dropped_and_counted() -> None:
    c = carrier()
    await c.receive()
    assert c.offer(1, "a") and c.offer(1, "a") and c.offer(3, "c") and c.offer(3, "c")
    assert c.replays == 2
    assert c.offer(2, "b")
    assert await texts(c, 4) == ["first", "a", "b", "c"]


def test_a_number_past_the_window_is_a_violation() -> None:
    c = carrier()
    assert not c.offer(MAX_AHEAD + 2, "x")
    assert isinstance(c.violation, InvalidFrame)
    assert not c.offer(1, "a")  # nothing is taken after a violation


def test_too_many_waiting_is_a_violation() -> None:
    c = carrier()
    for seq in range(2, MAX_AHEAD + 2):
        assert c.offer(seq, "x")
    assert not c.offer(MAX_AHEAD + 2, "x")  # within the window, but the window is full
    assert isinstance(c.violation, InvalidFrame)


def test_bytes_waiting_are_bounded() -> None:
    c = carrier(max_inbox_bytes=100)
    assert c.offer(1, "x" * 80)
    assert not c.offer(2, "y" * 30)  # 5 (the opening body) + 80 + 30 > 100
    assert isinstance(c.violation, ResourceLimitExceeded)


async def test_the_end_is_a_disconnect_after_what_was_taken() -> None:
    c = carrier()
    await c.receive()
    c.offer(1, "a")
    c.end()
    assert not c.offer(2, "b")
    assert await texts(c, 2) == ["first", "a"]
    assert (await c.receive())["type"] == "websocket.disconnect"


async def test_accept_starts_the_event_stream_with_the_hello_and_close_ends_it() -> None:
    SENT.clear()
    c = carrier()
    await c.send({"type": "websocket.accept", "subprotocol": "wsq.v1"})
    await c.send({"type": "websocket.send", "text": '{"op":"open"}'})
    await c.send({"type": "websocket.close", "code": 1000})
    await c.send({"type": "websocket.close", "code": 1000})  # one end only
    assert SENT[0]["type"] == "http.response.start" and SENT[0]["status"] == 200
    assert SENT[1]["body"] == b'event: stream\ndata: {"id":"i","secret":"s"}\n\n'
    assert SENT[2] == {
        "type": "http.response.body",
        "body": b'data: {"op":"open"}\n\n',
        "more_body": True,
    }
    assert SENT[3] == {"type": "http.response.body", "body": b""}
    assert len(SENT) == 4


def test_an_event_is_one_data_line() -> None:
    assert event("[]") == b"data: []\n\n"


def test_the_channel_needs_both_the_id_and_the_secret() -> None:
    assert channel_of("a", "b") != channel_of("a", "c") != channel_of("c", "b")
    assert channel_of("a", "b") == channel_of("a", "b")
