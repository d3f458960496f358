"""wsq.protocol: a client transfer read as a publish item (``publish_item``), exact for each
invalid field; the refresh token's bound; and the output a batch of deliveries queues
(``send_transfers``)."""

from __future__ import annotations

from typing import Any

import pytest
from protocol_helpers import Harness, decode

from wsq.core.limits import MAX_TOKEN_CHARS
from wsq.core.messages import Outcome
from wsq.core.props import NO_PROPS, Props
from wsq.protocol.events import (
    ConnectionEnded,
    DeliveriesSettled,
    PublishItem,
    RefreshRequested,
)
from wsq.protocol.frames import publish_item


def too_deep() -> Any:
    body: Any = 1
    for _ in range(100_000):  # past the recursion limit: decoding admits more than encoding
        body = [body]
    return body


@pytest.mark.parametrize("settled", [True, False, "yes"])
def test_a_body_too_deep_to_encode_is_an_item_with_a_null_body_and_an_error(settled: Any) -> None:
    assert publish_item({"delivery": 7, "settled": settled, "body": too_deep()}) == PublishItem(
        7, settled is True, "null", NO_PROPS, "'body' is nested too deeply"
    )


def test_a_settled_that_is_not_a_boolean_is_an_item_with_an_error() -> None:
    assert publish_item({"delivery": 3, "settled": 1, "body": [1]}) == PublishItem(
        3, False, "[1]", NO_PROPS, "'settled' must be a boolean"
    )


def test_props_that_are_not_an_object_are_an_item_with_an_error() -> None:
    assert publish_item({"delivery": 3, "settled": True, "body": 2, "props": [1]}) == (
        PublishItem(3, True, "2", NO_PROPS, "'props' must be an object")
    )


def test_a_bad_prop_is_an_item_with_that_prop_named() -> None:
    assert publish_item({"delivery": 4, "body": None, "props": {"ttl": 0}}) == PublishItem(
        4, False, "null", NO_PROPS, "'props.ttl' must be an integer in 1..31536000000"
    )


def test_a_valid_item_keeps_its_props() -> None:
    item = publish_item({"delivery": 9, "body": {"a": 1}, "props": {"subject": "s.t", "ttl": 5}})
    assert item == PublishItem(9, False, '{"a":1}', Props(subject="s.t", ttl_ms=5), None)


def test_a_refresh_token_of_the_longest_length_is_taken() -> None:
    h = Harness()
    h.open()
    token = "t" * MAX_TOKEN_CHARS
    h.send({"op": "refresh", "token": token})
    assert h.events() == [RefreshRequested(token)]


def test_a_refresh_without_a_token_says_so() -> None:
    h = Harness()
    h.open()
    h.send({"op": "refresh", "token": ""})
    [ended] = h.events()
    assert isinstance(ended, ConnectionEnded)
    assert h.out() == [
        {
            "op": "close",
            "error": {"condition": "wsq:invalid-frame", "description": "refresh needs a token"},
        }
    ]


def test_a_batch_of_deliveries_queues_its_frames_their_bytes_and_one_wake_up() -> None:
    h = Harness()
    h.open()
    h.begin(1)
    link = h.attach_receiver(1, 0, credit=10)
    calls = h.output_calls
    assert h.conn.out_bytes == 0
    tails = ['"id":"1-0","body":1,"props":{}}', '"id":"1-1","body":22,"props":{}}']
    h.conn.send_transfers(link, tails)
    # One wake-up for output that was empty; none for a batch behind it.
    assert h.output_calls == calls + 1
    h.conn.send_transfers(link, ['"id":"1-2","body":3,"props":{}}'])
    assert h.output_calls == calls + 1
    h.conn.send_transfers(link, [])
    frames = [
        link.prefix + '0,"id":"1-0","body":1,"props":{}}',
        link.prefix + '1,"id":"1-1","body":22,"props":{}}',
        link.prefix + '2,"id":"1-2","body":3,"props":{}}',
    ]
    assert h.conn.out_bytes == sum(map(len, frames))
    assert link.credit == 7
    assert h.out() == [decode(f) for f in frames]
    assert h.conn.transfer_overhead(link) == len(link.prefix) + 12


def test_a_disposition_range_wider_than_the_unsettled_settles_its_last_delivery() -> None:
    h = Harness()
    h.open()
    h.begin(1)
    link = h.attach_receiver(1, 0, mode="move", credit=10)
    for i in range(4):
        h.conn.send_transfer(link, f'"id":"1-{i}","body":{i},"props":{{}}}}', f"1-{i}")
    h.out()
    h.send({"op": "disposition", "ch": 1, "first": 1, "last": 2})
    assert h.events() == [DeliveriesSettled(link, ["1-1", "1-2"], Outcome.ACCEPTED)]
    # Unsettled now 0 and 3; the range 1..3 is as wide as they are many: 3 is in it.
    h.send({"op": "disposition", "ch": 1, "first": 1, "last": 3, "outcome": "released"})
    assert h.events() == [DeliveriesSettled(link, ["1-3"], Outcome.RELEASED)]
    assert link.unsettled == {0: "1-0"}
