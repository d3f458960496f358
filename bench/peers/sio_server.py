"""What a Python user would pick instead of wsq: python-socketio on uvicorn (ASGI).

Subscribers join a room with an acknowledged ``sub`` event; a publisher's ``pub`` event
(address, body) is re-emitted to that room with ``AsyncServer.emit``, one Socket.IO packet per
message and subscriber (python-socketio encodes it once for the room). With ``--redis URL`` the
server uses ``AsyncRedisManager``: every emit goes through Redis PUBLISH and each worker process
delivers it to its own members of the room, which is how python-socketio runs on several
processes.

Usage: python sio_server.py PORT [--redis URL] [--workers N]
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import socketio
import uvicorn

_redis = os.environ.get("SIO_BENCH_REDIS")
sio = socketio.AsyncServer(
    async_mode="asgi",
    client_manager=socketio.AsyncRedisManager(_redis) if _redis else None,
    cors_allowed_origins=None,
)
app = socketio.ASGIApp(sio)


@sio.on("sub")  # type: ignore[untyped-decorator,unused-ignore]
async def sub(sid: str, address: str) -> str:
    await sio.enter_room(sid, address)
    return "ok"


@sio.on("pub")  # type: ignore[untyped-decorator,unused-ignore]
async def pub(sid: str, address: str, body: Any) -> None:
    await sio.emit("m", body, room=address)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("--redis")
    p.add_argument("--workers", type=int, default=1)
    args = p.parse_args()
    if args.redis:
        # The workers import this module anew: they read the URL from the environment.
        os.environ["SIO_BENCH_REDIS"] = args.redis
    uvicorn.run(
        "sio_server:app",
        app_dir=os.path.dirname(os.path.abspath(__file__)),
        host="127.0.0.1",
        port=args.port,
        workers=args.workers,
        log_level="warning",
        # uvicorn's defaults otherwise (uvloop and the websockets implementation when installed),
        # as a python-socketio user would run it; no WebSocket pings from uvicorn, Engine.IO has
        # its own.
        ws_ping_interval=None,
        ws_ping_timeout=None,
    )


if __name__ == "__main__":
    main()
