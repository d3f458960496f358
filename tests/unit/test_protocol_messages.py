"""ServerConnection, contract section 1: messages, batches, heartbeats, framing errors, and how
outgoing frames are packed into WebSocket messages."""

from __future__ import annotations

import json

import pytest
from protocol_helpers import Harness, close, decode, end

from wsq.core.errors import InvalidFrame, Unauthorized
from wsq.protocol.events import ConnectionEnded
from wsq.protocol.state import ConnectionState

INVALID = "wsq:invalid-frame"
TOO_LARGE = "wsq:frame-too-large"


def closed_with(h: Harness, condition: str) -> None:
    """The connection sent exactly one close with ``condition`` and reported its end."""
    events = h.events()
    assert h.out() == [close(condition)]
    assert len(events) == 1
    assert isinstance(events[0], ConnectionEnded)
    assert events[0].error is not None and events[0].error["condition"] == condition
    assert events[0].by_peer is False
    assert h.conn.state is ConnectionState.CLOSE_SENT


# -- messages and batches -----------------------------------------------------------------------


def test_a_batch_is_applied_in_order() -> None:
    h = Harness()
    h.open()
    h.send({"op": "begin", "ch": 1}, {"op": "begin", "ch": 2}, {"op": "end", "ch": 1})
    assert h.events() == []
    assert h.out() == [{"op": "begin", "ch": 1}, {"op": "begin", "ch": 2}, end(1)]
    assert set(h.conn.sessions) == {2}


def test_a_lone_frame_and_a_batch_of_one_do_the_same() -> None:
    h = Harness()
    h.open()
    h.send_batch({"op": "begin", "ch": 1})
    h.send({"op": "begin", "ch": 2})
    assert h.events() == []
    assert h.out() == [{"op": "begin", "ch": 1}, {"op": "begin", "ch": 2}]


def test_frames_of_several_messages_are_applied_in_arrival_order() -> None:
    h = Harness()
    h.open()
    h.send({"op": "begin", "ch": 3})
    h.send({"op": "begin", "ch": 1}, {"op": "begin", "ch": 2})
    h.send({"op": "end", "ch": 3})
    assert h.events() == []
    assert h.out() == [
        {"op": "begin", "ch": 3},
        {"op": "begin", "ch": 1},
        {"op": "begin", "ch": 2},
        end(3),
    ]


def test_the_empty_batch_is_a_heartbeat_and_produces_nothing() -> None:
    h = Harness()
    h.send_batch()
    assert h.events() == []
    assert h.messages() == []
    assert h.conn.state is ConnectionState.AWAIT_OPEN
    h.open()
    h.send_text("[]")
    h.send_text(" [ ] ")
    assert h.events() == []
    assert h.messages() == []
    assert h.conn.state is ConnectionState.OPEN


def test_bytes_are_accepted_as_utf8_text() -> None:
    h = Harness()
    h.open()
    h.send_text(b'{"op":"begin","ch":1}')
    assert h.events() == []
    assert h.out() == [{"op": "begin", "ch": 1}]


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "{",
        "[",
        '{"op":"begin","ch":1',
        '[{"op":"begin","ch":1},',
        "{'op': 'begin'}",
        '{"op":"begin",}',
        "begin",
        "NaN",
        "Infinity",
        '{"op":"begin","ch":NaN}',
        '{"op":"begin","ch":-Infinity}',
        '{"op":"begin"} {"op":"begin"}',
        "\ufeff{}",
    ],
)
def test_invalid_json_closes_with_invalid_frame(text: str) -> None:
    h = Harness()
    h.open()
    h.send_text(text)
    closed_with(h, INVALID)


def test_invalid_json_before_open_closes_with_invalid_frame() -> None:
    h = Harness()
    h.send_text("{nope")
    closed_with(h, INVALID)


@pytest.mark.parametrize("text", ["1", "-2.5", '"open"', "null", "true", "false", "1e400"])
def test_a_message_that_is_neither_an_object_nor_an_array_closes(text: str) -> None:
    h = Harness()
    h.open()
    h.send_text(text)
    closed_with(h, INVALID)


@pytest.mark.parametrize("element", [1, "begin", None, True, [], [{"op": "begin", "ch": 2}]])
def test_a_non_object_element_of_a_batch_closes_after_the_frames_before_it(element: object) -> None:
    h = Harness()
    h.open()
    h.send({"op": "begin", "ch": 1}, element, {"op": "begin", "ch": 3})
    assert [type(e) for e in h.events()] == [ConnectionEnded]
    assert h.out() == [{"op": "begin", "ch": 1}, close(INVALID)]
    assert h.conn.sessions == {}


