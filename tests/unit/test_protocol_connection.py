"""ServerConnection, contract section 3: open (and pipelining behind it), refresh, close."""

from __future__ import annotations

from typing import Any

import pytest
from protocol_helpers import OPEN_ANSWER, Harness, close

from wsq.core.errors import GoingAway, IdleTimeout, InvalidFrame, TokenExpired, Unauthorized
from wsq.protocol.events import (
    ConnectionEnded,
    LinkEnded,
    OpenRequested,
    RefreshRequested,
)
from wsq.protocol.state import ConnectionState

INVALID = "wsq:invalid-frame"


def _ended(error_condition: str | None, *, by_peer: bool) -> Any:
    """A matcher for ConnectionEnded (the error's description is free text)."""

    class _Matcher:
        def __eq__(self, other: object) -> bool:
            if not isinstance(other, ConnectionEnded) or other.by_peer is not by_peer:
                return False
            if error_condition is None:
                return other.error is None
            return other.error is not None and other.error.get("condition") == error_condition

        def __repr__(self) -> str:
            return f"ConnectionEnded({error_condition!r}, by_peer={by_peer})"

    return _Matcher()


# -- open ---------------------------------------------------------------------------------------


def test_open_is_reported_with_its_token_idle_and_client() -> None:
    h = Harness()
    h.send({"op": "open", "token": "jwt", "idle": 10_000, "client": "app/1.2"})
    assert h.events() == [OpenRequested("jwt", 10_000, "app/1.2")]
    assert h.messages() == []
    assert h.conn.state is ConnectionState.AUTHENTICATING
    assert h.conn.client_idle_ms == 10_000


def test_open_defaults_idle_to_30000_and_client_to_none() -> None:
    h = Harness()
    h.send({"op": "open", "token": "jwt"})
    assert h.events() == [OpenRequested("jwt", 30_000, None)]


def test_accept_open_answers_open_with_the_fields_given() -> None:
    h = Harness()
    h.send({"op": "open", "token": "jwt"})
    h.events()
    h.conn.accept_open(OPEN_ANSWER)
    assert h.out() == [{"op": "open", **OPEN_ANSWER}]
    assert h.conn.state is ConnectionState.OPEN


def test_accept_open_twice_answers_once() -> None:
    h = Harness()
    h.open()
    h.conn.accept_open(OPEN_ANSWER)
    assert h.out() == []


@pytest.mark.parametrize(
    "frame",
    [
        {"op": "begin", "ch": 1},
        {"op": "end", "ch": 1},
        {"op": "refresh", "token": "jwt"},
        {"op": "attach", "ch": 1, "handle": 0, "role": "sender", "address": "a"},
        {"op": "detach", "ch": 1, "handle": 0},
        {"op": "flow", "ch": 1, "handle": 0, "credit": 1},
        {"op": "transfer", "ch": 1, "handle": 0, "delivery": 0},
        {"op": "disposition", "ch": 1, "first": 0},
    ],
)
def test_the_first_frame_must_be_open(frame: dict[str, Any]) -> None:
    h = Harness()
    h.send(frame, {"op": "open", "token": "jwt"})
    assert h.events() == [_ended(INVALID, by_peer=False)]
    assert h.out() == [close(INVALID)]


def test_a_close_as_first_frame_is_answered_by_close() -> None:
    h = Harness()
    h.send({"op": "close"})
    assert h.events() == [_ended(None, by_peer=True)]
    assert h.out() == [close()]
    assert h.conn.state is ConnectionState.CLOSED


@pytest.mark.parametrize(
    "fields",
    [{}, {"token": ""}, {"token": None}, {"token": 123}, {"token": ["t"]}, {"token": "t" * 16_385}],
    ids=["missing", "empty", "null", "number", "list", "too-long"],
)
def test_open_without_a_usable_token_is_unauthorized(fields: dict[str, Any]) -> None:
    h = Harness()
    h.send({"op": "open", **fields}, {"op": "begin", "ch": 1})
    assert h.events() == [_ended("wsq:unauthorized", by_peer=False)]
    assert h.out() == [close("wsq:unauthorized")]


