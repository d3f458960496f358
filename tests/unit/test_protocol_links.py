"""ServerConnection, contract section 5: attach, detach, flow, and the rules for every link frame."""

from __future__ import annotations

from typing import Any

import pytest
from protocol_helpers import Harness, close, detach, end, transfer

from wsq.core.addresses import Pattern
from wsq.core.errors import Forbidden, InvalidFrame
from wsq.protocol.events import AttachRequested, CreditGranted, LinkEnded
from wsq.protocol.state import ConnectionState, LinkState, Role, SessionState

INVALID = "wsq:invalid-frame"
LIMIT = "wsq:resource-limit-exceeded"
MAX_UINT32 = 2**32 - 1


def opened(**limits: Any) -> Harness:
    h = Harness(**limits)
    h.open()
    h.begin(1)
    return h


def attach_frame(
    handle: int = 0, role: str = "receiver", address: str = "news.eu", **fields: Any
) -> dict[str, Any]:
    return {"op": "attach", "ch": 1, "handle": handle, "role": role, "address": address, **fields}


def session_ended_with(h: Harness, condition: str, ch: int = 1) -> None:
    """The session (not the connection) ended with ``condition``."""
    assert all(isinstance(e, LinkEnded) for e in h.events())
    assert h.out() == [end(ch, condition)]
    assert h.conn.sessions[ch].state is SessionState.END_SENT
    assert h.conn.state is ConnectionState.OPEN


def refused_at_link_scope(h: Harness, handle: int, condition: str) -> None:
    """The attach was answered by detach with ``condition`` only; the session goes on."""
    events = h.events()
    assert not any(isinstance(e, AttachRequested) for e in events)
    assert [(type(e), e.link.handle) for e in events] == [(LinkEnded, handle)]  # type: ignore[union-attr]
    assert h.out() == [detach(1, handle, condition)]
    assert h.conn.sessions[1].state is SessionState.BEGUN
    assert h.conn.state is ConnectionState.OPEN


# -- attach: receivers ----------------------------------------------------------------------------


def test_a_receiver_attach_is_reported_with_its_defaults() -> None:
    h = opened()
    h.send(attach_frame(0, "receiver", "news.eu"))
    events = h.events()
    assert len(events) == 1 and isinstance(events[0], AttachRequested)
    link = events[0].link
    assert link is h.link(1, 0)
    assert (link.ch, link.handle, link.role, link.address) == (1, 0, Role.RECEIVER, "news.eu")
    assert (link.mode, link.from_, link.filter, link.pre_settled, link.credit) == (
        "copy",
        "$",
        None,
        False,
        0,
    )
    assert link.state is LinkState.ATTACHING
    assert h.out() == []  # nothing until the gateway answers


def test_a_copy_receiver_is_answered_with_mode_from_and_recovered() -> None:
    h = opened()
    link = h.attach(1, 0, "receiver", "news.eu", **{"from": "^"})
    assert link.from_ == "^"
    h.conn.accept_attach(link, from_="1732200000000-3", recovered=False)
    assert h.out() == [
        {
            "op": "attach",
            "ch": 1,
            "handle": 0,
            "role": "receiver",
            "address": "news.eu",
            "mode": "copy",
            "from": "1732200000000-3",
            "recovered": False,
            "settled": False,
        }
    ]
    assert link.state is LinkState.ATTACHED
    assert h.events() == []


@pytest.mark.parametrize("from_", ["$", "^", "0-0", "1732200000000-0", "1732200000000-17"])
def test_a_copy_receiver_accepts_from_dollar_caret_or_a_position(from_: str) -> None:
    h = opened()
    assert h.attach(1, 0, "receiver", "news.eu", **{"from": from_}).from_ == from_


