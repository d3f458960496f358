"""In-process fan-out, hub and protocol only (no sockets, no uvicorn): CPU ns per delivery.

    .venv/bin/python bench/hub_micro.py [SUBS] [BATCHES]
    WSQ_SRC=/tmp/old .venv/bin/python bench/hub_micro.py   # another checkout's wsq/, for A/B
    COMPACT=1 .venv/bin/python bench/hub_micro.py          # sockets that chose compact deliveries

SUBS copy receivers on one address, BATCHES publishes of 100 messages of ~100 bytes; each
socket's outbox is drained as the writer would (64 KiB messages), up to the bytes it writes
(``next_output``; ``next_message`` and its encoding where a checkout has no ``next_output``). Best of 5 rounds of
process CPU time. Quieter than the full bench on a shared machine: use it to compare changes
to wsq/hub/ and wsq/protocol/, then confirm with scripts/bench.
"""

import asyncio
import gc
import json
import os
import sys
import time

if os.environ.get("WSQ_SRC"):
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
    sys.path.insert(0, os.environ["WSQ_SRC"])

from _micro import attach_receiver

import wsq
from wsq.broker.memory import MemoryBroker
from wsq.core.messages import NewMessage
from wsq.core.policy import StoragePolicies
from wsq.hub import Hub
from wsq.protocol.connection import Limits, ServerConnection

SUBS = int(sys.argv[1]) if len(sys.argv) > 1 else 200
BATCHES = int(sys.argv[2]) if len(sys.argv) > 2 else 200

GCOFF = os.environ.get("GCOFF")
COMPACT = bool(os.environ.get("COMPACT"))


def drain(conn):
    next_output = getattr(conn, "next_output", None)
    if next_output is not None:
        return lambda: next_output(65536)

    def encoded():
        text = conn.next_message(65536)
        return None if text is None else text.encode()

    return encoded


async def main():
    GCOFF and gc.disable()
    print(wsq.__file__, end=" ")
    broker = MemoryBroker(StoragePolicies())
    await broker.start()
    hub = Hub(broker)
    conns = []
    for _ in range(SUBS):
        c = ServerConnection(Limits())
        await attach_receiver(hub, c, "news", credit=4_000_000_000)
        if COMPACT:
            c.compact = True  # as if the client's open had asked
        conns.append(c)
    # Up to the bytes the writer hands the transport: ``next_output`` where the outbox has it
    # (a shared compact body is not copied), else ``next_message`` and its encoding.
    drains = [drain(c) for c in conns]
    body = json.dumps({"b@": "x" * 80})
    msgs = [NewMessage(body=body, publisher="bench") for _ in range(100)]
    best = None
    for _round in range(5):
        t0 = time.process_time()
        for _ in range(BATCHES):
            await broker.publish("t", "news", msgs)
            for c in drains:
                while c() is not None:
                    pass
        dt = time.process_time() - t0
        per = dt / (BATCHES * 100 * SUBS) * 1e9
        best = per if best is None else min(best, per)
    form = "compact" if COMPACT else "plain"
    print(f"{best:.1f} ns/delivery (best of 5), subs={SUBS}, {form}")
    await hub.close()
    await broker.close()


asyncio.run(main())
