"""Gateway nodes on a real local Redis Cluster (three masters, ``redis+cluster://``).

The module starts its own cluster on free ports in a temporary directory. Missing
``redis-server`` / ``redis-cli`` skips these tests, except in CI (``CI=true``) where it fails them.
"""

from __future__ import annotations

import asyncio
import functools
import json
import uuid
from collections.abc import Iterator

import pytest
import redis
from redis.crc import key_slot
from wsq_harness import (
    Publisher,
    RedisCluster,
    eventually,
    make_settings,
    redis_brokers,
    running_gateway,
    spread_addresses,
    transfers,
    work,
)

import wsq.broker.redis.groups as redis_groups_module
from wsq.config import BrokerConfig, Settings
from wsq.core.errors import BrokerUnavailable
from wsq.core.messages import Message, NewMessage
from wsq.core.positions import START


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    with RedisCluster(tmp_path_factory.mktemp("redis-cluster")) as c:
        yield c


@pytest.fixture
def settings(cluster: RedisCluster) -> Settings:
    return make_settings(broker_url=cluster.url)


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
    settings: Settings, cluster: RedisCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No periodic group poll: the queue step's consumers hear of work by the shard's notices.
    monkeypatch.setattr(redis_groups_module, "GROUP_POLL_S", 3600.0)
    by_master = spread_addresses(cluster, 1)
    async with running_gateway(settings) as b:
        publisher = Publisher(await b.client(sub="writer"))
        for address in (a for group in by_master.values() for a in group):
            async with running_gateway(settings) as a:
                reader = await a.subscriber(address, sub="reader", credit=100)
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
        # The queue: competing consumers on two nodes, on an address of every master. The one
        # on A holds its credit of 2; everything else goes to B's, published on A.
        async with running_gateway(settings) as a:
            publisher = Publisher(await a.client(sub="writer"))
            for group in spread_addresses(cluster, 1).values():
                [address] = group
                holder = await a.subscriber(address, sub="worker", credit=2, mode="move")
                worker = await b.subscriber(address, sub="worker", credit=2, mode="move")
                await publisher.publish(address, *range(12))
                held = [t["body"] for t in await transfers(holder, 2)]
                assert sorted(held + await work(worker, 10)) == list(range(12))
                await holder.nothing("transfer", wait=0.1)
                await worker.nothing("transfer", wait=0.1)
                await holder.close()
                await worker.close()


def _move_slot(cluster: RedisCluster, key: str) -> tuple[int, int]:
    """Move ``key``'s slot (with its keys) to another master, as a resharding does."""
    slot = key_slot(key.encode())
    src = cluster.port_of(key)
    dst = next(p for p in cluster.ports if p != src)
    with redis.Redis(port=src) as s, redis.Redis(port=dst) as d:
        src_id = s.execute_command("CLUSTER", "MYID").decode()
        dst_id = d.execute_command("CLUSTER", "MYID").decode()
        d.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        while keys := s.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            s.execute_command("MIGRATE", "127.0.0.1", dst, "", 0, 5000, "KEYS", *keys)
        for port in (dst, src, *(p for p in cluster.ports if p not in (src, dst))):
            with redis.Redis(port=port) as r:
                r.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
    return src, dst


async def test_a_live_reader_follows_its_slot_to_another_master(cluster: RedisCluster) -> None:
    settings = Settings(broker=BrokerConfig(url=cluster.url))
    async with redis_brokers(settings, 2) as (reader, writer):
        address = f"moving.{uuid.uuid4().hex[:10]}"
        got: list[Message] = []
        handle = reader.tail("acme", address, START, got.extend)
        first = await writer.publish("acme", address, [NewMessage(str(i), "w") for i in range(3)])
        await _eventually(lambda: len(got) >= 3)
        src, dst = await asyncio.to_thread(_move_slot, cluster, f"wsq:{{acme:{address}}}:s")
        assert cluster.port_of(f"wsq:{{acme:{address}}}:s") == dst != src
        later = await writer.publish(
            "acme", address, [NewMessage(str(i), "w") for i in range(3, 6)]
        )
        await _eventually(lambda: len(got) >= 6)
        await asyncio.sleep(0.2)
        assert [m.id for m in got] == [p.id for p in first + later]
        assert [json.loads(m.body) for m in got] == list(range(6))
        # The reader now listens on the new owner: its feed there holds the channel.
        feeds = {name: f.subscribed for name, f in reader._reader.feeds.items()}
        channel = f"wsq:{{acme:{address}}}:p"
        assert [name for name, subs in feeds.items() if channel in subs] == [f"127.0.0.1:{dst}"]
        handle.close()


_eventually = functools.partial(eventually, within=15.0)


async def test_the_publish_script_is_never_sent_twice_by_the_cluster_client(
    settings: Settings,
) -> None:
    # The single-Redis test (test_redis_nodes.py) drops a publish's answer with a proxy; a
    # cluster redirects clients to its nodes' own addresses, so here the configuration is what
    # can be checked: the publish client does not run the script again after a connection error
    # (it might have stored the batch), the command client still retries (reads are idempotent).
    async with redis_brokers(settings) as [broker]:
        assert isinstance(broker._clients.once, redis.asyncio.RedisCluster)
        assert broker._clients.once.retry.get_retries() == 0
        assert isinstance(broker._clients.redis, redis.asyncio.RedisCluster)
        assert broker._clients.redis.retry.get_retries() > 0
        address = f"once.{uuid.uuid4().hex[:10]}"
        [first] = await broker.publish("acme", address, [NewMessage("1", "w")])
        got = await broker.read("acme", address, START, 10)
        assert [m.id for m in got.messages] == [first.id]


async def test_commands_cut_off_by_a_disconnect_are_refused_as_unavailable(
    settings: Settings,
) -> None:
    # In a failover the async cluster client disconnects every node's connections when one
    # command meets CLUSTERDOWN; commands in flight on them then fail. redis-py lets some of
    # those through as AttributeError (a cleared writer, redis-py#4287): the broker must still
    # answer BrokerUnavailable (the gateway's "Redis is unavailable"), never an unknown error.
    async with redis_brokers(settings) as [broker]:
        address = f"cut.{uuid.uuid4().hex[:10]}"
        failures: list[BaseException] = []
        done = 0

        async def worker(i: int) -> None:
            nonlocal done
            for n in range(60):
                try:
                    if n % 2:
                        await broker.read("acme", address, START, 5)
                    else:
                        await broker.publish("acme", address, [NewMessage(f"{i}.{n}", "w")])
                    done += 1
                except Exception as exc:
                    failures.append(exc)

        async def cut() -> None:
            for _ in range(40):
                await asyncio.sleep(0.01)
                for client in (broker._clients.redis, broker._clients.once):
                    assert client is not None
                    await client.aclose()

        await asyncio.gather(*(worker(i) for i in range(16)), cut())
        assert failures, "no command was cut off: the test proves nothing"
        odd = [f for f in failures if not isinstance(f, BrokerUnavailable)]
        assert not odd, odd[:3]
        assert all("unavailable" in str(f) for f in failures)
        assert done, "no command got through"
        # And the broker works on afterwards.
        [last] = await broker.publish("acme", address, [NewMessage("end", "w")])
        assert (await broker.last_position("acme", address)) == last.id
