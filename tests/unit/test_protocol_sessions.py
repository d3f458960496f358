"""ServerConnection, contract section 4: sessions (begin, end, channels, max_sessions)."""

from __future__ import annotations

from typing import Any

import pytest
from protocol_helpers import Harness, close, detach, end, transfer

from wsq.core.errors import GoingAway, InvalidFrame
from wsq.protocol.events import ConnectionEnded, LinkEnded, PublishRequested
from wsq.protocol.state import ConnectionState, SessionState

INVALID = "wsq:invalid-frame"
LIMIT = "wsq:resource-limit-exceeded"


def opened(**limits: Any) -> Harness:
    h = Harness(**limits)
    h.open()
    return h


def assert_closed_with_invalid_frame(h: Harness) -> None:
    events = h.events()
    assert h.out() == [close(INVALID)]
    assert isinstance(events[-1], ConnectionEnded)
    assert all(isinstance(e, LinkEnded) for e in events[:-1])
    assert h.conn.state is ConnectionState.CLOSE_SENT


# -- begin --------------------------------------------------------------------------------------


def test_begin_is_answered_with_begin() -> None:
    h = opened()
    assert h.exchange({"op": "begin", "ch": 1}) == ([], [{"op": "begin", "ch": 1}])
    assert h.conn.sessions[1].state is SessionState.BEGUN


@pytest.mark.parametrize("ch", [0, 1, 65_535])
def test_channels_0_to_65535_can_be_begun(ch: int) -> None:
    h = opened()
    assert h.exchange({"op": "begin", "ch": ch}) == ([], [{"op": "begin", "ch": ch}])


@pytest.mark.parametrize("ch", [-1, 65_536, 2**64, 1.0, 1.5, "1", True, None, [1]], ids=repr)
def test_a_channel_out_of_range_or_not_an_integer_closes_with_invalid_frame(ch: object) -> None:
    h = opened()
    h.send({"op": "begin", "ch": ch})
    assert_closed_with_invalid_frame(h)


def test_a_begin_without_a_channel_closes_with_invalid_frame() -> None:
    h = opened()
    h.send({"op": "begin"})
    assert_closed_with_invalid_frame(h)


def test_a_begin_on_a_channel_in_use_closes_with_invalid_frame() -> None:
    h = opened()
    h.begin(4)
    h.send({"op": "begin", "ch": 4})
    assert_closed_with_invalid_frame(h)


@pytest.mark.parametrize(
    "frame",
    [
        {"op": "end", "ch": 9},
        {"op": "attach", "ch": 9, "handle": 0, "role": "sender", "address": "a"},
        {"op": "detach", "ch": 9, "handle": 0},
        {"op": "flow", "ch": 9, "handle": 0, "credit": 1},
        transfer(9, 0, 0),
        {"op": "disposition", "ch": 9, "first": 0},
    ],
    ids=lambda f: f["op"],
)
def test_a_frame_on_a_channel_not_begun_closes_with_invalid_frame(frame: dict[str, Any]) -> None:
    h = opened()
    h.begin(1)
    h.send(frame)
    assert_closed_with_invalid_frame(h)


@pytest.mark.parametrize("op", ["end", "attach", "detach", "flow", "transfer", "disposition"])
@pytest.mark.parametrize("ch", [-1, 65_536, "1", None], ids=repr)
def test_a_session_frame_with_an_invalid_channel_closes_with_invalid_frame(
    op: str, ch: object
) -> None:
    h = opened()
    h.begin(1)
    frame = {"op": op, "handle": 0, "delivery": 0, "first": 0, "credit": 1, "role": "sender"}
    frame["address"] = "a"
    if ch is not None:
        frame["ch"] = ch
    h.send(frame)
    assert_closed_with_invalid_frame(h)


# -- max_sessions -------------------------------------------------------------------------------


def test_a_session_past_max_sessions_is_ended_with_resource_limit_exceeded() -> None:
    h = opened(max_sessions=2)
    h.begin(0)
    h.begin(1)
    events, frames = h.exchange({"op": "begin", "ch": 2})
    assert events == []
    assert frames == [end(2, LIMIT)]
    # Only that channel: the others and the socket keep working.
    assert h.conn.state is ConnectionState.OPEN
    assert h.conn.sessions[0].state is SessionState.BEGUN
    h.attach_sender(0, 0)


