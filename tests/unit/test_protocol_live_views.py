"""ServerConnection, contract section 5 live views: ``rewind`` and ``conflate`` of a copy
receiver's attach, read into the link or refused at link scope."""

from __future__ import annotations

from typing import Any

import pytest
from test_protocol_links import INVALID, attach_frame, opened, refused_at_link_scope

from wsq.protocol.events import AttachRequested


def test_rewind_and_conflate_are_read_into_the_link() -> None:
    h = opened()
    h.send(attach_frame(0, rewind=1000, conflate={"ms": 10, "by": "subject"}))
    [event] = h.events()
    assert isinstance(event, AttachRequested)
    assert (event.link.rewind, event.link.conflate_ms, event.link.from_) == (1000, 10, "$")
    h.send(attach_frame(1, rewind=1, conflate={"ms": 86_400_000}))  # "by" defaults to subject
    [event] = h.events()
    assert isinstance(event, AttachRequested)
    assert (event.link.rewind, event.link.conflate_ms) == (1, 86_400_000)
    h.send(attach_frame(2))
    [event] = h.events()
    assert isinstance(event, AttachRequested)
    assert (event.link.rewind, event.link.conflate_ms) == (None, None)


@pytest.mark.parametrize(
    "fields",
    [
        {"rewind": 0},
        {"rewind": 1001},
        {"rewind": -1},
        {"rewind": 2.5},
        {"rewind": True},
        {"rewind": "3"},
        {"rewind": None},
        {"rewind": 3, "from": "$"},
        {"conflate": {"ms": 9}},
        {"conflate": {"ms": 86_400_001}},
        {"conflate": {"ms": "100"}},
        {"conflate": {"ms": 100, "by": "body"}},
        {"conflate": {}},
        {"conflate": 100},
        {"conflate": None},
        {"mode": "move", "rewind": 1},
        {"mode": "move", "conflate": {"ms": 100}},
    ],
)
def test_bad_values_and_combinations_are_refused_at_link_scope(fields: dict[str, Any]) -> None:
    h = opened()
    h.send(attach_frame(5, **fields))
    refused_at_link_scope(h, 5, INVALID)
