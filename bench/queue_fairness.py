"""Queue fairness: how the competing consumers of one move-mode group share a batch of jobs.

    .venv/bin/python bench/queue_fairness.py            # all 18 runs, 1000 jobs each; bench/out/
    .venv/bin/python bench/queue_fairness.py --quick    # fewer consumers, 200 jobs
    scripts/bench --only fairness                       # the same, through the bench's front door
    .venv/bin/python bench/queue_fairness.py --wsq '/tmp/old/.venv/bin/python -m wsq' \\
        --label old --out /tmp/fair-old                 # another checkout's gateway

For each run it starts fresh ``wsq serve`` processes on free ports of 127.0.0.1 (development
mode: one ``WSQ_DEV_SECRET`` for all, a token from ``wsq token``, as ``bench/run.py`` does), on
the embedded memory broker (1 gateway) or on one ``redis-server`` of its own (free port,
``--save '' --appendonly no``, shared by every Redis run) with 1 or 2 gateways. Then:

1. N consumers (each its own WebSocket) attach a move-mode receiver, group ``workers``, on a
   fresh address with credit C; consumer i is on gateway i mod the number of gateways. Each
   keeps its window: it grants one more credit with every delivery it settles.
2. Once every consumer's attach is answered (and 0.2 s more), a publisher on the first gateway
   sends all J jobs in ONE WebSocket message (as many sender links as the server's sender
   credit needs, 1024 each by default, 256 before issue 18's publisher window; the gateway
   stores them in writes of at most 256 either way); the clock starts when it is sent.
3. Each consumer works on its deliveries one at a time: ``asyncio.sleep(work)`` (5 ms), then
   ``accepted`` (and one credit), in one message.
4. The run ends when every job has been accepted once.

Per run: jobs per consumer (each, min, max, how many got none), the time from the publish to the
last ``accepted``, and the ideal J x work / N (every consumer busy all the time, no overhead).
Not a test: nothing here is asserted, the figures are for reading. The bench speaks only wsq.v1
over WebSocket (it imports nothing of ``wsq``), so it measures whatever gateway ``--wsq`` runs,
old queue code or new, unchanged.

Writes ``queue_fairness.json`` (every run, every consumer) and ``queue_fairness.md`` (the table)
into ``--out``: ``bench/out/`` (git-ignored) unless it names another folder.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import secrets
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets
from run import (
    DEFAULT_OUT,
    REFERENCE,
    ROOT,
    VENV_BIN,
    Ctx,
    _shown,
    _wait_healthz,
    _wsq_env,
    _wsq_token,
    free_port,
)

#: broker and number of gateway processes of each setup
SETUPS: dict[str, tuple[str, int]] = {
    "memory-1": ("memory", 1),
    "redis-1": ("redis", 1),
    "redis-2": ("redis", 2),
}
SIZES: dict[str, dict[str, Any]] = {
    "full": dict(
        setups="memory-1,redis-1,redis-2", consumers="2,4,8", credits="10,1000", jobs=1000
    ),
    "quick": dict(setups="memory-1,redis-1,redis-2", consumers="2,4", credits="10,1000", jobs=200),
    "tiny": dict(setups="memory-1,redis-2", consumers="2", credits="10", jobs=20),
}
GROUP = "workers"


@dataclass
class Consumer:
    index: int
    gateway: int
    conn: Conn
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    jobs: int = 0  # accepted
    deliveries: int = 0
    redelivered: int = 0  # deliveries with props.redelivered >= 1
    first_s: float | None = None
    last_s: float | None = None
    problems: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Run:
    jobs: int
    work_s: float
    t0: float = 0.0
    accepted: set[int] = field(default_factory=set)
    duplicates: int = 0  # a job accepted a second time (by any consumer)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    published_s: float | None = None  # when the publisher had every job's disposition

    def now(self) -> float:
        return time.perf_counter() - self.t0


def _frames(text: str | bytes) -> list[dict[str, Any]]:
    value = json.loads(text)
    return value if isinstance(value, list) else [value]


class Conn:
    """A wsq.v1 client socket: frames of a batch kept until asked for."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.inbox: list[dict[str, Any]] = []

    async def send(self, frames: Any) -> None:
        await self.ws.send(json.dumps(frames))

    async def frames(self) -> list[dict[str, Any]]:
        """What came and was not asked for yet, else the next message's frames."""
        if self.inbox:
            frames, self.inbox = self.inbox, []
            return frames
        return _frames(await self.ws.recv())

    async def expect(self, op: str, handle: int) -> dict[str, Any]:
        """The frame ``op`` on ``handle`` (within 10 s), the frames after it kept; an error
        frame before it fails."""
        async with asyncio.timeout(10):
            while True:
                frames = await self.frames()
                for i, frame in enumerate(frames):
                    if frame.get("op") == op and frame.get("handle", handle) == handle:
                        self.inbox = frames[i + 1 :] + self.inbox
                        return frame
                    if frame.get("op") in ("detach", "end", "close") or frame.get("error"):
                        raise RuntimeError(f"gateway answered {frame}")

    async def close(self) -> None:
        await self.ws.close()


