"""The descriptions of the errors a client gets, exact (the other protocol tests match any text;
a description is what a developer reads to fix a client, so a few are pinned here: one per
kind of refusal that mutation testing showed no test read)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from protocol_helpers import Harness

INVALID = "wsq:invalid-frame"


def answer_to(frame: dict[str, Any], setup: Callable[[Harness], Any] = lambda h: None) -> Any:
    h = Harness(sender_credit=1)
    h.open()
    h.begin(1)
    setup(h)
    h.out()
    h.events()
    h.send(frame)
    h.events()
    return h.out()


def detached(condition: str, description: str) -> list[dict[str, Any]]:
    error = {"condition": condition, "description": description}
    return [{"op": "detach", "ch": 1, "handle": 0, "error": error}]


ATTACH = {"op": "attach", "ch": 1, "handle": 0, "role": "receiver", "address": "a"}


@pytest.mark.parametrize(
    ("frame", "description"),
    [
        ({**ATTACH, "rewind": 2, "from": "^"}, "attach: 'rewind' and 'from' are exclusive"),
        (
            {**ATTACH, "conflate": {"ms": 50, "by": "id"}},
            'attach: \'conflate\' must be {"ms": M, "by": "subject"}',
        ),
        (
            {**ATTACH, "conflate": {"ms": 5}},
            "attach: 'conflate.ms' must be an integer in 10..86400000",
        ),
        (
            {**ATTACH, "mode": "move", "rewind": 1},
            "attach: 'rewind' and 'conflate' are for copy receivers only",
        ),
        ({**ATTACH, "filter": []}, "attach: 'filter' must be an object"),
        (
            {**ATTACH, "filter": {"subject": "a..b"}},
            "attach: 'filter.subject' is not a valid pattern",
        ),
        ({**ATTACH, "settled": 1}, "attach: 'settled' must be a boolean"),
        (
            {**ATTACH, "mode": "move", "group": "a b"},
            "attach: 'group' must be tokens of [A-Za-z0-9_-]",
        ),
    ],
)
def test_an_attach_refused_says_why(frame: dict[str, Any], description: str) -> None:
    assert answer_to(frame) == detached(INVALID, description)


def test_a_transfer_on_a_receiver_link_says_so() -> None:
    frame = {"op": "transfer", "ch": 1, "handle": 0, "delivery": 0, "body": 1}
    assert answer_to(frame, lambda h: h.attach_receiver(1, 0, credit=5)) == detached(
        INVALID, "transfer on a receiver link"
    )


def test_a_transfer_beyond_the_credit_says_so() -> None:
    def spend(h: Harness) -> None:
        h.attach_sender(1, 0)
        h.send({"op": "transfer", "ch": 1, "handle": 0, "delivery": 0, "body": 1})

    frame = {"op": "transfer", "ch": 1, "handle": 0, "delivery": 1, "body": 2}
    assert answer_to(frame, spend) == detached(
        "wsq:transfer-limit-exceeded", "transfer beyond the credit granted"
    )


def test_a_disposition_with_an_unknown_outcome_says_which_are_known() -> None:
    frame = {"op": "disposition", "ch": 1, "first": 0, "last": 1, "outcome": "bad"}
    error = {
        "condition": INVALID,
        "description": "disposition: 'outcome' must be accepted, released, rejected or modified",
    }
    assert answer_to(frame, lambda h: h.attach_receiver(1, 0, mode="move", credit=5)) == [
        {"op": "end", "ch": 1, "error": error}
    ]
