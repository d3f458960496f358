"""``published_text`` / ``published_from_text`` (an idempotency key's record) and
``message_size``, exactly: the brokers' conformance tests exercise them only through publishes."""

from __future__ import annotations

import pytest

from wsq.core import codec
from wsq.core.messages import (
    Message,
    Published,
    message_size,
    published_from_text,
    published_text,
    stored_props,
    stored_size,
)

P = Published


@pytest.mark.parametrize(
    ("results", "text"),
    [
        ([], ""),
        ([P("5-0")], "5-0"),
        ([P("5-0"), P("5-1"), P("5-2")], "5-0+2"),
        ([P("5-7"), P("5-8")], "5-7+1"),
        # A gap in seq, another ms: a new run each.
        ([P("5-0"), P("5-2"), P("6-3"), P("6-4")], "5-0,5-2,6-3+1"),
        # Same seq run but another ms is not a continuation.
        ([P("5-0"), P("6-1")], "5-0,6-1"),
        # Duplicates break runs and keep their own id.
        ([P("5-0"), P("1-1", duplicate=True), P("5-1")], "5-0,=1-1,5-1"),
        ([P("1-1", duplicate=True), P("2-2", duplicate=True)], "=1-1,=2-2"),
        ([P("5-0"), P("5-1"), P("1-1", duplicate=True)], "5-0+1,=1-1"),
        ([P("1-1", duplicate=True), P("5-0"), P("5-1")], "=1-1,5-0+1"),
        # After a duplicate nothing continues the run before it, even one position back.
        ([P("5-1"), P("1-1", duplicate=True), P("5-0")], "5-1,=1-1,5-0"),
        # Past 2**53 (and 19 digits): exact.
        ([P("1-9007199254740993"), P("1-9007199254740994")], "1-9007199254740993+1"),
        ([P(f"{'9' * 19}-{'9' * 19}")], f"{'9' * 19}-{'9' * 19}"),
    ],
)
def test_results_are_written_as_runs_and_read_back(results: list[Published], text: str) -> None:
    assert published_text(results) == text
    assert published_from_text(text) == results


def test_a_thousand_new_positions_are_one_item() -> None:
    results = [P(f"7-{i}") for i in range(1000)]
    assert published_text(results) == "7-0+999"
    assert published_from_text("7-0+999") == results


def test_message_size_is_the_stored_size_of_body_and_props() -> None:
    props = stored_props("alice", "a.b", "m-1", "text/plain", {"k": "é"})
    body = codec.dumps({"x": "ü"})
    m = Message(
        "1-1",
        body,
        ts=5,
        publisher="alice",
        subject="a.b",
        message_id="m-1",
        content_type="text/plain",
        headers={"k": "é"},
        expires_at=99,
    )
    want = stored_size(body, props)
    assert want == len(body.encode()) + len(props.encode())
    assert message_size(m) == want
    assert m.size == want  # counted once
    m.size = 3
    assert message_size(m) == 3
    # Without an expiry (and so no "expires" prop) likewise.
    plain = Message("1-2", body, ts=5, publisher="alice")
    assert message_size(plain) == stored_size(body, stored_props("alice"))
