"""ServerConnection, contract section 5: transfers both ways, dispositions, settlement."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from protocol_helpers import Harness, accepted, close, decode, detach, end, message, transfer

from wsq.core.errors import BrokerUnavailable, GoingAway, InvalidFrame
from wsq.core.limits import MAX_DELIVERY, MAX_TTL_MS
from wsq.core.messages import Outcome
from wsq.core.props import Props
from wsq.core.wire import copy_tail, message_tail, stored_props, stored_tail
from wsq.protocol.connection import Limits
from wsq.protocol.events import (
    ConnectionEnded,
    DeliveriesSettled,
    LinkEnded,
    PublishItem,
    PublishRequested,
)
from wsq.protocol.state import Link, SessionState

INVALID = "wsq:invalid-frame"


def opened(**limits: Any) -> Harness:
    h = Harness(**limits)
    h.open()
    h.begin(1)
    return h


def publish_requests(h: Harness) -> list[PublishRequested]:
    events = h.events()
    assert all(isinstance(e, PublishRequested) for e in events), events
    return events  # type: ignore[return-value]


def only_request(h: Harness) -> PublishRequested:
    requests = publish_requests(h)
    assert len(requests) == 1, requests
    return requests[0]


def one_item(**fields: Any) -> PublishItem:
    """The item of the one request a transfer with ``fields`` makes on a fresh sender link."""
    h = opened()
    h.attach_sender(1, 0)
    h.send(transfer(1, 0, 0, **fields))
    return only_request(h).items[0]


def disposition(first: int, last: int, outcome: str = "accepted", **fields: Any) -> dict[str, Any]:
    """A server disposition frame as settle_publish sends it."""
    return {
        "op": "disposition",
        "ch": 1,
        "first": first,
        "last": last,
        "outcome": outcome,
        "settled": True,
        **fields,
    }


def flow(handle: int, credit: int, ch: int = 1) -> dict[str, Any]:
    return {"op": "flow", "ch": ch, "handle": handle, "credit": credit}


# -- client transfers: what the gateway is told -------------------------------------------------


def test_a_transfer_is_reported_as_a_publish_request_with_its_props() -> None:
    h = opened()
    link = h.attach_sender(1, 0)
    props = {
        "subject": "orders.de.eu",
        "message_id": "m-1",
        "ttl": 60_000,
        "content_type": "application/json",
        "headers": {"k": "v", "n": [1, 2]},
    }
    h.send(transfer(1, 0, 0, settled=False, body={"total": 12.5}, props=props))
    assert h.events() == [
        PublishRequested(
            link,
            [
                PublishItem(
                    0,
                    False,
                    '{"total":12.5}',
                    Props(
                        subject="orders.de.eu",
                        message_id="m-1",
                        content_type="application/json",
                        headers={"k": "v", "n": [1, 2]},
                        ttl_ms=60_000,
                    ),
                )
            ],
        )
    ]
    assert h.out() == []
    assert link.credit == h.limits.sender_credit - 1


@pytest.mark.parametrize(
    ("body", "text"),
    [
        ({"a": [1, True, None]}, '{"a":[1,true,null]}'),
        ("héllo ☃ 😀", '"héllo ☃ 😀"'),
        (0, "0"),
        (None, "null"),
        ([], "[]"),
        (2**63, str(2**63)),
        (-(2**63), str(-(2**63))),
        (2**64 - 1, str(2**64 - 1)),
    ],
)
def test_the_body_is_kept_as_compact_json_text(body: Any, text: str) -> None:
    assert one_item(body=body).body == text


def test_an_integer_beyond_64_bits_in_the_body_is_kept_exactly() -> None:
    assert one_item(body={"id": 2**70}).body == '{"id":' + str(2**70) + "}"


def test_a_body_number_too_large_for_a_double_closes_with_invalid_frame() -> None:
    # JSON has no infinity: 1e400 is refused rather than stored as null.
    h = opened()
    h.attach_sender(1, 0)
    h.send_text('{"op":"transfer","ch":1,"handle":0,"delivery":0,"body":[1e400]}')
    assert [type(e) for e in h.events()] == [LinkEnded, ConnectionEnded]
    assert h.out() == [close(INVALID)]


def test_a_transfer_without_body_has_a_null_body_and_no_props() -> None:
    h = opened()
    link = h.attach_sender(1, 0)
    h.send(transfer(1, 0, 0))
    assert h.events() == [PublishRequested(link, [PublishItem(0, False, "null")])]


def test_a_settled_transfer_is_reported_settled() -> None:
    assert one_item(settled=True).settled is True


def test_consecutive_transfers_on_one_link_come_as_one_request_in_order() -> None:
    h = opened()
    link = h.attach_sender(1, 0)
    h.send(*(transfer(1, 0, i, body=i) for i in range(5)))
    request = only_request(h)
    assert request.link is link
    assert [(i.delivery, i.body) for i in request.items] == [(n, str(n)) for n in range(5)]
    assert link.credit == h.limits.sender_credit - 5


def test_more_transfers_in_a_message_than_one_publish_takes_come_as_several_in_order() -> None:
    # The credit may be larger than one broker write: max_publish_batch splits, nothing else.
    h = opened(sender_credit=10, max_publish_batch=4)
    link = h.attach_sender(1, 0)
    h.send(*(transfer(1, 0, i, body=i) for i in range(10)))
    requests = publish_requests(h)
    assert [[i.delivery for i in r.items] for r in requests] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert all(r.link is link for r in requests)
    assert link.credit == 0
    for r in requests:
        h.conn.settle_publish(link, accepted(r.items, r.items[0].delivery))
    assert h.out() == [
        disposition(0, 3, ids=["1-0", "1-1", "1-2", "1-3"]),
        flow(0, 4),
        disposition(4, 7, ids=["1-4", "1-5", "1-6", "1-7"]),
        flow(0, 4),
        disposition(8, 9, ids=["1-8", "1-9"]),
        flow(0, 2),
    ]
    assert link.credit == 10


def test_a_transfer_past_the_credit_is_refused_though_an_earlier_publish_of_its_message_refilled() -> (
    None
):
    # The split into publishes must not let the refill of the first excuse a transfer that was
    # past the credit when the client sent it: the message is checked against the credit whole.
    h = opened(sender_credit=6, max_publish_batch=4)
    link = h.attach_sender(1, 0)
    h.send(*(transfer(1, 0, i) for i in range(7)))
    first = h.event()
    assert isinstance(first, PublishRequested) and len(first.items) == 4
    h.conn.settle_publish(link, accepted(first.items))  # a refill of 4 before the rest
    second = h.event()
    assert isinstance(second, PublishRequested)
    assert [i.delivery for i in second.items] == [4, 5]
    h.conn.settle_publish(link, accepted(second.items, 4))
    assert h.events() == [LinkEnded(link, [])]
    assert h.out()[-1] == detach(1, 0, "wsq:transfer-limit-exceeded")


def test_the_default_credit_is_several_publishes_of_the_default_batch() -> None:
    # docs/performance.md, "The publisher's window": a publisher keeps the gateway busy only
    # with more than one publish on the way; one publish is the broker's bound, not the credit.
    limits = Limits()
    assert limits.sender_credit >= 4 * limits.max_publish_batch
    h = opened()
    h.attach_sender(1, 0)
    h.send(*(transfer(1, 0, i) for i in range(limits.sender_credit)))
    requests = publish_requests(h)
    assert {len(r.items) for r in requests} == {limits.max_publish_batch}
    assert sum(len(r.items) for r in requests) == limits.sender_credit


def test_transfers_alternating_between_links_come_as_separate_requests() -> None:
    h = opened()
    a = h.attach_sender(1, 0)
    b = h.attach_sender(1, 1)
    h.send(transfer(1, 0, 0), transfer(1, 0, 1), transfer(1, 1, 2), transfer(1, 0, 3))
    assert [(r.link, [i.delivery for i in r.items]) for r in publish_requests(h)] == [
        (a, [0, 1]),
        (b, [2]),
        (a, [3]),
    ]


def test_transfers_queued_from_several_messages_still_come_in_order() -> None:
    h = opened()
    h.attach_sender(1, 0)
    h.send(transfer(1, 0, 0))
    h.send(transfer(1, 0, 1), transfer(1, 0, 2))
    assert [i.delivery for r in publish_requests(h) for i in r.items] == [0, 1, 2]


def test_a_frame_between_transfers_splits_the_request() -> None:
    h = opened()
    link = h.attach_sender(1, 0)
    h.send(transfer(1, 0, 0), {"op": "begin", "ch": 2}, transfer(1, 0, 1))
    assert [[i.delivery for i in r.items] for r in publish_requests(h)] == [[0], [1]]
    assert h.out() == [{"op": "begin", "ch": 2}]
    assert link.credit == h.limits.sender_credit - 2


# -- client transfers: numbering and credit -------------------------------------------------------


@pytest.mark.parametrize("delivery", [1, 2, 2**53 - 1])
def test_the_first_delivery_must_be_0(delivery: int) -> None:
    h = opened()
    link = h.attach_sender(1, 0)
    h.send(transfer(1, 0, delivery))
    assert h.events() == [LinkEnded(link, [])]
    assert h.out() == [end(1, INVALID)]


@pytest.mark.parametrize("second", [0, 2, 5])
def test_a_delivery_number_out_of_sequence_ends_the_session(second: int) -> None:
    h = opened()
    link = h.attach_sender(1, 0)
    h.send(transfer(1, 0, 0))
    h.events()
    h.send(transfer(1, 0, second))
    assert h.events() == [LinkEnded(link, [])]
    assert h.out() == [end(1, INVALID)]
    assert h.conn.sessions[1].state is SessionState.END_SENT


@pytest.mark.parametrize("delivery", [-1, 2**53, 0.0, "0", None, True], ids=repr)
def test_a_delivery_that_is_not_a_valid_number_ends_the_session(delivery: object) -> None:
    h = opened()
    h.attach_sender(1, 0)
    frame = transfer(1, 0, 0)
    if delivery is None:
        del frame["delivery"]
    else:
        frame["delivery"] = delivery
    h.send(frame)
    assert [type(e) for e in h.events()] == [LinkEnded]
    assert h.out() == [end(1, INVALID)]


def test_delivery_numbers_are_shared_by_the_links_of_a_session() -> None:
    h = opened()
    h.attach_sender(1, 0)
    h.attach_sender(1, 1)
    h.send(transfer(1, 0, 0), transfer(1, 1, 1), transfer(1, 0, 2))
    assert [i.delivery for r in publish_requests(h) for i in r.items] == [0, 1, 2]
    h.send(transfer(1, 1, 1))
    assert [type(e) for e in h.events()] == [LinkEnded, LinkEnded]
    assert h.out() == [end(1, INVALID)]


def test_a_transfer_beyond_the_credit_detaches_with_transfer_limit_exceeded() -> None:
    h = opened(sender_credit=2)
    link = h.attach_sender(1, 0)
    h.send(transfer(1, 0, 0))
    h.send(transfer(1, 0, 1))
    assert [i.delivery for r in publish_requests(h) for i in r.items] == [0, 1]
    assert link.credit == 0
    h.send(transfer(1, 0, 2))
    assert h.events() == [LinkEnded(link, [])]
    assert h.out() == [detach(1, 0, "wsq:transfer-limit-exceeded")]
    assert h.conn.sessions[1].state is SessionState.BEGUN


def test_a_transfer_within_refilled_credit_is_accepted() -> None:
    h = opened(sender_credit=1)
    link = h.attach_sender(1, 0)
    h.send(transfer(1, 0, 0))
    request = only_request(h)
    h.conn.settle_publish(link, accepted(request.items))
    h.out()
    h.send(transfer(1, 0, 1))
    assert [i.delivery for i in only_request(h).items] == [1]


def test_a_transfer_before_the_sender_is_granted_credit_is_beyond_it() -> None:
    h = opened()
    link = h.attach(1, 0, "sender", "chat")
    h.send(transfer(1, 0, 0))
    assert h.events() == [LinkEnded(link, [])]
    assert h.out() == [detach(1, 0, "wsq:transfer-limit-exceeded")]


def test_a_transfer_on_a_receiver_link_detaches_it() -> None:
    h = opened()
    link = h.attach_receiver(1, 0, credit=5)
    h.send(transfer(1, 0, 0))
    assert h.events() == [LinkEnded(link, [])]
    assert h.out() == [detach(1, 0, INVALID)]


def test_valid_transfers_before_one_beyond_the_credit_are_published_and_settled() -> None:
    # Coalescing must not swallow the dispositions of the transfers before the faulty one.
    h = opened(sender_credit=2)
    link = h.attach_sender(1, 0)
    h.send(transfer(1, 0, 0), transfer(1, 0, 1), transfer(1, 0, 2), transfer(1, 0, 3))
    event = h.event()
    assert isinstance(event, PublishRequested)
    assert event.link is link
    assert [i.delivery for i in event.items] == [0, 1]
    h.conn.settle_publish(link, accepted(event.items))
    # The third transfer was beyond the credit the client had been given when it sent it:
    # the refill that settling the first two sends does not excuse it.
    assert h.events() == [LinkEnded(link, [])]
    assert h.out() == [
        disposition(0, 1, ids=["1-0", "1-1"]),
        flow(0, 2),
        detach(1, 0, "wsq:transfer-limit-exceeded"),
    ]


def test_a_transfer_beyond_the_credit_in_a_batch_is_refused_even_unsettled() -> None:
    h = opened(sender_credit=2)
    link = h.attach_sender(1, 0)
    h.send(transfer(1, 0, 0), transfer(1, 0, 1), transfer(1, 0, 2))
    event = h.event()
    assert isinstance(event, PublishRequested)
    assert h.events() == [LinkEnded(link, [])]
    assert h.out() == [detach(1, 0, "wsq:transfer-limit-exceeded")]


def test_valid_transfers_before_one_out_of_sequence_get_their_dispositions() -> None:
    h = opened()
    link = h.attach_sender(1, 0)
    h.send(transfer(1, 0, 0), transfer(1, 0, 1), transfer(1, 0, 7))
    event = h.event()
    assert isinstance(event, PublishRequested)
    assert [i.delivery for i in event.items] == [0, 1]
    h.conn.settle_publish(link, accepted(event.items))
    assert h.events() == [LinkEnded(link, [])]
    assert h.out() == [
        disposition(0, 1, ids=["1-0", "1-1"]),
        flow(0, 2),
        end(1, INVALID),
    ]


def test_a_transfer_with_a_lookalike_channel_is_not_taken_into_a_request() -> None:
    # 1.0 == 1 and true == 1 in Python, but neither is a channel number on the wire.
    h = opened()
    link = h.attach_sender(1, 0)
    h.send(transfer(1, 0, 0), {**transfer(1, 0, 1), "ch": 1.0})
    event = h.event()
    assert isinstance(event, PublishRequested)
    assert [i.delivery for i in event.items] == [0]
    h.conn.settle_publish(link, accepted(event.items))
    assert [type(e) for e in h.events()] == [LinkEnded, ConnectionEnded]
    frames = h.out()
    assert frames[:2] == [disposition(0, 0, ids=["1-0"]), flow(0, 1)]
    assert frames[2:] == [close(INVALID)]


# -- client transfers: invalid props ---------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"props": []},
        {"props": "subject"},
        {"props": {"subject": "a..b"}},
        {"props": {"subject": "orders.*"}},
        {"props": {"subject": 5}},
        {"props": {"subject": "x" * 256}},
        {"props": {"ttl": 0}},
        {"props": {"ttl": -1}},
        {"props": {"ttl": 1.5}},
        {"props": {"ttl": "60000"}},
        {"props": {"ttl": True}},
        {"props": {"ttl": MAX_TTL_MS + 1}},
        {"props": {"headers": []}},
        {"props": {"headers": "k=v"}},
        {"props": {"message_id": 5}},
        {"props": {"message_id": "m" * 1025}},
        {"props": {"content_type": ["a"]}},
        {"settled": "false"},
        {"settled": 0},
    ],
    ids=repr,
)
def test_a_transfer_with_invalid_props_gives_an_item_with_an_error(fields: dict[str, Any]) -> None:
    h = opened()
    link = h.attach_sender(1, 0)
    h.send(transfer(1, 0, 0, body="x", **fields))
    [item] = only_request(h).items
    assert item.error
    assert (item.delivery, item.settled, item.body) == (0, False, '"x"')
    assert h.out() == []
    # The session and the link go on; the gateway rejects the item.
    h.conn.settle_publish(link, [(item, None, InvalidFrame(item.error))])
    assert h.out() == [
        disposition(0, 0, "rejected", error={"condition": INVALID, "description": item.error}),
        flow(0, 1),
    ]


def test_a_settled_transfer_with_invalid_props_is_dropped_without_disposition() -> None:
    h = opened()
    link = h.attach_sender(1, 0)
    h.send(transfer(1, 0, 0, settled=True, props={"ttl": 0}))
    [item] = only_request(h).items
    assert item.error and item.settled
    h.conn.settle_publish(link, [(item, None, InvalidFrame(item.error))])
    assert h.out() == [flow(0, 1)]


@pytest.mark.parametrize(
    "props",
    [
        {},
        {"subject": None, "ttl": None, "headers": None, "message_id": None, "content_type": None},
        {"ttl": 1},
        {"ttl": MAX_TTL_MS},
        {"subject": "x" * 255},
        {"message_id": "m" * 1024},
        {"headers": {}},
        {"unknown": [1, 2, 3]},
    ],
    ids=repr,
)
def test_valid_props_give_an_item_without_error(props: dict[str, Any]) -> None:
    assert one_item(props=props).error is None


def test_one_invalid_item_does_not_spoil_the_others() -> None:
    h = opened()
    h.attach_sender(1, 0)
    h.send(
        transfer(1, 0, 0, props={"subject": "ok"}),
        transfer(1, 0, 1, props={"subject": "not ok"}),
        transfer(1, 0, 2),
    )
    items = only_request(h).items
    assert [i.error is None for i in items] == [True, False, True]
    assert items[0].props.subject == "ok"


def test_a_body_nested_too_deeply_to_encode_gives_an_item_with_an_error() -> None:
    # Decoding accepts a little more nesting than encoding: that must not raise.
    h = opened()
    h.attach_sender(1, 0)
    depth = 1_000
    h.send_text(
        '{"op":"transfer","ch":1,"handle":0,"delivery":0,"body":' + "[" * depth + "]" * depth + "}"
    )
    events = h.events()
    assert len(events) == 1 and isinstance(events[0], PublishRequested)
    assert events[0].items[0].error


def test_headers_nested_too_deeply_to_encode_give_an_item_with_an_error() -> None:
    h = opened()
    h.attach_sender(1, 0)
    depth = 1_000
    headers = '{"h":' + "[" * depth + "]" * depth + "}"
    h.send_text(
        '{"op":"transfer","ch":1,"handle":0,"delivery":0,"props":{"headers":' + headers + "}}"
    )
    events = h.events()
    assert len(events) == 1 and isinstance(events[0], PublishRequested)
    assert events[0].items[0].error


def test_a_lone_surrogate_escape_in_the_body_stays_valid_utf8() -> None:
    # "\ud800" is valid JSON text; the stored body must still be valid UTF-8 JSON.
    h = opened()
    h.attach_sender(1, 0)
    h.send_text('{"op":"transfer","ch":1,"handle":0,"delivery":0,"body":"\\ud800 and \\u00e9"}')
    [item] = only_request(h).items
    item.body.encode("utf-8")
    assert json.loads(item.body) == "\ud800 and \u00e9"


# -- settle_publish: dispositions and credit -----------------------------------------------------------


def test_accepted_consecutive_deliveries_share_one_disposition_with_their_ids() -> None:
    h = opened(sender_credit=10)
    link = h.attach_sender(1, 0)
    h.send(*(transfer(1, 0, i) for i in range(3)))
    request = only_request(h)
    h.conn.settle_publish(link, accepted(request.items, 40))
    assert h.out() == [disposition(0, 2, ids=["1-40", "1-41", "1-42"]), flow(0, 3)]
    assert link.credit == 10


def test_dispositions_split_at_gaps_and_rejections() -> None:
    h = opened(sender_credit=10)
    link = h.attach_sender(1, 0)
    h.send(
        transfer(1, 0, 0),
        transfer(1, 0, 1),
        transfer(1, 0, 2),
        transfer(1, 0, 3),
        transfer(1, 0, 4, settled=True),
        transfer(1, 0, 5),
        transfer(1, 0, 6),
    )
    items = only_request(h).items
    results = [
        (items[0], "5-0", None),
        (items[1], "5-1", None),
        (items[2], None, BrokerUnavailable("down")),
        (items[3], "5-3", None),
        (items[4], "5-4", None),  # settled: no disposition, so 3 and 5 are not one range
        (items[5], "5-5", None),
        (items[6], "5-6", None),
    ]
    h.conn.settle_publish(link, results)
    assert h.out() == [
        disposition(0, 1, ids=["5-0", "5-1"]),
        disposition(
            2, 2, "rejected", error={"condition": "wsq:internal-error", "description": "down"}
        ),
        disposition(3, 3, ids=["5-3"]),
        disposition(5, 6, ids=["5-5", "5-6"]),
        flow(0, 7),
    ]


def test_a_rejection_without_an_error_is_reported_as_invalid_frame() -> None:
    h = opened()
    link = h.attach_sender(1, 0)
    h.send(transfer(1, 0, 0))
    [item] = only_request(h).items
    h.conn.settle_publish(link, [(item, None, None)])
    assert h.out() == [
        disposition(0, 0, "rejected", error={"condition": INVALID, "description": "rejected"}),
        flow(0, 1),
    ]


def test_settled_transfers_get_no_disposition_but_their_credit_back() -> None:
    h = opened(sender_credit=4)
    link = h.attach_sender(1, 0)
    h.send(transfer(1, 0, 0, settled=True), transfer(1, 0, 1, settled=True))
    request = only_request(h)
    assert link.credit == 2
    h.conn.settle_publish(link, accepted(request.items))
    assert h.out() == [flow(0, 2)]
    assert link.credit == 4


def test_settle_publish_with_no_results_sends_nothing() -> None:
    h = opened()
    link = h.attach_sender(1, 0)
    h.conn.settle_publish(link, [])
    assert h.out() == []


def test_settle_publish_on_a_link_that_ended_sends_nothing() -> None:
    h = opened()
    link = h.attach_sender(1, 0)
    h.send(transfer(1, 0, 0))
    request = only_request(h)
    h.exchange(detach(1, 0))
    h.conn.settle_publish(link, accepted(request.items))
    assert h.out() == []


def test_dispositions_name_the_channel_of_the_link() -> None:
    h = opened()
    h.begin(9)
    link = h.attach_sender(9, 4)
    h.send(transfer(9, 4, 0))
    h.conn.settle_publish(link, accepted(only_request(h).items))
    assert h.out() == [
        {
            "op": "disposition",
            "ch": 9,
            "first": 0,
            "last": 0,
            "outcome": "accepted",
            "settled": True,
            "ids": ["1-0"],
        },
        flow(4, 1, ch=9),
    ]


# -- server transfers (send_transfer) ---------------------------------------------------------------


def test_a_transfer_frame_carries_id_body_and_props() -> None:
    h = opened()
    link = h.attach_receiver(1, 3, credit=5)
    m = message(
        "1732200000000-7",
        {"total": 12},
        subject="orders.de.eu",
        message_id="m-1",
        content_type="application/json",
        headers={"k": "v"},
    )
    h.conn.send_transfer(link, message_tail(m))
    assert h.out() == [
        {
            "op": "transfer",
            "ch": 1,
            "handle": 3,
            "settled": False,
            "delivery": 0,
            "id": "1732200000000-7",
            "body": {"total": 12},
            "props": {
                "ts": 1_732_200_000_000,
                "publisher": "bob",
                "subject": "orders.de.eu",
                "message_id": "m-1",
                "content_type": "application/json",
                "headers": {"k": "v"},
            },
        }
    ]


def test_a_move_transfer_counts_redeliveries() -> None:
    h = opened()
    link = h.attach_receiver(1, 0, mode="move", credit=5)
    h.conn.send_transfer(link, message_tail(message("5-1", "x"), redelivered=2), "5-1")
    [frame] = h.out()
    assert frame["props"]["redelivered"] == 2
    assert frame["settled"] is False


def test_a_copy_tail_is_encoded_once_per_message() -> None:
    m = message("5-1", [1, 2])
    tail = copy_tail(m)
    assert m.wire == tail
    assert copy_tail(m) is tail
    assert tail == message_tail(m)


def test_a_transfer_with_a_non_ascii_body_is_valid_utf8_json() -> None:
    h = opened()
    link = h.attach_receiver(1, 0, credit=1)
    h.conn.send_transfer(link, copy_tail(message("5-1", {"text": "grüße ☃ 😀"})))
    [frame] = h.out()
    assert frame["body"] == {"text": "grüße ☃ 😀"}


def test_a_transfer_with_a_lone_surrogate_in_its_props_is_still_valid_utf8() -> None:
    # Props come from publishers: an escaped lone surrogate must not break the subscriber's frame.
    h = opened()
    link = h.attach_receiver(1, 0, credit=1)
    h.conn.send_transfer(
        link, copy_tail(message("5-1", "x", message_id="\ud800", headers={"h": "\udfff"}))
    )
    [frame] = h.out()  # decode() insists on valid UTF-8
    assert frame["props"]["message_id"] == "\ud800"
    assert frame["props"]["headers"] == {"h": "\udfff"}


def test_deliveries_are_numbered_per_session_from_zero() -> None:
    h = opened()
    h.begin(2)
    a = h.attach_receiver(1, 0, credit=10)
    b = h.attach_receiver(1, 1, credit=10)
    c = h.attach_receiver(2, 0, credit=10)
    for link in (a, b, a, c, b, c):
        h.conn.send_transfer(link, copy_tail(message("5-1")))
    assert [(f["ch"], f["handle"], f["delivery"]) for f in h.out()] == [
        (1, 0, 0),
        (1, 1, 1),
        (1, 0, 2),
        (2, 0, 0),
        (1, 1, 3),
        (2, 0, 1),
    ]


def test_a_transfer_spends_one_credit() -> None:
    h = opened()
    link = h.attach_receiver(1, 0, credit=2)
    h.conn.send_transfer(link, copy_tail(message()))
    assert link.credit == 1
    h.conn.send_transfer(link, copy_tail(message()))
    assert link.credit == 0


def test_many_transfers_go_out_in_one_batch() -> None:
    h = opened()
    link = h.attach_receiver(1, 0, credit=100)
    for i in range(100):
        h.conn.send_transfer(link, copy_tail(message(f"5-{i}", i)))
    messages = h.messages()
    assert len(messages) == 1
    batch = decode(messages[0])
    assert [(f["delivery"], f["id"], f["body"]) for f in batch] == [
        (i, f"5-{i}", i) for i in range(100)
    ]


def test_a_batch_of_transfers_is_numbered_as_a_range_and_spends_one_credit_each() -> None:
    h = opened()
    a = h.attach_receiver(1, 0, credit=10)
    b = h.attach_receiver(1, 1, credit=10)
    h.conn.send_transfer(b, copy_tail(message("5-0", "b0")))
    h.conn.send_transfers(a, [copy_tail(message(f"5-{i}", i)) for i in range(1, 4)])
    h.conn.send_transfer(b, copy_tail(message("5-4", "b1")))
    assert a.credit == 7 and b.credit == 8
    assert [(f["handle"], f["delivery"], f["id"], f["body"]) for f in h.out()] == [
        (1, 0, "5-0", "b0"),
        (0, 1, "5-1", 1),
        (0, 2, "5-2", 2),
        (0, 3, "5-3", 3),
        (1, 4, "5-4", "b1"),
    ]
    h.conn.send_transfers(a, [])
    assert a.credit == 7 and h.out() == []


def test_a_batch_of_transfers_is_the_same_frames_as_one_at_a_time() -> None:
    one, many = opened(), opened()
    tails = [copy_tail(message(f"5-{i}", {"n": i}, subject="a.b")) for i in range(50)]
    link = one.attach_receiver(1, 7, settled=True, credit=50)
    for tail in tails:
        one.conn.send_transfer(link, tail)
    many.conn.send_transfers(many.attach_receiver(1, 7, settled=True, credit=50), tails)
    assert many.conn.out_bytes == one.conn.out_bytes
    assert many.messages(max_bytes=2000) == one.messages(max_bytes=2000)


def test_a_queue_larger_than_max_bytes_is_split_into_the_longest_batches_that_fit() -> None:
    h = opened()
    link = h.attach_receiver(1, 0, credit=1000)
    # Frames of very different sizes: the split must not rely on the mean size.
    bodies = ["x" * (7 if i % 5 else 300) for i in range(200)]
    h.conn.send_transfers(link, [copy_tail(message(f"5-{i}", b)) for i, b in enumerate(bodies)])
    messages = h.messages(max_bytes=1000)
    sizes = [len(m) for m in messages]
    assert all(s <= 1000 for s in sizes)
    frames = [f for m in messages for f in (lambda v: v if isinstance(v, list) else [v])(decode(m))]
    assert [f["body"] for f in frames] == bodies
    # Each message but the last is as full as it can be: the next frame would not fit.
    first_of = 0
    for text in messages[:-1]:
        value = decode(text)
        count = len(value) if isinstance(value, list) else 1
        following = frames[first_of + count]
        assert len(text) + 1 + len(json.dumps(following, separators=(",", ":"))) > 1000
        first_of += count
    assert h.conn.out_bytes == 0


def test_a_pre_settled_link_sends_settled_transfers_and_tracks_nothing() -> None:
    h = opened()
    link = h.attach_receiver(1, 0, mode="move", settled=True, credit=3)
    h.conn.send_transfer(link, message_tail(message("5-1"), 0), "5-1")
    [frame] = h.out()
    assert frame["settled"] is True
    assert link.unsettled == {}
    h.send({"op": "disposition", "ch": 1, "first": 0})
    assert h.events() == []
    h.exchange(detach(1, 0))
    assert link.unsettled == {}


# -- client dispositions ------------------------------------------------------------------------------


def move_link(h: Harness, handle: int = 0, ch: int = 1, credit: int = 1_000) -> Link:
    return h.attach_receiver(ch, handle, "jobs", mode="move", credit=credit)


def deliver(h: Harness, link: Link, *ids: str) -> None:
    """Send move-mode deliveries of messages ``ids`` on ``link``; output drained."""
    for id in ids:
        h.conn.send_transfer(link, message_tail(message(id), 0), id)
    h.out()


@pytest.mark.parametrize("outcome", list(Outcome), ids=lambda o: o.value)
def test_a_disposition_settles_move_deliveries_with_its_outcome(outcome: Outcome) -> None:
    h = opened()
    link = move_link(h)
    deliver(h, link, "5-0", "5-1", "5-2", "5-3")
    h.send({"op": "disposition", "ch": 1, "first": 1, "last": 2, "outcome": outcome.value})
    assert h.events() == [DeliveriesSettled(link, ["5-1", "5-2"], outcome)]
    assert h.out() == []  # a client disposition is not answered
    assert link.unsettled == {0: "5-0", 3: "5-3"}


def test_a_disposition_without_last_settles_one_delivery() -> None:
    h = opened()
    link = move_link(h)
    deliver(h, link, "5-0", "5-1")
    h.send({"op": "disposition", "ch": 1, "first": 1, "outcome": "released"})
    assert h.events() == [DeliveriesSettled(link, ["5-1"], Outcome.RELEASED)]


def test_a_disposition_without_outcome_accepts() -> None:
    h = opened()
    link = move_link(h)
    deliver(h, link, "5-0")
    h.send({"op": "disposition", "ch": 1, "first": 0})
    assert h.events() == [DeliveriesSettled(link, ["5-0"], Outcome.ACCEPTED)]


def test_a_disposition_across_links_reports_each_link_in_order() -> None:
    h = opened()
    a = move_link(h, 0)
    b = move_link(h, 1)
    deliver(h, a, "5-0")
    deliver(h, b, "6-0")
    deliver(h, a, "5-1")
    deliver(h, b, "6-1")
    h.send({"op": "disposition", "ch": 1, "first": 0, "last": 3, "outcome": "modified"})
    assert h.events() == [
        DeliveriesSettled(a, ["5-0", "5-1"], Outcome.MODIFIED),
        DeliveriesSettled(b, ["6-0", "6-1"], Outcome.MODIFIED),
    ]


def test_dispositions_only_settle_deliveries_of_their_session() -> None:
    h = opened()
    h.begin(2)
    a = move_link(h, 0, ch=1)
    b = move_link(h, 0, ch=2)
    deliver(h, a, "5-0")
    deliver(h, b, "6-0")
    h.send({"op": "disposition", "ch": 2, "first": 0})
    assert h.events() == [DeliveriesSettled(b, ["6-0"], Outcome.ACCEPTED)]
    assert a.unsettled == {0: "5-0"}


def test_a_delivery_is_settled_once() -> None:
    h = opened()
    link = move_link(h)
    deliver(h, link, "5-0")
    h.send({"op": "disposition", "ch": 1, "first": 0})
    h.events()
    h.send({"op": "disposition", "ch": 1, "first": 0, "outcome": "rejected"})
    assert h.events() == []
    assert h.out() == []


def test_a_disposition_of_deliveries_never_sent_changes_nothing() -> None:
    h = opened()
    link = move_link(h)
    deliver(h, link, "5-0")
    h.send({"op": "disposition", "ch": 1, "first": 1, "last": 50})
    assert h.events() == []
    assert link.unsettled == {0: "5-0"}


@pytest.mark.parametrize(
    ("first", "last"), [(0, 2**50), (0, MAX_DELIVERY), (2**50, MAX_DELIVERY), (3, 3 + 2**40)]
)
def test_a_huge_range_is_cheap(first: int, last: int) -> None:
    h = opened()
    link = move_link(h)
    deliver(h, link, *(f"5-{i}" for i in range(10)))
    started = time.perf_counter()
    h.send({"op": "disposition", "ch": 1, "first": first, "last": last})
    events = h.events()
    assert time.perf_counter() - started < 0.5
    settled = [f"5-{i}" for i in range(10) if first <= i <= last]
    assert events == ([DeliveriesSettled(link, settled, Outcome.ACCEPTED)] if settled else [])


def test_a_huge_range_with_many_unsettled_deliveries_settles_them_all_in_order() -> None:
    h = opened()
    a = move_link(h, 0, credit=5_000)
    b = move_link(h, 1, credit=5_000)
    for i in range(2_000):
        h.conn.send_transfer(a if i % 3 else b, message_tail(message(f"5-{i}"), 0), f"5-{i}")
    h.out()
    started = time.perf_counter()
    h.send({"op": "disposition", "ch": 1, "first": 0, "last": 2**50})
    events = h.events()
    assert time.perf_counter() - started < 0.5
    assert events == [
        DeliveriesSettled(b, [f"5-{i}" for i in range(2_000) if i % 3 == 0], Outcome.ACCEPTED),
        DeliveriesSettled(a, [f"5-{i}" for i in range(2_000) if i % 3], Outcome.ACCEPTED),
    ]
    assert h.conn.sessions[1].unsettled == {}


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"first": -1},
        {"first": "0"},
        {"first": 1.0},
        {"first": MAX_DELIVERY + 1},
        {"first": 5, "last": 4},
        {"first": 0, "last": MAX_DELIVERY + 1},
        {"first": 0, "last": None},
        {"first": 0, "outcome": "done"},
        {"first": 0, "outcome": None},
        {"first": 0, "outcome": ["accepted"]},
        {"first": 0, "outcome": {"accepted": True}},
    ],
    ids=repr,
)
def test_an_invalid_disposition_ends_the_session(fields: dict[str, Any]) -> None:
    h = opened()
    link = move_link(h)
    deliver(h, link, "5-0")
    h.send({"op": "disposition", "ch": 1, **fields})
    assert h.events() == [LinkEnded(link, ["5-0"])]
    assert h.out() == [end(1, INVALID)]


def test_copy_mode_dispositions_change_nothing() -> None:
    h = opened()
    link = h.attach_receiver(1, 0, credit=5)
    h.conn.send_transfer(link, copy_tail(message("5-0")))
    h.conn.send_transfer(link, copy_tail(message("5-1")))
    h.out()
    for outcome in ("accepted", "released", "rejected", "modified"):
        assert h.exchange(
            {"op": "disposition", "ch": 1, "first": 0, "last": 1, "outcome": outcome}
        ) == ([], [])
    assert link.credit == 3  # credit is spent when sent, not when settled


def test_copy_dispositions_next_to_move_deliveries_settle_only_the_move_ones() -> None:
    h = opened()
    copy = h.attach_receiver(1, 0, credit=5)
    move = move_link(h, 1)
    h.conn.send_transfer(copy, copy_tail(message("4-0")))
    deliver(h, move, "5-0")
    h.conn.send_transfer(copy, copy_tail(message("4-1")))
    h.out()
    h.send({"op": "disposition", "ch": 1, "first": 0, "last": 2})
    assert h.events() == [DeliveriesSettled(move, ["5-0"], Outcome.ACCEPTED)]


# -- unsettled deliveries when a move link ends -----------------------------------------------------


def test_a_move_link_detached_by_the_client_reports_its_unsettled_ids() -> None:
    h = opened()
    link = move_link(h)
    deliver(h, link, "5-0", "5-1", "5-2")
    h.send({"op": "disposition", "ch": 1, "first": 1})
    h.events()
    assert h.exchange(detach(1, 0)) == ([LinkEnded(link, ["5-0", "5-2"])], [detach(1, 0)])
    assert h.conn.sessions[1].unsettled == {}
    assert h.exchange({"op": "disposition", "ch": 1, "first": 0, "last": 2}) == ([], [])


def test_a_move_link_we_detach_reports_its_unsettled_ids() -> None:
    h = opened()
    link = move_link(h)
    deliver(h, link, "5-0", "5-1")
    h.conn.detach(link, GoingAway("moving"))
    assert h.events() == [LinkEnded(link, ["5-0", "5-1"])]
    assert h.out() == [detach(1, 0, "wsq:going-away")]
    assert link.unsettled == {}
    # A disposition crossing our detach settles nothing more.
    assert h.exchange({"op": "disposition", "ch": 1, "first": 0, "last": 1}) == ([], [])


def test_move_links_of_an_ended_session_report_their_unsettled_ids() -> None:
    h = opened()
    a = move_link(h, 0)
    b = move_link(h, 1)
    deliver(h, a, "5-0")
    deliver(h, b, "6-0", "6-1")
    assert h.exchange({"op": "end", "ch": 1}) == (
        [LinkEnded(a, ["5-0"]), LinkEnded(b, ["6-0", "6-1"])],
        [end(1)],
    )


def test_move_links_of_a_session_we_end_report_their_unsettled_ids() -> None:
    h = opened()
    link = move_link(h)
    deliver(h, link, "5-0")
    h.conn.end_session(link.session, GoingAway("bye"))
    assert h.events() == [LinkEnded(link, ["5-0"])]


def test_move_links_of_a_closed_connection_report_their_unsettled_ids() -> None:
    h = opened()
    link = move_link(h)
    deliver(h, link, "5-0", "5-1")
    h.send({"op": "close"})
    events = h.events()
    assert events[0] == LinkEnded(link, ["5-0", "5-1"])


def test_a_move_link_ended_with_everything_settled_reports_nothing_unsettled() -> None:
    h = opened()
    link = move_link(h)
    deliver(h, link, "5-0", "5-1")
    h.send({"op": "disposition", "ch": 1, "first": 0, "last": 1})
    h.events()
    assert h.exchange(detach(1, 0)) == ([LinkEnded(link, [])], [detach(1, 0)])


@pytest.mark.parametrize(
    "props",
    [
        {},
        {"subject": "a.b", "message_id": "m1", "content_type": "text/plain"},
        {"headers": {"big": 2**70, "text": "grüße ☃ 😀", "nested": {"a": [1, None]}}},
        {"message_id": "\ud800", "headers": {"h": "\udfff"}},
        {"subject": "a.b", "expires_at": 1_732_200_060_000},
    ],
)
def test_a_tail_rebuilt_from_stored_props_is_the_encoded_tail(props: dict[str, Any]) -> None:
    # A broker may store the props pre-encoded and concatenate the tail when it reads them back.
    m = message("1732200000000-7", {"text": "grüße"}, **props)
    stored = stored_props(m.publisher, m.subject, m.message_id, m.content_type, m.headers)
    tail = stored_tail(m.id, str(m.ts), m.body, stored, m.expires_at)
    assert tail == copy_tail(m)
    assert tail.encode("utf-8")  # valid UTF-8 whatever the props hold


def test_a_redelivered_tail_adds_the_count_to_the_cached_tail() -> None:
    m = message("5-1", "x", subject="a.b")
    tail = copy_tail(m)
    again = message_tail(m, redelivered=3)
    assert decode("{" + again)["props"] == {**m.props(), "redelivered": 3}
    assert again.startswith(tail[:-2])
    assert m.wire is tail  # the message was encoded once
