"""RSS per idle subscribed connection of an in-process gateway (uvloop), quicker than the
bench's idle scenario and with a look inside:

    .venv/bin/python bench/idle_rss.py 2000
    NOWARM=1 WSPROTO=wsq.ws_protocol:WebSocketProtocol .venv/bin/python bench/idle_rss.py 2000
    TYPES=1 ...   # objects per connection by type, and who holds them
    TRACE=1 ...   # tracemalloc: bytes per connection by file and line (slow)

A client process (bench/idle_rss_client.py) opens N connections in steps of 50 (open, begin,
attach a receiver); the server's RSS is read before the first and 1 s after the last.
NOWARM=1 skips a first round of 20 connections (the bench does not warm up either). WSPROTO
picks uvicorn's ws protocol (default: uvicorn's own websockets-sansio).
"""

import asyncio
import gc
import os
import subprocess
import sys
import tracemalloc

if os.environ.get("WSQ_SRC"):
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
    sys.path.insert(0, os.environ["WSQ_SRC"])
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from wsq_harness import running_gateway  # the tests' in-process gateway: uvicorn, a free port

from wsq.cli import _mint
from wsq.config import load_settings

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
TRACE = os.environ.get("TRACE")


def rss_kib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024


async def main():
    secret = "bench-secret-" + "x" * 40
    settings = load_settings(environ={"WSQ_DEV_SECRET": secret})
    async with running_gateway(settings, ws=os.environ.get("WSPROTO", "websockets-sansio")) as gw:
        await measure(settings, gw.server.config.app, gw.port)


async def measure(settings, app, port):
    tenant = settings.tenants["dev"]
    token = _mint(tenant, "bench", publish=["bench.>"], subscribe=["bench.>"], ttl_s=7200, kid=None)
    # warm-up: a few connections so lazy imports/caches are loaded
    for n in (20, N) if not os.environ.get("NOWARM") else (N,):
        if n == N:
            gc.collect()
            await asyncio.sleep(0.5)
            gc.collect()
            before = rss_kib()
            if TRACE:
                tracemalloc.start(12)
                snap0 = tracemalloc.take_snapshot()
            if os.environ.get("TYPES"):
                import collections

                types0 = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(Path(__file__).with_name("idle_rss_client.py")),
            f"ws://127.0.0.1:{port}/ws",
            token,
            str(n),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        line = await proc.stdout.readline()
        await asyncio.sleep(1.0)
        gc.collect()
        if n == N:
            after = rss_kib()
            print(
                f"{(after - before) / N:.1f} KiB/conn (rss), {line.decode().strip()}, peers={len(app.state.gateway.peers)}"
            )
            if os.environ.get("TYPES"):
                types1 = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
                for k, v in (types1 - types0).most_common(40):
                    print(f"{v / N:6.2f} {k}")
                import collections as C

                for tname in ("Event", "deque", "generator", "coroutine", "method", "list", "dict"):
                    objs = [o for o in gc.get_objects() if type(o).__qualname__ == tname]
                    where = C.Counter()
                    for o in objs[-N:]:
                        if tname == "coroutine":
                            where[o.__qualname__] += 1
                            continue
                        if tname == "generator":
                            where[o.__qualname__] += 1
                            continue
                        if tname == "method":
                            where[type(o.__self__).__name__ + "." + o.__func__.__name__] += 1
                            continue
                        for r in gc.get_referrers(o):
                            if isinstance(r, dict):
                                for rr in gc.get_referrers(r):
                                    if hasattr(rr, "__dict__") and rr.__dict__ is r:
                                        k = [k for k, v in r.items() if v is o]
                                        where[type(rr).__name__ + "." + (k[0] if k else "?")] += 1
                            elif not isinstance(r, (list, C.Counter)) and type(r).__name__ not in (
                                "frame",
                            ):
                                where[type(r).__name__] += 1
                    print(tname, [(k, round(v / N, 2)) for k, v in where.most_common(12)])
            if TRACE:
                snap1 = tracemalloc.take_snapshot()
                stats = snap1.compare_to(snap0, "lineno")
                total = sum(s.size_diff for s in stats)
                print(f"traced python: {total / N / 1024:.1f} KiB/conn")
                byfile = {}
                for s in stats:
                    k = (
                        s.traceback[0]
                        .filename.split("site-packages/")[-1]
                        .replace("/root/.pyenv/versions/3.11.7/lib/python3.11/", "stdlib:")
                    )
                    byfile[k] = byfile.get(k, 0) + s.size_diff
                for k, v in sorted(byfile.items(), key=lambda kv: -kv[1])[:25]:
                    print(f"{v / N:8.0f} B/conn  {k}")
                for s in stats[: int(os.environ.get("TOP", "40"))]:
                    print(
                        f"{s.size_diff / N:8.0f} B/conn {s.count_diff / N:6.1f} obj  {s.traceback[0].filename.split('site-packages/')[-1]}:{s.traceback[0].lineno}"
                    )
        proc.stdin.close()
        await proc.wait()
        await asyncio.sleep(0.5)


uvloop.run(main())