def test_a_move_receiver_is_answered_with_its_group() -> None:
    h = opened()
    link = h.attach(1, 2, "receiver", "jobs.mail", mode="move", group="workers", lease=5_000)
    assert (link.mode, link.group, link.lease_ms) == ("move", "workers", 5_000)
    h.conn.accept_attach(link)
    assert h.out() == [
        {
            "op": "attach",
            "ch": 1,
            "handle": 2,
            "role": "receiver",
            "address": "jobs.mail",
            "mode": "move",
            "group": "workers",
            "settled": False,
        }
    ]


def test_a_move_receiver_defaults_to_group_default_and_a_30s_lease() -> None:
    h = opened()
    link = h.attach(1, 0, "receiver", "jobs", mode="move")
    assert (link.group, link.lease_ms) == ("default", 30_000)


def test_a_receiver_attach_takes_filter_settled_and_initial_credit() -> None:
    h = opened()
    link = h.attach(
        1, 0, "receiver", "orders", filter={"subject": "orders.*.eu"}, settled=True, credit=100
    )
    assert link.filter == Pattern("orders.*.eu")
    assert link.pre_settled is True
    assert link.credit == 100
    h.conn.accept_attach(link, from_="0-0", recovered=True)
    assert h.out()[0]["settled"] is True


def test_an_empty_filter_filters_nothing() -> None:
    h = opened()
    assert h.attach(1, 0, "receiver", "orders", filter={}).filter is None


@pytest.mark.parametrize("credit", [0, 1, MAX_UINT32])
def test_initial_credit_ranges_over_0_to_2_32_minus_1(credit: int) -> None:
    h = opened()
    assert h.attach(1, 0, "receiver", "orders", credit=credit).credit == credit


# -- attach: senders ----------------------------------------------------------------------------


def test_a_sender_attach_is_answered_and_granted_the_sender_credit() -> None:
    h = opened(sender_credit=64)
    link = h.attach(1, 3, "sender", "chat.room1")
    assert (link.role, link.credit) == (Role.SENDER, 0)
    h.conn.accept_attach(link)
    assert h.out() == [
        {"op": "attach", "ch": 1, "handle": 3, "role": "sender", "address": "chat.room1"},
        {"op": "flow", "ch": 1, "handle": 3, "credit": 64},
    ]
    assert link.credit == 64


def test_a_sender_attach_ignores_receiver_fields() -> None:
    h = opened()
    link = h.attach(1, 0, "sender", "chat", mode="bogus", filter=5, settled="x", credit=-1)
    assert link.role is Role.SENDER
    h.conn.accept_attach(link)
    assert [f["op"] for f in h.out()] == ["attach", "flow"]


def test_accept_attach_answers_once() -> None:
    h = opened()
    link = h.attach(1, 0, "sender", "chat")
    h.conn.accept_attach(link)
    h.out()
    h.conn.accept_attach(link)
    assert h.out() == []


def test_the_gateway_can_refuse_an_attach_with_a_detach() -> None:
    h = opened()
    link = h.attach(1, 0, "receiver", "secret")
    h.conn.detach(link, Forbidden("no"))
    assert h.events() == [LinkEnded(link, [])]
    assert h.out() == [detach(1, 0, "wsq:forbidden")]
    h.conn.accept_attach(link, from_="0-0", recovered=True)
    assert h.out() == []  # no attach after the refusal


# -- handles --------------------------------------------------------------------------------------


@pytest.mark.parametrize("handle", [0, 1, MAX_UINT32])
def test_handles_range_over_0_to_2_32_minus_1(handle: int) -> None:
    h = opened()
    assert h.attach(1, handle, "sender", "chat").handle == handle


@pytest.mark.parametrize("handle", [-1, 2**32, 1.0, "0", None, True, [0]], ids=repr)
def test_an_attach_with_an_invalid_handle_ends_the_session(handle: object) -> None:
    h = opened()
    h.send({**attach_frame(), "handle": handle})
    session_ended_with(h, INVALID)


