"""The Python floor: the ``websockets`` library's bare ``broadcast()``, one frame per message.

Every message a publisher sends on ``/pub`` goes to every socket connected on ``/sub``. A
subscriber is told ``ok`` once it is registered, so that the bench never publishes before it
counts. Runs on uvloop when it is installed, as wsq does.

With ``--deflate`` it accepts permessage-deflate as ``websockets`` does by default
(``compression="deflate"``: 4 KiB windows both ways, context kept, every message compressed);
without it, it declines the offer (``compression=None``).

Usage: python ws_broadcast.py PORT [--deflate]
"""

from __future__ import annotations

import asyncio
import sys

from websockets.asyncio.server import ServerConnection, broadcast, serve

SUBSCRIBERS: set[ServerConnection] = set()


async def handler(ws: ServerConnection) -> None:
    if ws.request is not None and ws.request.path == "/sub":
        SUBSCRIBERS.add(ws)
        try:
            await ws.send("ok")
            await ws.wait_closed()
        finally:
            SUBSCRIBERS.discard(ws)
        return
    async for message in ws:
        broadcast(SUBSCRIBERS, message)


async def main(port: int, deflate: bool) -> None:
    compression = "deflate" if deflate else None
    async with serve(handler, "127.0.0.1", port, compression=compression, max_size=None) as server:
        print(f"websockets broadcast listening on {port}", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        run = asyncio.run
    run(main(int(sys.argv[1]), "--deflate" in sys.argv[2:]))
