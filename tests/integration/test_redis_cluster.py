"""Gateway nodes on a real local Redis Cluster (three masters, ``redis+cluster://``).

The module starts its own cluster on free ports in a temporary directory. Missing
``redis-server`` / ``redis-cli`` skips these tests, except in CI (``CI=true``) where it fails them.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator

import pytest
from wsq_harness import Publisher, RedisCluster, make_settings, running_gateway, transfers

from wsq.config import BrokerConfig, Settings


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    c = RedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    c.start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def settings(cluster: RedisCluster) -> Settings:
    return dataclasses.replace(make_settings(), broker=BrokerConfig(url=cluster.url))


def spread_addresses(cluster: RedisCluster, per_master: int) -> dict[int, list[str]]:
    """Fresh addresses of tenant acme, ``per_master`` on each master (by their keys' slot)."""
    out: dict[int, list[str]] = {port: [] for port in cluster.ports}
    while any(len(v) < per_master for v in out.values()):
        address = f"spread.{uuid.uuid4().hex[:10]}"
        owner = out[cluster.port_of(f"wsq:{{acme:{address}}}:s")]
        if len(owner) < per_master:
            owner.append(address)
    return out


async def test_published_on_one_node_is_received_on_another_on_every_master(
    settings: Settings, cluster: RedisCluster
) -> None:
    by_master = spread_addresses(cluster, 2)
    addresses = [a for group in by_master.values() for a in group]
    async with running_gateway(settings) as a, running_gateway(settings) as b:
        reader = await b.client(sub="reader")
        await reader.begin(1)
        for handle, address in enumerate(addresses):
            await reader.subscribe(1, handle, address, credit=100)
        publisher = Publisher(await a.client(sub="writer"))
        sent: dict[int, list[str]] = {}
        for handle, address in enumerate(addresses):
            ids = await publisher.publish(address, f"{address}:0", f"{address}:1")
            sent[handle] = ids
        got = await transfers(reader, 2 * len(addresses))
        for handle, address in enumerate(addresses):
            mine = [t for t in got if t["handle"] == handle]
            assert [t["id"] for t in mine] == sent[handle]
            assert [t["body"] for t in mine] == [f"{address}:0", f"{address}:1"]
            assert all(t["props"]["publisher"] == "writer" for t in mine)
        await reader.nothing("transfer", wait=0.2)


async def test_resume_on_another_node_and_queue_on_the_cluster(
    settings: Settings, cluster: RedisCluster
) -> None:
    by_master = spread_addresses(cluster, 1)
    async with running_gateway(settings) as b:
        publisher = Publisher(await b.client(sub="writer"))
        for address in (a for group in by_master.values() for a in group):
            async with running_gateway(settings) as a:
                reader = await a.client(sub="reader")
                await reader.begin(1)
                await reader.subscribe(1, 0, address, credit=100)
                first = await publisher.publish(address, 0, 1)
                seen = await transfers(reader, 2)
                assert [t["id"] for t in seen] == first
            missed = await publisher.publish(address, 2, 3)
            again = await b.client(sub="reader")
            await again.begin(1)
            answer = await again.subscribe(1, 0, address, credit=100, **{"from": first[-1]})
            assert answer["recovered"] is True
            got = await transfers(again, 2)
            assert [t["id"] for t in got] == missed
            await again.close()
