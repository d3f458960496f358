"""ServerConnection: compact rows (a wsq extension of the compact form, docs/protocol.md 6.4) —
negotiated in open beside ``compact``; a broker batch's rows leave out what a message shares
with the one before, and stand for exactly the messages the object form carries."""

from __future__ import annotations

import json
from typing import Any

import pytest
from protocol_helpers import OPEN_ANSWER, Harness, close, message

from wsq.client.wire import expand_transfers
from wsq.core.messages import Message
from wsq.core.wire import SharedTails, copy_tail, message_rows, stored_message
from wsq.protocol.events import OpenRequested
from wsq.protocol.state import ConnectionState

INVALID = "wsq:invalid-frame"


def opened(**fields: Any) -> tuple[Harness, dict[str, Any]]:
    """A connection whose client's open carried ``fields``; session 1 begun. Also returns the
    server's open answer."""
    h = Harness()
    h.send({"op": "open", "token": "token", **fields})
    events = h.events()
    assert len(events) == 1 and isinstance(events[0], OpenRequested), events
    h.conn.accept_open(OPEN_ANSWER)
    (answer,) = h.out()
    h.begin(1)
    return h, answer


def rows_of(answer: dict[str, Any]) -> Any:
    return answer.get("rows", "absent")


# -- negotiation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "compact", "rows"),
    [
        ({"compact": True, "rows": True}, True, True),
        ({"compact": True, "rows": False}, True, False),
        ({"compact": False, "rows": True}, False, False),
        ({"rows": True}, "absent", False),
        ({"compact": True}, True, "absent"),
        ({"compact": True, "rows": None}, True, "absent"),
        ({}, "absent", "absent"),
    ],
)
def test_rows_are_on_when_asked_with_compact_and_the_answer_says_so(
    fields: dict[str, Any], compact: Any, rows: Any
) -> None:
    h, answer = opened(**fields)
    assert answer.get("compact", "absent") == compact
    assert rows_of(answer) == rows
    assert h.conn.rows is (rows is True)


@pytest.mark.parametrize("value", [1, "true", [], {}])
def test_rows_that_is_not_a_boolean_closes_the_connection(value: Any) -> None:
    h = Harness()
    h.send({"op": "open", "token": "token", "compact": True, "rows": value})
    h.events()
    assert h.out() == [close(INVALID)]
    assert h.conn.state is ConnectionState.CLOSE_SENT


# -- the rows of a batch ---------------------------------------------------------------------


def batch() -> list[Message]:
    """Messages as a broker hands them over: runs of one publish (the same props, consecutive
    ids), a new millisecond, a gap in the sequence, other props, bodies and headers that hold
    the text of the keys around them, and a stored message (its tail concatenated)."""
    tricky = {"x": ',"props":{"ts":1}', "props": {"ts": 2}, "body": "]"}
    messages = [
        message("7-0", {"n": 0}, ts=7),
        message("7-1", [1, "é✓"], ts=7),
        message("7-2", None, ts=7),
        message("8-3", "s", ts=7),  # a new ms (the sequence one higher): its id said
        message("8-5", tricky, ts=7),  # a gap in the sequence
        message("8-6", 5, ts=8),  # other props
        message("8-7", 6, ts=8, subject="a.b", headers={"h": tricky}),
        message("8-8", 7, ts=8, subject="a.b", headers={"h": tricky}),
        stored_message("9-0", json.dumps(tricky), '{"publisher":"bob"}', None, None),
        stored_message("9-1", "{}", '{"publisher":"bob"}', None, 1000),
        message(f"9-{2**53 - 1}", 8, ts=9),
        message(f"9-{2**53}", 9, ts=9),  # the JS client could not add one exactly: id said
    ]
    return messages


def test_rows_leave_out_what_a_message_shares_with_the_one_before() -> None:
    rows = [json.loads(r) for r in message_rows(batch())]
    assert [len(r) for r in rows] == [3, 1, 1, 2, 2, 3, 3, 1, 3, 3, 3, 2]
    assert rows[3][0] == "8-3" and rows[4][0] == "8-5"


def test_rows_stand_for_exactly_the_messages_of_the_object_form() -> None:
    messages = batch()
    objects = [json.loads("{" + copy_tail(m)) for m in messages]
    rows = [json.loads(r) for r in message_rows(messages)]
    frame = {"op": "transfers", "ch": 1, "handle": 0, "delivery": 3, "settled": True}
    got = expand_transfers({**frame, "msgs": rows})
    want = expand_transfers({**frame, "msgs": objects})
    assert got == want
    assert [t["id"] for t in got] == [m.id for m in messages]


