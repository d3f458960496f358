"""Hostile and slow clients cost themselves, never their neighbours."""

from __future__ import annotations

import asyncio
import json

import pytest
from wsq_harness import Gateway, Publisher, transfers

#: Each bad input, and what the attacker (session 1, receiver link 0 attached) is answered: the
#: frame and its scope (``None`` ch/handle where the scope is wider), always wsq:invalid-frame.
CLOSE = ("close", None, None)
END = ("end", 1, None)
GARBAGE: list[tuple[str, tuple[str, int | None, int | None]]] = [
    ("{", CLOSE),
    ("null", CLOSE),
    ("[[]]", CLOSE),
    ('{"op":"open","token":"x"}', CLOSE),
    ('{"op":"begin","ch":-1}', CLOSE),
    ('{"op":"begin","ch":"1"}', CLOSE),
    ('{"op":"begin","ch":70000}', CLOSE),
    ('{"op":"attach","ch":1,"handle":1.5,"role":"receiver","address":"a"}', END),
    ('{"op":"flow","ch":1,"handle":0,"credit":-5}', ("detach", 1, 0)),
    ('{"op":"disposition","ch":1,"first":5,"last":2}', END),
    ('{"op":"transfer","ch":1,"handle":0,"delivery":"0"}', END),
    ('{"op":"refresh"}', CLOSE),
    (
        json.dumps({"op": "attach", "ch": 1, "handle": 2, "role": "sender", "address": "\u00e9"}),
        ("detach", 1, 2),
    ),
    ("[" + ",".join(['{"op":"begin","ch":1}'] * 3) + "]", CLOSE),
    ('{"op":"attach","ch":1,"handle":4294967296,"role":"receiver","address":"a"}', END),
    ('{"op":"flow","ch":1,"handle":0,"credit":1e400}', CLOSE),  # not a JSON number we take
    ("9" * 5000, CLOSE),
]


async def test_garbage_from_one_socket_never_disturbs_another(gateway: Gateway) -> None:
    victim = await gateway.subscriber("chat.room1", sub="victim")
    pub = Publisher(await gateway.client(sub="pub"))
    for i, (text, (op, ch, handle)) in enumerate(GARBAGE):
        attacker = await gateway.subscriber("chat.room1", sub=f"attacker{i}", credit=5)
        await attacker.send_raw(text)
        # Every bad frame is answered with wsq:invalid-frame at its narrowest scope.
        answer = await attacker.recv()
        assert (answer["op"], answer.get("ch"), answer.get("handle")) == (op, ch, handle), text
        assert answer["error"]["condition"] == "wsq:invalid-frame", text
        if op != "close":
            await attacker.begin(2)  # the connection goes on
        await pub.publish("chat.room1", i)
        assert (await victim.expect("transfer"))["body"] == i
        await attacker.close()
    async with __import__("httpx").AsyncClient(base_url=gateway.http) as http:
        assert (await http.get("/healthz")).status_code == 200


@pytest.mark.gateway(server={"outbox_max_bytes": 64 * 1024})
async def test_a_subscriber_that_does_not_read_pauses_and_catches_up_without_loss(
    gateway: Gateway,
) -> None:
    fast = await gateway.client(sub="fast")
    slow = await gateway.client(sub="slow", rcvbuf=32 * 1024)
    for c in (fast, slow):
        await c.begin(1)
        await c.subscribe(1, 0, "firehose", credit=100_000)
    # The slow client reads nothing until the fast one has everything.
    pub = Publisher(await gateway.client(sub="pub"))
    body = "x" * 1000
    n = 2000
    for start in range(0, n, 100):
        await pub.publish("firehose", *[{"n": i, "pad": body} for i in range(start, start + 100)])
    hub = gateway.server.config.app.state.node.hub  # type: ignore[attr-defined]
    got_fast = await transfers(fast, n, timeout=20)
    assert [t["body"]["n"] for t in got_fast] == list(range(n))
    # Still connected: it starts reading and receives everything, in order, once.
    got_slow = await transfers(slow, n, timeout=30)
    assert [t["body"]["n"] for t in got_slow] == list(range(n))
    assert [t["delivery"] for t in got_slow] == list(range(n))
    await slow.nothing("transfer", wait=0.3)
    await slow.begin(2)
    # It really fell behind (and was not given a queue): it caught up from history.
    assert hub.catch_ups > 0


async def test_many_sockets_open_and_close_without_leaking_subscriptions(
    gateway: Gateway,
) -> None:
    clients = [await gateway.client(sub=f"c{i}") for i in range(50)]
    for c in clients:
        await c.begin(1)
        await c.subscribe(1, 0, "busy")
    hub = gateway.server.config.app.state.node.hub  # type: ignore[attr-defined]
    assert len(hub.topics[("acme", "busy")].subs) == 50
    await asyncio.gather(*(c.close() for c in clients))
    for _ in range(50):
        if ("acme", "busy") not in hub.topics:
            break
        await asyncio.sleep(0.05)
    assert ("acme", "busy") not in hub.topics
