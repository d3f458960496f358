"""What the micro-benchmarks share: running their ``main(broker_url)`` on the memory broker or
on a redis-server of their own (free port, no persistence), with uvloop when installed; and a
receiver attached through the hub on a sans-I/O connection (no sockets).

Import it after the ``WSQ_SRC`` switch of a script: it imports ``wsq``."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from typing import Any

from wsq.hub import Hub, Outlet
from wsq.protocol.connection import ServerConnection


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_on(kind: str, main: Callable[[str], Coroutine[Any, Any, None]]) -> None:
    """``main("memory://")``, or ``main(redis URL)`` against a redis-server started here."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    if kind == "memory":
        asyncio.run(main("memory://"))
        return
    exe = shutil.which("redis-server")
    if exe is None:
        sys.exit("redis-server is not installed")
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        args = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
        proc = subprocess.Popen([*args, "no", "--dir", tmp], stdout=subprocess.DEVNULL)
        try:
            time.sleep(0.3)
            asyncio.run(main(f"redis://127.0.0.1:{port}/0"))
        finally:
            proc.terminate()
            proc.wait(10)


async def attach_receiver(hub: Hub, c: ServerConnection, address: str, credit: int) -> None:
    """Open ``c``, begin session 1 and attach copy receiver 0 on ``address`` with ``credit``
    (tenant ``t``), accepted and activated as the gateway does; its output is drained."""
    o = Outlet(c, 2 * 1024 * 1024)
    c.receive_text(json.dumps({"op": "open", "token": "t"}))
    c.next_event()
    c.accept_open({})
    c.receive_text(json.dumps({"op": "begin", "ch": 1}))
    c.next_event()
    c.receive_text(
        json.dumps(
            {
                "op": "attach",
                "ch": 1,
                "handle": 0,
                "role": "receiver",
                "address": address,
                "credit": credit,
            }
        )
    )
    link = c.next_event().link  # type: ignore[union-attr]
    after, rec = await hub.attach_copy("t", link, o)
    c.accept_attach(link, from_=after, recovered=rec)
    hub.activate(link)
    c.data_to_send()
