"""Several gateway nodes sharing one real Redis: what the Redis broker is for.

Each test module run starts its own ``redis-server`` on a free port, in a temporary directory
(never the machine's Redis on 6379). Missing ``redis-server`` skips these tests, except in CI
(``CI=true``) where it fails them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from wsq_harness import (
    Client,
    Gateway,
    Publisher,
    RedisServer,
    StreamPublisher,
    eventually,
    make_settings,
    redis_brokers,
    running_gateway,
    transfers,
    work,
)

import wsq.broker.redis.groups as redis_groups_module
from wsq.broker.redis import RedisBroker
from wsq.broker.redis.keys import dedup_key
from wsq.config import BrokerConfig, Settings
from wsq.core.errors import BrokerUnavailable
from wsq.core.messages import Delivery, Message, NewMessage, Outcome
from wsq.core.positions import START
from wsq.core.wire import copy_tail


@pytest.fixture
def settings(redis_server: RedisServer) -> Settings:
    return make_settings(broker_url=redis_server.url)


@pytest.fixture
def plain_settings(redis_server: RedisServer) -> Settings:
    """The module's Redis and no tenant configured (every tenant has the default policy)."""
    return Settings(broker=BrokerConfig(url=redis_server.url))


@pytest.fixture
def address() -> str:
    return f"nodes.{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


async def subscriber(gw: Gateway, address: str, **fields: Any) -> tuple[Client, dict[str, Any]]:
    client = await gw.client(sub="reader")
    await client.begin(1)
    answer = await client.subscribe(1, 0, address, credit=1000, **fields)
    return client, answer


# -- nodes ------------------------------------------------------------------------------------


async def test_published_on_one_node_is_received_on_another(
    settings: Settings, address: str
) -> None:
    async with running_gateway(settings) as a, running_gateway(settings) as b:
        reader, _ = await subscriber(b, address)
        ids = await Publisher(await a.client(sub="writer")).publish(address, 1, {"x": 2}, "three")
        got = await transfers(reader, 3)
        assert [t["id"] for t in got] == ids
        assert [t["body"] for t in got] == [1, {"x": 2}, "three"]
        assert got[0]["props"]["publisher"] == "writer"


async def test_client_resumes_on_another_node_after_its_node_stops(
    settings: Settings, address: str
) -> None:
    async with running_gateway(settings) as b:
        publisher = Publisher(await b.client(sub="writer"))
        async with running_gateway(settings) as a:
            reader, _ = await subscriber(a, address)
            first = await publisher.publish(address, 0, 1, 2)
            seen = await transfers(reader, 3)
            assert [t["id"] for t in seen] == first
            last = seen[-1]["id"]
        # Node A is gone; messages go on arriving meanwhile.
        missed = await publisher.publish(address, 3, 4)
        again, answer = await subscriber(b, address, **{"from": last})
        assert answer["from"] == last
        assert answer["recovered"] is True
        more = await publisher.publish(address, 5)
        got = await transfers(again, 3)
        assert [t["id"] for t in got] == missed + more
        assert [t["body"] for t in got] == [3, 4, 5]
        await again.nothing("transfer", wait=0.2)


