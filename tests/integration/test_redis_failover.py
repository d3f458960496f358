"""A gateway on a real local Redis Cluster with replicas (3 masters + 3 replicas), through a
failover: the master of a subscribed address is SIGKILLed (its replica is promoted), or a replica
takes over by a manual ``CLUSTER FAILOVER``. The subscribers must keep receiving: the failure
centrifugo#1189 describes is a subscriber that goes silently deaf after a Redis failover.

Each test starts its own cluster (the failover changes it) with ``cluster-node-timeout`` 1000 ms,
so a dead master is replaced within a few seconds. Missing ``redis-server`` / ``redis-cli`` skips
these tests, except in CI (``CI=true``) where it fails them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import websockets
from wsq_harness import (
    Client,
    Gateway,
    RedisCluster,
    StreamPublisher,
    eventually,
    make_settings,
    running_gateway,
    spread_addresses,
)

from wsq.broker.redis import RedisBroker
from wsq.broker.redis.reader import MAX_BACKOFF_S


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    with RedisCluster(tmp_path, masters=3, replicas=1, node_timeout_ms=1000) as c:
        yield c


_eventually = functools.partial(eventually, within=20.0)

#: What a subscriber's longest pause may exceed its publisher's longest gap between two
#: acknowledged publishes by: the gateway's live reader retries a failed node with full jitter
#: of up to MAX_BACKOFF_S, so once the new master answers, its next try may still be that far
#: off (measured: 0.2-0.65 s over the publishers' gap), then one read. Half a second more
#: leaves room for a loaded machine and none for a reader deaf for many seconds.
PAUSE_SLACK_S = MAX_BACKOFF_S + 0.5


class _Recorder:
    """Reads a subscriber's socket all the time, noting when each transfer arrived: a
    subscriber that is not read would hide a pause in delivery behind its socket buffers."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.got: list[tuple[float, dict[str, Any]]] = []
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while not self.stop.is_set():
            # Cancelling websockets' recv() (the timeout) loses no frame.
            with contextlib.suppress(TimeoutError):
                try:
                    await self.client._fill(0.2)
                except websockets.ConnectionClosed:
                    return  # the gateway is closing; the test judges what came
            now = time.monotonic()
            while self.client.inbox:
                frame = self.client.inbox.pop(0)
                if frame.get("op") == "transfer":
                    self.got.append((now, frame))

    def on(self, handle: int) -> list[dict[str, Any]]:
        return [f for _, f in self.got if f["handle"] == handle]


async def _ready(http: httpx.AsyncClient, gw: Gateway) -> int:
    return (await http.get(f"{gw.http}/readyz", timeout=10)).status_code


def _stream_ids(cluster: RedisCluster, address: str) -> list[str]:
    """What Redis holds for ``address`` now, asked of the master that owns it."""
    key = f"wsq:{{acme:{address}}}:s"
    with redis.Redis(port=cluster.port_of(key), decode_responses=True) as r:
        return [id_ for id_, _ in r.xrange(key)]


