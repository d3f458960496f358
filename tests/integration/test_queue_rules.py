"""The queue (move) rules of contract section 5 over real sockets, with the consumers on two
gateways sharing one broker: the memory broker (two apps over one broker object in this
process), one Redis, and a Redis Cluster of three masters.

Each test places consumers as a queue user would and checks what a user notices: who gets the
work, what ``redelivered`` says, what lands in the dead-letter address.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from wsq_harness import (
    Client,
    Gateway,
    Publisher,
    RedisCluster,
    make_settings,
    running_gateway,
)

from wsq.broker.memory import MemoryBroker
from wsq.core.limits import HANDOFF_MS

Pair = Callable[..., contextlib.AbstractAsyncContextManager[tuple[Gateway, Gateway]]]


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    with RedisCluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


@pytest.fixture(params=["memory", "redis", "cluster"])
def two_gateways(request: pytest.FixtureRequest) -> Pair:
    """``two_gateways(**tenant)``: two gateways on one broker of the kind under test."""

    @contextlib.asynccontextmanager
    async def pair(**tenant: Any) -> AsyncIterator[tuple[Gateway, Gateway]]:
        if request.param == "memory":
            settings = make_settings(**tenant)
            shared = MemoryBroker(settings.storage_policies())
            async with (
                running_gateway(settings, shared) as a,
                running_gateway(settings, shared) as b,
            ):
                yield a, b
            return
        server = "redis_server" if request.param == "redis" else "redis_cluster"
        settings = make_settings(broker_url=request.getfixturevalue(server).url, **tenant)
        async with running_gateway(settings) as a, running_gateway(settings) as b:
            yield a, b

    return pair


@pytest.fixture
def q() -> str:
    """The queue's address: fresh per test (the Redis servers outlive a test)."""
    return f"jobs-{uuid.uuid4().hex[:8]}"


async def consumer(gateway: Gateway, sub: str, q: str, credit: int = 1000, **fields: Any) -> Client:
    client = await gateway.client(sub=sub)
    await client.begin(1)
    await client.subscribe(1, 0, q, credit=credit, mode="move", **fields)
    return client


def disposition(delivery: int, outcome: str) -> dict[str, Any]:
    return {"op": "disposition", "ch": 1, "first": delivery, "outcome": outcome}


async def publish(gateway: Gateway, address: str, *bodies: Any, **props: Any) -> None:
    await Publisher(await gateway.client(sub="p")).publish(address, *bodies, **props)


async def test_two_consumers_with_much_credit_on_two_gateways_share_the_work(
    two_gateways: Pair,
    q: str,
) -> None:
    async with two_gateways() as (g1, g2):
        a = await consumer(g1, "a", q)
        b = await consumer(g2, "b", q)
        await publish(g1, q, *range(200))
        got_a = await a.bodies_until_quiet()
        got_b = await b.bodies_until_quiet()
        assert sorted(got_a + got_b) == list(range(200))
        # Rounds of at most 32 per link: neither is handed the backlog while the other waits.
        assert min(len(got_a), len(got_b)) >= 50, (len(got_a), len(got_b))


async def test_a_released_job_goes_to_the_other_consumer(two_gateways: Pair, q: str) -> None:
    async with two_gateways() as (g1, g2):
        a = await consumer(g1, "a", q)
        await publish(g1, q, "job")
        t = await a.expect("transfer")
        b = await consumer(g2, "b", q)
        await b.nothing("transfer", wait=0.2)  # b has asked for work and got none
        await a.send(disposition(t["delivery"], "released"))
        # Well within the hand-over wait: b gets it because it is b's, not because a gave up.
        again = await b.expect("transfer", timeout=HANDOFF_MS / 1000 * 0.8)
        assert (again["id"], again["props"]["redelivered"]) == (t["id"], 0)
        await a.nothing("transfer", wait=0.3)


async def test_the_jobs_of_a_vanished_consumer_reach_the_other_counted(
    two_gateways: Pair,
    q: str,
) -> None:
    async with two_gateways() as (g1, g2):
        a = await consumer(g1, "a", q, credit=5)
        await publish(g1, q, *range(5))
        held = [await a.expect("transfer") for _ in range(5)]
        b = await consumer(g2, "b", q)
        await b.nothing("transfer", wait=0.2)
        a.ws.transport.abort()  # gone without a word
        again = [await b.expect("transfer") for _ in range(5)]
        assert sorted(t["id"] for t in again) == sorted(t["id"] for t in held)
        assert all(t["props"]["redelivered"] >= 1 for t in again), again
        await b.nothing("transfer", wait=0.3)  # exactly those: none twice


