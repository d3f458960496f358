"""ServerConnection: the compact delivery form (``transfers``, a wsq extension) — negotiated in
open, numbered as a range, settled like per-message transfers, bounded by max_frame_bytes."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from protocol_helpers import OPEN_ANSWER, Harness, close, decode, message

from wsq.core.messages import Outcome
from wsq.core.wire import compact_frames, compact_head, copy_tail, message_tail
from wsq.protocol.events import DeliveriesSettled, OpenRequested
from wsq.protocol.state import ConnectionState

INVALID = "wsq:invalid-frame"


def opened(compact: Any, **limits: Any) -> tuple[Harness, list[Any]]:
    """A connection whose client's open carried ``compact``; session 1 begun. Also returns the
    server's open answer."""
    h = Harness(**limits)
    h.send({"op": "open", "token": "token", "compact": compact})
    events = h.events()
    assert len(events) == 1 and isinstance(events[0], OpenRequested), events
    h.conn.accept_open(OPEN_ANSWER)
    answer = h.out()
    h.begin(1)
    return h, answer


def expand(frame: dict[str, Any]) -> list[dict[str, Any]]:
    """A compact frame as the per-message transfers it stands for (what a client makes of it)."""
    assert frame["op"] == "transfers"
    shared = {k: frame[k] for k in ("ch", "handle", "settled")}
    return [
        {"op": "transfer", **shared, "delivery": frame["delivery"] + i, **m}
        for i, m in enumerate(frame["msgs"])
    ]


def frames_of(h: Harness, max_bytes: int | None = None) -> list[dict[str, Any]]:
    return h.out(max_bytes)  # type: ignore[return-value]


# -- negotiation ---------------------------------------------------------------------------


def test_a_client_that_offers_compact_is_told_it_is_on() -> None:
    h, answer = opened(True)
    assert answer == [{"op": "open", **OPEN_ANSWER, "compact": True}]
    assert h.conn.compact is True


def test_a_client_that_declines_compact_is_told_it_is_off() -> None:
    h, answer = opened(False)
    assert answer == [{"op": "open", **OPEN_ANSWER, "compact": False}]
    link = h.attach_receiver(1, 0, credit=2)
    h.conn.send_transfers(link, [copy_tail(message("5-0", 0)), copy_tail(message("5-1", 1))])
    assert [f["op"] for f in h.out()] == ["transfer", "transfer"]


def test_a_client_that_does_not_mention_compact_gets_the_plain_form_and_answer() -> None:
    h = Harness()
    h.open()  # asserts the answer is exactly OPEN_ANSWER: no "compact" field
    h.begin(1)
    link = h.attach_receiver(1, 0, credit=2)
    h.conn.send_transfers(link, [copy_tail(message("5-0", 0)), copy_tail(message("5-1", 1))])
    assert [(f["op"], f["delivery"]) for f in h.out()] == [("transfer", 0), ("transfer", 1)]


@pytest.mark.parametrize("value", [1, "true", None, [], {}])
def test_compact_that_is_not_a_boolean_closes_the_connection(value: Any) -> None:
    h = Harness()
    if value is None:
        # JSON null: the field given without a value is the field not given.
        h.send({"op": "open", "token": "token", "compact": value})
        assert len(h.events()) == 1
        return
    h.send({"op": "open", "token": "token", "compact": value})
    h.events()
    assert h.out() == [close(INVALID)]
    assert h.conn.state is ConnectionState.CLOSE_SENT


# -- framing and numbering -----------------------------------------------------------------


def test_consecutive_deliveries_travel_as_one_frame_with_the_shared_fields_once() -> None:
    h, _ = opened(True)
    link = h.attach_receiver(1, 3, credit=10)
    tails = [copy_tail(message(f"5-{i}", [i], ts=1000 + i)) for i in range(3)]
    h.conn.send_transfers(link, tails)
    texts = h.messages()
    assert texts == [
        '{"op":"transfers","ch":1,"handle":3,"settled":false,"delivery":0,"msgs":['
        '{"id":"5-0","body":[0],"props":{"ts":1000,"publisher":"bob"}},'
        '{"id":"5-1","body":[1],"props":{"ts":1001,"publisher":"bob"}},'
        '{"id":"5-2","body":[2],"props":{"ts":1002,"publisher":"bob"}}]}'
    ]
    assert link.credit == 7


def test_compact_frames_stand_for_exactly_the_plain_transfers() -> None:
    plain, _ = opened(False)
    compact, _ = opened(True)
    tails = [copy_tail(message(f"5-{i}", ["x" * i], subject="a.b")) for i in range(40)]
    for h in (plain, compact):
        a = h.attach_receiver(1, 0, credit=100)
        b = h.attach_receiver(1, 1, settled=True, credit=100)
        h.conn.send_transfers(a, tails[:10])
        h.conn.send_transfers(b, tails[10:25])
        h.conn.send_transfers(a, tails[25:])
    compact_frames_ = frames_of(compact)
    assert [(f["handle"], f["delivery"], len(f["msgs"])) for f in compact_frames_] == [
        (0, 0, 10),
        (1, 10, 15),
        (0, 25, 15),
    ]
    expanded = [t for f in compact_frames_ for t in expand(f)]
    assert expanded == frames_of(plain)