def test_a_token_of_16384_characters_is_long_enough() -> None:
    h = Harness()
    h.send({"op": "open", "token": "t" * 16_384})
    assert h.events() == [OpenRequested("t" * 16_384, 30_000, None)]


@pytest.mark.parametrize("idle", [0, 500, 1_000, 30_000, 3_600_000])
def test_open_accepts_idle_0_or_500_to_3600000_ms(idle: int) -> None:
    h = Harness()
    h.send({"op": "open", "token": "jwt", "idle": idle})
    assert h.events() == [OpenRequested("jwt", idle, None)]
    assert h.conn.client_idle_ms == idle


@pytest.mark.parametrize("idle", [-1, 1, 499, 3_600_001, 30_000.0, "30000", True, None, [30_000]])
def test_open_with_an_invalid_idle_closes_with_invalid_frame(idle: object) -> None:
    h = Harness()
    h.send({"op": "open", "token": "jwt", "idle": idle})
    assert h.events() == [_ended(INVALID, by_peer=False)]
    assert h.out() == [close(INVALID)]


@pytest.mark.parametrize("client", [1, ["a"], {"name": "a"}, "c" * 257])
def test_open_with_an_invalid_client_closes_with_invalid_frame(client: object) -> None:
    h = Harness()
    h.send({"op": "open", "token": "jwt", "client": client})
    assert h.events() == [_ended(INVALID, by_peer=False)]
    assert h.out() == [close(INVALID)]


def test_a_second_open_closes_with_invalid_frame() -> None:
    h = Harness()
    h.open()
    h.send({"op": "open", "token": "jwt"})
    assert h.events() == [_ended(INVALID, by_peer=False)]
    assert h.out() == [close(INVALID)]


def test_a_second_open_pipelined_behind_the_first_closes_once_the_first_is_accepted() -> None:
    h = Harness()
    h.send({"op": "open", "token": "a"}, {"op": "open", "token": "b"})
    assert h.events() == [OpenRequested("a", 30_000, None)]
    h.conn.accept_open(OPEN_ANSWER)
    assert h.events() == [_ended(INVALID, by_peer=False)]
    assert h.out() == [{"op": "open", **OPEN_ANSWER}, close(INVALID)]


# -- pipelining ---------------------------------------------------------------------------------


def test_frames_behind_open_in_the_same_batch_wait_for_accept_open() -> None:
    h = Harness()
    h.send({"op": "open", "token": "jwt"}, {"op": "begin", "ch": 1}, {"op": "begin", "ch": 2})
    assert h.events() == [OpenRequested("jwt", 30_000, None)]
    assert h.events() == []  # asking again does not move past the open
    assert h.out() == []
    assert h.conn.sessions == {}
    h.conn.accept_open(OPEN_ANSWER)
    assert h.events() == []
    assert h.out() == [
        {"op": "open", **OPEN_ANSWER},
        {"op": "begin", "ch": 1},
        {"op": "begin", "ch": 2},
    ]


def test_frames_of_later_messages_wait_for_accept_open() -> None:
    h = Harness()
    h.send({"op": "open", "token": "jwt"})
    assert h.events() == [OpenRequested("jwt", 30_000, None)]
    h.send({"op": "begin", "ch": 1})
    h.send(
        {"op": "begin", "ch": 2},
        {"op": "attach", "ch": 2, "handle": 0, "role": "sender", "address": "a"},
    )
    assert h.events() == []
    assert h.out() == []
    h.conn.accept_open(OPEN_ANSWER)
    events = h.events()
    assert [type(e).__name__ for e in events] == ["AttachRequested"]
    assert h.out() == [
        {"op": "open", **OPEN_ANSWER},
        {"op": "begin", "ch": 1},
        {"op": "begin", "ch": 2},
    ]


def test_a_frame_that_breaks_the_contract_behind_open_is_judged_after_accept_open() -> None:
    h = Harness()
    h.send({"op": "open", "token": "jwt"}, {"op": "nope"})
    assert h.events() == [OpenRequested("jwt", 30_000, None)]
    assert h.out() == []
    h.conn.accept_open(OPEN_ANSWER)
    assert h.events() == [_ended(INVALID, by_peer=False)]
    assert h.out() == [{"op": "open", **OPEN_ANSWER}, close(INVALID)]


