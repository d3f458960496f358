"""The pure parts of wsq.client, without a socket: its options and frames (wire.py), the
full-jitter backoff, the outbox's bounds and generated ids, and a subscription that never hands
out a message twice when frames cross a resume."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

import pytest

from wsq.client import ClientError
from wsq.client.backoff import Backoff
from wsq.client.outbox import Outbox
from wsq.client.subscription import Subscription
from wsq.client.wire import (
    Violation,
    check_frame,
    disposition_range,
    expand_transfers,
    from_wire,
    open_frame,
    parse_message,
    publish_tail,
    read_open,
    receiver_frame,
    subscribe_options,
    transfer_text,
)
from wsq.core import codec

# -- options and frames ----------------------------------------------------------------------


def test_a_copy_receiver_rewinds_first_and_resumes_after_its_last_position() -> None:
    opts = subscribe_options(rewind=5, conflate=250, filter="px.*")
    first = receiver_frame(1, 0, "prices", opts, credit=10, resume=None)
    assert first == {
        **{"op": "attach", "ch": 1, "handle": 0, "role": "receiver", "address": "prices"},
        **{"mode": "copy", "rewind": 5, "conflate": {"ms": 250, "by": "subject"}},
        **{"filter": {"subject": "px.*"}, "credit": 10},
    }
    again = receiver_frame(2, 3, "prices", opts, credit=7, resume="17-2")
    assert "rewind" not in again and again["from"] == "17-2" and again["credit"] == 7


def test_a_move_receiver_names_its_group_and_lease_in_ms() -> None:
    opts = subscribe_options(mode="move", group="workers", lease=1.5)
    f = receiver_frame(0, 1, "jobs", opts, credit=1, resume=None)
    assert f == {
        **{"op": "attach", "ch": 0, "handle": 1, "role": "receiver", "address": "jobs"},
        **{"mode": "move", "group": "workers", "lease": 1500, "credit": 1},
    }


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"mode": "fanout"}, "mode"),
        ({"from_": "yesterday"}, "from_"),
        ({"rewind": 0}, "rewind"),
        ({"rewind": 1001}, "rewind"),
        ({"rewind": 3, "from_": "^"}, "exclusive"),
        ({"conflate": 9}, "conflate"),
        ({"mode": "move", "rewind": 2}, "copy mode only"),
        ({"filter": "a.>.b"}, "filter"),
        ({"group": "no spaces"}, "group"),
        ({"mode": "move", "lease": 0.01}, "lease"),
        ({"credit": 0}, "credit"),
    ],
)
def test_bad_subscribe_options_are_refused_before_the_wire(
    options: dict[str, Any], says: str
) -> None:
    with pytest.raises(ValueError, match=says):
        subscribe_options(**options)


def test_a_publish_is_encoded_once_as_a_transfer_tail() -> None:
    tail = publish_tail("chat.room1", {"t": "hi"}, message_id="m-1", subject="greet", ttl_ms=500)
    text = transfer_text(1, 2, 3, tail)
    assert codec.loads(text) == {
        **{"op": "transfer", "ch": 1, "handle": 2, "delivery": 3, "settled": False},
        **{"body": {"t": "hi"}, "props": {"subject": "greet", "message_id": "m-1", "ttl": 500}},
    }


@pytest.mark.parametrize(
    ("address", "body", "condition"),
    [("not an address", 1, "wsq:invalid-frame"), ("ok", object(), "wsq:invalid-frame")],
)
def test_a_bad_publish_is_refused_with_a_condition(address: str, body: Any, condition: str) -> None:
    with pytest.raises(ClientError) as refused:
        publish_tail(address, body, message_id="m")
    assert refused.value.condition == condition


def test_server_frames_that_break_the_contract_are_violations() -> None:
    assert parse_message("[]") == []
    assert parse_message('{"op":"flow"}') == [{"op": "flow"}]
    for bad in (b"[]", "{nope"):
        with pytest.raises(Violation):
            parse_message(bad)
    with pytest.raises(Violation, match="before open"):
        check_frame({"op": "transfer"}, opened=False)
    with pytest.raises(Violation, match="unknown op"):
        check_frame({"op": "teleport"}, opened=True)
    assert disposition_range({"first": 4}) == (4, 4)
    assert disposition_range({"first": 4, "last": 6}) == (4, 6)
    with pytest.raises(Violation):
        disposition_range({"first": 4, "last": 3})


def test_the_open_answer_is_read_with_bounds() -> None:
    info = read_open(
        {"op": "open", "node": "n1", "idle": 2000, "max_frame_bytes": 10, "exp": 5, "sub": 7}
    )
    assert (info.node, info.idle_ms, info.exp, info.sub) == ("n1", 2000, 5, None)
    assert info.max_frame_bytes == 1_048_576  # below 1024: the default, not a tiny frame


def test_an_error_from_the_wire_is_bounded() -> None:
    error = from_wire({"condition": "wsq:" + "x" * 999, "description": 5}, "link", "a")
    assert len(error.condition) == 256 and error.description == "" and error.scope == "link"
    assert from_wire("junk", "session").condition == "wsq:internal-error"


# -- backoff -----------------------------------------------------------------------------------


def test_backoff_is_full_jitter_under_an_exponential_ceiling() -> None:
    backoff = Backoff(0.5, 4.0, random.Random(7))
    delays = [backoff.next() for _ in range(8)]
    ceilings = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    assert all(0 <= d < c for d, c in zip(delays, ceilings, strict=True))
    assert backoff.attempts == 8
    assert 0 <= backoff.soon() < 0.5


# -- outbox ------------------------------------------------------------------------------------


async def test_the_outbox_is_bounded_and_generates_distinct_ids() -> None:
    outbox = Outbox(2, 10_000, "p")
    a = outbox.add("q", 1, max_frame_bytes=1_048_576)
    b = outbox.add("q", 2, max_frame_bytes=1_048_576, message_id="mine")
    assert (a.message_id, b.message_id, a.seq < b.seq) == ("p-1", "mine", True)
    with pytest.raises(ClientError) as full:
        outbox.add("q", 3, max_frame_bytes=1_048_576)
    assert full.value.condition == "wsq:resource-limit-exceeded"
    outbox.finish(a, None, "1-0")
    assert a.future.result() == "1-0" and outbox.count == 1
    with pytest.raises(ClientError) as large:
        outbox.add("q", "x" * 2000, max_frame_bytes=1024)
    assert large.value.condition == "wsq:frame-too-large" and outbox.count == 1


# -- a subscription never hands a message out twice -----------------------------------------


def stand_in_client() -> Any:
    return SimpleNamespace(credit=10, _emit=lambda *a: None, _subscriptions=set())


async def test_a_copy_subscription_drops_what_it_already_received() -> None:
    sub = Subscription(stand_in_client(), "feed", subscribe_options(), None)
    binding: Any = SimpleNamespace(credit=10, live=False)
    sub.on_attached(binding, {"from": "5-0"})
    for position in ("6-0", "5-0", "6-0", "10-0", "9-9"):
        sub.on_transfer(binding, {"id": position, "delivery": 0, "body": position})
    got = [sub._queue.popleft().id for _ in range(len(sub._queue))]
    assert got == ["6-0", "10-0"]  # "10-0" after "9-9": positions compare as numbers
    assert binding.credit == 5
    with pytest.raises(Violation):
        for _ in range(6):
            sub.on_transfer(binding, {"id": "99-0", "delivery": 0})


# -- the compact delivery form ---------------------------------------------------------------


def test_open_offers_compact_unless_told_not_to_and_reads_the_answer() -> None:
    assert open_frame("t", 30_000, "c")["compact"] is True
    assert open_frame("t", 30_000, "c")["rows"] is True
    assert open_frame("t", 30_000, "c", compact=False)["compact"] is False
    assert open_frame("t", 30_000, "c", compact=False)["rows"] is False
    assert read_open({"op": "open", "compact": True, "rows": True}).rows is True
    assert read_open({"op": "open", "compact": True}).rows is False
    assert read_open({"op": "open", "compact": True}).compact is True
    assert read_open({"op": "open"}).compact is False
    assert read_open({"op": "open", "compact": "yes"}).compact is False


def test_a_compact_frame_is_the_transfers_it_stands_for() -> None:
    f = {
        "op": "transfers",
        "ch": 1,
        "handle": 2,
        "settled": False,
        "delivery": 7,
        "msgs": [
            {"id": "5-0", "body": [1], "props": {"ts": 5}},
            {"id": "5-1", "body": None, "props": {"ts": 5, "redelivered": 2}},
        ],
    }
    assert expand_transfers(f) == [
        {"id": "5-0", "body": [1], "props": {"ts": 5}, "delivery": 7, "settled": False},
        {
            "id": "5-1",
            "body": None,
            "props": {"ts": 5, "redelivered": 2},
            "delivery": 8,
            "settled": False,
        },
    ]


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"msgs": []}, "transfers without msgs"),
        ({"msgs": "x"}, "transfers without msgs"),
        ({"msgs": [1]}, "transfers with a message that is neither an object nor a row"),
        ({"delivery": -1}, "transfers without a valid delivery number"),
        ({"delivery": 2**53 - 1, "msgs": [{}, {}]}, "transfers numbered too far"),
    ],
)
def test_a_broken_compact_frame_is_a_violation(fields: dict[str, Any], why: str) -> None:
    f = {"op": "transfers", "ch": 1, "handle": 0, "delivery": 0, "msgs": [{"id": "5-0"}]}
    with pytest.raises(Violation, match=why):
        expand_transfers({**f, **fields})


# -- compact rows ------------------------------------------------------------------------------

ROWS_FRAME = {
    "op": "transfers",
    "ch": 1,
    "handle": 2,
    "settled": True,
    "delivery": 7,
    "msgs": [
        ["17-4", {"a": 1}, {"ts": 17, "publisher": "p"}],
        [[2]],
        ["17-9", None],
        {"id": "18-0", "body": "o", "props": {"ts": 18}},
        ["x"],
        ["19-0", 3, {"ts": 19, "headers": {"h": [1]}}],
    ],
}


def test_rows_are_the_transfers_they_stand_for() -> None:
    got = expand_transfers(ROWS_FRAME)
    p17 = {"ts": 17, "publisher": "p"}
    assert got == [
        {"id": "17-4", "body": {"a": 1}, "props": p17, "delivery": 7, "settled": True},
        {"id": "17-5", "body": [2], "props": p17, "delivery": 8, "settled": True},
        {"id": "17-9", "body": None, "props": p17, "delivery": 9, "settled": True},
        {"id": "18-0", "body": "o", "props": {"ts": 18}, "delivery": 10, "settled": True},
        {"id": "18-1", "body": "x", "props": {"ts": 18}, "delivery": 11, "settled": True},
        {
            "id": "19-0",
            "body": 3,
            "props": {"ts": 19, "headers": {"h": [1]}},
            "delivery": 12,
            "settled": True,
        },
    ]
    # Each message has props of its own: a handler that changes one changes no other.
    got[0]["props"]["ts"] = 0
    assert [t["props"]["ts"] for t in got[:3]] == [0, 17, 17]


@pytest.mark.parametrize(
    ("msgs", "why"),
    [
        ([["5-0", 1]], "a row of no message"),
        ([[1]], "a row of no message"),
        ([[]], "a row of no message"),
        ([["5-0", 1, {"ts": 5}, 4]], "a row of no message"),
        ([["5-0", 1, [5]]], "props are not an object"),
        ([{"id": "5-0", "body": 1, "props": 5}, [2]], "a row of no message"),
        ([{"id": "five", "body": 1, "props": {}}, [2]], "without a valid id"),
        ([{"body": 1, "props": {}}, [2]], "without a valid id"),
    ],
)
def test_a_broken_row_is_a_violation(msgs: list[Any], why: str) -> None:
    f = {"op": "transfers", "ch": 1, "handle": 0, "delivery": 0, "msgs": msgs}
    with pytest.raises(Violation, match=why):
        expand_transfers(f)