def test_a_whole_batch_goes_as_rows_and_a_part_of_it_as_objects() -> None:
    h, _ = opened(compact=True, rows=True)
    link = h.attach_receiver(1, 0, settled=True, credit=100)
    messages = batch()
    tails = SharedTails.of(messages)
    h.conn.send_transfers(link, tails)
    h.conn.send_transfers(link, tails[2:5])  # a part: a plain list
    whole, part = h.out()
    assert all(isinstance(m, list) for m in whole["msgs"])
    assert all(isinstance(m, dict) for m in part["msgs"])
    assert [t["id"] for t in expand_transfers(whole)] == [m.id for m in messages]
    assert [t["delivery"] for t in expand_transfers(part)] == [12, 13, 14]


def test_sockets_without_rows_get_the_objects_of_the_same_batch() -> None:
    tails = SharedTails.of(batch())
    sent: dict[str, Any] = {}
    for name, fields in (
        ("rows", {"compact": True, "rows": True}),
        ("compact", {"compact": True}),
        ("declined", {"compact": True, "rows": False}),
    ):
        h, _ = opened(**fields)
        link = h.attach_receiver(1, 0, settled=True, credit=100)
        h.conn.send_transfers(link, tails)
        (sent[name],) = h.out()
    assert all(isinstance(m, list) for m in sent["rows"]["msgs"])
    assert sent["compact"] == sent["declined"]
    assert all(isinstance(m, dict) for m in sent["compact"]["msgs"])
    assert expand_transfers(sent["rows"]) == expand_transfers(sent["compact"])


def test_a_batch_is_made_rows_once_for_every_socket() -> None:
    tails = SharedTails.of(batch())
    bodies = []
    for _ in range(3):
        h, _ = opened(compact=True, rows=True)
        link = h.attach_receiver(1, 0, credit=100)
        h.conn.data_to_send()
        h.conn.send_transfers(link, tails)
        pieces = h.conn.next_output()
        assert pieces is not None and len(pieces) == 2
        bodies.append(pieces[1])
    assert len({id(b) for b in bodies}) == 1


def split_frames(messages: list[Message], **fields: Any) -> list[dict[str, Any]]:
    """The frames of ``messages`` sent at once on a connection of max_frame_bytes 1024 whose
    client's open carried ``fields``."""
    h = Harness(max_frame_bytes=1024)
    h.send({"op": "open", "token": "token", **fields})
    h.events()
    h.conn.accept_open(OPEN_ANSWER)
    h.out()
    h.begin(1)
    link = h.attach_receiver(1, 0, settled=True, credit=100)
    h.conn.send_transfers(link, SharedTails.of(messages))
    texts = h.messages(1024)
    assert len(texts) > 1 and all(len(t) <= 1024 for t in texts)
    return [json.loads(t) for t in texts]


def test_rows_too_long_for_max_frame_bytes_go_split_each_part_its_own_rows() -> None:
    # props change at the 10th message: a part may start on either side of it
    messages = [message(f"7-{i}", "x" * 50, ts=7 if i < 10 else 8) for i in range(40)]
    frames = split_frames(messages, compact=True, rows=True)
    got = [t for f in frames for t in expand_transfers(f)]
    assert [t["id"] for t in got] == [m.id for m in messages]
    assert [t["delivery"] for t in got] == list(range(40))
    assert [t["props"]["ts"] for t in got] == [7] * 10 + [8] * 30
    # every part is rows, and starts anew: its first row says its id and props
    assert all(isinstance(m, list) for f in frames for m in f["msgs"])
    assert all(len(f["msgs"][0]) == 3 for f in frames)
    assert sum(len(m) == 1 for f in frames for m in f["msgs"]) > len(frames)
    # cut where the object form is cut: the same frames, numbered the same, meaning the same
    objects = split_frames(messages, compact=True)
    assert [f["delivery"] for f in frames] == [f["delivery"] for f in objects]
    assert got == [t for f in objects for t in expand_transfers(f)]


def test_a_rows_delivery_is_shorter_than_an_object() -> None:
    messages = [message(f"7-{i}", {"n": i}, ts=7) for i in range(100)]
    rows = ",".join(message_rows(messages))
    objects = ",".join("{" + copy_tail(m) for m in messages)
    assert len(rows) < 0.5 * len(objects)