async def _connect(url: str, token: str) -> Conn:
    ws = await websockets.connect(url, subprotocols=["wsq.v1"], max_size=None)
    conn = Conn(ws)
    await conn.send([{"op": "open", "token": token}, {"op": "begin", "ch": 1}])
    await conn.expect("begin", 0)
    return conn


async def _heartbeat(conn: Conn) -> None:
    """``[]`` every 10 s: the gateway closes a socket silent for 30 s (an idle consumer is)."""
    while True:
        await asyncio.sleep(10)
        await conn.send([])


async def _read(c: Consumer, run: Run) -> None:
    while True:
        for frame in await c.conn.frames():
            op = frame.get("op")
            if op == "transfer":
                c.deliveries += 1
                if (frame.get("props") or {}).get("redelivered"):
                    c.redelivered += 1
                if c.first_s is None:
                    c.first_s = run.now()
                c.queue.put_nowait(frame)
            elif op in ("detach", "end", "close") or frame.get("error"):
                c.problems.append(frame)


async def _work(c: Consumer, run: Run) -> None:
    """One delivery at a time: the work, then ``accepted`` and one more credit."""
    while True:
        frame = await c.queue.get()
        await asyncio.sleep(run.work_s)
        await c.conn.send(
            [
                {"op": "disposition", "ch": 1, "first": frame["delivery"], "outcome": "accepted"},
                {"op": "flow", "ch": 1, "handle": 0, "credit": 1},
            ]
        )
        c.jobs += 1
        c.last_s = run.now()
        job = frame["body"]["job"]
        if job in run.accepted:
            run.duplicates += 1
        run.accepted.add(job)
        if len(run.accepted) == run.jobs:
            run.done.set()


async def _publish(conn: Conn, address: str, run: Run) -> None:
    """All jobs in one WebSocket message, over as many sender links as the credit needs; then
    wait for their dispositions."""
    credits: list[int] = []
    while sum(credits) < run.jobs:
        handle = len(credits)
        await conn.send(
            {"op": "attach", "ch": 1, "handle": handle, "role": "sender", "address": address}
        )
        await conn.expect("attach", handle)
        credits.append((await conn.expect("flow", handle))["credit"])
    frames, job = [], 0
    for handle, credit in enumerate(credits):
        for _ in range(min(credit, run.jobs - job)):
            frames.append(
                {"op": "transfer", "ch": 1, "handle": handle, "delivery": job, "body": {"job": job}}
            )
            job += 1
    run.t0 = time.perf_counter()
    await conn.send(frames)
    confirmed = 0
    while confirmed < run.jobs:
        for frame in await conn.frames():
            if frame.get("op") == "disposition":
                if frame.get("outcome") != "accepted":
                    raise RuntimeError(f"publish refused: {frame}")
                confirmed += frame["last"] - frame["first"] + 1 if "last" in frame else 1
    run.published_s = run.now()


async def run_once(
    urls: list[str],
    token: str,
    consumers: int,
    credit: int,
    jobs: int,
    work_s: float,
    limit_s: float,
) -> dict[str, Any]:
    address = f"bench.fair.{secrets.token_hex(4)}"
    run = Run(jobs, work_s)
    cs: list[Consumer] = []
    tasks: list[asyncio.Task[None]] = []
    publisher = None
    try:
        for i in range(consumers):
            gateway = i % len(urls)
            conn = await _connect(urls[gateway], token)
            cs.append(Consumer(i, gateway, conn))
            attach = {
                "op": "attach",
                "ch": 1,
                "handle": 0,
                "role": "receiver",
                "address": address,
                "mode": "move",
                "group": GROUP,
                "credit": credit,
            }
            await conn.send(attach)
            await conn.expect("attach", 0)
        publisher = await _connect(urls[0], token)
        for c in cs:
            tasks += [
                asyncio.create_task(_read(c, run)),
                asyncio.create_task(_work(c, run)),
                asyncio.create_task(_heartbeat(c.conn)),
            ]
        await asyncio.sleep(0.2)
        pub = asyncio.create_task(_publish(publisher, address, run))
        tasks.append(pub)
        # a publish that fails ends the run at once (``await pub`` raises it)
        pub.add_done_callback(lambda t: t.cancelled() or t.exception() is None or run.done.set())
        error = None
        try:
            async with asyncio.timeout(limit_s):
                await run.done.wait()
                await pub
        except TimeoutError:
            error = f"not finished after {limit_s} s: {len(run.accepted)} of {jobs} jobs accepted"
        finish = max((c.last_s for c in cs if c.last_s is not None), default=None)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(
            *(c.conn.close() for c in cs),
            *([publisher.close()] if publisher else []),
            return_exceptions=True,
        )
    per = [c.jobs for c in cs]
    return {
        "jobs": jobs,
        "accepted": len(run.accepted),
        "duplicates": run.duplicates,
        "finish_s": finish if error is None else None,
        "ideal_s": jobs * work_s / consumers,
        "published_s": run.published_s,
        "per_consumer": per,
        "min": min(per),
        "max": max(per),
        "idle": sum(1 for n in per if n == 0),
        "consumers_detail": [
            {
                "index": c.index,
                "gateway": c.gateway,
                "jobs": c.jobs,
                "deliveries": c.deliveries,
                "redelivered": c.redelivered,
                "first_s": c.first_s,
                "last_s": c.last_s,
                "problems": c.problems,
            }
            for c in cs
        ],
        "error": error,
    }