def test_an_attach_without_a_handle_ends_the_session() -> None:
    h = opened()
    frame = attach_frame()
    del frame["handle"]
    h.send(frame)
    session_ended_with(h, INVALID)


def test_an_attach_on_a_handle_in_use_ends_the_session() -> None:
    h = opened()
    h.begin(2)
    first = h.attach_receiver(1, 5)
    other = h.attach_sender(2, 5)  # the same handle on another session is fine
    h.send(attach_frame(5, "sender", "chat"))
    assert h.events() == [LinkEnded(first, [])]
    assert h.out() == [end(1, INVALID)]
    assert h.conn.links() == [other]


def test_an_attach_on_a_handle_still_being_attached_ends_the_session() -> None:
    h = opened()
    h.attach(1, 5, "receiver", "news")
    h.send(attach_frame(5, "sender", "chat"))
    session_ended_with(h, INVALID)


@pytest.mark.parametrize(
    "frame",
    [
        {"op": "flow", "ch": 1, "handle": 9, "credit": 1},
        transfer(1, 9, 0),
        {"op": "detach", "ch": 1, "handle": 9},
    ],
    ids=lambda f: f["op"],
)
def test_a_link_frame_on_a_handle_not_attached_ends_the_session(frame: dict[str, Any]) -> None:
    h = opened()
    h.attach_sender(1, 0)
    h.send(frame)
    session_ended_with(h, INVALID)


@pytest.mark.parametrize("op", ["flow", "transfer", "detach"])
@pytest.mark.parametrize("handle", [-1, 2**32, "0", None, 0.5], ids=repr)
def test_a_link_frame_with_an_invalid_handle_ends_the_session(op: str, handle: object) -> None:
    h = opened()
    h.attach_sender(1, 0)
    frame: dict[str, Any] = {"op": op, "ch": 1, "credit": 1, "delivery": 0}
    if handle is not None:
        frame["handle"] = handle
    h.send(frame)
    session_ended_with(h, INVALID)


# -- attach refused at link scope -----------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "",
        "news..eu",
        ".news",
        "news.",
        "news eu",
        "news/eu",
        "nëws",
        "news.*",
        "news.>",
        "x" * 256,
        None,
        5,
        ["news"],
    ],
    ids=repr,
)
@pytest.mark.parametrize("role", ["receiver", "sender"])
def test_an_attach_with_an_invalid_address_is_detached_and_the_session_goes_on(
    role: str, address: object
) -> None:
    h = opened()
    h.send({**attach_frame(4, role), "address": address})
    refused_at_link_scope(h, 4, INVALID)
    h.attach_sender(1, 5)  # the session works


@pytest.mark.parametrize(("field", "handle"), [("address", 4), ("role", 3)])
def test_an_attach_without_an_address_or_a_role_is_detached(field: str, handle: int) -> None:
    h = opened()
    frame = attach_frame(handle)
    del frame[field]
    h.send(frame)
    refused_at_link_scope(h, handle, INVALID)


def test_an_address_of_255_characters_is_accepted() -> None:
    h = opened()
    assert h.attach(1, 0, "sender", "x" * 255).address == "x" * 255


@pytest.mark.parametrize(
    "subject", ["", "a..b", "a.>.b", ">.a", "a.b*", "a b", "x" * 256, 5, ["a"]], ids=repr
)
def test_a_receiver_with_an_invalid_filter_subject_is_detached(subject: object) -> None:
    h = opened()
    h.send(attach_frame(2, filter={"subject": subject}))
    refused_at_link_scope(h, 2, INVALID)