async def test_queue_consumers_on_two_nodes_really_compete(
    settings: Settings, address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No periodic poll: node B hears of A's publishes only by the notice (the 1 s poll hid its
    # loss). Small credit: A's consumer holds two and settles nothing, so everything else must
    # go to B's.
    monkeypatch.setattr(redis_groups_module, "GROUP_POLL_S", 3600.0)
    async with running_gateway(settings) as a, running_gateway(settings) as b:
        holder = await a.subscriber(address, sub="worker", credit=2, mode="move")
        worker = await b.subscriber(address, sub="worker", credit=2, mode="move")
        await Publisher(await a.client(sub="writer")).publish(address, *range(30))
        held = [t["body"] for t in await transfers(holder, 2)]
        worked = await work(worker, 28)
        assert sorted(held + worked) == list(range(30))
        await holder.nothing("transfer", wait=0.2)


async def test_a_lease_that_runs_out_on_one_node_goes_to_the_consumer_on_the_other(
    settings: Settings, address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No periodic poll: node B learns when A's lease runs out from the group's deadline alone.
    monkeypatch.setattr(redis_groups_module, "GROUP_POLL_S", 3600.0)
    async with running_gateway(settings) as a, running_gateway(settings) as b:
        slow = await a.subscriber(address, sub="worker", credit=5, mode="move", lease=300)
        await Publisher(await a.client(sub="writer")).publish(address, "job")
        t = await slow.expect("transfer")
        other = await b.subscriber(address, sub="worker", credit=5, mode="move", lease=300)
        again = await other.expect("transfer", timeout=5)
        assert (again["id"], again["body"], again["props"]["redelivered"]) == (t["id"], "job", 1)
        # A still has credit, yet the message went to B, once.
        await slow.nothing("transfer", wait=0.2)
        await other.nothing("transfer", wait=0.1)


# -- cost -------------------------------------------------------------------------------------

_READ_COMMANDS = ("xread", "xrange", "xrevrange", "xreadgroup", "hget", "get", "evalsha")


async def _read_calls(redis: Redis) -> int:
    stats: dict[str, Any] = await redis.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in _READ_COMMANDS)


async def _fan_out_calls(settings: Settings, redis: Redis, subscribers: int) -> int:
    """Redis read calls made while 20 messages reach ``subscribers`` links on one gateway."""
    address = f"cost.{uuid.uuid4().hex[:12]}"
    n = 20
    async with running_gateway(settings) as gw:
        clients: list[Client] = []
        per_client = 50
        for c in range(0, subscribers, per_client):
            client = await gw.client(sub=f"s{c}")
            await client.begin(1)
            for h in range(min(per_client, subscribers - c)):
                await client.subscribe(1, h, address, credit=1000)
            clients.append(client)
        publisher = Publisher(await gw.client(sub="writer"))
        await asyncio.sleep(0.2)  # the live reader settles on the new stream
        await redis.config_resetstat()
        for i in range(n):
            await publisher.publish(address, i)
        for c, client in enumerate(clients):
            links = min(per_client, subscribers - c * per_client)
            got = await transfers(client, n * links)
            assert len(got) == n * links
        calls = await _read_calls(redis)
        for client in clients:
            await client.close()
        # Publishes are the same count in both runs: what grows with subscribers is reading.
        return calls - n


async def test_redis_read_calls_do_not_grow_with_subscribers(
    redis_server: RedisServer, redis: Redis
) -> None:
    # Without the process's own $sys.stats snapshot a second (a publish, ~3 counted calls):
    # a slow run at 200 subscribers would catch more of them than one at 10.
    settings = make_settings(broker_url=redis_server.url, server={"stats_interval_ms": 0})
    few = await _fan_out_calls(settings, redis, 10)
    many = await _fan_out_calls(settings, redis, 200)
    # A bounded number of reads per publish, whatever the number of subscribers.
    assert few <= 3 * 20, few
    assert many <= few + 5, (few, many)


# -- Redis outages ----------------------------------------------------------------------------


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path, aof=True) as server:
        yield server


_eventually = functools.partial(eventually, within=10.0)


async def test_live_reader_resumes_after_redis_restart_without_loss_or_repeat(
    aof_redis: RedisServer,
) -> None:
    settings = Settings(broker=BrokerConfig(url=aof_redis.url))
    async with redis_brokers(settings, 2) as (reader, writer):
        got: list[Message] = []
        handle = reader.tail("t", "live", START, got.extend)
        before = await writer.publish("t", "live", [NewMessage(str(i), "w") for i in range(3)])
        await _eventually(lambda: len(got) >= 3)
        aof_redis.kill()
        # Redis is down: publishing is refused, never reported as stored.
        with pytest.raises(Exception, match="unavailable"):
            await writer.publish("t", "live", [NewMessage("9", "w")])
        assert not await writer.ready()
        aof_redis.start()
        after: list[str] = []
        deadline = time.monotonic() + 10
        while not after:
            try:
                after = [
                    r.id
                    for r in await writer.publish(
                        "t", "live", [NewMessage(str(i), "w") for i in range(3, 6)]
                    )
                ]
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
        await _eventually(lambda: len(got) >= 6)
        await asyncio.sleep(0.2)
        assert [m.id for m in got] == [r.id for r in before] + after
        assert [json.loads(m.body) for m in got] == list(range(6))
        assert await writer.ready()
        handle.close()


async def test_live_reader_survives_killed_connections(
    plain_settings: Settings, redis: Redis, address: str
) -> None:
    async with redis_brokers(plain_settings) as [broker]:
        got: list[Message] = []
        handle = broker.tail("t", address, START, got.extend)
        await broker.publish("t", address, [NewMessage("0", "w")])
        await _eventually(lambda: len(got) >= 1)
        for kind in ("normal", "pubsub"):
            await redis.execute_command("CLIENT", "KILL", "TYPE", kind, "SKIPME", "yes")
        await broker.publish("t", address, [NewMessage("1", "w")])
        await _eventually(lambda: len(got) >= 2)
        await asyncio.sleep(0.1)
        assert [json.loads(m.body) for m in got] == [0, 1]
        handle.close()