def test_deliveries_continue_the_session_numbering_across_forms_of_sending() -> None:
    h, _ = opened(True)
    a = h.attach_receiver(1, 0, credit=10)
    h.conn.send_transfer(a, copy_tail(message("5-0", 0)))
    h.conn.send_transfers(a, [copy_tail(message("5-1", 1)), copy_tail(message("5-2", 2))])
    out = frames_of(h)
    assert [(f["op"], f["delivery"]) for f in out] == [("transfer", 0), ("transfers", 1)]
    assert [m["id"] for m in out[1]["msgs"]] == ["5-1", "5-2"]
    assert h.conn.sessions[1].next_outgoing == 3


# -- settlement (move mode) ----------------------------------------------------------------


def test_compact_move_deliveries_are_settled_by_delivery_number() -> None:
    h, _ = opened(True)
    link = h.attach_receiver(1, 0, "jobs", mode="move", credit=5)
    msgs = [message(f"5-{i}", i) for i in range(4)]
    tails = [message_tail(m, 2 if i == 1 else None) for i, m in enumerate(msgs)]
    h.conn.send_transfers(link, tails, [m.id for m in msgs])
    (frame,) = frames_of(h)
    assert (frame["op"], frame["settled"], frame["delivery"]) == ("transfers", False, 0)
    # The move-mode fields stay with their message.
    assert [m["props"].get("redelivered") for m in frame["msgs"]] == [None, 2, None, None]
    assert link.credit == 1
    assert link.unsettled == {0: "5-0", 1: "5-1", 2: "5-2", 3: "5-3"}
    h.send({"op": "disposition", "ch": 1, "first": 1, "last": 2, "outcome": "released"})
    assert h.events() == [DeliveriesSettled(link, ["5-1", "5-2"], Outcome.RELEASED)]
    h.send({"op": "disposition", "ch": 1, "first": 0, "last": 3})
    assert h.events() == [DeliveriesSettled(link, ["5-0", "5-3"], Outcome.ACCEPTED)]
    assert link.unsettled == {} and h.conn.sessions[1].unsettled == {}


def test_pre_settled_compact_move_deliveries_wait_for_no_settlement() -> None:
    h, _ = opened(True)
    link = h.attach_receiver(1, 0, "jobs", mode="move", settled=True, credit=5)
    msgs = [message(f"5-{i}", i) for i in range(2)]
    h.conn.send_transfers(link, [message_tail(m) for m in msgs], [m.id for m in msgs])
    (frame,) = frames_of(h)
    assert frame["settled"] is True and len(frame["msgs"]) == 2
    assert link.unsettled == {}


# -- bounded by max_frame_bytes ------------------------------------------------------------


def test_compact_frames_are_the_longest_runs_that_fit_max_frame_bytes() -> None:
    limit = 1024
    h, _ = opened(True, max_frame_bytes=limit)
    link = h.attach_receiver(1, 0, credit=1000)
    # Messages of very different sizes; one larger than the limit goes alone.
    bodies = ["x" * (7 if i % 5 else 300) for i in range(120)]
    bodies[50] = "y" * 2000
    tails = [copy_tail(message(f"5-{i}", b)) for i, b in enumerate(bodies)]
    h.conn.send_transfers(link, tails)
    texts = h.conn.data_to_send()
    frames: list[dict[str, Any]] = []
    for text in texts:
        value = decode(text)
        frames.extend(value if isinstance(value, list) else [value])
    assert all(f["op"] == "transfers" for f in frames)
    expanded = [t for f in frames for t in expand(f)]
    assert [t["body"] for t in expanded] == bodies
    assert [t["delivery"] for t in expanded] == list(range(120))
    for f in frames:
        size = len(json.dumps(f, separators=(",", ":")))
        assert size <= limit or f["msgs"][0]["body"] == "y" * 2000
    assert [f["msgs"][0]["body"] for f in frames if len(f["msgs"]) == 1] == ["y" * 2000]
    # Each frame is as full as it can be: the next message would not have fit in it.
    for f, nxt in itertools.pairwise(frames):
        size = len(json.dumps(f, separators=(",", ":")))
        following = json.dumps(nxt["msgs"][0], separators=(",", ":"))
        assert size + 1 + len(following) > limit
    assert h.conn.out_bytes == 0


def test_compact_frames_of_no_tails_is_no_frame() -> None:
    assert compact_frames(compact_head(1, 0, False), 0, [], 1024) == []
