"""What timing the broker's commands costs per publish (wsq.timed_broker): CPU ns.

    .venv/bin/python bench/timed_broker_micro.py [PUBLISHES]

PUBLISHES single-message publishes to the memory broker, bare and through ``TimedBroker``
observing into prometheus-client's histogram (as ``/metrics`` does in one process); best of 5
rounds of process CPU time each. The difference is the timing's overhead per publish.
"""

import asyncio
import sys
import time

from wsq.broker.memory import MemoryBroker
from wsq.core.messages import NewMessage
from wsq.core.policy import StoragePolicies
from wsq.metrics import Metrics
from wsq.timed_broker import TimedBroker

N = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000


async def rounds(broker, label):
    await broker.start()
    msg = [NewMessage(body='{"v":1}', publisher="p")]
    best = float("inf")
    for r in range(5):
        address = f"a{label}{r}"
        t0 = time.process_time_ns()
        for _ in range(N):
            await broker.publish("t", address, msg)
        best = min(best, (time.process_time_ns() - t0) / N)
    await broker.close()
    return best


async def main():
    bare = await rounds(MemoryBroker(StoragePolicies()), "bare")
    metrics = Metrics(())
    timed = await rounds(TimedBroker(MemoryBroker(StoragePolicies()), metrics.observers()), "t")
    print(f"publish: bare {bare:.0f} ns, timed {timed:.0f} ns, overhead {timed - bare:.0f} ns")


asyncio.run(main())