# -- a gateway through a Redis outage -----------------------------------------------------------


async def _ready_status(http: httpx.AsyncClient, gw: Gateway) -> int:
    return (await http.get(f"{gw.http}/readyz")).status_code


async def _wait_status(http: httpx.AsyncClient, gw: Gateway, status: int) -> None:
    deadline = time.monotonic() + 20
    while await _ready_status(http, gw) != status:
        if time.monotonic() > deadline:
            pytest.fail(f"/readyz never answered {status}")
        await asyncio.sleep(0.05)


async def test_gateway_rides_out_a_redis_outage_mid_stream(aof_redis: RedisServer) -> None:
    """Redis (AOF on) is killed while a publisher streams to live subscribers, then comes back
    on the same port: /readyz follows it, sockets stay open, publishes in between are refused
    with wsq:internal-error (never reported accepted), and every subscriber gets every accepted
    message once, in order."""
    settings = make_settings(broker_url=aof_redis.url)
    address, other = f"out.{uuid.uuid4().hex[:8]}", f"out.{uuid.uuid4().hex[:8]}"
    async with running_gateway(settings) as gw, httpx.AsyncClient() as http:
        assert await _ready_status(http, gw) == 200
        readers = []
        for i in range(3):
            reader = await gw.subscriber(address, sub=f"reader{i}", credit=100_000)
            await reader.subscribe(1, 1, other, credit=100_000)
            readers.append(reader)
        stream = StreamPublisher(await gw.client(sub="writer"), address)
        task = asyncio.create_task(stream.run())
        try:
            await _eventually(lambda: len(stream.accepted) >= 20)
            aof_redis.kill()
            await _wait_status(http, gw, 503)
            # Refused with a clear condition, never stored: no subscriber ever sees it.
            probe = Publisher(await gw.client(sub="prober"))
            await probe.client.begin(probe.ch)
            await probe.client.sender(probe.ch, 0, other)
            await probe.client.send(
                {"op": "transfer", "ch": probe.ch, "handle": 0, "delivery": 0, "body": "lost"}
            )
            refused = await probe.client.expect("disposition", ch=probe.ch, timeout=15)
            assert refused["outcome"] == "rejected", refused
            assert refused["error"]["condition"] == "wsq:internal-error"
            assert "unavailable" in refused["error"]["description"].lower()
            await _eventually(lambda: len(stream.refusals) >= 1)
            # Sockets stay open and served: a new session on every subscriber's socket.
            for reader in readers:
                await reader.begin(2)
            accepted_before = len(stream.accepted)
            aof_redis.start()
            await _wait_status(http, gw, 200)
            await _eventually(lambda: len(stream.accepted) >= accepted_before + 20)
        finally:
            stream.stop.set()
            await asyncio.wait_for(task, 20)
        expected = list(stream.accepted)
        assert len(set(expected)) == len(expected)
        for reader in readers:
            got = await transfers(reader, len(expected), timeout=10, handle=0)
            assert [t["id"] for t in got] == expected
            assert [t["body"] for t in got] == list(range(len(expected)))
            await reader.nothing("transfer", wait=0.3)
        assert stream.refusals, "the outage refused no publish"
        assert {d["error"]["condition"] for d in stream.refusals} == {"wsq:internal-error"}


