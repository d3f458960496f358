"""wsq.core.messages and wsq.core.wire: a message's props, its wire tail (encoded once, then its
only copy of body and props), its size, and the idempotency record's text; exact texts."""

from __future__ import annotations

import pytest

from wsq.core.messages import (
    Message,
    Published,
    message_size,
    published_from_text,
    published_text,
    stored_props,
    stored_size,
    utf8_len,
)
from wsq.core.wire import copy_tail, message_tail, stored_message, stored_tail


def full_message() -> Message:
    return Message(
        "1700000000000-3",
        '{"a":"é"}',
        ts=1700000000000,
        publisher="alice",
        subject="orders.eu",
        message_id="m-1",
        content_type="application/json",
        headers={"h": [1]},
        expires_at=1700000005000,
    )


FULL_PROPS = {
    "ts": 1700000000000,
    "publisher": "alice",
    "subject": "orders.eu",
    "message_id": "m-1",
    "content_type": "application/json",
    "headers": {"h": [1]},
    "expires": 1700000005000,
}
FULL_TAIL = (
    '"id":"1700000000000-3","body":{"a":"é"},"props":{"ts":1700000000000,"publisher":"alice",'
    '"subject":"orders.eu","message_id":"m-1","content_type":"application/json",'
    '"headers":{"h":[1]},"expires":1700000005000}}'
)


def test_a_message_reads_its_position_from_its_id() -> None:
    assert full_message().pos == (1700000000000, 3)
    assert Message("5-1", "1", ts=5, publisher="p", pos=(9, 9)).pos == (9, 9)


def test_props_hold_every_field_given_and_leave_out_the_absent_ones() -> None:
    m = full_message()
    assert m.props() == FULL_PROPS
    assert list(m.props()) == list(FULL_PROPS)
    assert Message("5-1", "1", ts=5, publisher="p").props() == {"ts": 5, "publisher": "p"}


def test_the_tail_is_encoded_once_and_then_holds_body_and_props() -> None:
    m = full_message()
    assert copy_tail(m) == FULL_TAIL
    assert m.wire == FULL_TAIL
    assert m._body is None
    # Everything is read back from the wire text now.
    assert m.body == '{"a":"é"}'
    assert m.publisher == "alice"
    assert m.message_id == "m-1"
    assert m.content_type == "application/json"
    assert m.headers == {"h": [1]}
    assert m.props() == FULL_PROPS
    assert copy_tail(m) == FULL_TAIL


def test_a_message_built_around_a_wire_ignores_the_props_given() -> None:
    m = Message(
        "1-0",
        "[1]",
        ts=1,
        publisher="x",
        message_id="y",
        wire='"id":"1-0","body":[1],"props":{"ts":1,"publisher":"bob","content_type":"t"}}',
    )
    assert m.body == "[1]"
    assert m.publisher == "bob"
    assert m.message_id is None
    assert m.content_type == "t"
    assert m.headers is None
    assert m.props() == {"ts": 1, "publisher": "bob", "content_type": "t"}


def test_a_move_delivery_tail_adds_redelivered() -> None:
    m = Message("5-1", "1", ts=5, publisher="p")
    assert message_tail(m) == '"id":"5-1","body":1,"props":{"ts":5,"publisher":"p"}}'
    assert message_tail(m, 0) == (
        '"id":"5-1","body":1,"props":{"ts":5,"publisher":"p","redelivered":0}}'
    )
    assert message_tail(m, 12) == (
        '"id":"5-1","body":1,"props":{"ts":5,"publisher":"p","redelivered":12}}'
    )


def test_stored_props_are_in_the_order_of_the_wire_without_ts_and_expires() -> None:
    assert stored_props("p") == '{"publisher":"p"}'
    assert stored_props("p", "s", "m", "c", {"h": 1}) == (
        '{"publisher":"p","subject":"s","message_id":"m","content_type":"c","headers":{"h":1}}'
    )


def test_a_stored_message_is_concatenated_to_the_same_tail_as_an_encoded_one() -> None:
    props = stored_props("alice", "orders.eu", "m-1", "application/json", {"h": [1]})
    m = stored_message("1700000000000-3", '{"a":"é"}', props, "orders.eu", 5000, size=77)
    assert m.wire == FULL_TAIL
    assert m.pos == (1700000000000, 3)
    assert m.ts == 1700000000000
    assert m.expires_at == 1700000005000
    assert m.subject == "orders.eu"
    assert m.size == 77
    assert m.props() == FULL_PROPS
    assert m.body == '{"a":"é"}'
    no_ttl = stored_message("7-0", "2", '{"publisher":"p"}', None, None)
    assert no_ttl.expires_at is None
    assert no_ttl.size is None
    assert no_ttl.wire == '"id":"7-0","body":2,"props":{"ts":7,"publisher":"p"}}'


def test_a_stored_tail_of_empty_props_has_only_ts() -> None:
    assert stored_tail("1-0", "1", "true", "{}", None) == '"id":"1-0","body":true,"props":{"ts":1}}'
    assert stored_tail("1-0", "1", "true", "{}", 9) == (
        '"id":"1-0","body":true,"props":{"ts":1,"expires":9}}'
    )


def test_the_size_is_the_utf8_bytes_of_body_and_stored_props() -> None:
    assert utf8_len("abc") == 3
    assert utf8_len("é€") == 5
    assert utf8_len("\ud800") == 3
    assert stored_size('"é"', '{"publisher":"p"}') == 4 + 17
    m = full_message()
    expected = utf8_len('{"a":"é"}') + utf8_len(
        stored_props("alice", "orders.eu", "m-1", "application/json", {"h": [1]})
    )
    assert expected == 10 + 116  # '{"a":"é"}' and the 116 ASCII bytes of the props
    assert message_size(m) == expected
    assert m.size == expected
    copy_tail(m)
    m.size = None
    assert message_size(m) == expected
    assert message_size(stored_message("7-0", "2", "{}", None, None, size=3)) == 3


@pytest.mark.parametrize(
    ("results", "text"),
    [
        ([], ""),
        ([Published("5-0")], "5-0"),
        ([Published("5-0"), Published("5-1"), Published("5-2")], "5-0+2"),
        (
            [
                Published("5-0"),
                Published("5-1"),
                Published("4-9", duplicate=True),
                Published("5-2"),
                Published("5-4"),
                Published("6-5"),
                Published("6-6"),
            ],
            "5-0+1,=4-9,5-2,5-4,6-5+1",
        ),
        ([Published("1-0", True), Published("1-1", True)], "=1-0,=1-1"),
    ],
)
def test_published_results_are_written_as_runs_and_read_back(
    results: list[Published], text: str
) -> None:
    assert published_text(results) == text
    assert published_from_text(text) == results


def test_the_size_of_a_message_without_expiry_leaves_out_only_ts() -> None:
    m = Message("5-1", '"é"', ts=5, publisher="p", subject="s")
    assert message_size(m) == 4 + len('{"publisher":"p","subject":"s"}')
