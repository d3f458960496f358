"""What the micro-benchmarks share: running their ``main(broker_url)`` on the memory broker or
on a redis-server of their own (free port, no persistence), with uvloop when installed."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from typing import Any


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