def _start_gateways(
    ctx: Ctx, wsq: list[str], env: dict[str, str], broker_url: str, n: int, name: str
) -> list[str]:
    """``n`` gateways on ``broker_url``: their WebSocket URLs. A free port can be taken by another
    socket before the gateway binds it (an outgoing connection's local port, on a busy machine):
    then the gateway is started again on another port, twice at most."""
    urls = []
    for k in range(n):
        for attempt in range(3):
            port = free_port()
            cmd = [*wsq, "serve", "--host", "127.0.0.1", "--port", str(port)]
            log = f"{name}-gw{k}-{attempt}"
            try:
                ctx.spawn(
                    log,
                    [*cmd, "--broker", broker_url, "--log-level", "warning"],
                    port,
                    env,
                    report=False,
                )
            except RuntimeError:
                text = (ctx.tmp / f"{log}.log").read_text(errors="replace")
                if attempt < 2 and "address already in use" in text.lower():
                    continue
                raise RuntimeError(f"gateway {k} did not start: {text[-1000:]}") from None
            break
        _wait_healthz(port)
        urls.append(f"ws://127.0.0.1:{port}/ws")
    return urls


def _each(r: dict[str, Any], gateways: int) -> str:
    """Jobs of each consumer, grouped by gateway: ``250 250 · 250 250``."""
    groups = [
        " ".join(str(d["jobs"]) for d in r["consumers_detail"] if d["gateway"] == g)
        for g in range(gateways)
    ]
    return " · ".join(groups)


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| broker | gateways | consumers | credit | jobs per consumer | min / max | idle | "
        "finish s | ideal s | finish / ideal |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.get("finish_s") is None:
            finish, ratio = f"n/a ({r.get('error')})", "-"
        else:
            finish, ratio = f"{r['finish_s']:.2f}", f"{r['finish_s'] / r['ideal_s']:.2f}x"
        lines.append(
            f"| {r['broker']} | {r['gateways']} | {r['consumers']} | {r['credit']} | "
            f"{_each(r, r['gateways'])} | {r['min']} / {r['max']} | {r['idle']} | {finish} | "
            f"{r['ideal_s']:.2f} | {ratio} |"
        )
    return "\n".join(lines)


