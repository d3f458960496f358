"""wsq.framelog: a debug log's view of a WebSocket message is its size, ops and numbers only."""

from __future__ import annotations

import json

from wsq.framelog import describe_message

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ"


def test_frames_are_described_by_op_and_numbers() -> None:
    text = json.dumps(
        [
            {"op": "open", "token": TOKEN, "client": "secret-client"},
            {"op": "transfer", "ch": 1, "handle": 2, "delivery": 3, "body": "BODY"},
            {"op": "disposition", "ch": 1, "first": 4, "last": 5, "outcome": "accepted"},
        ]
    )
    line = describe_message(text)
    assert line == (
        f"{len(text)} chars, 3 frame(s): open, transfer ch=1 handle=2 delivery=3, "
        "disposition ch=1 first=4 last=5"
    )


def test_nothing_a_client_wrote_but_known_ops_and_integers_is_shown() -> None:
    text = json.dumps(
        [
            {"op": TOKEN, "ch": TOKEN, "handle": 1.5},
            {"op": "attach", "ch": 1, "handle": 0, "address": "secret.address"},
            "BODY",
        ]
    )
    line = describe_message(text)
    assert TOKEN not in line and "secret" not in line and "BODY" not in line
    assert line.endswith("3 frame(s): ?, attach ch=1 handle=0, ?")


def test_heartbeats_long_batches_and_garbage() -> None:
    assert describe_message("[]") == "2 chars: heartbeat"
    batch = json.dumps([{"op": "flow", "ch": 1, "handle": i} for i in range(20)])
    assert describe_message(batch).endswith("flow ch=1 handle=7, +12 more")
    assert (
        describe_message('{"op": "open", "token": "' + TOKEN)
        == f"{25 + len(TOKEN)} chars, not JSON"
    )
