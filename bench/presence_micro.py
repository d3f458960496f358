"""Presence across two processes on one Redis: what an idle watching node costs Redis, and how
soon a join on one node reaches a watcher on the other (issue 16).

    .venv/bin/python bench/presence_micro.py [ROOMS] [WINDOW_S]
    WSQ_SRC=/tmp/old .venv/bin/python bench/presence_micro.py   # another checkout's wsq/, A/B

Starts a throwaway ``redis-server`` on a free port and two brokers (two gateway processes). Node
B has one present link in each of ROOMS rooms (default 1000), node A one member in each (so a
re-read checks A's lease too). Nothing changes for WINDOW_S seconds (default 20): the commands
Redis ran meanwhile (``INFO commandstats``, less the INFO calls) per second are the idle cost of
watching (and this process's CPU meanwhile), with the default lease (30 s: a slow re-read every 10 s). Then 50 times a member joins
on A and leaves again: the time until B's link is sent the join (mean, median, max).
"""

import asyncio
import os
import statistics
import sys
import time
from typing import Any

if os.environ.get("WSQ_SRC"):
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
    sys.path.insert(0, os.environ["WSQ_SRC"])

from _micro import run_on

import wsq
from wsq.broker.redis import RedisBroker
from wsq.core.policy import StoragePolicies
from wsq.core.presence import Member
from wsq.hub.presence import PresenceHub
from wsq.protocol.state import Link, Role, Session

ROOMS = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
WINDOW_S = float(sys.argv[2]) if len(sys.argv) > 2 else 20.0
JOINS = 50


async def commands(broker: RedisBroker) -> int:
    stats: dict[str, Any] = await broker._clients.redis.info("commandstats")
    return sum(v["calls"] for k, v in stats.items() if k != "cmdstat_info")


async def main(url: str) -> None:
    a, b = RedisBroker(url, StoragePolicies()), RedisBroker(url, StoragePolicies())
    await a.start()
    await b.start()
    hub_a, hub_b = PresenceHub(a.presence_store), PresenceHub(b.presence_store)
    session = Session(1)
    joined: dict[str, float] = {}
    seen = asyncio.Event()

    def send(link: Link, body: dict[str, Any]) -> None:
        if "join" in body and body["join"]["id"] in joined:
            joined[body["join"]["id"]] = time.monotonic() - joined[body["join"]["id"]]
            seen.set()

    for n in range(ROOMS):
        member = Member(id=f"b{n}", sub="b", client="b", node="b")
        await hub_b.join("t", Link(session, n, Role.RECEIVER, f"room.{n}"), member, 100, send)
        other = Member(id=f"a{n}", sub="a", client="a", node="a")
        assert await a.presence_store.join("t", f"room.{n}", other, 100)
    await asyncio.sleep(3)  # every watcher settled (subscribed, or polling)
    before, t0, cpu = await commands(a), time.monotonic(), time.process_time()
    await asyncio.sleep(WINDOW_S)
    took = time.monotonic() - t0
    busy = (time.process_time() - cpu) / took * 100
    idle = (await commands(a) - before - 1) / took

    lag: list[float] = []
    for n in range(JOINS):
        link = Link(session, ROOMS + n, Role.RECEIVER, "room.0")
        member = Member(id=f"j{n}", sub="j", client="j", node="a")
        seen.clear()
        joined[member.id] = time.monotonic()
        await hub_a.join("t", link, member, 100, send)
        await asyncio.wait_for(seen.wait(), 10)
        lag.append(joined[member.id])
        await hub_a.leave(link)
        await asyncio.sleep(0.05)
    ms = [x * 1000 for x in lag]
    print(
        f"{wsq.__file__}: {ROOMS} rooms watched, idle: {idle:.0f} Redis commands/s, "
        f"{busy:.1f} % of a core in the watching process"
    )
    print(
        f"join seen on the other node: mean {statistics.mean(ms):.1f} ms, "
        f"median {statistics.median(ms):.1f} ms, max {max(ms):.1f} ms ({JOINS} joins)"
    )
    await hub_a.close()
    await hub_b.close()
    await a.close()
    await b.close()


if __name__ == "__main__":
    run_on("redis", main)