class _ReplyDropper:
    """A TCP proxy in front of a Redis that, once, forwards a command carrying ``marker``, lets
    Redis answer it, then closes the client's connection instead of passing the answer on:
    the command ran, and the client cannot know."""

    def __init__(self, upstream_port: int, marker: bytes) -> None:
        self.upstream_port = upstream_port
        self.marker = marker
        self.dropped = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.port = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> _ReplyDropper:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for w in list(self._writers):
            w.close()  # every pump then reads its end and stops
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self.server.wait_closed()

    async def _serve(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        me = asyncio.current_task()
        assert me is not None
        self._handlers.add(me)
        s_reader, s_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._writers |= {c_writer, s_writer}
        armed = asyncio.Event()  # the marked command went upstream: drop its answer

        async def up() -> None:
            tail = b""
            while data := await c_reader.read(65536):
                seen = tail + data
                tail = seen[-len(self.marker) :]
                s_writer.write(data)
                await s_writer.drain()
                if self.marker in seen and not self.dropped.is_set():
                    armed.set()

        async def down() -> None:
            while data := await s_reader.read(65536):
                if armed.is_set():
                    self.dropped.set()
                    return  # the answer is swallowed; the client's connection closes below
                c_writer.write(data)
                await c_writer.drain()

        pumps = [asyncio.create_task(up()), asyncio.create_task(down())]
        with contextlib.suppress(OSError):
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for w in (c_writer, s_writer):
            w.close()
            self._writers.discard(w)
        await asyncio.gather(*pumps, return_exceptions=True)
        for w in (c_writer, s_writer):
            with contextlib.suppress(OSError):
                await w.wait_closed()
        self._handlers.discard(me)


async def test_a_publish_whose_answer_is_lost_is_not_run_again(
    redis_server: RedisServer, redis: Redis, address: str
) -> None:
    # A publish without message_id is not idempotent: if redis-py retried the script after a
    # lost answer, the message would be stored twice. The caller must get BrokerUnavailable
    # instead (and retry with a message_id, which dedup makes safe).
    async with _ReplyDropper(redis_server.port, b"drop-my-answer") as proxy:
        settings = Settings(broker=BrokerConfig(url=f"redis://127.0.0.1:{proxy.port}/0"))
        async with redis_brokers(settings) as [broker]:
            # The script is loaded first: the marked EVALSHA then runs at once.
            await broker.publish("acme", address, [NewMessage('"warm"', "w")])
            with pytest.raises(BrokerUnavailable):
                await broker.publish("acme", address, [NewMessage('"drop-my-answer"', "w")])
            assert proxy.dropped.is_set()
            rows = await redis.xrange(f"wsq:{{acme:{address}}}:s")
            assert [r[1]["b"] for r in rows] == ['"warm"', '"drop-my-answer"']
            # Reads are idempotent and may still be retried; the broker serves on.
            got = await broker.read("acme", address, START, 10)
            assert [m.body for m in got.messages] == ['"warm"', '"drop-my-answer"']
            [again] = await broker.publish("acme", address, [NewMessage('"next"', "w")])
            assert again.id > rows[-1][0]


# -- transient addresses, queues across processes -----------------------------------------------


async def _keys_of(redis: Redis, tenant: str, address: str) -> list[str]:
    return sorted([k async for k in redis.scan_iter(match=f"wsq:{{{tenant}:{address}}}*")])


async def test_an_idle_address_disappears_with_all_its_keys(
    redis_server: RedisServer, redis: Redis, address: str
) -> None:
    settings = make_settings(idle_expiry_ms=1000, broker_url=redis_server.url)
    async with redis_brokers(settings) as [broker]:
        first = await broker.publish("acme", address, [NewMessage("1", "w", message_id="m1")])
        await broker.publish("acme", address, [NewMessage("2", "w")])
        [d] = await broker.claim("acme", address, "g", "c1", 1, 60_000)
        await broker.settle("acme", address, "g", "c1", [d.message.id], Outcome.MODIFIED)
        keys = await _keys_of(redis, "acme", address)
        base = f"wsq:{{acme:{address}}}"
        # Stream, metadata, dedup key, and the group's state all exist while in use.
        assert {f"{base}:s", f"{base}:m", f"{base}:i:m1"} <= set(keys), keys
        assert any(k.startswith(f"{base}:g:g:") for k in keys), keys
        deadline = time.monotonic() + 15
        while keys:
            assert time.monotonic() < deadline, f"keys left after idle expiry: {keys}"
            await asyncio.sleep(0.1)
            keys = await _keys_of(redis, "acme", address)
        # The address starts afresh: nothing retained, the message_id is new again.
        assert (await broker.read("acme", address, START, 10)).messages == []
        [again] = await broker.publish("acme", address, [NewMessage("3", "w", message_id="m1")])
        assert not again.duplicate
        assert again.id != first[0].id


async def _consumers(redis: Redis, address: str, group: str) -> dict[str, int]:
    """The group's consumers in Redis and how many messages each holds."""
    rows = await redis.xinfo_consumers(f"wsq:{{acme:{address}}}:s", group)
    return {row["name"]: row["pending"] for row in rows}


async def test_consumers_whose_leases_ran_out_do_not_pile_up(
    settings: Settings, redis: Redis, address: str
) -> None:
    # An HTTP claim is its own consumer; a worker that never settles leaves it behind. On a busy
    # address (claims all the time) the expired leases go back to the group: so must the names.
    async with redis_brokers(settings) as [broker]:
        await broker.publish("acme", address, [NewMessage("1", "w"), NewMessage("2", "w")])
        # A WebSocket link's consumer that holds a lease that does not run out is kept.
        [kept] = await broker.claim("acme", address, "g", "node-1-2-3", 1, 60_000)
        for i in range(12):
            [d] = await broker.claim("acme", address, "g", f"http-g~abandoned{i}", 1, 100)
            assert d.redelivered == i
            await asyncio.sleep(0.15)  # the lease runs out, nobody settles
        consumers = await _consumers(redis, address, "g")
        # Held: the live link's lease and the newest claim's (expired, not yet reclaimed).
        assert consumers.get("node-1-2-3") == 1
        assert consumers.get("http-g~abandoned11") == 1
        abandoned = sorted(c for c in consumers if c.startswith("http-"))
        assert abandoned == ["http-g~abandoned11"], consumers
        assert set(consumers) <= {"node-1-2-3", "http-g~abandoned11", "~ready", "~delay"}
        # The message whose leases ran out is still served, counted, to the next claimer.
        [again] = await broker.claim("acme", address, "g", "http-g~last", 1, 60_000)
        assert again.redelivered == 12
        assert kept.message.id != again.message.id
        assert "http-g~abandoned11" not in await _consumers(redis, address, "g")


async def test_a_release_on_one_process_wakes_the_group_on_another(
    plain_settings: Settings, address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No periodic poll: only the release notice can tell process B.
    monkeypatch.setattr(redis_groups_module, "GROUP_POLL_S", 3600.0)
    async with redis_brokers(plain_settings, 2) as (a, b):
        await a.publish("t", address, [NewMessage("1", "w")])
        [held] = await a.claim("t", address, "g", "on-a", 1, 60_000)
        woken = asyncio.Event()
        watch = b.watch_group("t", address, "g", woken.set)
        await asyncio.sleep(0.3)  # B's first look (nothing claimable), then its subscription
        assert await b.claim("t", address, "g", "on-b", 1, 60_000) == []
        woken.clear()
        await a.settle("t", address, "g", "on-a", [held.message.id], Outcome.RELEASED)
        await asyncio.wait_for(woken.wait(), 10)
        [got] = await b.claim("t", address, "g", "on-b", 1, 60_000)
        assert got.message.id == held.message.id
        assert got.redelivered == 0  # released: not counted
        watch.close()


async def test_a_lease_that_runs_out_on_one_process_wakes_the_group_on_another(
    plain_settings: Settings, address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A claims with no watch of its own (as an HTTP claim does), so nothing on A looks again:
    # B must wake from the group's deadline, which it learns when it starts watching.
    monkeypatch.setattr(redis_groups_module, "GROUP_POLL_S", 3600.0)
    async with redis_brokers(plain_settings, 2) as (a, b):
        await a.publish("t", address, [NewMessage("1", "w")])
        [held] = await a.claim("t", address, "g", "http-g~a", 1, 300)
        woken = asyncio.Event()
        watch = b.watch_group("t", address, "g", woken.set)
        claimed: list[Delivery] = []
        while not claimed:  # B's first looks find nothing; once the lease runs out, the job
            await asyncio.wait_for(woken.wait(), 5)
            woken.clear()
            claimed = await b.claim("t", address, "g", "on-b", 1, 60_000)
        [got] = claimed
        assert (got.message.id, got.redelivered) == (held.message.id, 1)
        watch.close()


# -- the entry format -------------------------------------------------------------------------


async def test_entries_in_the_first_format_are_still_read(
    plain_settings: Settings, redis: Redis, address: str
) -> None:
    # Entries written before the pre-encoded props (``x``): p, m, c, h as separate fields.
    async with redis_brokers(plain_settings) as [broker]:
        base = f"wsq:{{t:{address}}}"
        old_id = await redis.xadd(
            f"{base}:s",
            {
                "b": '{"n":1}',
                "p": "old-writer",
                "s": "a.b",
                "m": "m-old",
                "c": "text/plain",
                "h": '{"k":[1,2]}',
                "t": "3600000",
            },
        )
        await redis.hset(f"{base}:m", "last", old_id)
        # Its dedup key, as the publish that wrote it set it: lookups read only those.
        await redis.set(dedup_key(base, "m-old"), old_id, px=60_000)
        got: list[Message] = []
        arrived = asyncio.Event()

        def on_messages(messages: list[Message]) -> None:
            got.extend(messages)
            arrived.set()

        handle = broker.tail("t", address, old_id, on_messages)
        await asyncio.sleep(0.3)
        [new] = await broker.publish(
            "t",
            address,
            [
                NewMessage(
                    '{"n":2}',
                    "new-writer",
                    subject="a.b",
                    message_id="m-new",
                    content_type="text/plain",
                    headers={"k": [1, 2]},
                    ttl_ms=3_600_000,
                )
            ],
        )
        await asyncio.wait_for(arrived.wait(), 10)
        handle.close()
        [old, _] = (await broker.read("t", address, START, 10)).messages
        [live] = got
        assert live.id == new.id
        ms = int(old_id.split("-")[0])
        assert (old.id, old.body, old.publisher, old.subject) == (
            old_id,
            '{"n":1}',
            "old-writer",
            "a.b",
        )
        assert (old.message_id, old.content_type, old.headers) == (
            "m-old",
            "text/plain",
            {"k": [1, 2]},
        )
        assert (old.ts, old.expires_at) == (ms, ms + 3_600_000)
        # Both formats give the same props and the same wire tail as the encoder would.
        assert (await broker.lookup("t", address, "m-old")) is not None
        assert (await broker.lookup("t", address, "m-new")) is not None
        new_ms = int(new.id.split("-")[0])
        assert live.props() == {
            "ts": new_ms,
            "publisher": "new-writer",
            "subject": "a.b",
            "message_id": "m-new",
            "content_type": "text/plain",
            "headers": {"k": [1, 2]},
            "expires": new_ms + 3_600_000,
        }
        for m in (old, live):
            fresh = Message(
                m.id,
                m.body,
                ts=m.ts,
                publisher=m.publisher,
                subject=m.subject,
                message_id=m.message_id,
                content_type=m.content_type,
                headers=m.headers,
                expires_at=m.expires_at,
            )
            assert copy_tail(m) == copy_tail(fresh)
            assert json.loads("{" + copy_tail(m))["props"] == m.props()


async def _collect(broker: RedisBroker, address: str) -> tuple[Any, list[Message]]:
    got: list[Message] = []
    handle = broker.tail("acme", address, await broker.last_position("acme", address), got.extend)
    await asyncio.sleep(0.3)  # the subscription takes hold
    return handle, got


async def test_own_publishes_are_passed_on_without_reading_them_back(
    redis_server: RedisServer, address: str
) -> None:
    settings = make_settings(broker_url=redis_server.url)
    async with redis_brokers(settings, 2) as (a, b):
        handle, got = await _collect(a, address)
        reads = a.live_reads
        for i in range(5):
            await a.publish("acme", address, [NewMessage(str(i), "a") for _ in range(3)])
        # Delivered by the publish itself, in order, and the notices read nothing.
        assert [m.body for m in got] == [str(i) for i in range(5) for _ in range(3)]
        await asyncio.sleep(0.3)
        assert a.live_reads == reads
        assert len(got) == 15

        # Another process's publishes interleaved with ours: everything once, in stream order.
        async def burst(broker: RedisBroker, tag: str) -> None:
            for i in range(30):
                await broker.publish("acme", address, [NewMessage(f'"{tag}{i}"', tag)] * 2)

        await asyncio.gather(burst(a, "a"), burst(b, "b"), burst(a, "c"))
        stored = (await a.read("acme", address, START, 1000)).messages
        await _eventually(lambda: len(got) >= len(stored))
        await asyncio.sleep(0.2)
        assert [m.id for m in got] == [m.id for m in stored]
        assert [copy_tail(m) for m in got] == [copy_tail(m) for m in stored]
        assert a.live_reads > reads  # b's publishes were read
        handle.close()


async def test_own_publish_trimmed_by_retention_is_read_not_passed_on(
    redis_server: RedisServer, address: str
) -> None:
    # Retention of 3: a batch of 5 keeps its last 3, and the reader passes on what Redis kept.
    settings = make_settings(retention_max_len=3, broker_url=redis_server.url)
    async with redis_brokers(settings) as [a]:
        handle, got = await _collect(a, address)
        await a.publish("acme", address, [NewMessage(str(i), "a") for i in range(5)])
        stored = (await a.read("acme", address, START, 10)).messages
        assert [m.body for m in stored] == ["2", "3", "4"]
        await _eventually(lambda: len(got) >= 3)
        await asyncio.sleep(0.2)
        assert [m.id for m in got] == [m.id for m in stored]
        handle.close()