async def test_an_expired_lease_goes_to_the_idle_consumer_of_the_other_gateway(
    two_gateways: Pair,
    q: str,
) -> None:
    async with two_gateways() as (g1, g2):
        stuck = await consumer(g2, "stuck", q, lease=500)
        await publish(g1, q, "job")
        t = await stuck.expect("transfer")
        idle = await consumer(g1, "idle", q)
        # The stuck consumer still has credit, and never settles.
        again = await idle.expect("transfer", timeout=3)
        assert (again["id"], again["props"]["redelivered"]) == (t["id"], 1)
        await stuck.nothing("transfer", wait=0.3)


async def dead_letters(gateway: Gateway, address: str, n: int) -> list[dict[str, Any]]:
    reader = await gateway.subscriber(address, sub="ops", **{"from": "^"})
    letters = [await reader.expect("transfer") for _ in range(n)]
    await reader.nothing("transfer", wait=0.3)
    return letters


async def test_a_job_past_max_deliveries_lands_in_the_dead_letter_address(
    two_gateways: Pair,
    q: str,
) -> None:
    async with two_gateways(dead_letter=f"{q}.dead", max_deliveries=2) as (g1, g2):
        await publish(g1, q, "poison", message_id="job-1")
        a = await consumer(g1, "a", q)
        t = await a.expect("transfer")
        await a.send(disposition(t["delivery"], "modified"))
        t2 = await a.expect("transfer", timeout=3)
        assert t2["props"]["redelivered"] == 1
        await a.send(disposition(t2["delivery"], "modified"))
        [letter] = await dead_letters(g2, f"{q}.dead", 1)
        assert letter["body"] == "poison"
        assert letter["props"]["message_id"] == "job-1"
        headers = letter["props"]["headers"]
        assert headers == {
            "dead_letter_from": q,
            "dead_letter_id": t["id"],
            "dead_letter_reason": "delivery-limit",
        }
        await a.nothing("transfer", wait=0.3)


async def test_dead_letters_with_one_message_id_all_land(two_gateways: Pair, q: str) -> None:
    async with two_gateways(dead_letter=f"{q}.dead") as (g1, g2):
        p = Publisher(await g1.client(sub="p"))
        await p.publish(q, "order", message_id="order-17")
        await p.publish(f"{q}.eu", "order", message_id="order-17")
        await p.publish(q, "no id")
        for address, n in ((q, 2), (f"{q}.eu", 1)):
            c = await g2.client(sub="c")
            await c.begin(1)
            await c.subscribe(1, 0, address, mode="move")
            for _ in range(n):
                t = await c.expect("transfer")
                await c.send(disposition(t["delivery"], "rejected"))
        letters = await dead_letters(g1, f"{q}.dead", 3)
        assert sorted(t["body"] for t in letters) == ["no id", "order", "order"]
        assert sorted(t["props"]["headers"]["dead_letter_from"] for t in letters) == [
            q,
            q,
            f"{q}.eu",
        ]
        assert {t["props"]["headers"]["dead_letter_reason"] for t in letters} == {"rejected"}


async def test_http_claims_and_websocket_consumers_count_alike(two_gateways: Pair, q: str) -> None:
    async with two_gateways() as (g1, g2):
        await publish(g1, q, "job")
        auth = {"Authorization": f"Bearer {g2.token('php')}"}
        async with httpx.AsyncClient(base_url=g2.http, headers=auth) as http:
            r = await http.post(f"/v1/addresses/{q}/claims", json={"limit": 5, "lease": 300})
            assert r.status_code == 201
            [m] = r.json()["messages"]
            assert m["props"]["redelivered"] == 0
            ws = await consumer(g1, "ws", q)
            # The claim is never settled: its lease runs out, and the job goes to the consumer.
            t = await ws.expect("transfer", timeout=3)
            assert (t["id"], t["props"]["redelivered"]) == (m["id"], 1)
            await ws.send(disposition(t["delivery"], "modified"))
            await ws.close()
            for _ in range(100):  # the test tenant's redelivery delay is 100 ms
                r = await http.post(f"/v1/addresses/{q}/claims", json={"limit": 5})
                if r.status_code == 201:
                    break
                await asyncio.sleep(0.05)
            [again] = r.json()["messages"]
            assert (again["id"], again["props"]["redelivered"]) == (m["id"], 2)
