"""Open N subscribed wsq connections, print 'ready', hold until stdin closes."""

import asyncio
import json
import sys
import time

from websockets.asyncio.client import connect


async def one(url, token):
    ws = await connect(url, subprotocols=["wsq.v1"], max_size=None, compression=None)
    await ws.send(
        json.dumps(
            [
                {"op": "open", "token": token},
                {"op": "begin", "ch": 1},
                {
                    "op": "attach",
                    "ch": 1,
                    "handle": 0,
                    "role": "receiver",
                    "address": "bench.idle",
                    "credit": 100,
                },
            ]
        )
    )
    got = 0
    while got < 3:
        m = json.loads(await ws.recv())
        got += len(m) if isinstance(m, list) else 1
    return ws


async def main():
    url, token, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    t0 = time.monotonic()
    socks = []
    for i in range(0, n, 50):
        socks += await asyncio.gather(*(one(url, token) for _ in range(min(50, n - i))))
    print(f"ready {n / (time.monotonic() - t0):.0f}/s", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for s in socks:
        await s.close()


asyncio.run(main())
