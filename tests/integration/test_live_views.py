"""Contract section 5, live views over real sockets on memory and Redis: ``rewind`` (start with
the last N retained, then live with no gap and no duplicate) and ``conflate`` (the latest per
subject, at most one per subject per M ms)."""

from __future__ import annotations

import asyncio
from typing import Any

from wsq_harness import Client, Gateway, Publisher, StartGateway, transfers

from wsq.core.positions import parse_position


async def _bodies(client: Client, n: int) -> list[Any]:
    return [t["body"] for t in await transfers(client, n)]


async def test_rewind_3_of_10_gives_8_9_10_then_live_with_no_gap(
    gateway_on_each_broker: Gateway,
) -> None:
    gw = gateway_on_each_broker
    publisher = Publisher(await gw.client(sub="pub"))
    ids = await publisher.publish("tick.a", *range(1, 11))
    client = await gw.client()
    await client.begin(1)
    attach = await client.subscribe(1, 0, "tick.a", rewind=3)
    assert attach["recovered"] is True
    assert parse_position(ids[6]) <= parse_position(attach["from"]) < parse_position(ids[7])
    got = await transfers(client, 3)
    assert [t["body"] for t in got] == [8, 9, 10]
    assert [t["id"] for t in got] == ids[7:]
    assert [t["delivery"] for t in got] == [0, 1, 2]
    await publisher.publish("tick.a", *range(11, 16))
    assert await _bodies(client, 5) == [11, 12, 13, 14, 15]
    await client.nothing("transfer", wait=0.2)
    await client.close()


async def test_rewind_while_publishes_go_on_has_no_gap_and_no_duplicate(
    gateway_on_each_broker: Gateway,
) -> None:
    gw = gateway_on_each_broker
    publisher = Publisher(await gw.client(sub="pub"))
    await publisher.publish("flow.x", *range(20))
    stop = asyncio.Event()

    async def stream() -> None:
        n = 20
        while not stop.is_set():
            await publisher.publish("flow.x", n)
            n += 1

    task = asyncio.create_task(stream())
    try:
        client = await gw.subscriber("flow.x", rewind=5, credit=10_000)
        got = await _bodies(client, 60)
    finally:
        stop.set()
        await task
    # Consecutive from wherever the rewind began: nothing skipped, nothing twice.
    assert got == list(range(got[0], got[0] + 60))
    assert got[0] >= 15
    await client.close()


async def test_rewind_of_more_than_is_retained_gives_all_then_live(
    gateway_on_each_broker: Gateway,
) -> None:
    gw = gateway_on_each_broker
    publisher = Publisher(await gw.client(sub="pub"))
    await publisher.publish("tick.b", 1, 2)
    client = await gw.subscriber("tick.b", rewind=1000)
    assert await _bodies(client, 2) == [1, 2]
    await publisher.publish("tick.b", 3)
    assert await _bodies(client, 1) == [3]
    empty = await gw.subscriber("tick.none", rewind=5)
    await empty.nothing("transfer", wait=0.1)
    await client.close()
    await empty.close()


async def test_rewind_with_a_filter_counts_only_matching_messages(
    gateway_on_each_broker: Gateway,
) -> None:
    gw = gateway_on_each_broker
    publisher = Publisher(await gw.client(sub="pub"))
    for i in range(1, 7):
        await publisher.publish("mix", {"eu": i}, subject="m.eu")
        await publisher.publish("mix", {"us": i}, subject="m.us")
    client = await gw.subscriber("mix", rewind=2, filter={"subject": "m.eu"})
    assert await _bodies(client, 2) == [{"eu": 5}, {"eu": 6}]
    await client.nothing("transfer", wait=0.1)
    await client.close()