@pytest.mark.parametrize(
    ("exc", "condition"),
    [
        (Unauthorized("bad signature"), "wsq:unauthorized"),
        (TokenExpired("old"), "wsq:token-expired"),
    ],
)
def test_pipelined_frames_are_dropped_when_open_is_rejected(exc: Any, condition: str) -> None:
    h = Harness()
    h.send({"op": "open", "token": "jwt"}, {"op": "begin", "ch": 1})
    h.send({"op": "begin", "ch": 2})
    assert h.events() == [OpenRequested("jwt", 30_000, None)]
    h.conn.reject_open(exc)
    assert h.events() == [_ended(condition, by_peer=False)]
    assert h.out() == [close(condition)]
    # Frames arriving after the rejection are dropped too; nothing is ever begun.
    h.send({"op": "begin", "ch": 3})
    assert h.events() == []
    assert h.out() == []
    assert h.conn.sessions == {}
    assert h.conn.state is ConnectionState.CLOSE_SENT


def test_a_rejected_open_still_takes_the_clients_close() -> None:
    h = Harness()
    h.send({"op": "open", "token": "jwt"})
    h.events()
    h.conn.reject_open(Unauthorized("no"))
    h.events()
    h.out()
    h.send({"op": "close"})
    h.assert_quiet(ConnectionState.CLOSED)


# -- refresh ------------------------------------------------------------------------------------


def test_refresh_is_reported_with_the_new_token() -> None:
    h = Harness()
    h.open()
    h.send({"op": "refresh", "token": "new-jwt"})
    assert h.events() == [RefreshRequested("new-jwt")]
    assert h.out() == []


def test_accept_refresh_answers_refresh_with_exp() -> None:
    h = Harness()
    h.open()
    h.send({"op": "refresh", "token": "new-jwt"})
    h.events()
    h.conn.accept_refresh(2_000_000_600)
    assert h.out() == [{"op": "refresh", "exp": 2_000_000_600}]


@pytest.mark.parametrize("token", [None, "", 5, {"t": 1}, "t" * 16_385])
def test_refresh_without_a_usable_token_closes_with_invalid_frame(token: object) -> None:
    h = Harness()
    h.open()
    h.send({"op": "refresh"} if token is None else {"op": "refresh", "token": token})
    assert h.events() == [_ended(INVALID, by_peer=False)]
    assert h.out() == [close(INVALID)]


def test_frames_behind_a_refresh_are_processed_after_it_is_reported() -> None:
    h = Harness()
    h.open()
    h.send({"op": "refresh", "token": "new"}, {"op": "begin", "ch": 1})
    assert h.event() == RefreshRequested("new")
    assert h.out() == []
    h.conn.accept_refresh(5)
    assert h.events() == []
    assert h.out() == [{"op": "refresh", "exp": 5}, {"op": "begin", "ch": 1}]


def test_links_lists_attached_links_for_rights_rechecks() -> None:
    h = Harness()
    h.open()
    h.begin(1)
    h.begin(2)
    r = h.attach_receiver(1, 0)
    s = h.attach_sender(2, 7)
    pending = h.attach(1, 1, "receiver", "news.eu")  # not answered yet
    assert h.conn.links() == [r, s]
    h.conn.detach(r, Unauthorized("gone"))
    assert h.conn.links() == [s]
    assert pending not in h.conn.links()


# -- close --------------------------------------------------------------------------------------


def test_a_close_from_the_client_is_answered_by_close_and_ends_the_connection() -> None:
    h = Harness()
    h.open()
    h.begin(1)
    link = h.attach_receiver(1, 0)
    h.send({"op": "close"})
    assert h.events() == [LinkEnded(link, []), _ended(None, by_peer=True)]
    assert h.out() == [close()]
    assert h.conn.state is ConnectionState.CLOSED
    assert h.conn.sessions == {}


