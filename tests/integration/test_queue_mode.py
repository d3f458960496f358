"""Move mode ("queue") over real sockets: competing consumers, leases, outcomes."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from wsq_harness import (
    Client,
    Gateway,
    Publisher,
    make_settings,
    running_gateway,
    transfers,
    work,
)

from wsq.broker.memory import MemoryBroker
from wsq.core.messages import Outcome


async def consumer(
    gateway: Gateway, sub: str, credit: int = 100, rcvbuf: int | None = None, **fields: Any
) -> Client:
    client = await gateway.client(sub=sub, rcvbuf=rcvbuf)
    await client.begin(1)
    answer = await client.subscribe(1, 0, "jobs", credit=credit, mode="move", **fields)
    assert answer["mode"] == "move"
    return client


def settle(first: int, outcome: str, last: int | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"op": "disposition", "ch": 1, "first": first, "outcome": outcome}
    if last is not None:
        frame["last"] = last
    return frame


async def test_competing_consumers_with_much_credit_get_turns_of_32(gateway: Gateway) -> None:
    # Credit is permission, not a claim on everything waiting: rounds of at most 32 per link.
    a = await consumer(gateway, "a", credit=1000)
    b = await consumer(gateway, "b", credit=1000)
    await Publisher(await gateway.client(sub="p")).publish("jobs", *range(80))
    got_a = await a.bodies_until_quiet()
    got_b = await b.bodies_until_quiet()
    assert sorted([len(got_a), len(got_b)]) == [32, 48]
    assert sorted(got_a + got_b) == list(range(80))


async def test_a_consumer_that_holds_its_credit_leaves_the_rest_to_the_other(
    gateway: Gateway,
) -> None:
    # Small credit, so that the second consumer is exercised: the first holds its two.
    holder = await consumer(gateway, "a", credit=2)
    worker = await consumer(gateway, "b", credit=2)
    await Publisher(await gateway.client(sub="p")).publish("jobs", *range(40))
    held = [t["body"] for t in await transfers(holder, 2)]
    worked = await work(worker, 38)
    assert sorted(held + worked) == list(range(40))
    await holder.nothing("transfer", wait=0.2)
    await worker.nothing("transfer", wait=0.1)


async def test_messages_published_before_the_first_consumer_wait_for_it(gateway: Gateway) -> None:
    await Publisher(await gateway.client(sub="p")).publish("jobs", "early")
    c = await consumer(gateway, "late")
    t = await c.expect("transfer")
    assert t["body"] == "early" and t["props"]["redelivered"] == 0


async def test_accepted_message_is_gone_for_good(gateway: Gateway) -> None:
    a = await consumer(gateway, "a")
    await Publisher(await gateway.client(sub="p")).publish("jobs", "x")
    t = await a.expect("transfer")
    await a.send(settle(t["delivery"], "accepted"))
    await a.close()
    b = await consumer(gateway, "b")
    await b.nothing("transfer", wait=0.5)


async def test_released_message_goes_at_once_to_another_consumer_uncounted(
    gateway: Gateway,
) -> None:
    # The releaser still has credit (4 of 5 left): the message must go to the other all the same.
    a = await consumer(gateway, "a", credit=5)
    await Publisher(await gateway.client(sub="p")).publish("jobs", "x")
    t = await a.expect("transfer")
    b = await consumer(gateway, "b")
    await a.send(settle(t["delivery"], "released"))
    again = await b.expect("transfer")
    assert again["body"] == "x" and again["props"]["redelivered"] == 0
    assert again["id"] == t["id"]
    await a.nothing("transfer", wait=0.2)


async def test_modified_message_is_redelivered_later_with_its_count(gateway: Gateway) -> None:
    a = await consumer(gateway, "a")
    await Publisher(await gateway.client(sub="p")).publish("jobs", "x")
    t = await a.expect("transfer")
    await a.send(settle(t["delivery"], "modified"))
    again = await a.expect("transfer", timeout=3)
    assert again["id"] == t["id"] and again["props"]["redelivered"] == 1


@pytest.mark.gateway(dead_letter="jobs.dead")
async def test_rejected_message_is_not_redelivered_and_goes_to_the_dead_letter_address(
    gateway: Gateway,
) -> None:
    dead = await gateway.subscriber("jobs.dead", sub="d")
    a = await consumer(gateway, "a")
    await Publisher(await gateway.client(sub="p")).publish("jobs", "poison")
    t = await a.expect("transfer")
    await a.send(settle(t["delivery"], "rejected"))
    letter = await dead.expect("transfer")
    assert letter["body"] == "poison"
    await a.nothing("transfer", wait=0.5)


async def test_unsettled_past_its_lease_goes_to_another_consumer(gateway: Gateway) -> None:
    a = await consumer(gateway, "a", lease=300)
    await Publisher(await gateway.client(sub="p")).publish("jobs", "slow")
    t = await a.expect("transfer")
    b = await consumer(gateway, "b", lease=300)
    again = await b.expect("transfer", timeout=3)
    assert again["id"] == t["id"] and again["props"]["redelivered"] == 1


async def test_unsettled_deliveries_go_to_another_consumer_when_the_link_ends(
    gateway: Gateway,
) -> None:
    a = await consumer(gateway, "a")
    await Publisher(await gateway.client(sub="p")).publish("jobs", 1, 2, 3)
    await transfers(a, 3)
    b = await consumer(gateway, "b")
    await b.nothing("transfer", wait=0.2)
    await a.send({"op": "detach", "ch": 1, "handle": 0})
    assert sorted(t["body"] for t in await transfers(b, 3)) == [1, 2, 3]


async def test_unsettled_deliveries_go_to_another_consumer_when_the_socket_drops(
    gateway: Gateway,
) -> None:
    a = await consumer(gateway, "a")
    await Publisher(await gateway.client(sub="p")).publish("jobs", 1, 2)
    await transfers(a, 2)
    b = await consumer(gateway, "b")
    a.ws.transport.abort()  # no close frame: the TCP connection just dies
    assert sorted(t["body"] for t in await transfers(b, 2)) == [1, 2]


async def test_a_disposition_range_settles_many_at_once(gateway: Gateway) -> None:
    a = await consumer(gateway, "a", credit=10)
    await Publisher(await gateway.client(sub="p")).publish("jobs", *range(5))
    got = await transfers(a, 5)
    await a.send(settle(got[0]["delivery"], "accepted", last=got[-1]["delivery"]))
    # The gateway takes a socket's frames in order and awaits each settle: once the begin after
    # it is answered, the broker has them.
    await a.begin(2)
    await a.close()
    b = await consumer(gateway, "b")
    await b.nothing("transfer", wait=0.4)


async def test_groups_are_independent_queues(gateway: Gateway) -> None:
    a = await consumer(gateway, "a", group="billing")
    b = await consumer(gateway, "b", group="shipping")
    await Publisher(await gateway.client(sub="p")).publish("jobs", "order")
    assert (await a.expect("transfer"))["body"] == "order"
    assert (await b.expect("transfer"))["body"] == "order"


async def test_move_consumer_credit_bounds_what_it_holds(gateway: Gateway) -> None:
    a = await consumer(gateway, "a", credit=2)
    await Publisher(await gateway.client(sub="p")).publish("jobs", *range(5))
    got = await transfers(a, 2)
    await a.nothing("transfer")
    await a.send(settle(got[0]["delivery"], "accepted", last=got[1]["delivery"]))
    await a.send({"op": "flow", "ch": 1, "handle": 0, "credit": 3})
    assert [t["body"] for t in await transfers(a, 3)] == [2, 3, 4]


@pytest.mark.gateway(server={"outbox_max_bytes": 64 * 1024})
async def test_a_queue_consumer_that_does_not_read_pauses_instead_of_being_closed(
    gateway: Gateway,
) -> None:
    # A backlog of 16 MB. (Kernel and client-library buffers absorb much of it; the exact
    # outbox bound is tested without sockets in tests/unit/test_hub.py.)
    pad = "x" * 40_000
    n = 400
    pub = Publisher(await gateway.client(sub="p"))
    for start in range(0, n, 20):
        await pub.publish("jobs", *[{"n": i, "pad": pad} for i in range(start, start + 20)])
    a = await consumer(gateway, "a", credit=1000, rcvbuf=32 * 1024)
    # From here the consumer reads nothing for a while.
    await asyncio.sleep(0.5)
    # While it does not read, the client still talks: the gateway must not find it over its cap.
    await a.send_raw("[]")
    await asyncio.sleep(0.2)
    got = []
    while len(got) < n:
        t = await a.expect("transfer", timeout=10)
        got.append(t["body"]["n"])
        await a.send(settle(t["delivery"], "accepted"))
    assert sorted(got) == list(range(n))
    await a.begin(2)  # never closed for being slow


class SlowSettle(MemoryBroker):
    """settle takes a network round trip, as with Redis; says when one starts and what each
    settled."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.settling = asyncio.Event()
        self.settled: list[tuple[str, list[str], Outcome]] = []

    async def settle(
        self,
        tenant: str,
        address: str,
        group: str,
        consumer: str,
        ids: Sequence[str],
        outcome: Outcome,
    ) -> None:
        self.settling.set()
        await asyncio.sleep(0.05)
        await super().settle(tenant, address, group, consumer, ids, outcome)
        self.settled.append((address, list(ids), outcome))


async def test_settlements_that_arrive_just_before_a_drain_are_not_lost() -> None:
    settings = make_settings()
    broker = SlowSettle(settings.storage_policies())
    async with running_gateway(settings, broker) as gw:
        client = await gw.client(sub="worker")
        await client.begin(1)
        for handle, address in enumerate(("jobs1", "jobs2")):
            await client.subscribe(1, handle, address, mode="move", lease=300)
        pub = Publisher(await gw.client(sub="p"))
        [a] = await pub.publish("jobs1", "a")
        [b] = await pub.publish("jobs2", "b")
        got = await transfers(client, 2)
        first, last = sorted(t["delivery"] for t in got)
        await client.send(settle(first, "accepted", last=last))
        await broker.settling.wait()  # the first of the two settles is on its way to the broker
        await gw.server.config.app.state.drain.begin(backstop=False)  # type: ignore[attr-defined]
        # Both settled as accepted by the time the drain is over, none left to a lease.
        assert sorted(broker.settled) == [
            ("jobs1", [a], Outcome.ACCEPTED),
            ("jobs2", [b], Outcome.ACCEPTED),
        ]
        for address in ("jobs1", "jobs2"):
            assert await broker.claim("acme", address, "default", "x", 10, 1000) == []