async def test_rewind_with_conflate_gives_the_last_of_each_subject(
    gateway_on_each_broker: Gateway,
) -> None:
    gw = gateway_on_each_broker
    publisher = Publisher(await gw.client(sub="pub"))
    for i in range(1, 5):
        for s in ("cpu", "mem", "disk"):
            await publisher.publish("host.1", {s: i}, subject=f"host.1.{s}")
    await publisher.publish("host.1", {"net": 1}, subject="host.1.net")
    # The last 3 subjects updated: disk, cpu... newest first: net, disk, mem.
    client = await gw.subscriber("host.1", rewind=3, conflate={"ms": 50, "by": "subject"})
    assert await _bodies(client, 3) == [{"mem": 4}, {"disk": 4}, {"net": 1}]
    await client.nothing("transfer", wait=0.2)
    # Live: a quiet subject's first message goes at once.
    await publisher.publish("host.1", {"cpu": 5}, subject="host.1.cpu")
    assert await _bodies(client, 1) == [{"cpu": 5}]
    await client.close()


async def test_a_burst_of_1000_on_one_subject_arrives_as_a_handful_ending_with_the_last(
    start_gateway: StartGateway,
) -> None:
    async with start_gateway() as gw:
        publisher = Publisher(await gw.client(sub="pub"))
        await publisher.publish("px", 0, subject="px.eur")  # the topic's reader is running
        client = await gw.subscriber("px", credit=1000, conflate={"ms": 100, "by": "subject"})
        for first in range(1, 1001, 100):
            await publisher.publish("px", *range(first, first + 100), subject="px.eur")
        got: list[Any] = []
        while not got or got[-1] != 1000:
            got.append((await client.expect("transfer", timeout=5))["body"])
        await client.nothing("transfer", wait=0.3)
        # At most one per 100 ms: the publishes take well under a few seconds here; what
        # matters is that it is a handful, not 1000, and that the last one is the last.
        assert got[-1] == 1000
        assert got == sorted(got)
        assert 1 <= len(got) <= 30, got
        print(f"1000 publishes on one subject, conflate 100 ms: {len(got)} transfers: {got}")
        await client.close()


async def test_a_conflating_link_resuming_from_the_oldest_gets_no_backlog(
    gateway_on_each_broker: Gateway,
) -> None:
    gw = gateway_on_each_broker
    publisher = Publisher(await gw.client(sub="pub"))
    for i in range(50):
        await publisher.publish("old", {"a": i}, subject="old.a")
        await publisher.publish("old", {"b": i}, subject="old.b")
    client = await gw.subscriber("old", conflate={"ms": 1000}, **{"from": "^"})
    assert await _bodies(client, 2) == [{"a": 49}, {"b": 49}]
    await client.nothing("transfer", wait=0.2)
    await client.close()


async def test_conflation_respects_credit_and_sends_the_latest_when_credit_comes(
    gateway_on_each_broker: Gateway,
) -> None:
    gw = gateway_on_each_broker
    publisher = Publisher(await gw.client(sub="pub"))
    client = await gw.subscriber("fx", credit=1, conflate={"ms": 10, "by": "subject"})
    await publisher.publish("fx", 1, subject="fx.a")
    assert await _bodies(client, 1) == [1]
    await publisher.publish("fx", *range(2, 50), subject="fx.a")
    await publisher.publish("fx", "b", subject="fx.b")
    await client.nothing("transfer", wait=0.2)  # no credit: nothing, however long
    await client.send({"op": "flow", "ch": 1, "handle": 0, "credit": 5})
    assert await _bodies(client, 2) == [49, "b"]
    await client.nothing("transfer", wait=0.2)
    await client.close()


async def test_bad_rewind_and_conflate_are_refused_at_link_scope(gateway: Gateway) -> None:
    client = await gateway.client()
    await client.begin(1)
    bad: list[dict[str, Any]] = [
        {"rewind": 0},
        {"rewind": 1001},
        {"rewind": "3"},
        {"rewind": 3, "from": "^"},
        {"conflate": {"ms": 9}},
        {"conflate": {"ms": 100, "by": "body"}},
        {"conflate": 100},
        {"mode": "move", "rewind": 1},
        {"mode": "move", "conflate": {"ms": 100}},
    ]
    for handle, fields in enumerate(bad):
        await client.send(
            {"op": "attach", "ch": 1, "handle": handle, "role": "receiver", "address": "a"} | fields
        )
        detach = await client.expect("detach", ch=1, handle=handle)
        assert detach["error"]["condition"] == "wsq:invalid-frame", (fields, detach)
    await client.subscribe(1, 100, "a", rewind=1, conflate={"ms": 10})  # the session goes on
    await client.close()