def test_the_clients_end_answering_a_refused_session_is_accepted_silently() -> None:
    h = opened(max_sessions=1)
    h.begin(0)
    h.exchange({"op": "begin", "ch": 5})
    assert h.exchange({"op": "end", "ch": 5}) == ([], [])
    assert 5 not in h.conn.sessions
    assert h.conn.state is ConnectionState.OPEN


def test_frames_on_a_refused_session_are_ignored_until_the_clients_end() -> None:
    h = opened(max_sessions=1)
    h.begin(0)
    h.exchange({"op": "begin", "ch": 5})
    events, frames = h.exchange(
        {"op": "attach", "ch": 5, "handle": 0, "role": "sender", "address": "a"},
        {"op": "flow", "ch": 5, "handle": 0, "credit": 1},
        transfer(5, 0, 0),
        {"op": "disposition", "ch": 5, "first": 0},
        {"op": "detach", "ch": 5, "handle": 0},
    )
    assert (events, frames) == ([], [])
    h.exchange({"op": "end", "ch": 5})
    h.send({"op": "flow", "ch": 5, "handle": 0, "credit": 1})
    assert_closed_with_invalid_frame(h)


def test_a_refused_session_does_not_take_a_slot() -> None:
    h = opened(max_sessions=1)
    h.begin(0)
    assert h.exchange({"op": "begin", "ch": 1}) == ([], [end(1, LIMIT)])
    assert h.exchange({"op": "end", "ch": 1}) == ([], [])
    assert h.exchange({"op": "end", "ch": 0}) == ([], [end(0)])
    h.begin(1)


def test_ending_a_session_frees_a_slot_for_another() -> None:
    h = opened(max_sessions=2)
    h.begin(0)
    h.begin(1)
    h.exchange({"op": "end", "ch": 0})
    h.begin(7)
    assert h.exchange({"op": "begin", "ch": 8}) == ([], [end(8, LIMIT)])


def test_a_session_we_ended_frees_its_slot_at_once() -> None:
    h = opened(max_sessions=1)
    h.begin(0)
    h.conn.end_session(h.conn.sessions[0], GoingAway("bye"))
    h.out()
    h.begin(1)


def test_max_sessions_of_zero_refuses_every_session() -> None:
    h = opened(max_sessions=0)
    assert h.exchange({"op": "begin", "ch": 0}) == ([], [end(0, LIMIT)])


# -- end ----------------------------------------------------------------------------------------


def test_an_end_from_the_client_is_answered_and_ends_its_links() -> None:
    h = opened()
    h.begin(1)
    h.begin(2)
    r = h.attach_receiver(1, 0)
    s = h.attach_sender(1, 1)
    other = h.attach_sender(2, 0)
    assert h.exchange({"op": "end", "ch": 1}) == ([LinkEnded(r, []), LinkEnded(s, [])], [end(1)])
    assert set(h.conn.sessions) == {2}
    assert h.conn.links() == [other]


def test_an_end_from_the_client_with_an_error_is_answered_without_error() -> None:
    h = opened()
    h.begin(1)
    err = {"condition": "wsq:internal-error", "description": "oops"}
    assert h.exchange({"op": "end", "ch": 1, "error": err}) == ([], [end(1)])


def test_an_end_frees_the_channel_for_a_new_begin() -> None:
    h = opened()
    h.begin(1)
    h.exchange({"op": "end", "ch": 1})
    h.begin(1)


def test_a_link_being_attached_ends_with_its_session() -> None:
    h = opened()
    h.begin(1)
    pending = h.attach(1, 0, "receiver", "news.eu")
    assert h.exchange({"op": "end", "ch": 1}) == ([LinkEnded(pending, [])], [end(1)])
    h.conn.accept_attach(pending, from_="0-0", recovered=True)
    assert h.out() == []  # too late: no attach on an ended session


def test_frames_behind_an_end_in_the_same_batch_see_the_channel_gone() -> None:
    h = opened()
    h.begin(1)
    h.send({"op": "end", "ch": 1}, {"op": "flow", "ch": 1, "handle": 0, "credit": 1})
    assert [type(e) for e in h.events()] == [ConnectionEnded]
    assert h.out() == [end(1), close(INVALID)]


# -- end_session (from our side) ----------------------------------------------------------------