@pytest.mark.parametrize("subject", ["orders.*.eu", "news.>", "*", ">", "orders.de.eu"])
def test_a_receiver_with_a_valid_filter_subject_is_attached(subject: str) -> None:
    h = opened()
    assert h.attach(1, 0, "receiver", "orders", filter={"subject": subject}).filter == Pattern(
        subject
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"role": "publisher"},
        {"role": None},
        {"role": ["receiver"]},
        {"mode": "share"},
        {"mode": None},
        {"from": "latest"},
        {"from": "12"},
        {"from": "-1"},
        {"from": "1-x"},
        {"from": 0},
        {"mode": "move", "group": ""},
        {"mode": "move", "group": "a b"},
        {"mode": "move", "group": 5},
        {"mode": "move", "lease": 99},
        {"mode": "move", "lease": 86_400_001},
        {"mode": "move", "lease": "1000"},
        {"filter": "news.*"},
        {"filter": ["news.*"]},
        {"settled": "true"},
        {"settled": 1},
        {"credit": -1},
        {"credit": 2**32},
        {"credit": 1.5},
        {"credit": None},
    ],
    ids=repr,
)
def test_an_attach_with_an_invalid_field_is_detached_with_invalid_frame(
    fields: dict[str, Any],
) -> None:
    h = opened()
    h.send(attach_frame(3, **fields))
    refused_at_link_scope(h, 3, INVALID)


def test_a_refused_handle_stays_in_use_until_the_clients_detach() -> None:
    h = opened()
    h.send(attach_frame(3, address="bad..address"))
    refused_at_link_scope(h, 3, INVALID)
    # Frames crossing our detach are ignored.
    assert h.exchange({"op": "flow", "ch": 1, "handle": 3, "credit": 5}) == ([], [])
    # The answering detach frees the handle and is not answered.
    assert h.exchange(detach(1, 3)) == ([], [])
    assert h.attach(1, 3, "sender", "chat").address == "chat"


def test_attaching_again_on_a_refused_handle_without_detaching_ends_the_session() -> None:
    h = opened()
    h.send(attach_frame(3, address="bad..address"))
    refused_at_link_scope(h, 3, INVALID)
    h.send(attach_frame(3, address="good"))
    session_ended_with(h, INVALID)


# -- links per session --------------------------------------------------------------------------


def test_links_past_the_limit_are_detached_with_resource_limit_exceeded() -> None:
    h = opened(max_links_per_session=2)
    a = h.attach_receiver(1, 0)
    h.attach_sender(1, 1)
    h.send(attach_frame(2))
    refused_at_link_scope(h, 2, LIMIT)
    # The session and its links go on.
    h.send({"op": "flow", "ch": 1, "handle": 0, "credit": 3})
    assert h.events() == [CreditGranted(a, 3)]


def test_links_being_attached_count_towards_the_limit() -> None:
    h = opened(max_links_per_session=1)
    h.attach(1, 0, "receiver", "a")  # not answered yet
    h.send(attach_frame(1))
    refused_at_link_scope(h, 1, LIMIT)


def test_the_limit_is_per_session() -> None:
    h = opened(max_links_per_session=1)
    h.begin(2)
    h.attach_receiver(1, 0)
    h.attach_receiver(2, 0)


def test_detached_links_do_not_count_towards_the_limit() -> None:
    h = opened(max_links_per_session=1)
    h.attach_receiver(1, 0)
    h.exchange(detach(1, 0))
    h.attach_receiver(1, 1)
    link = h.link(1, 1)
    h.conn.detach(link, Forbidden("no"))
    h.events()
    h.out()
    h.attach_receiver(1, 2)  # our detach frees the slot before the client answers


def test_a_client_that_never_answers_refusals_loses_the_session() -> None:
    h = opened(max_links_per_session=1)
    h.attach_receiver(1, 0)
    h.send(attach_frame(1))
    refused_at_link_scope(h, 1, LIMIT)
    # Two handles in use (one attached, one awaiting the client's detach): the table is full.
    h.send(attach_frame(2))
    session_ended_with(h, LIMIT)


# -- detach -----------------------------------------------------------------------------------------