async def _through_a_failover(
    cluster: RedisCluster,
    failover: Callable[[int, int, httpx.AsyncClient, Gateway], Awaitable[None]],
) -> dict[str, Any]:
    """Subscribers on one address per master, a publisher streaming on each, ``failover`` of the
    master owning the first address mid-stream; 20 more messages accepted on every address once
    it is over. Returns what happened, for the test to judge."""
    by_master = spread_addresses(cluster, 1)
    victim = cluster.masters()[0]
    [replica] = cluster.replicas_of(victim)
    addresses = [by_master[victim][0], *(a for p, g in by_master.items() if p != victim for a in g)]
    settings = make_settings(broker_url=cluster.url)
    broker = RedisBroker(settings.broker.url, settings.storage_policies())
    # Subscribers on one gateway, publishers on another: the subscribers' gateway learns of
    # every message from Redis (a publishing gateway passes its own publishes on without
    # reading them back, which would hide a deaf reader).
    async with (
        running_gateway(settings, broker) as gw,
        running_gateway(settings) as pub_gw,
        httpx.AsyncClient() as http,
    ):
        assert await _ready(http, gw) == 200
        recorders = []
        for i in range(3):
            reader = await gw.client(sub=f"reader{i}")
            await reader.begin(1)
            for handle, address in enumerate(addresses):
                await reader.subscribe(1, handle, address, credit=1_000_000)
            recorders.append(_Recorder(reader))
        streams = [
            StreamPublisher(await pub_gw.client(sub=f"writer{i}"), address)
            for i, address in enumerate(addresses)
        ]
        tasks = [asyncio.create_task(s.run()) for s in streams]
        try:
            await _eventually(lambda: all(len(s.accepted) >= 20 for s in streams), "20 each")
            before = [len(s.accepted) for s in streams]
            t0 = time.monotonic()
            await failover(victim, replica, http, gw)
            settled = [len(s.accepted) for s in streams]
            t_settled = time.monotonic()
            await _eventually(
                lambda: all(
                    len(s.accepted) >= n + 20 for s, n in zip(streams, settled, strict=True)
                ),
                "20 more accepted on every address after the failover",
            )
        finally:
            for s in streams:
                s.stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 20)
        stored = [await asyncio.to_thread(_stream_ids, cluster, a) for a in addresses]
        # Everything Redis holds reaches every subscriber (a deaf one never gets there).
        for rec in recorders:
            await _eventually(
                lambda rec=rec: all(  # type: ignore[misc]
                    len(rec.on(h)) >= len(ids) for h, ids in enumerate(stored)
                ),
                "every stored message delivered",
                within=15,
            )
        await asyncio.sleep(0.3)  # anything extra would come now
        for rec in recorders:
            rec.stop.set()
        await asyncio.gather(*(r.task for r in recorders))
        # The gateway's live reader: which primary's feed holds each address's channel.
        feeds = {
            a: [n for n, f in broker._reader.feeds.items() if f"wsq:{{acme:{a}}}:p" in f.subscribed]
            for a in addresses
        }
        return {
            "victim": victim,
            "replica": replica,
            "feeds": feeds,
            "addresses": addresses,
            "streams": streams,
            "stored": stored,
            "recorders": recorders,
            "before": before,
            "t0": t0,
            "t_settled": t_settled,
            "settled": settled,
            "ready_after": await _ready(http, gw),
        }


def _judge(run: dict[str, Any], *, loss_allowed: bool) -> dict[str, Any]:
    """The delivery assertions shared by both scenarios; returns the figures measured."""
    streams: list[StreamPublisher] = run["streams"]
    stored: list[list[str]] = run["stored"]
    lost: list[list[str]] = []
    for handle, (s, ids) in enumerate(zip(streams, stored, strict=True)):
        # Accepted once each (the retries of a refused publish carry its message_id).
        assert len(set(s.accepted)) == len(s.accepted)
        # Redis holds nothing that was not acknowledged, in the order acknowledged ...
        gone = [i for i in s.accepted if i not in set(ids)]
        assert [i for i in s.accepted if i not in set(gone)] == ids, handle
        # ... and lost at most what was acknowledged just before the failover (asynchronous
        # replication: the replica had not received it when its master died). Everything
        # acknowledged once the failover was over is there.
        assert not set(gone) & set(s.accepted[run["settled"][handle] :]), (handle, gone)
        if not loss_allowed:
            assert not gone, (handle, gone)
        lost.append(gone)
    for rec in run["recorders"]:
        for handle, (s, ids) in enumerate(zip(streams, stored, strict=True)):
            got = rec.on(handle)
            got_ids = [t["id"] for t in got]
            # Every stored message, once, in order; besides them only a message that was
            # delivered before Redis lost it.
            assert [i for i in got_ids if i in set(ids)] == ids, handle
            assert set(got_ids) - set(ids) <= set(lost[handle]), handle
            assert len(set(got_ids)) == len(got_ids), handle
            # Bodies match: the n-th accepted message is body n.
            assert [t["body"] for t in got] == [s.accepted.index(i) for i in got_ids], handle
    for s in streams:
        for d in s.refusals:
            assert d["outcome"] == "rejected", d
            assert d["error"]["condition"] == "wsq:internal-error", d
            assert "unavailable" in d["error"]["description"].lower(), d
    # The longest silence on the victim's address, for each subscriber, around the failover.
    pauses = []
    for rec in run["recorders"]:
        times = [t for t, f in rec.got if f["handle"] == 0]
        pauses.append(max(b - a for a, b in itertools.pairwise(times)))
    # The victim's address is read on its new master, every address on exactly one feed.
    assert run["feeds"][run["addresses"][0]] == [f"127.0.0.1:{run['replica']}"]
    assert all(len(names) == 1 for names in run["feeds"].values()), run["feeds"]
    # No subscriber deaf for longer than its publisher could not publish (the longest gap
    # between two acknowledgements on the address), plus PAUSE_SLACK_S for the first publish
    # after it to come through. Not the subscribers' gateway's own outage: the publishers'
    # gateway learns of the promotion on its own, up to a second or two later on a loaded
    # machine, and a subscriber cannot hear what is not yet published.
    failover_s = run["t_settled"] - run["t0"]
    publish_gap_s = max(b - a for a, b in itertools.pairwise(streams[0].accepted_at))
    assert max(pauses) <= publish_gap_s + PAUSE_SLACK_S, (pauses, publish_gap_s, failover_s)
    return {
        "why": sorted({d["error"]["description"][:60] for s in streams for d in s.refusals}),
        "lost": sum(map(len, lost)),
        "refused": [len(s.refusals) for s in streams],
        "max_pause_s": round(max(pauses), 2),
        "failover_s": round(failover_s, 2),
        "publish_gap_s": round(publish_gap_s, 2),
    }


