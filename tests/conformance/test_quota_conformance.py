"""Quotas in every broker (docs/security.md, "Per-tenant quotas"): the per-address bounds on
dedup ids, Idempotency-Keys and consumer groups, and the tenant-wide counts (``QuotaStore``)
that ``wsq.quotas`` keeps, shared by the processes of a Redis broker; a process that dies gives
its share back when its lease runs out.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from types import MappingProxyType

import pytest
from wsq_harness import started

from wsq.broker.base import Broker
from wsq.broker.redis import RedisBroker
from wsq.config import Settings, TenantConfig
from wsq.core.errors import CONNECTIONS, LINKS
from wsq.core.messages import NewMessage, Outcome

T = "bounded"
MAX_DEDUP_IDS = 5
MAX_IDEMPOTENCY_KEYS = 3
MAX_GROUPS = 2


@pytest.fixture
def broker_settings() -> Settings:
    bounded = TenantConfig(
        name=T,
        issuer=T,
        keys=(),
        max_dedup_ids=MAX_DEDUP_IDS,
        max_idempotency_keys=MAX_IDEMPOTENCY_KEYS,
        max_groups=MAX_GROUPS,
    )
    return Settings(tenants=MappingProxyType({T: bounded}))


def new(body: object, message_id: str | None = None) -> NewMessage:
    return NewMessage(body=json.dumps(body), publisher="alice", message_id=message_id)


def fresh_tenant() -> str:
    """A tenant no other test counts for (the test Redis is shared by the session)."""
    return f"q{uuid.uuid4().hex[:12]}"


# -- per address -------------------------------------------------------------------------------


async def test_dedup_ids_past_the_bound_forget_the_oldest(broker: Broker, address: str) -> None:
    for i in range(MAX_DEDUP_IDS + 3):
        await broker.publish(T, address, [new(i, f"m{i}")])
    # The newest MAX_DEDUP_IDS are remembered; the 3 oldest were forgotten and store again.
    [newest] = await broker.publish(T, address, [new("again", f"m{MAX_DEDUP_IDS + 2}")])
    assert newest.duplicate
    [oldest] = await broker.publish(T, address, [new("again", "m0")])
    assert not oldest.duplicate
    # One batch past the bound keeps the bound too.
    batch = [new(i, f"b{i}") for i in range(2 * MAX_DEDUP_IDS)]
    await broker.publish(T, address, batch)
    again = await broker.publish(T, address, batch)
    assert [r.duplicate for r in again] == [False] * MAX_DEDUP_IDS + [True] * MAX_DEDUP_IDS


async def test_idempotency_keys_past_the_bound_forget_the_oldest(
    broker: Broker, address: str
) -> None:
    first = [
        await broker.publish_once(T, address, [new(i)], f"k{i}", "fp")
        for i in range(MAX_IDEMPOTENCY_KEYS + 2)
    ]
    newest = await broker.publish_once(T, address, [new(0)], f"k{MAX_IDEMPOTENCY_KEYS + 1}", "fp")
    assert newest.replayed and newest.results == first[-1].results
    oldest = await broker.publish_once(T, address, [new(0)], "k0", "fp")
    assert not oldest.replayed and oldest.results != first[0].results


async def test_a_group_past_max_groups_is_refused(broker: Broker, address: str) -> None:
    await broker.publish(T, address, [new(1)])
    assert await broker.open_group(T, address, "g1")
    assert await broker.open_group(T, address, "g2")
    assert not await broker.open_group(T, address, "g3")
    assert await broker.open_group(T, address, "g1")  # it exists: not one more
    # A group opened is a group claims use, from the oldest retained message.
    [d] = await broker.claim(T, address, "g1", "c", 10, 30_000)
    assert json.loads(d.message.body) == 1


async def test_max_groups_is_counted_per_address(broker: Broker, address: str) -> None:
    other = f"{address}.other"
    await broker.publish(T, address, [new("here")])
    await broker.publish(T, other, [new("there")])
    for group in ("g1", "g2"):
        assert await broker.open_group(T, address, group)
    # Another address of the same tenant has its own MAX_GROUPS, and its own groups' claims.
    for group in ("g1", "g2"):
        assert await broker.open_group(T, other, group)
    assert not await broker.open_group(T, other, "g3")
    [d] = await broker.claim(T, other, "g1", "c", 10, 30_000)
    assert json.loads(d.message.body) == "there"


async def test_settling_a_group_that_does_not_exist_creates_nothing(
    broker: Broker, address: str
) -> None:
    for group in ("x1", "x2", "x3"):
        await broker.settle(T, address, group, "c", ["1-0"], Outcome.ACCEPTED)
        await broker.leave(T, address, group, "c", ["1-0"])
        assert await broker.renew(T, address, group, "c", ["1-0"], 1000) == []
    assert await broker.open_group(T, address, "g1")
    assert await broker.open_group(T, address, "g2")


# -- tenant-wide counts ------------------------------------------------------------------------


async def test_counts_are_granted_up_to_the_limit_and_given_back(broker: Broker) -> None:
    tenant = fresh_tenant()
    store = broker.quota_store
    assert [await store.acquire(tenant, LINKS, 3) for _ in range(4)] == [True] * 3 + [False]
    assert await store.acquire(tenant, CONNECTIONS, 1)  # each kind counts on its own
    store.release(tenant, LINKS)
    assert await store.acquire(tenant, LINKS, 3)
    assert not await store.acquire(tenant, LINKS, 3)
    store.release(tenant, LINKS, 3)
    assert [await store.acquire(tenant, LINKS, 3) for _ in range(4)] == [True] * 3 + [False]


async def test_addresses_are_live_until_they_idle_out(broker: Broker) -> None:
    tenant = fresh_tenant()
    store = broker.quota_store
    assert await store.admit(tenant, "a", 2, 600) == 0
    assert await store.admit(tenant, "b", 2, 600) == 0
    wait = await store.admit(tenant, "c", 2, 600)
    assert 0 < wait <= 600
    await asyncio.sleep(0.3)
    assert await store.admit(tenant, "a", 2, 600) == 0  # live already: again, not one more
    await asyncio.sleep(0.35)  # "b" idled out, "a" has not
    assert await store.admit(tenant, "c", 2, 600) == 0
    assert await store.admit(tenant, "d", 2, 600) > 0


async def test_counts_are_shared_by_the_processes_of_a_broker(
    broker_kind: str,
    make_broker: Callable[[Settings], Awaitable[Broker]],
    broker_settings: Settings,
) -> None:
    if broker_kind == "memory":
        pytest.skip("the memory broker is one process's memory")
    one = (await make_broker(broker_settings)).quota_store
    two = (await make_broker(broker_settings)).quota_store
    tenant = fresh_tenant()
    assert await one.acquire(tenant, LINKS, 3)
    assert await two.acquire(tenant, LINKS, 3)
    assert await one.acquire(tenant, LINKS, 3)
    assert not await two.acquire(tenant, LINKS, 3)
    one.release(tenant, LINKS, 2)  # sent without waiting
    deadline = time.monotonic() + 5
    while not await two.acquire(tenant, LINKS, 3):
        assert time.monotonic() < deadline, "the release never reached the other process"
        await asyncio.sleep(0.02)
    assert await two.admit(tenant, "a", 1, 60_000) == 0
    assert await one.admit(tenant, "b", 1, 60_000) > 0


async def test_the_share_of_a_process_that_died_is_released_after_its_lease(
    broker_kind: str, broker_settings: Settings, request: pytest.FixtureRequest
) -> None:
    if broker_kind == "memory":
        pytest.skip("the memory broker dies with its process")
    # The URL of the session's Redis or Redis Cluster (conftest's fixtures).
    url = request.getfixturevalue("redis_server" if broker_kind == "redis" else "redis_cluster")
    tenant = fresh_tenant()
    policies = broker_settings.storage_policies()
    async with started(RedisBroker(url, policies, quota_lease_ms=1000)) as live:
        async with started(RedisBroker(url, policies, quota_lease_ms=1000)) as dying:
            assert await dying.quota_store.acquire(tenant, CONNECTIONS, 2)
            assert await dying.quota_store.acquire(tenant, CONNECTIONS, 2)
            assert not await live.quota_store.acquire(tenant, CONNECTIONS, 2)
            # Alive, it keeps its share past the lease by refreshing it.
            await asyncio.sleep(1.5)
            assert not await live.quota_store.acquire(tenant, CONNECTIONS, 2)
        # Closed without giving back (as a process that is killed): counted for the lease.
        assert not await live.quota_store.acquire(tenant, CONNECTIONS, 2)
        await asyncio.sleep(1.1)
        assert await live.quota_store.acquire(tenant, CONNECTIONS, 2)
        assert await live.quota_store.acquire(tenant, CONNECTIONS, 2)
        assert not await live.quota_store.acquire(tenant, CONNECTIONS, 2)