@pytest.mark.parametrize(
    "frame",
    [
        {},
        {"ch": 1},
        {"op": None, "ch": 1},
        {"op": 1},
        {"op": ["begin"], "ch": 1},
        {"op": {"name": "begin"}, "ch": 1},
        {"OP": "begin", "ch": 1},
    ],
)
def test_a_frame_without_a_string_op_closes_with_invalid_frame(frame: dict[str, object]) -> None:
    h = Harness()
    h.open()
    h.send(frame)
    closed_with(h, INVALID)


@pytest.mark.parametrize(
    "op", ["", "subscribe", "BEGIN", "Open", "begin ", "heartbeat", "__init__"]
)
def test_an_unknown_op_closes_with_invalid_frame(op: str) -> None:
    h = Harness()
    h.open()
    h.send({"op": op, "ch": 1})
    closed_with(h, INVALID)


def test_an_unknown_op_before_open_closes_with_invalid_frame() -> None:
    h = Harness()
    h.send({"op": "subscribe"})
    closed_with(h, INVALID)


def test_unknown_fields_are_ignored() -> None:
    h = Harness()
    h.send({"op": "open", "token": "t", "future": {"x": [1, 2]}, "ext": None})
    events = h.events()
    assert len(events) == 1
    h.conn.accept_open({"node": "n"})
    h.out()
    h.send({"op": "begin", "ch": 1, "window": 100, "x-extension": True})
    assert h.events() == []
    assert h.out() == [{"op": "begin", "ch": 1}]
    link = h.attach(1, 0, "sender", "chat.room1", priority=9, properties={"a": "b"})
    assert link.address == "chat.room1"


def test_frames_after_a_connection_error_in_the_same_batch_are_dropped() -> None:
    h = Harness()
    h.open()
    h.send({"op": "begin", "ch": 1}, {"op": "nope"}, {"op": "begin", "ch": 2}, {"op": "close"})
    assert [type(e) for e in h.events()] == [ConnectionEnded]
    assert h.out() == [{"op": "begin", "ch": 1}, close(INVALID)]
    assert h.conn.state is ConnectionState.CLOSE_SENT


def test_a_broken_message_waits_its_turn_behind_frames_already_queued() -> None:
    h = Harness()
    h.open()
    h.send({"op": "begin", "ch": 1})
    h.send_text("{not json")  # fed before the begin was processed
    assert [type(e) for e in h.events()] == [ConnectionEnded]
    assert h.out() == [{"op": "begin", "ch": 1}, close(INVALID)]


def test_a_broken_message_behind_open_is_judged_once_the_token_is_accepted() -> None:
    h = Harness()
    h.send({"op": "open", "token": "t"})
    h.send_text("{not json")
    assert [type(e).__name__ for e in h.events()] == ["OpenRequested"]
    assert h.out() == []
    h.conn.accept_open({"node": "n"})
    assert [type(e) for e in h.events()] == [ConnectionEnded]
    assert h.out() == [{"op": "open", "node": "n"}, close(INVALID)]


def test_a_broken_message_behind_a_rejected_open_is_dropped() -> None:
    h = Harness(max_frame_bytes=100)
    h.send({"op": "open", "token": "t"})
    h.send_text("x" * 101)
    h.events()
    h.conn.reject_open(Unauthorized("bad token"))
    assert [type(e) for e in h.events()] == [ConnectionEnded]
    assert h.out() == [close("wsq:unauthorized")]


# -- message size -------------------------------------------------------------------------------


