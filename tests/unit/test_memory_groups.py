"""The memory broker's queue groups to the millisecond (issue 14: mutants of
``wsq/broker/memory/groups.py`` that the conformance suite's queue model lets live, since it
checks outcomes and not timings): the hand-off wait of a released message, a redelivery delay
of one millisecond, watchers told when a wait ends or a release makes work, due deadlines
served past stale and dead ones, and the bounds on standing consumers and on the timer heap."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from types import MappingProxyType
from typing import Any

import pytest
from test_memory_broker import FakeClock, new, tenant

from wsq.broker.memory import MemoryBroker
from wsq.config import Settings
from wsq.core.limits import HANDOFF_MS, MAX_WANTING
from wsq.core.messages import Outcome

A = "jobs"
SETTINGS = Settings(
    tenants=MappingProxyType(
        {
            "t": tenant("t", redelivery_delay_ms=1000, max_deliveries=2),
            "quick": tenant("quick", redelivery_delay_ms=1),
        }
    )
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def broker(clock: FakeClock) -> AsyncIterator[MemoryBroker]:
    b = MemoryBroker(SETTINGS.storage_policies(), clock=clock)
    await b.start()
    yield b
    await b.close()


def numbers(deliveries: list[Any]) -> list[int]:
    return [json.loads(d.message.body) for d in deliveries]


async def claim(broker: MemoryBroker, consumer: str, n: int, tenant_: str = "t") -> list[int]:
    """A consumer with room for ``n`` claims ``n``: it wants more while it got fewer."""
    return numbers(await broker.claim(tenant_, A, "g", consumer, n, 60_000, room=n))


class Woken:
    def __init__(self, broker: MemoryBroker, tenant_: str = "t") -> None:
        self.times = 0
        broker.watch_group(tenant_, A, "g", self.wake)

    def wake(self) -> None:
        self.times += 1

    async def count(self) -> int:
        await asyncio.sleep(0)  # watchers are told on the next turn of the loop
        times, self.times = self.times, 0
        return times


async def test_a_released_message_waits_the_hand_off_for_another_consumer(
    broker: MemoryBroker, clock: FakeClock
) -> None:
    await broker.publish("t", A, [new(0)])
    [d] = await broker.claim("t", A, "g", "c1", 1, 60_000, room=1)  # c1 got all it wanted
    assert await claim(broker, "c2", 5) == []  # c2 wants work: the only one wanting
    woken = Woken(broker)
    await broker.settle("t", A, "g", "c1", [d.message.id], Outcome.RELEASED)
    assert await woken.count() == 1  # a release makes work for the group
    clock.advance(HANDOFF_MS - 1)
    assert await claim(broker, "c1", 1) == []  # left to c2 for the hand-off
    assert await woken.count() == 0
    clock.advance(1)
    assert await claim(broker, "c3", 0) == []  # any look at the group ends the wait...
    assert await woken.count() == 1  # ...and says so
    assert await claim(broker, "c1", 1) == [0]


async def test_a_modified_message_waits_its_delay_then_the_hand_off(
    broker: MemoryBroker, clock: FakeClock
) -> None:
    await broker.publish("t", A, [new(0)])
    [d] = await broker.claim("t", A, "g", "c1", 1, 60_000, room=1)
    assert await claim(broker, "c2", 5) == []
    await broker.settle("t", A, "g", "c1", [d.message.id], Outcome.MODIFIED)
    clock.advance(1000)  # the redelivery delay: claimable again, c1 waits the hand-off
    assert await claim(broker, "c1", 1) == []
    clock.advance(HANDOFF_MS)
    assert await claim(broker, "c1", 1) == [0]


async def test_a_redelivery_delay_of_one_millisecond_is_a_delay(
    broker: MemoryBroker, clock: FakeClock
) -> None:
    await broker.publish("quick", A, [new(0)])
    [d] = await broker.claim("quick", A, "g", "c1", 1, 60_000)
    await broker.settle("quick", A, "g", "c1", [d.message.id], Outcome.MODIFIED)
    assert await claim(broker, "c2", 1, "quick") == []
    clock.advance(1)
    assert await claim(broker, "c2", 1, "quick") == [0]


async def test_due_leases_are_served_past_a_renewed_one(
    broker: MemoryBroker, clock: FakeClock
) -> None:
    await broker.publish("t", A, [new(0), new(1), new(2)])
    await broker.claim("t", A, "g", "c1", 1, 900)
    one, _ = await broker.claim("t", A, "g", "c1", 2, 1000)
    clock.advance(500)
    # 1's lease renewed: its first deadline is stale, between 0's and 2's in the heap.
    assert await broker.renew("t", A, "g", "c1", [one.message.id], 1000) == [one.message.id]
    clock.advance(500)
    assert await claim(broker, "c2", 5) == [0, 2]


async def test_due_leases_are_served_past_one_that_went_to_the_dead_letters(
    broker: MemoryBroker, clock: FakeClock
) -> None:
    await broker.publish("t", A, [new(0)])
    await broker.claim("t", A, "g", "c1", 1, 1000)
    clock.advance(1000)  # 0's first delivery failed: one more and it is dead (limit 2)
    await broker.publish("t", A, [new(1)])
    again = await broker.claim("t", A, "g", "c1", 2, 1000)
    assert sorted(numbers(again)) == [0, 1]  # both leased until +1000
    clock.advance(1000)
    assert await claim(broker, "c2", 5) == [1]


async def test_a_settled_message_leaves_nothing_in_its_group(broker: MemoryBroker) -> None:
    await broker.publish("t", A, [new(0), new(1)])
    got = await broker.claim("t", A, "g", "c1", 2, 60_000)
    await broker.settle("t", A, "g", "c1", [d.message.id for d in got], Outcome.ACCEPTED)
    assert broker._logs[("t", A)].groups["g"].entries == {}


def test_standing_consumers_are_bounded() -> None:
    from wsq.broker.memory.groups import Group

    g = Group()
    for n in range(MAX_WANTING + 10):
        g.record_want(f"c{n}", True)
        assert len(g.wanting) <= MAX_WANTING
    g.record_want("c0", True)
    assert "c0" in g.wanting


async def test_settled_leases_leave_a_bounded_timer_heap_and_the_rest_still_run_out(
    broker: MemoryBroker, clock: FakeClock
) -> None:
    # 40 leases that run out first (their deadlines on top of the heap), then many messages
    # claimed for longer and settled at once: their deadlines go stale under the 40.
    await broker.publish("t", A, [new(i) for i in range(40)])
    assert len(await broker.claim("t", A, "g", "c1", 40, 1000)) == 40
    g = broker._logs[("t", A)].groups["g"]
    for i in range(40, 200):
        await broker.publish("t", A, [new(i)])
        [d] = await broker.claim("t", A, "g", "c1", 1, 60_000)
        await broker.settle("t", A, "g", "c1", [d.message.id], Outcome.ACCEPTED)
        # Stale deadlines are dropped once they are most of the heap (and past 64), at a claim.
        assert len(g.timers) <= 2 * (40 + 1), i  # counted with the one claimed
    assert g.next_deadline() == int(clock.now * 1000) + 1000
    clock.advance(1000)
    assert len(await claim(broker, "c2", 50)) == 40