def test_a_close_from_the_client_reports_its_error() -> None:
    h = Harness()
    h.open()
    err = {"condition": "wsq:internal-error", "description": "client crashed"}
    h.send({"op": "close", "error": err})
    assert h.events() == [ConnectionEnded(err, by_peer=True)]
    assert h.out() == [close()]  # the answer carries no error


@pytest.mark.parametrize("err", [None, "boom", 5, ["x"]])
def test_a_close_with_an_error_that_is_not_an_object_reports_none(err: object) -> None:
    h = Harness()
    h.open()
    h.send({"op": "close", "error": err})
    assert h.events() == [ConnectionEnded(None, by_peer=True)]
    assert h.out() == [close()]


def test_frames_after_the_clients_close_are_ignored() -> None:
    h = Harness()
    h.open()
    h.send({"op": "close"}, {"op": "begin", "ch": 1})
    h.send({"op": "begin", "ch": 2})
    h.send_text("not json")
    h.send({"op": "close"})
    assert h.events() == [_ended(None, by_peer=True)]
    assert h.out() == [close()]
    h.conn.heartbeat()
    h.conn.close(GoingAway("later"))
    h.send({"op": "begin", "ch": 3})
    h.send_text("x" * 2_000_000)
    h.assert_quiet(ConnectionState.CLOSED)


def test_our_close_sends_the_error_and_ends_every_link() -> None:
    h = Harness()
    h.open()
    h.begin(1)
    h.begin(2)
    a = h.attach_receiver(1, 0)
    b = h.attach_sender(2, 3)
    h.conn.close(GoingAway("draining"))
    assert h.events() == [
        LinkEnded(a, []),
        LinkEnded(b, []),
        _ended("wsq:going-away", by_peer=False),
    ]
    assert h.out() == [close("wsq:going-away")]
    assert h.conn.state is ConnectionState.CLOSE_SENT
    assert h.conn.sessions == {}


def test_our_close_without_an_error_is_a_plain_close() -> None:
    h = Harness()
    h.open()
    h.conn.close()
    assert h.events() == [ConnectionEnded(None, by_peer=False)]
    assert h.out() == [close()]


def test_we_close_only_once() -> None:
    h = Harness()
    h.open()
    h.conn.close(IdleTimeout("silence"))
    h.conn.close(GoingAway("again"))
    h.conn.reject_open(Unauthorized("late"))
    assert h.events() == [_ended("wsq:idle-timeout", by_peer=False)]
    assert h.out() == [close("wsq:idle-timeout")]


def test_after_our_close_only_the_clients_close_matters() -> None:
    h = Harness()
    h.open()
    h.begin(1)
    h.conn.close(InvalidFrame("bad"))
    h.events()
    h.out()
    h.send({"op": "begin", "ch": 2}, {"op": "end", "ch": 1}, {"op": "open", "token": "x"})
    h.send({"op": "attach", "ch": 1, "handle": 0, "role": "sender", "address": "a"})
    h.send({"op": "nope"}, 7, "garbage")
    h.send_text("{not json")
    h.send_text("x" * 2_000_000)  # oversize
    assert h.events() == []
    assert h.out() == []
    assert h.conn.state is ConnectionState.CLOSE_SENT
    h.send({"op": "transfer"}, {"op": "close"}, {"op": "begin", "ch": 3})
    assert h.events() == []  # ConnectionEnded was reported with our close
    assert h.out() == []  # a close that answers ours is not answered
    assert h.conn.state is ConnectionState.CLOSED
    assert h.conn.sessions == {}


def test_after_close_the_gateways_answers_are_ignored() -> None:
    h = Harness()
    h.open()
    h.begin(1)
    sender = h.attach_sender(1, 0)
    pending = h.attach(1, 1, "receiver", "news.eu")
    h.conn.close()
    h.events()
    h.out()
    h.conn.accept_attach(pending, from_="0-0", recovered=True)
    h.conn.detach(sender, InvalidFrame("late"))
    h.conn.end_session(sender.session, InvalidFrame("late"))
    h.conn.accept_refresh(1)
    h.conn.settle_publish(sender, [])
    assert h.events() == []
    assert h.out() == []  # nothing may follow our close
