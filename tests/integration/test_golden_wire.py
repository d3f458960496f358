"""The golden wire: one scripted session whose server frames must stay byte-identical.

``golden/session.txt`` is a transcript: ``>`` lines are what the client sends (one WebSocket
message each), ``<`` lines the server frames that must follow, each byte for byte (a batch is
split into its frames with their text untouched: batching is timing, not contract). The
session runs on a real socket against the memory broker with a fixed clock, a fixed node id
and a token with a fixed ``exp``, so that every position, ``ts`` and answer is reproducible.

A refactoring must leave this file as it is. A deliberate change of the wire re-records it with
``WSQ_GOLDEN_RECORD=1 pytest tests/integration/test_golden_wire.py`` and says so in its commit.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import jwt
import websockets
from wsq_harness import SECRET_ACME, make_settings, running_gateway

from wsq.broker.memory import MemoryBroker

GOLDEN = Path(__file__).parent / "golden" / "session.txt"
#: 2096-10-02: positions and ts are fixed, and later than any real clock the hub compares
#: expiries with.
CLOCK_S = 4_000_000_000.0
EXP = 4_102_444_800  # 2100-01-01


def _token(publish: list[str], subscribe: list[str]) -> str:
    claims = {
        "iss": "acme",
        "sub": "golden",
        "exp": EXP,
        "wsq": {"publish": publish, "subscribe": subscribe},
    }
    return jwt.encode(claims, SECRET_ACME, algorithm="HS256", headers={"kid": "k1"})


TOKEN = _token(["golden.>"], ["golden.>"])
REFRESHED = _token(["golden.>"], ["golden.feed"])


def _script() -> list[tuple[str, list[Any]]]:
    """(name, client messages) of each step; a list in a message is a batch."""
    pub = {"op": "transfer", "ch": 1, "handle": 0}
    return [
        ("open", [{"op": "open", "token": TOKEN, "idle": 0, "client": "golden/1"}]),
        ("begin two sessions", [[{"op": "begin", "ch": 1}, {"op": "begin", "ch": 2}]]),
        (
            "a sender and three receivers",
            [
                {"op": "attach", "ch": 1, "handle": 0, "role": "sender", "address": "golden.feed"},
                {
                    "op": "attach",
                    "ch": 2,
                    "handle": 0,
                    "role": "receiver",
                    "address": "golden.feed",
                    "credit": 10,
                },
                {
                    "op": "attach",
                    "ch": 2,
                    "handle": 1,
                    "role": "receiver",
                    "address": "golden.feed",
                    "filter": {"subject": "a.*"},
                    "settled": True,
                    "credit": 10,
                },
                {
                    "op": "attach",
                    "ch": 2,
                    "handle": 2,
                    "role": "receiver",
                    "address": "golden.feed",
                    "from": "^",
                    "credit": 2,
                },
            ],
        ),
        (
            "publish a batch",
            [
                [
                    {**pub, "delivery": 0, "body": {"n": 0, "big": 12345678901234567890}},
                    {
                        **pub,
                        "delivery": 1,
                        "body": "one",
                        "props": {
                            "subject": "a.b",
                            "message_id": "m-1",
                            "content_type": "text/plain",
                            "headers": {"k": ["v", 1, None]},
                            "ttl": 60000,
                        },
                    },
                    {**pub, "delivery": 2, "settled": True, "body": [1.5, "é", "\U0001f600"]},
                ]
            ],
        ),
        (
            "a duplicate and a refused transfer",
            [
                [
                    {**pub, "delivery": 3, "body": "again", "props": {"message_id": "m-1"}},
                    {**pub, "delivery": 4, "body": "bad", "props": {"ttl": -1}},
                ]
            ],
        ),
        ("more credit for the third receiver", [{"op": "flow", "ch": 2, "handle": 2, "credit": 5}]),
        (
            "resume after a position, and settle copy deliveries",
            [
                {
                    "op": "attach",
                    "ch": 2,
                    "handle": 3,
                    "role": "receiver",
                    "address": "golden.feed",
                    "from": "4000000000000-0",
                    "credit": 10,
                },
                {"op": "disposition", "ch": 2, "first": 0, "last": 3, "outcome": "accepted"},
            ],
        ),
        (
            "a queue: claim, release, accept, reject",
            [
                {
                    "op": "attach",
                    "ch": 1,
                    "handle": 1,
                    "role": "sender",
                    "address": "golden.jobs",
                },
                {
                    "op": "attach",
                    "ch": 2,
                    "handle": 4,
                    "role": "receiver",
                    "address": "golden.jobs",
                    "mode": "move",
                    "group": "workers",
                    "lease": 60000,
                    "credit": 5,
                },
                [
                    {"op": "transfer", "ch": 1, "handle": 1, "delivery": 5, "body": {"job": 1}},
                    {"op": "transfer", "ch": 1, "handle": 1, "delivery": 6, "body": {"job": 2}},
                ],
            ],
        ),
        (
            "release a job",
            [
                {"op": "disposition", "ch": 2, "first": 9, "outcome": "released"},
            ],
        ),
        (
            "accept and reject",
            [
                {"op": "disposition", "ch": 2, "first": 10, "outcome": "accepted"},
                {"op": "disposition", "ch": 2, "first": 11, "outcome": "rejected"},
                {"op": "flow", "ch": 1, "handle": 1, "credit": 3},
            ],
        ),
        (
            "refused attaches",
            [
                {"op": "attach", "ch": 2, "handle": 5, "role": "receiver", "address": "secret.x"},
                {"op": "attach", "ch": 2, "handle": 6, "role": "receiver", "address": "bad..x"},
                {
                    "op": "attach",
                    "ch": 2,
                    "handle": 7,
                    "role": "receiver",
                    "address": "golden.feed",
                    "filter": {"subject": "a.>.b"},
                },
                {
                    "op": "attach",
                    "ch": 2,
                    "handle": 8,
                    "role": "sender",
                    "address": "golden.x",
                    "x": 1,
                },
                {"op": "detach", "ch": 2, "handle": 5},
                {"op": "detach", "ch": 2, "handle": 6},
                {"op": "detach", "ch": 2, "handle": 7},
            ],
        ),
        (
            "refresh with fewer rights",
            [[], {"op": "refresh", "token": REFRESHED}],
        ),
        (
            "detach and end",
            [
                {"op": "detach", "ch": 2, "handle": 0},
                {"op": "detach", "ch": 2, "handle": 8},
                {"op": "end", "ch": 1},
            ],
        ),
        ("a session error", [{"op": "flow", "ch": 2, "handle": 99, "credit": 1}]),
        ("begin again on an ended channel", [{"op": "begin", "ch": 2}, {"op": "begin", "ch": 3}]),
        ("a connection error", [{"op": "begin", "ch": 3}, {"op": "close"}]),
    ]


def split_frames(text: str) -> list[str]:
    """The frames of one server message, each with its text exactly as sent."""
    if not text.startswith("["):
        return [text]
    frames: list[str] = []
    depth = 0
    in_string = escaped = False
    start = 1
    for i, c in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
            if depth == 0 and i > start:
                frames.append(text[start:i])
        elif c == "," and depth == 1:
            frames.append(text[start:i])
            start = i + 1
    return frames


def _read_transcript() -> list[tuple[str, list[str], list[str]]]:
    steps: list[tuple[str, list[str], list[str]]] = []
    for line in GOLDEN.read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            steps.append((line[2:], [], []))
        elif line.startswith("> "):
            steps[-1][1].append(line[2:])
        elif line.startswith("< "):
            steps[-1][2].append(line[2:])
    return steps


async def _frames(ws: Any, n: int | None, quiet: float = 0.3) -> list[str]:
    """``n`` server frames (heartbeats skipped); with ``n`` None, all until ``quiet`` s pass."""
    out: list[str] = []
    while n is None or len(out) < n:
        try:
            text = await asyncio.wait_for(ws.recv(), 5.0 if n is not None else quiet)
        except (TimeoutError, websockets.ConnectionClosed):
            if n is None:
                return out
            raise AssertionError(f"expected {n} frames, got {len(out)}: {out}") from None
        out += [f for f in split_frames(text) if f]
    return out


async def _session(steps: list[tuple[str, list[str], list[str]]] | None) -> list[Any]:
    settings = make_settings(server={"node_id": "golden-node"})
    broker = MemoryBroker(settings.storage_policies(), clock=lambda: CLOCK_S)
    recorded: list[tuple[str, list[str], list[str]]] = []
    async with running_gateway(settings, broker) as gw:
        ws = await websockets.connect(gw.url, subprotocols=["wsq.v1"], max_size=None)
        try:
            if steps is None:
                plan = [
                    (name, [json.dumps(m, ensure_ascii=False) for m in msgs], None)
                    for name, msgs in _script()
                ]
            else:
                plan = [(name, sent, want) for name, sent, want in steps]
            for name, sent, want in plan:
                for text in sent:
                    await ws.send(text)
                got = await _frames(ws, None if want is None else len(want))
                if want is not None:
                    assert got == want, f"step {name!r}: server frames changed"
                recorded.append((name, sent, got))
            # Nothing more than the transcript says.
            assert await _frames(ws, None) == []
        finally:
            await ws.close()
    return recorded


async def test_a_scripted_session_answers_byte_for_byte_as_recorded() -> None:
    if os.environ.get("WSQ_GOLDEN_RECORD") == "1":
        recorded = await _session(None)
        lines: list[str] = []
        for name, sent, got in recorded:
            lines.append(f"# {name}")
            lines += [f"> {t}" for t in sent]
            lines += [f"< {t}" for t in got]
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text("\n".join(lines) + "\n", encoding="utf-8")
    steps = _read_transcript()
    # The transcript holds the whole script: a step dropped from the file fails here.
    assert [name for name, _, _ in steps] == [name for name, _ in _script()]
    await _session(steps)


def test_split_frames_keeps_each_frame_text() -> None:
    text = '[{"op":"a","b":"],\\"["},[1,{"c":[]}],{"op":"d"}]'
    assert split_frames(text) == ['{"op":"a","b":"],\\"["}', '[1,{"c":[]}]', '{"op":"d"}']
    assert split_frames('{"op":"x"}') == ['{"op":"x"}']
    assert split_frames("[]") == []
