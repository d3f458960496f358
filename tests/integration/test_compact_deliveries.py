"""The compact delivery form over real sockets, on each broker: a client that asks for it gets
the same messages, numbering and positions as one that does not; credit and move mode hold."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from wsq_harness import Client, Gateway, Publisher

from wsq.client import Client as WsqClient
from wsq.client.wire import expand_transfers
from wsq.ws_protocol import WebSocketProtocol


async def compact_client(gateway: Gateway, sub: str, compact: bool | None) -> Client:
    """A client with session 1 begun, its open carrying ``compact`` (absent when None)."""
    client = await gateway.client(sub=sub, open=False)
    fields = {} if compact is None else {"compact": compact}
    answer = await client.open(gateway.token(sub), **fields)
    if compact is None:
        assert "compact" not in answer
    else:
        assert answer["compact"] is compact
    await client.begin(1)
    return client


class Deliveries:
    """What one client received: per-message transfers, compact frames expanded into them."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.frames: list[str] = []  # the op of each delivery frame, in order
        self.sizes: list[int] = []  # messages per delivery frame

    async def take(self, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while len(out) < n:
            frame = await self.client.recv(timeout)
            op = frame["op"]
            if op == "transfer":
                out.append(frame)
            elif op == "transfers":
                shared = {k: frame[k] for k in ("ch", "handle", "settled")}
                out += [
                    {"op": "transfer", **shared, "delivery": frame["delivery"] + i, **m}
                    for i, m in enumerate(frame["msgs"])
                ]
            else:
                continue
            self.frames.append(op)
            self.sizes.append(1 if op == "transfer" else len(frame["msgs"]))
        assert len(out) == n, f"{len(out)} deliveries where {n} were expected"
        return out


async def test_compact_and_plain_clients_get_the_same_messages_and_positions(
    gateway_on_each_broker: Gateway,
) -> None:
    gw = gateway_on_each_broker
    publisher = Publisher(await gw.client(sub="p"))
    ids = await publisher.publish(
        "feed.same", *({"n": i, "t": "é✓"} for i in range(40)), subject="a.b"
    )
    got: dict[Any, list[dict[str, Any]]] = {}
    seen: dict[Any, Deliveries] = {}
    starts = set()
    for compact in (True, False, None):
        client = await compact_client(gw, f"s{compact}", compact)
        answer = await client.subscribe(1, 0, "feed.same", credit=100, **{"from": "^"})
        starts.add((answer["from"], answer["recovered"]))
        seen[compact] = Deliveries(client)
        got[compact] = await seen[compact].take(40)
    assert [t["id"] for t in got[True]] == ids
    assert got[True] == got[False] == got[None]
    assert len(starts) == 1
    assert [t["delivery"] for t in got[True]] == list(range(40))
    # The replay went out as compact frames of several messages; the others as transfers.
    assert set(seen[True].frames) == {"transfers"} and max(seen[True].sizes) > 1
    assert set(seen[False].frames) == set(seen[None].frames) == {"transfer"}
    # Live deliveries too.
    live = await publisher.publish("feed.same", "live-1", "live-2")
    for compact in (True, False, None):
        assert [t["id"] for t in await seen[compact].take(2)] == live


async def test_compact_deliveries_spend_credit_one_message_each(
    gateway_on_each_broker: Gateway,
) -> None:
    gw = gateway_on_each_broker
    client = await compact_client(gw, "c", True)
    await client.subscribe(1, 0, "feed.credit", credit=5)
    seen = Deliveries(client)
    publisher = Publisher(await gw.client(sub="p"))
    ids = await publisher.publish("feed.credit", *range(12))
    first = await seen.take(5)
    assert [t["body"] for t in first] == [0, 1, 2, 3, 4]
    await client.nothing("transfers", wait=0.3)
    await client.send({"op": "flow", "ch": 1, "handle": 0, "credit": 7})
    rest = await seen.take(7)
    assert [t["id"] for t in first + rest] == ids
    assert [t["delivery"] for t in first + rest] == list(range(12))
    await client.nothing("transfers", wait=0.2)


async def test_compact_move_deliveries_settle_release_and_redeliver(
    gateway_on_each_broker: Gateway,
) -> None:
    gw = gateway_on_each_broker
    await Publisher(await gw.client(sub="p")).publish("jobs.compact", *range(6))
    client = await compact_client(gw, "w", True)
    await client.subscribe(1, 0, "jobs.compact", credit=6, mode="move")
    seen = Deliveries(client)
    jobs = await seen.take(6)
    assert sorted(t["body"] for t in jobs) == list(range(6))
    assert all(t["settled"] is False and t["props"]["redelivered"] == 0 for t in jobs)
    assert set(seen.frames) == {"transfers"}
    # Release the first, accept the rest in one range: only the released one comes back.
    released = jobs[0]
    await client.send(
        {"op": "disposition", "ch": 1, "first": released["delivery"], "outcome": "released"},
        {
            "op": "disposition",
            "ch": 1,
            "first": jobs[1]["delivery"],
            "last": jobs[-1]["delivery"],
            "outcome": "accepted",
        },
        {"op": "flow", "ch": 1, "handle": 0, "credit": 6},
    )
    (again,) = await seen.take(1, timeout=10)
    assert again["id"] == released["id"] and again["body"] == released["body"]
    assert again["delivery"] == 6
    await client.send({"op": "disposition", "ch": 1, "first": 6, "outcome": "accepted"})
    await client.nothing("transfers", wait=0.5)


async def test_the_python_client_reads_compact_deliveries_as_plain_ones(
    gateway_on_each_broker: Gateway,
) -> None:
    gw = gateway_on_each_broker
    ids = await Publisher(await gw.client(sub="p")).publish(
        "py.feed", *({"n": i} for i in range(30)), subject="a.b"
    )
    got: dict[bool, list[tuple[Any, ...]]] = {}
    for compact in (True, False):
        async with WsqClient(gw.url, token=gw.token("py"), compact=compact) as client:
            sub = await client.subscribe("py.feed", from_="^", credit=50)
            messages = [await asyncio.wait_for(sub.get(), 5) for _ in range(30)]
            info = client.info
            assert info is not None and info.compact is compact
        got[compact] = [(m.id, m.body, m.props, m.subject, m.delivery) for m in messages]
    assert [g[0] for g in got[True]] == ids
    assert got[True] == got[False]


async def test_a_publishers_answer_is_written_before_the_deliveries_its_publish_woke(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every socket a publish wakes is written on the loop's next turn, in one callback; the
    publisher's answer (its disposition and credit) first, so that it may publish on while the
    deliveries are written, not after a write to each subscriber's socket."""
    written: list[bytes] = []
    write_now = WebSocketProtocol.write_now

    def recording(self: WebSocketProtocol, pieces: list[bytes]) -> None:
        written.append(b"".join(pieces))
        write_now(self, pieces)

    # Before any socket connects: a peer takes its protocol's write_now when it starts.
    monkeypatch.setattr(WebSocketProtocol, "write_now", recording)
    subscribers = []
    for i in range(4):
        client = await compact_client(gateway, f"s{i}", True)
        await client.subscribe(1, 0, "feed.order", credit=100)
        subscribers.append(Deliveries(client))
    publisher = Publisher(await gateway.client(sub="p"))
    await publisher.publish("feed.order", "warm-up")
    for seen in subscribers:
        await seen.take(1)
    written.clear()
    await publisher.publish("feed.order", *range(5))
    for seen in subscribers:
        assert [t["body"] for t in await seen.take(5)] == list(range(5))
    kinds = [
        "answer" if b'"op":"disposition"' in w else "deliveries" if b'"op":"transfers"' in w else ""
        for w in written
    ]
    assert kinds.count("deliveries") == 4
    assert kinds.index("answer") < kinds.index("deliveries"), kinds


async def test_live_deliveries_of_one_publish_arrive_as_rows_meaning_the_same_messages(
    gateway_on_each_broker: Gateway,
) -> None:
    gw = gateway_on_each_broker
    clients: dict[str, Client] = {}
    for name, fields in (("rows", {"compact": True, "rows": True}), ("plain", {})):
        client = await gw.client(sub=name, open=False)
        answer = await client.open(gw.token(name), **fields)
        assert answer.get("rows", "absent") == fields.get("rows", "absent")
        await client.begin(1)
        await client.subscribe(1, 0, "feed.rows", credit=200)
        clients[name] = client
    publisher = Publisher(await gw.client(sub="p"))
    first = await publisher.publish("feed.rows", *({"n": i, "t": "é✓"} for i in range(20)))
    second = await publisher.publish(
        "feed.rows", *range(5), subject="a.b", headers={"h": {"props": 1}}
    )
    frames: list[dict[str, Any]] = []
    got: list[dict[str, Any]] = []
    while len(got) < 25:
        frame = await clients["rows"].recv(5)
        if frame["op"] == "transfers":
            frames.append(frame)
            got += expand_transfers(frame)
    plain = await Deliveries(clients["plain"]).take(25)
    assert [t["id"] for t in got] == first + second
    shared = ("id", "body", "props", "delivery", "settled")
    assert [{k: t[k] for k in shared} for t in got] == [{k: t[k] for k in shared} for t in plain]
    # Rows throughout; after a frame's first, a row says its props only where they differ
    # from the message before (a publish starts, or on Redis a new millisecond: props.ts).
    assert all(isinstance(m, list) for f in frames for m in f["msgs"])
    for f in frames:
        shown = expand_transfers(f)
        for i, m in enumerate(f["msgs"][1:], 1):
            assert len(m) < 3 or shown[i]["props"] != shown[i - 1]["props"], f
    assert sum(len(m) == 1 for f in frames for m in f["msgs"]) >= 5


async def test_replays_credit_parts_and_filtered_picks_arrive_as_rows_too(
    gateway_on_each_broker: Gateway,
) -> None:
    """Not only a live batch taken whole: a replay from the address's history, a batch cut by
    credit and a filter's pick go to a rows client as rows, meaning what a plain client gets."""
    gw = gateway_on_each_broker
    publisher = Publisher(await gw.client(sub="p"))
    ids = []
    for i in range(3):  # subjects interleaved: a filter's pick leaves gaps in the sequence
        ids += await publisher.publish(
            "feed.again", *({"n": i, "k": k} for k in range(6)), subject="a.b"
        )
        ids += await publisher.publish("feed.again", "other", subject="c.d")
    picked = [i for n, i in enumerate(ids) if n % 7 != 6]
    got: dict[str, list[dict[str, Any]]] = {}
    frames: list[dict[str, Any]] = []
    for name, fields in (("rows", {"compact": True, "rows": True}), ("plain", {})):
        client = await gw.client(sub=name, open=False)
        await client.open(gw.token(name), **fields)
        await client.begin(1)
        # 5 at first: the replay's read is cut by credit, then the rest once credit comes
        await client.subscribe(
            1, 0, "feed.again", credit=5, filter={"subject": "a.*"}, **{"from": "^"}
        )
        if name == "plain":
            first = await Deliveries(client).take(5)
            await client.send({"op": "flow", "ch": 1, "handle": 0, "credit": 100})
            got[name] = first + await Deliveries(client).take(len(picked) - 5)
            continue
        got[name] = []
        while len(got[name]) < len(picked):
            frame = await client.recv(5)
            if frame["op"] == "transfers":
                frames.append(frame)
                got[name] += expand_transfers(frame)
                if len(got[name]) == 5:
                    await client.send({"op": "flow", "ch": 1, "handle": 0, "credit": 100})
    assert [t["id"] for t in got["rows"]] == picked
    shared = ("id", "body", "props", "delivery", "settled")
    assert [{k: t[k] for k in shared} for t in got["rows"]] == [
        {k: t[k] for k in shared} for t in got["plain"]
    ]
    assert all(isinstance(m, list) for f in frames for m in f["msgs"]), frames
    assert any(len(m) == 1 for f in frames for m in f["msgs"])  # [body]: the next sequence


async def test_the_python_client_reads_rows_as_plain_deliveries(
    gateway_on_each_broker: Gateway,
) -> None:
    gw = gateway_on_each_broker
    got: dict[bool, list[tuple[Any, ...]]] = {}
    publisher = Publisher(await gw.client(sub="p"))
    clients = {c: WsqClient(gw.url, token=gw.token("py"), compact=c) for c in (True, False)}
    subs = {}
    for compact, client in clients.items():
        await client.__aenter__()
        subs[compact] = await client.subscribe("py.rows", credit=50)
        assert client.info is not None and client.info.rows is compact
    ids = await publisher.publish("py.rows", *({"n": i} for i in range(30)), subject="a.b")
    for compact, client in clients.items():
        messages = [await asyncio.wait_for(subs[compact].get(), 5) for _ in range(30)]
        got[compact] = [(m.id, m.body, m.props, m.subject, m.delivery) for m in messages]
        await client.__aexit__(None, None, None)
    assert [g[0] for g in got[True]] == ids
    assert got[True] == got[False]