def test_end_session_sends_end_with_the_error_and_ends_the_links() -> None:
    h = opened()
    h.begin(1)
    r = h.attach_receiver(1, 0)
    s = h.attach_sender(1, 1)
    h.conn.end_session(h.conn.sessions[1], InvalidFrame("you broke it"))
    assert h.events() == [LinkEnded(r, []), LinkEnded(s, [])]
    assert h.out() == [end(1, INVALID)]
    assert h.conn.sessions[1].state is SessionState.END_SENT
    assert h.conn.links() == []


def test_end_session_without_an_error_sends_a_plain_end() -> None:
    h = opened()
    h.begin(1)
    h.conn.end_session(h.conn.sessions[1])
    assert h.out() == [end(1)]


def test_end_session_twice_sends_one_end() -> None:
    h = opened()
    h.begin(1)
    session = h.conn.sessions[1]
    h.conn.end_session(session, GoingAway("a"))
    h.conn.end_session(session, GoingAway("b"))
    assert h.out() == [end(1, "wsq:going-away")]


def test_frames_crossing_our_end_are_ignored_until_the_clients_end() -> None:
    h = opened()
    h.begin(1)
    sender = h.attach_sender(1, 0)
    h.attach_receiver(1, 1)
    h.conn.end_session(sender.session, GoingAway("bye"))
    h.events()
    h.out()
    events, frames = h.exchange(
        transfer(1, 0, 0, body="crossing"),
        transfer(1, 0, 7),  # out of sequence: ignored too
        {"op": "flow", "ch": 1, "handle": 1, "credit": 10},
        {"op": "flow", "ch": 1, "handle": 99, "credit": 10},  # unknown handle: ignored too
        {"op": "attach", "ch": 1, "handle": 0, "role": "sender", "address": "a"},
        {"op": "disposition", "ch": 1, "first": 0, "outcome": "accepted"},
        {"op": "detach", "ch": 1, "handle": 1},
    )
    assert (events, frames) == ([], [])
    # The client's end is the answer: not answered, and the channel is free again.
    assert h.exchange({"op": "end", "ch": 1}) == ([], [])
    assert 1 not in h.conn.sessions
    h.send(detach(1, 0))
    assert_closed_with_invalid_frame(h)


def test_a_channel_we_ended_can_be_begun_again_after_the_clients_end() -> None:
    h = opened()
    h.begin(1)
    h.conn.end_session(h.conn.sessions[1], GoingAway("bye"))
    h.out()
    h.exchange({"op": "end", "ch": 1})
    h.begin(1)


def test_a_begin_on_a_channel_we_ended_is_taken_as_the_clients_end() -> None:
    # Lenient: the contract leaves this open; a channel awaiting the client's end is reused.
    h = opened()
    h.begin(1)
    h.conn.end_session(h.conn.sessions[1], GoingAway("bye"))
    h.out()
    h.begin(1)
    assert h.conn.sessions[1].state is SessionState.BEGUN


def test_end_session_on_a_session_that_is_gone_does_nothing() -> None:
    h = opened()
    h.begin(1)
    session = h.conn.sessions[1]
    h.exchange({"op": "end", "ch": 1})
    h.begin(1)  # a new session on the same channel
    h.conn.end_session(session, GoingAway("stale"))
    assert h.out() == []
    assert h.conn.sessions[1].state is SessionState.BEGUN


# -- delivery numbering is per session ------------------------------------------------------------


def test_each_session_numbers_client_transfers_from_zero() -> None:
    h = opened()
    h.begin(1)
    h.begin(2)
    a = h.attach_sender(1, 0)
    b = h.attach_sender(2, 0)
    h.send(transfer(1, 0, 0), transfer(2, 0, 0), transfer(1, 0, 1), transfer(2, 0, 1))
    events = h.events()
    assert [
        (e.link, [i.delivery for i in e.items]) for e in events if isinstance(e, PublishRequested)
    ] == [
        (a, [0]),
        (b, [0]),
        (a, [1]),
        (b, [1]),
    ]
    assert h.out() == []


def test_a_new_session_on_a_reused_channel_numbers_from_zero_again() -> None:
    h = opened()
    h.begin(1)
    h.attach_sender(1, 0)
    h.send(transfer(1, 0, 0), transfer(1, 0, 1))
    h.events()
    h.exchange({"op": "end", "ch": 1})
    h.begin(1)
    link = h.attach_sender(1, 0)
    h.send(transfer(1, 0, 0))
    assert [e.link for e in h.events() if isinstance(e, PublishRequested)] == [link]
    assert h.out() == []
