"""Copy receivers that grant credit one message at a time: CPU and wall time per delivery.

    .venv/bin/python bench/credit_micro.py [SUBS] [MESSAGES] [memory|redis]
    WSQ_SRC=/tmp/old .venv/bin/python bench/credit_micro.py   # another checkout's wsq/, for A/B

SUBS receivers on one address (hub + protocol, no sockets), each with a credit window of 1: it
grants one more credit (a ``flow`` frame) as soon as a delivery reaches it, as a client that
processes one message at a time does. MESSAGES are published in batches of 100 while they read.
Such a link drops out of the live set on every message and catches up on every flow; before
the hub kept recent messages per topic, every flow was one broker read (a Redis round trip).
Prints process CPU and wall time per delivery, and the broker reads the catch-ups made.
"""

import asyncio
import json
import os
import sys
import time

if os.environ.get("WSQ_SRC"):
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
    sys.path.insert(0, os.environ["WSQ_SRC"])

from _micro import attach_receiver, run_on

import wsq
from wsq.broker.memory import MemoryBroker
from wsq.broker.redis import RedisBroker
from wsq.config import BrokerConfig, Settings
from wsq.core.messages import NewMessage
from wsq.hub import Hub
from wsq.protocol.connection import Limits, ServerConnection
from wsq.protocol.events import CreditGranted

SUBS = int(sys.argv[1]) if len(sys.argv) > 1 else 20
MESSAGES = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
KIND = sys.argv[3] if len(sys.argv) > 3 else "memory"


async def main(url: str) -> None:
    settings = Settings(broker=BrokerConfig(url=url))
    broker = (
        MemoryBroker(settings.storage_policies())
        if url == "memory://"
        else RedisBroker(settings.broker.url, settings.storage_policies())
    )
    await broker.start()
    reads = 0
    real_read = broker.read

    async def counting_read(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal reads
        reads += 1
        return await real_read(*args, **kwargs)

    broker.read = counting_read  # type: ignore[method-assign]
    hub = Hub(broker)
    conns = []
    got = 0
    done = asyncio.Event()
    flow = json.dumps({"op": "flow", "ch": 1, "handle": 0, "credit": 1})

    def reply(c: ServerConnection) -> None:
        nonlocal got
        n = 0
        while (text := c.next_message(65536)) is not None:
            n += text.count('"op":"transfer"')
        if not n:
            return
        got += n
        if got >= SUBS * MESSAGES:
            done.set()
            return
        c.receive_text(flow)
        while (ev := c.next_event()) is not None:
            if isinstance(ev, CreditGranted):
                hub.credit(ev.link)

    for _ in range(SUBS):
        box: list[ServerConnection] = []
        # The client reads its transfer and grants one more credit, soon after.
        c = ServerConnection(
            Limits(), lambda box=box: asyncio.get_running_loop().call_soon(reply, box[0])
        )
        box.append(c)
        await attach_receiver(hub, c, "news", credit=1)
        conns.append(c)

    body = json.dumps({"b@": "x" * 80})
    batch = [NewMessage(body=body, publisher="bench") for _ in range(100)]
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(MESSAGES // 100):
        await broker.publish("t", "news", batch)
        await asyncio.sleep(0)
    await asyncio.wait_for(done.wait(), 120)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    n = SUBS * MESSAGES
    print(
        f"{wsq.__file__} {KIND}: {cpu / n * 1e6:.1f} us CPU, {wall / n * 1e6:.1f} us wall per "
        f"delivery; {reads} broker reads for {n} deliveries (subs={SUBS}, credit window 1)"
    )
    await hub.close()
    await broker.close()


if __name__ == "__main__":
    run_on(KIND, main)