def test_a_detach_from_the_client_is_answered_and_ends_the_link() -> None:
    h = opened()
    link = h.attach_receiver(1, 0)
    assert h.exchange(detach(1, 0)) == ([LinkEnded(link, [])], [detach(1, 0)])
    assert link.state is LinkState.DETACH_SENT
    assert 0 not in h.conn.sessions[1].links


def test_a_detach_with_an_error_is_answered_without_error() -> None:
    h = opened()
    link = h.attach_sender(1, 0)
    err = {"condition": "wsq:internal-error", "description": "client gave up"}
    assert h.exchange({**detach(1, 0), "error": err}) == ([LinkEnded(link, [])], [detach(1, 0)])


def test_a_detached_handle_can_be_attached_again() -> None:
    h = opened()
    h.attach_receiver(1, 0, "news.eu")
    h.exchange(detach(1, 0))
    assert h.attach_receiver(1, 0, "news.us").address == "news.us"


def test_a_detach_on_a_link_being_attached_ends_it() -> None:
    h = opened()
    link = h.attach(1, 0, "receiver", "news")
    assert h.exchange(detach(1, 0)) == ([LinkEnded(link, [])], [detach(1, 0)])
    h.conn.accept_attach(link, from_="0-0", recovered=True)
    assert h.out() == []


def test_our_detach_sends_the_error_and_ends_the_link() -> None:
    h = opened()
    link = h.attach_receiver(1, 0)
    h.conn.detach(link, Forbidden("rights changed"))
    assert h.events() == [LinkEnded(link, [])]
    assert h.out() == [detach(1, 0, "wsq:forbidden")]
    assert h.conn.links() == []


def test_our_detach_without_an_error_is_a_plain_detach() -> None:
    h = opened()
    link = h.attach_receiver(1, 0)
    h.conn.detach(link)
    assert h.out() == [detach(1, 0)]


def test_we_detach_only_once() -> None:
    h = opened()
    link = h.attach_receiver(1, 0)
    h.conn.detach(link, Forbidden("a"))
    h.conn.detach(link, InvalidFrame("b"))
    assert h.events() == [LinkEnded(link, [])]
    assert h.out() == [detach(1, 0, "wsq:forbidden")]


def test_frames_for_a_link_we_detached_are_ignored_until_the_clients_detach() -> None:
    h = opened()
    receiver = h.attach_receiver(1, 0)
    h.attach_sender(1, 1)
    h.conn.detach(receiver, Forbidden("a"))
    h.conn.detach(h.link(1, 1), Forbidden("b"))
    h.events()
    h.out()
    events, frames = h.exchange(
        {"op": "flow", "ch": 1, "handle": 0, "credit": 10},
        {"op": "flow", "ch": 1, "handle": 0, "credit": "bad"},
        transfer(1, 1, 0, body=1),
        transfer(1, 0, 1, body=2),
        {"op": "disposition", "ch": 1, "first": 0, "last": 5, "outcome": "accepted"},
    )
    assert (events, frames) == ([], [])
    assert h.exchange(detach(1, 0), detach(1, 1)) == ([], [])
    # Now the handles are free: a frame naming them is a session error.
    h.send({"op": "flow", "ch": 1, "handle": 0, "credit": 1})
    session_ended_with(h, INVALID)


def test_a_transfer_crossing_our_detach_still_takes_its_delivery_number() -> None:
    h = opened()
    h.attach_sender(1, 0)
    other = h.attach_sender(1, 1)
    h.conn.detach(h.link(1, 0), Forbidden("gone"))
    h.events()
    h.out()
    h.send(transfer(1, 0, 0))  # crossing: ignored, but numbered
    h.send(transfer(1, 1, 1))
    events = h.events()
    assert [(type(e).__name__, e.link) for e in events] == [("PublishRequested", other)]  # type: ignore[union-attr]
    assert h.out() == []


def test_detach_after_the_session_ended_does_nothing() -> None:
    h = opened()
    link = h.attach_receiver(1, 0)
    h.exchange({"op": "end", "ch": 1})
    h.conn.detach(link, Forbidden("late"))
    assert h.events() == []
    assert h.out() == []


