"""wsq.core.props.parse_props: the props of a message offered for publishing (contract section
5), each rule's boundary and each error text exact. The WebSocket and the HTTP bridge name the
field their own way; here ``name`` wraps the key in <>."""

from __future__ import annotations

from typing import Any

import pytest

from wsq.core.limits import MAX_STRING_PROP, MAX_TTL_MS
from wsq.core.messages import NewMessage
from wsq.core.props import NO_PROPS, Props, PropsError, as_int, parse_props


def parse(**fields: Any) -> Props:
    return parse_props(fields, lambda key: f"<{key}>")


def test_no_props_and_unknown_keys_give_empty_props() -> None:
    assert parse() == NO_PROPS == Props(None, None, None, None, None)
    assert parse(colour="red", ts=5) == NO_PROPS


def test_every_prop_is_kept() -> None:
    props = parse(
        subject="orders.eu-1",
        message_id="m" * MAX_STRING_PROP,
        content_type="text/plain",
        headers={"trace": [1, {"a": None}]},
        ttl=MAX_TTL_MS,
    )
    assert props == Props(
        subject="orders.eu-1",
        message_id="m" * MAX_STRING_PROP,
        content_type="text/plain",
        headers={"trace": [1, {"a": None}]},
        ttl_ms=MAX_TTL_MS,
    )


def test_the_message_carries_the_props_and_the_publisher_it_is_given() -> None:
    props = Props("s", "id-1", "application/json", {"h": 1}, 500)
    assert props.message('{"a":1}', "alice") == NewMessage(
        body='{"a":1}',
        publisher="alice",
        subject="s",
        message_id="id-1",
        content_type="application/json",
        headers={"h": 1},
        ttl_ms=500,
    )


@pytest.mark.parametrize(("raw", "ttl"), [(1, 1), (5.0, 5), (MAX_TTL_MS, MAX_TTL_MS)])
def test_a_ttl_in_range_is_an_integer(raw: Any, ttl: int) -> None:
    assert parse(ttl=raw).ttl_ms == ttl
    assert type(parse(ttl=raw).ttl_ms) is int


@pytest.mark.parametrize("raw", [0, -1, MAX_TTL_MS + 1, 1.5, True, "5", [5]])
def test_a_ttl_out_of_range_or_not_an_integer_is_refused(raw: Any) -> None:
    with pytest.raises(PropsError) as caught:
        parse(ttl=raw)
    assert caught.value.description == f"<ttl> must be an integer in 1..{MAX_TTL_MS}"
    assert str(caught.value) == caught.value.description


@pytest.mark.parametrize("subject", ["a..b", "orders.*", "", 5, "x" * 256])
def test_a_subject_that_is_not_an_address_is_refused(subject: Any) -> None:
    with pytest.raises(PropsError) as caught:
        parse(subject=subject)
    assert caught.value.description == "<subject> must be dot-separated tokens of [A-Za-z0-9_-]"


def test_headers_must_be_an_object_json_can_hold() -> None:
    with pytest.raises(PropsError) as caught:
        parse(headers=[1])
    assert caught.value.description == "<headers> must be an object"
    deep: dict[str, Any] = {}
    for _ in range(100_000):
        deep = {"a": deep}
    with pytest.raises(PropsError) as caught:
        parse(headers=deep)
    assert caught.value.description == "<headers> is nested too deeply"


@pytest.mark.parametrize("key", ["message_id", "content_type"])
@pytest.mark.parametrize("value", [5, "x" * (MAX_STRING_PROP + 1), ["a"]])
def test_a_string_prop_too_long_or_not_a_string_is_refused(key: str, value: Any) -> None:
    with pytest.raises(PropsError) as caught:
        parse(**{key: value})
    assert caught.value.description == (
        f"<{key}> must be a string of at most {MAX_STRING_PROP} characters"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, 0), (7, 7), (-3, -3), (7.0, 7), (7.5, None), (True, None), ("7", None), (None, None)],
)
def test_as_int_counts_integers_as_json_schema_does(value: Any, expected: int | None) -> None:
    assert as_int(value) == expected