def _message_of(size: int, filler: str = "x") -> str:
    """A begin frame padded with ``filler`` to exactly ``size`` UTF-8 bytes."""
    head = '{"op":"begin","ch":1,"pad":"'
    tail = '"}'
    room = size - len(head) - len(tail)
    width = len(filler.encode())
    text = head + filler * (room // width) + "x" * (room % width) + tail
    assert len(text.encode()) == size
    return text


def test_a_message_of_exactly_max_frame_bytes_is_accepted() -> None:
    h = Harness(max_frame_bytes=200)
    h.open()
    h.send_text(_message_of(200))
    assert h.events() == []
    assert h.out() == [{"op": "begin", "ch": 1}]


def test_a_message_one_byte_over_max_frame_bytes_closes_with_frame_too_large() -> None:
    h = Harness(max_frame_bytes=200)
    h.open()
    h.send_text(_message_of(201))
    closed_with(h, TOO_LARGE)


@pytest.mark.parametrize("filler", ["é", "€", "😀"])
def test_the_size_of_a_message_counts_utf8_bytes_not_characters(filler: str) -> None:
    h = Harness(max_frame_bytes=200)
    h.open()
    exact = _message_of(200, filler)
    assert len(exact) < 200
    h.send_text(exact)
    assert h.events() == []
    assert h.out() == [{"op": "begin", "ch": 1}]
    over = _message_of(201, filler)
    assert len(over) < 200  # fewer characters than the limit, more bytes
    h.send_text(over)
    closed_with(h, TOO_LARGE)


def test_a_multibyte_message_barely_over_a_quarter_of_the_limit_is_measured_in_bytes() -> None:
    # 4-byte characters: 51 of them are 204 bytes, over a limit of 200, in 51 characters.
    h = Harness(max_frame_bytes=200)
    h.open()
    h.send_text('"' + "😀" * 51 + '"')
    closed_with(h, TOO_LARGE)


def test_the_size_of_a_bytes_message_is_its_length() -> None:
    h = Harness(max_frame_bytes=200)
    h.open()
    h.send_text(_message_of(200, "é").encode())
    assert h.events() == []
    assert h.out() == [{"op": "begin", "ch": 1}]
    h.send_text(_message_of(201, "é").encode())
    closed_with(h, TOO_LARGE)


def test_an_oversize_message_before_open_closes_with_frame_too_large() -> None:
    h = Harness(max_frame_bytes=100)
    h.send_text(json.dumps({"op": "open", "token": "t" * 200}))
    closed_with(h, TOO_LARGE)


def test_an_oversize_message_is_refused_even_when_it_is_not_json() -> None:
    h = Harness(max_frame_bytes=40)
    h.open()
    h.send_text("x" * 41)
    closed_with(h, TOO_LARGE)


def test_a_lone_surrogate_near_the_limit_does_not_raise() -> None:
    # A str that no UTF-8 encoder accepts must not raise out of receive_text.
    h = Harness(max_frame_bytes=40)
    h.open()
    h.send_text('{"op":"begin","ch":1,"x":"\ud800\udfff\ud800"}')
    h.events()
    assert h.conn.state in (ConnectionState.OPEN, ConnectionState.CLOSE_SENT)
    for frame in h.out():
        assert frame["op"] in ("begin", "close")


# -- outgoing messages --------------------------------------------------------------------------


def test_a_single_frame_goes_out_alone_not_as_a_batch() -> None:
    h = Harness()
    h.open()
    h.send({"op": "begin", "ch": 1})
    assert h.events() == []
    assert [decode(t) for t in h.messages()] == [{"op": "begin", "ch": 1}]


def test_several_frames_go_out_as_one_batch() -> None:
    h = Harness()
    h.open()
    h.send({"op": "begin", "ch": 1}, {"op": "begin", "ch": 2}, {"op": "begin", "ch": 3})
    assert h.events() == []
    messages = h.messages()
    assert len(messages) == 1
    assert decode(messages[0]) == [
        {"op": "begin", "ch": 1},
        {"op": "begin", "ch": 2},
        {"op": "begin", "ch": 3},
    ]


def test_frames_from_several_events_are_batched_together() -> None:
    h = Harness()
    h.send({"op": "open", "token": "t"})
    h.events()
    h.conn.accept_open({"node": "n"})
    h.send({"op": "begin", "ch": 1})
    h.events()
    messages = h.messages()
    assert [decode(m) for m in messages] == [
        [{"op": "open", "node": "n"}, {"op": "begin", "ch": 1}]
    ]


def test_data_to_send_empties_the_queue() -> None:
    h = Harness()
    h.open()
    h.send({"op": "begin", "ch": 1})
    assert not h.conn.has_output  # frames are processed by next_event
    assert h.events() == []
    assert h.conn.has_output
    assert h.conn.out_bytes == len('{"op":"begin","ch":1}')
    assert len(h.messages()) == 1
    assert h.messages() == []
    assert not h.conn.has_output
    assert h.conn.out_bytes == 0


def _queue_begins(h: Harness, count: int, first: int = 100) -> list[str]:
    """Queue ``count`` begin answers; their texts (``{"op":"begin","ch":N}``, N of 3 digits)."""
    channels = range(first, first + count)
    for ch in channels:
        h.send({"op": "begin", "ch": ch})
    assert h.events() == []
    return [json.dumps({"op": "begin", "ch": ch}, separators=(",", ":")) for ch in channels]


def test_a_batch_of_thousands_of_frames_is_applied_in_order() -> None:
    # Past a thousand frames the queue of received frames compacts itself: order must hold.
    h = Harness()
    h.open()
    channels = list(range(3000))
    h.send_batch(*({"op": "begin", "ch": ch} for ch in channels))
    assert h.events() == []
    assert [f["ch"] for f in h.out()] == channels


def test_batches_are_split_to_stay_within_max_bytes() -> None:
    h = Harness()
    h.open()
    texts = _queue_begins(h, 10)  # 23 characters each
    assert {len(t) for t in texts} == {23}
    # A batch of n frames takes 2 + 23n + (n - 1) characters: 3 frames take 73, 4 take 97.
    messages = h.messages(max_bytes=80)
    assert [len(m) for m in messages] == [73, 73, 73, 23]
    assert all(len(m.encode()) <= 80 for m in messages)
    assert messages[-1] == texts[-1]  # a lone frame goes out as itself
    frames = [f for m in messages for f in (lambda v: v if isinstance(v, list) else [v])(decode(m))]
    assert frames == [json.loads(t) for t in texts]


def test_a_batch_that_fits_exactly_is_not_split() -> None:
    h = Harness()
    h.open()
    _queue_begins(h, 3)
    assert len(h.messages(max_bytes=74)) == 1
    _queue_begins(h, 3, first=200)
    assert len(h.messages(max_bytes=72)) == 2


def test_a_frame_larger_than_max_bytes_goes_alone() -> None:
    h = Harness()
    h.open()
    texts = _queue_begins(h, 3)
    # Each goes in a message of its own (as itself, or as a batch of one).
    assert [decode(m) for m in h.messages(max_bytes=10)] in (
        [json.loads(t) for t in texts],
        [[json.loads(t)] for t in texts[:-1]] + [json.loads(texts[-1])],
    )


def test_without_max_bytes_batches_are_split_at_max_frame_bytes() -> None:
    h = Harness(max_frame_bytes=80)
    h.open()
    _queue_begins(h, 4)
    assert [len(m) for m in h.messages()] == [73, 23]


def test_a_heartbeat_is_an_empty_batch_when_nothing_else_is_queued() -> None:
    h = Harness()
    h.open()
    h.conn.heartbeat()
    assert h.conn.has_output
    assert h.messages() == ["[]"]
    assert h.messages() == []
    assert not h.conn.has_output


def test_a_heartbeat_is_sent_once_however_often_it_is_asked_for() -> None:
    h = Harness()
    h.open()
    h.conn.heartbeat()
    h.conn.heartbeat()
    assert h.messages() == ["[]"]


def test_no_heartbeat_is_sent_when_frames_are_queued() -> None:
    h = Harness()
    h.open()
    h.send({"op": "begin", "ch": 1}, {"op": "begin", "ch": 2})
    assert h.events() == []
    h.conn.heartbeat()
    messages = h.messages()
    assert len(messages) == 1
    assert decode(messages[0]) == [{"op": "begin", "ch": 1}, {"op": "begin", "ch": 2}]
    assert h.messages() == []


def test_a_frame_queued_after_a_heartbeat_replaces_it() -> None:
    h = Harness()
    h.open()
    h.conn.heartbeat()
    h.send({"op": "begin", "ch": 1})
    assert h.events() == []
    assert h.messages() == ['{"op":"begin","ch":1}']
    assert h.messages() == []


def test_a_heartbeat_never_appears_inside_a_batch() -> None:
    h = Harness()
    h.open()
    h.conn.heartbeat()
    _queue_begins(h, 5)
    for text in h.messages(max_bytes=60):
        value = decode(text)
        assert value != []
        if isinstance(value, list):
            assert all(isinstance(f, dict) for f in value)


@pytest.mark.parametrize("when", ["before-open", "authenticating", "close-sent", "closed"])
def test_no_heartbeat_outside_an_open_connection(when: str) -> None:
    h = Harness()
    if when == "authenticating":
        h.send({"op": "open", "token": "t"})
        h.events()
    elif when == "close-sent":
        h.open()
        h.conn.close(InvalidFrame("bye"))
        h.events()
        h.messages()
    elif when == "closed":
        h.open()
        h.send({"op": "close"})
        h.events()
        h.messages()
    h.conn.heartbeat()
    assert not h.conn.has_output
    assert h.messages() == []


def test_on_output_is_called_when_output_becomes_available() -> None:
    h = Harness()
    h.send({"op": "open", "token": "t"})
    h.events()
    assert h.output_calls == 0
    h.conn.accept_open({"node": "n"})
    assert h.output_calls == 1
    h.send({"op": "begin", "ch": 1}, {"op": "begin", "ch": 2})
    h.events()
    assert h.output_calls == 1  # output was pending already
    h.messages()
    h.conn.heartbeat()
    assert h.output_calls == 2
    h.conn.heartbeat()
    assert h.output_calls == 2
    h.messages()
    h.send({"op": "begin", "ch": 3})
    h.events()
    assert h.output_calls == 3