# -- flow -----------------------------------------------------------------------------------------


def test_flow_grants_credit_on_a_receiver_link_and_reports_it() -> None:
    h = opened()
    link = h.attach_receiver(1, 0)
    assert h.exchange({"op": "flow", "ch": 1, "handle": 0, "credit": 10}) == (
        [CreditGranted(link, 10)],
        [],
    )
    assert link.credit == 10


def test_credit_adds_up() -> None:
    h = opened()
    link = h.attach_receiver(1, 0, credit=5)
    h.send(
        {"op": "flow", "ch": 1, "handle": 0, "credit": 10},
        {"op": "flow", "ch": 1, "handle": 0, "credit": 7},
    )
    assert h.events() == [CreditGranted(link, 10), CreditGranted(link, 7)]
    assert link.credit == 22


def test_credit_is_capped_at_2_32_minus_1() -> None:
    h = opened()
    link = h.attach_receiver(1, 0)
    h.send({"op": "flow", "ch": 1, "handle": 0, "credit": MAX_UINT32})
    h.send({"op": "flow", "ch": 1, "handle": 0, "credit": MAX_UINT32})
    assert h.events() == [CreditGranted(link, MAX_UINT32), CreditGranted(link, MAX_UINT32)]
    assert link.credit == MAX_UINT32


def test_a_flow_of_zero_credit_changes_nothing() -> None:
    h = opened()
    link = h.attach_receiver(1, 0, credit=3)
    assert h.exchange({"op": "flow", "ch": 1, "handle": 0, "credit": 0}) == (
        [CreditGranted(link, 0)],
        [],
    )
    assert link.credit == 3


@pytest.mark.parametrize("credit", [-1, 2**32, 1.5, "10", None, True], ids=repr)
def test_a_flow_with_invalid_credit_detaches_the_link(credit: object) -> None:
    h = opened()
    link = h.attach_receiver(1, 0)
    frame: dict[str, Any] = {"op": "flow", "ch": 1, "handle": 0}
    if credit is not None:
        frame["credit"] = credit
    h.send(frame)
    assert h.events() == [LinkEnded(link, [])]
    assert h.out() == [detach(1, 0, INVALID)]
    assert h.conn.sessions[1].state is SessionState.BEGUN


def test_a_flow_on_a_sender_link_is_ignored() -> None:
    h = opened(sender_credit=5)
    link = h.attach_sender(1, 0)
    assert h.exchange({"op": "flow", "ch": 1, "handle": 0, "credit": 100}) == ([], [])
    assert link.credit == 5


def test_a_flow_is_reported_before_the_frames_behind_it_are_processed() -> None:
    h = opened()
    link = h.attach_receiver(1, 0)
    h.send({"op": "flow", "ch": 1, "handle": 0, "credit": 1}, {"op": "begin", "ch": 2})
    assert h.event() == CreditGranted(link, 1)
    assert h.out() == []
    assert h.events() == []
    assert h.out() == [{"op": "begin", "ch": 2}]


def test_frames_after_an_attach_wait_for_the_gateway_to_take_the_attach() -> None:
    h = opened()
    h.send(attach_frame(0), {"op": "flow", "ch": 1, "handle": 0, "credit": 4})
    event = h.event()
    assert isinstance(event, AttachRequested)
    h.conn.accept_attach(event.link, from_="0-0", recovered=True)
    assert h.events() == [CreditGranted(event.link, 4)]
    assert [f["op"] for f in h.out()] == ["attach"]


def test_links_of_a_connection_error_end_before_the_close() -> None:
    h = opened()
    link = h.attach_receiver(1, 0)
    h.send({"op": "bogus"})
    events = h.events()
    assert events[0] == LinkEnded(link, [])
    assert h.out() == [close(INVALID)]