def _describe(wsq: list[str], env: dict[str, str]) -> str:
    """The commit of the checkout whose ``wsq`` runs (the bench's own unless --wsq)."""
    where = ROOT
    if wsq != [str(VENV_BIN / "wsq")]:
        with contextlib.suppress(Exception):
            out = subprocess.run(
                [*wsq[:1], "-c", "import wsq, os; print(os.path.dirname(wsq.__file__))"],
                env={**os.environ, **env},
                capture_output=True,
                text=True,
                timeout=30,
            )
            if out.returncode == 0:
                where = Path(out.stdout.strip()).parent
    git = ["git", "-C", str(where)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run([*git, "status", "--porcelain", "wsq"], capture_output=True, text=True)
    commit = head.stdout.strip() or "unknown"
    return f"{where} at {commit}" + (" (wsq/ modified)" if dirty.stdout.strip() else "")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="2 and 4 consumers, 200 jobs")
    mode.add_argument("--tiny", action="store_true", help="a few seconds: for a smoke test")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results folder (bench/out/)")
    p.add_argument("--setups", help=f"comma-separated, of {', '.join(SETUPS)}")
    p.add_argument("--consumers", help="comma-separated numbers of consumers (2,4,8)")
    p.add_argument("--credits", help="comma-separated credit windows (10,1000)")
    p.add_argument("--jobs", type=int, help="jobs per run (1000)")
    p.add_argument("--work-ms", type=float, default=5.0, help="work per job (5 ms)")
    p.add_argument("--repeat", type=int, default=1, help="runs of each configuration (1)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds a run may take (60)")
    p.add_argument(
        "--wsq",
        default=str(VENV_BIN / "wsq"),
        help="the wsq command that serves and mints tokens, e.g. '/tmp/old/.venv/bin/python -m "
        "wsq' (default: this venv's wsq)",
    )
    p.add_argument("--label", default="", help="what code is measured, for the report")
    args = p.parse_args(argv)
    sizes = dict(SIZES["tiny" if args.tiny else "quick" if args.quick else "full"])
    for key in ("setups", "consumers", "credits", "jobs"):
        if getattr(args, key) is not None:
            sizes[key] = getattr(args, key)
    setups = sizes["setups"].split(",")
    unknown = [s for s in setups if s not in SETUPS]
    if unknown:
        p.error(f"unknown setups: {', '.join(unknown)}")
    consumers = [int(n) for n in str(sizes["consumers"]).split(",")]
    credits = [int(n) for n in str(sizes["credits"]).split(",")]
    jobs = int(sizes["jobs"])
    work_s = args.work_ms / 1000
    wsq = shlex.split(args.wsq)
    env = _wsq_env()
    # `python -m wsq` puts the current directory first on sys.path: run from a checkout, another
    # venv's python would import THAT checkout's wsq/. Not with PYTHONSAFEPATH (Python 3.11+).
    env["PYTHONSAFEPATH"] = "1"
    code = _describe(wsq, env)
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()

    rows: list[dict[str, Any]] = []
    started = time.monotonic()
    load = os.getloadavg()
    with (
        tempfile.TemporaryDirectory(prefix="wsq-fairness-") as tmpdir,
        contextlib.ExitStack() as stack,
    ):
        tmp = Path(tmpdir)
        ctx = Ctx(tmp, False, stack)
        token = _wsq_token(env, wsq)
        n = 0
        for setup in setups:
            broker, gateways = SETUPS[setup]
            url = ctx.redis() if broker == "redis" else "memory://"
            for count in consumers:
                for credit in credits:
                    for _ in range(args.repeat):
                        n += 1
                        what = f"{setup}, {count} consumers, credit {credit}"
                        print(f"fairness: {what} ...", file=sys.stderr, flush=True)
                        with contextlib.ExitStack() as run_stack:
                            try:
                                urls = _start_gateways(
                                    Ctx(tmp, False, run_stack), wsq, env, url, gateways, f"r{n}"
                                )
                                r = asyncio.run(
                                    run_once(urls, token, count, credit, jobs, work_s, args.timeout)
                                )
                            except Exception as e:
                                r = {"error": f"{type(e).__name__}: {e}", "per_consumer": []}
                                for log in sorted(tmp.glob(f"r{n}-gw*.log")):
                                    sys.stderr.write(log.read_text(errors="replace")[-2000:])
                        r.update(broker=broker, gateways=gateways, consumers=count, credit=credit)
                        rows.append(r)
                        print(
                            f"fairness: {what}: {r.get('per_consumer')} in "
                            f"{r.get('finish_s') or float('nan'):.2f} s {r.get('error') or ''}",
                            file=sys.stderr,
                            flush=True,
                        )
    failed = [r for r in rows if "ideal_s" not in r]
    doc = {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "code": args.label or code,
        "checkout": code,
        "wsq": wsq,
        "jobs": jobs,
        "work_ms": args.work_ms,
        "group": GROUP,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "loadavg_at_start": load,
        },
        "seconds": time.monotonic() - started,
        "runs": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "queue_fairness.json").write_text(json.dumps(doc, indent=2) + "\n")
    md = (
        f"Queue fairness, {doc['code']}, {doc['when']}: {jobs} jobs of {args.work_ms:g} ms in one "
        f"batch, move-mode consumers of one group, each keeping its credit window "
        f"(load average {load[0]:.2f} at the start; {doc['seconds']:.0f} s)\n\n"
        f"{table([r for r in rows if 'ideal_s' in r])}\n"
    )
    if failed:
        md += "\nFailed runs:\n\n" + "".join(
            f"- {r['broker']}, {r['gateways']} gateway(s), {r['consumers']} consumers, credit "
            f"{r['credit']}: {r['error']}\n"
            for r in failed
        )
    (args.out / "queue_fairness.md").write_text(md)
    print(md)
    print(f"results: {_shown(args.out / 'queue_fairness.json')}")
    if not args.out.resolve().is_relative_to(REFERENCE.resolve()):
        print(f"  (the committed figures in {_shown(REFERENCE)}/ are untouched)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
