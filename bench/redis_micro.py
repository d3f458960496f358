"""The Redis broker's per-message cost in the gateway process: publish and live read.

    .venv/bin/python bench/redis_micro.py [BATCHES] [memory|other]
    WSQ_SRC=/tmp/old .venv/bin/python bench/redis_micro.py   # another checkout's wsq/, for A/B

Starts a throwaway ``redis-server`` on a free port, tails one address with a callback that
encodes every message's wire tail (what the hub does once per message), and publishes BATCHES
batches of 100 messages of ~100 bytes, each batch awaited and then its delivery awaited.
Reports the process CPU (this process only: not Redis's) per message, best of 5 rounds: the
part of a Redis fan-out that does not depend on the number of subscribers. ``memory``: the same
with the memory broker, for comparison; ``other``: published by a second broker (another
gateway process), so this one reads every message back as a notice and an XRANGE.
"""

import asyncio
import json
import os
import sys
import time

if os.environ.get("WSQ_SRC"):
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
    sys.path.insert(0, os.environ["WSQ_SRC"])

from _micro import run_on

import wsq
from wsq.broker.memory import MemoryBroker
from wsq.broker.redis import RedisBroker
from wsq.core.messages import NewMessage
from wsq.core.policy import StoragePolicies
from wsq.core.wire import copy_tail

BATCHES = int(sys.argv[1]) if len(sys.argv) > 1 else 200


async def main(url: str) -> None:
    broker = (
        MemoryBroker(StoragePolicies())
        if url == "memory://"
        else RedisBroker(url, StoragePolicies())
    )
    await broker.start()
    publisher = broker
    if sys.argv[2:] == ["other"]:
        publisher = RedisBroker(url, StoragePolicies())
        await publisher.start()
    got = 0
    arrived = asyncio.Event()
    want = 0

    def on_messages(messages: list) -> None:  # type: ignore[type-arg]
        nonlocal got
        for m in messages:
            copy_tail(m)
        got += len(messages)
        if got >= want:
            arrived.set()

    handle = broker.tail("t", "news", await broker.last_position("t", "news"), on_messages)
    await asyncio.sleep(0.3)  # the subscription takes hold
    body = json.dumps({"b@": "x" * 80})
    msgs = [NewMessage(body=body, publisher="bench", subject="news.eu") for _ in range(100)]
    best = None
    for _ in range(5):
        t0 = time.process_time()
        for _ in range(BATCHES):
            want = got + len(msgs)
            arrived.clear()
            await publisher.publish("t", "news", msgs)
            await asyncio.wait_for(arrived.wait(), 10)
        per = (time.process_time() - t0) / (BATCHES * 100) * 1e6
        best = per if best is None else min(best, per)
    print(f"{wsq.__file__}: {best:.2f} us/message publish + live read (best of 5)")
    handle.close()
    await broker.close()
    if publisher is not broker:
        await publisher.close()


if __name__ == "__main__":
    run_on("memory" if sys.argv[2:] == ["memory"] else "redis", main)