async def test_subscribers_keep_receiving_after_a_master_is_killed(cluster: RedisCluster) -> None:
    """SIGKILL the master of a subscribed address mid-stream: /readyz answers 503 until the
    replica is promoted, then 200; publishes meanwhile are refused with wsq:internal-error (or
    accepted); every subscriber keeps receiving, everything Redis holds arrives once, in
    order, and nothing acknowledged after the failover is lost."""
    seen: dict[str, Any] = {}

    async def kill(victim: int, replica: int, http: httpx.AsyncClient, gw: Gateway) -> None:
        cluster.node(victim).kill()
        deadline = time.monotonic() + 20
        while await _ready(http, gw) != 503:
            assert time.monotonic() < deadline, "/readyz never reported the dead master"
            await asyncio.sleep(0.05)
        seen["t_503"] = time.monotonic()
        while await _ready(http, gw) != 200:
            assert time.monotonic() < deadline, "/readyz never came back"
            await asyncio.sleep(0.05)
        # (The node the harness asks may hear of the promotion a moment after the gateway.)
        await _eventually(lambda: replica in cluster.masters(), "the replica promoted", within=5)
        seen["t_200"] = time.monotonic()

    run = await _through_a_failover(cluster, kill)
    figures = _judge(run, loss_allowed=True)
    assert run["ready_after"] == 200
    # The dead master's address was refused at least once while it had no master.
    assert run["streams"][0].refusals, "no publish to the dead master's address was refused"
    figures["not_ready_s"] = round(seen["t_200"] - seen["t_503"], 2)
    print(f"\nmaster SIGKILL: {figures}")


async def test_nothing_is_lost_in_a_manual_failover(cluster: RedisCluster) -> None:
    """``CLUSTER FAILOVER`` on a replica (the master stops writes until its replica has caught
    up, then they swap): nothing is lost at all and delivery continues."""

    async def manual(victim: int, replica: int, http: httpx.AsyncClient, gw: Gateway) -> None:
        out = await asyncio.to_thread(
            subprocess.run,
            [cluster.cli, "-p", str(replica), "CLUSTER", "FAILOVER"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert out.stdout.strip() == "OK", out
        await _eventually(lambda: replica in cluster.masters(), "the replica taking over")

    run = await _through_a_failover(cluster, manual)
    figures = _judge(run, loss_allowed=False)
    assert run["ready_after"] == 200
    print(f"\nmanual CLUSTER FAILOVER: {figures}")
