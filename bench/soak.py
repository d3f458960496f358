"""The soak: a real ``wsq serve`` holding many connections for a long time beside an abusive
tenant, its memory and CPU sampled throughout (issue 13; docs/security.md, "Soak").

Run it through ``scripts/soak`` (which installs matplotlib for the chart)::

    scripts/soak                                  # 10,000 connections, 10 minutes
    scripts/soak --connections 2000 --minutes 2   # a quick look
    scripts/soak --no-abuse                       # the steady tenant alone, to compare

What runs, each in its own process so that none starves another of the event loop:

- ``wsq serve`` with two tenants: ``steady`` (generous quotas) and ``abuser`` (small ones);
- subscriber processes (one per 5,000 connections, each from its own loopback source address):
  every connection opens, begins, attaches a copy receiver on one of ``--addresses`` addresses
  and keeps heartbeats going; each checks that it gets every message of its address exactly once
  and in order;
- a publisher (this process): ``--rate`` messages per second over a WebSocket sender link,
  round-robin over the addresses, counting what the gateway accepted;
- the abuser: in a loop, every quota and bound at once: sockets past ``max_connections``, links
  past ``max_links``, addresses past ``max_addresses``, consumer groups past ``max_groups``,
  large messages against ``retention_max_bytes``, Idempotency-Key and message_id floods, lookups
  of ids that are not there on a large stream, a subscriber that stops reading, and
  unauthenticated half-open upgrades. It counts what was refused and how.

Every ``--sample`` seconds the gateway's RSS and CPU are read from /proc. At the end: messages
accepted, deliveries expected and received (lost = expected - received, duplicates, disorder),
the abuser's refusals, RSS and CPU over time, written to ``--out`` (default ``bench/out/soak``,
git-ignored) as ``soak.json``, ``soak.md`` and ``soak.png``. Exits 1 when a delivery was lost or
a subscriber's connection dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import websockets

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DEFAULT_OUT = BENCH / "out" / "soak"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PER_PROCESS = 5_000
#: The abuser's quotas (the steady tenant's are the defaults, raised for its connections).
ABUSER = {
    "max_connections": 20,
    "max_links": 200,
    "max_addresses": 500,
    # Addresses idle out within the run: each cycle's fresh ones make room again.
    "idle_expiry_ms": 60_000,
    "max_groups": 4,
    "retention_max_bytes": 4 * 1024 * 1024,
    "publish_rate": 500,
}


def _token(tenant: str, secret: str, sub: str) -> str:
    from wsq.auth import mint_token
    from wsq.config import KeyConfig, TenantConfig

    cfg = TenantConfig(name=tenant, issuer=tenant, keys=(KeyConfig(alg="HS256", secret=secret),))
    return mint_token(cfg, sub, publish=[">"], subscribe=[">"], ttl_s=24 * 3600)


# -- the gateway -----------------------------------------------------------------------------


def write_config(path: Path, secrets_: dict[str, str], connections: int) -> None:
    abuser = "\n".join(f"{k} = {v}" for k, v in ABUSER.items())
    path.write_text(
        f"""
[server]
max_connections = {connections + 2_000}

[tenants.steady]
keys = [{{ alg = "HS256", secret = "{secrets_["steady"]}" }}]
max_connections = {connections + 100}
max_links = {connections + 100}

[tenants.abuser]
keys = [{{ alg = "HS256", secret = "{secrets_["abuser"]}" }}]
{abuser}
"""
    )


def proc_sample(pid: int) -> tuple[int, float]:
    """RSS (KiB) and user+system CPU seconds of one process."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return rss, (int(fields[11]) + int(fields[12])) / CLK_TCK


# -- subscribers (a child process per PER_PROCESS connections) -----------------------------------


@dataclass
class SubStats:
    connected: int = 0
    dropped: int = 0
    received: Counter[int] = field(default_factory=Counter)  # per address index
    subscribers: Counter[int] = field(default_factory=Counter)
    duplicates: int = 0
    disorder: int = 0


async def one_subscriber(
    url: str, token: str, source: str, a: int, stats: SubStats, ready: asyncio.Event
) -> None:
    ws = await websockets.connect(
        url,
        subprotocols=[websockets.Subprotocol("wsq.v1")],
        compression=None,
        open_timeout=120,
        max_queue=64,
        ping_interval=None,
        family=socket.AF_INET,
        local_addr=(source, 0),
    )
    await ws.send(
        json.dumps(
            [
                {"op": "open", "token": token, "idle": 60_000, "client": "soak"},
                {"op": "begin", "ch": 0},
                {
                    "op": "attach",
                    "ch": 0,
                    "handle": 0,
                    "role": "receiver",
                    "address": f"soak.a{a}",
                    "credit": 1000,
                },
            ]
        )
    )
    idle = 30_000
    expected = 0
    credit = 1000
    attached = False
    last_sent = time.monotonic()
    try:
        while True:
            # Heartbeats: at least every half of the server's idle.
            wait = max(0.1, idle / 2000 - (time.monotonic() - last_sent))
            try:
                text = await asyncio.wait_for(ws.recv(), wait)
            except TimeoutError:
                await ws.send("[]")
                last_sent = time.monotonic()
                continue
            value = json.loads(text)
            frames = value if isinstance(value, list) else [value]
            for f in frames:
                op = f.get("op")
                if op == "transfer":
                    n = f["body"]["n"]
                    if n == expected:
                        stats.received[a] += 1
                        expected += 1
                    elif n < expected:
                        stats.duplicates += 1
                    else:
                        stats.disorder += 1
                        stats.received[a] += 1
                        expected = n + 1
                    credit -= 1
                elif op == "open":
                    idle = int(f.get("idle", idle))
                elif op == "attach" and not attached:
                    attached = True
                    stats.connected += 1
                    stats.subscribers[a] += 1
                    ready.set()
                elif op in ("close", "detach", "end"):
                    raise RuntimeError(f"subscriber ended by the gateway: {f}")
            if credit < 500:
                await ws.send(json.dumps({"op": "flow", "ch": 0, "handle": 0, "credit": 500}))
                credit += 500
                last_sent = time.monotonic()
    except asyncio.CancelledError:
        await ws.close()
        raise
    except Exception:
        stats.dropped += 1
        ready.set()
        with contextlib.suppress(Exception):
            await ws.close()


async def subscribers_main(args: argparse.Namespace) -> None:
    stats = SubStats()
    url = f"ws://127.0.0.1:{args.port}/ws"
    tasks: list[asyncio.Task[None]] = []
    gate = asyncio.Semaphore(100)

    async def start(i: int) -> None:
        async with gate:
            a = (args.first + i) % args.addresses
            ready = asyncio.Event()
            t = asyncio.create_task(one_subscriber(url, args.token, args.source, a, stats, ready))
            tasks.append(t)
            await ready.wait()

    await asyncio.gather(*(start(i) for i in range(args.count)))
    print(json.dumps({"ready": stats.connected, "dropped": stats.dropped}), flush=True)
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, done.set)
    await done.wait()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    report = {
        "connected": stats.connected,
        "dropped": stats.dropped,
        "received": dict(stats.received),
        "subscribers": dict(stats.subscribers),
        "duplicates": stats.duplicates,
        "disorder": stats.disorder,
    }
    print(json.dumps(report), flush=True)


# -- the abuser (a child process) ----------------------------------------------------------------


class Abuse:
    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.token = token
        self.url = f"ws://127.0.0.1:{port}/ws"
        self.http = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        self.outcomes: Counter[str] = Counter()
        self.held: list[Any] = []

    def count(self, attack: str, what: str) -> None:
        self.outcomes[f"{attack}: {what}"] += 1

    async def socket(self, max_queue: int | None = 16) -> Any:
        return await websockets.connect(
            self.url,
            subprotocols=[websockets.Subprotocol("wsq.v1")],
            compression=None,
            ping_interval=None,
            max_queue=max_queue,
            max_size=None,
        )

    async def frames_until(self, ws: Any, ops: set[str], within: float) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                while True:
                    value = json.loads(await ws.recv())
                    for f in value if isinstance(value, list) else [value]:
                        out.append(f)
                        if f.get("op") in ops:
                            return out
        return out

    async def connections(self) -> None:
        """Twice the tenant's max_connections, held for a while."""
        socks = []
        for _ in range(2 * ABUSER["max_connections"]):
            try:
                ws = await self.socket()
                await ws.send(json.dumps({"op": "open", "token": self.token}))
                frames = await self.frames_until(ws, {"open", "close"}, 10)
                last = frames[-1] if frames else {}
                if last.get("op") == "open":
                    self.count("connections", "accepted")
                    socks.append(ws)
                else:
                    cond = (last.get("error") or {}).get("condition", "no answer")
                    self.count("connections", f"refused {cond}")
                    await ws.close()
            except (OSError, websockets.WebSocketException) as exc:
                self.count("connections", f"failed {type(exc).__name__}")
        await asyncio.sleep(5)
        for ws in socks:
            await ws.close()

    async def links(self) -> None:
        """Links on distinct addresses past max_links, on one socket."""
        ws = await self.socket()
        frames: list[Any] = [{"op": "open", "token": self.token}]
        n = 2 * ABUSER["max_links"]
        for ch in range(n // 200 + 1):
            frames.append({"op": "begin", "ch": ch})
        for i in range(n):
            frames.append(
                {
                    "op": "attach",
                    "ch": i // 200,
                    "handle": i % 200,
                    "role": "receiver",
                    "address": f"abuse.links.{i}",
                    "credit": 10,
                }
            )
        await ws.send(json.dumps(frames))
        got = await self.frames_until(ws, {"close"}, 5)
        for f in got:
            if f.get("op") == "attach":
                self.count("links", "attached")
            elif f.get("op") == "detach":
                self.count("links", f"refused {(f.get('error') or {}).get('condition')}")
        await ws.close()

    async def publish(self, address: str, body: Any, **headers: str) -> int:
        r = await self.http.post(
            f"/v1/addresses/{address}/messages", json={"body": body}, headers=headers
        )
        return r.status_code

    async def addresses(self) -> None:
        """Publishes on more distinct addresses than max_addresses."""
        base = secrets.token_hex(3)
        for i in range(2 * ABUSER["max_addresses"]):
            self.count("addresses", f"HTTP {await self.publish(f'abuse.addr.{base}.{i}', i)}")

    async def big_messages(self) -> None:
        """Large messages on one address: retention_max_bytes keeps a few."""
        body = "x" * 900_000
        for _ in range(20):
            self.count("large messages", f"HTTP {await self.publish('abuse.big', body)}")

    async def idempotency_keys(self) -> None:
        for _ in range(200):
            key = secrets.token_hex(16)
            status = await self.publish("abuse.idem", {"k": key}, **{"Idempotency-Key": key})
            self.count("idempotency keys", f"HTTP {status}")

    async def lookups(self) -> None:
        """Lookups of ids that are not there, on the large address."""
        for _ in range(20):
            r = await self.http.get(
                "/v1/addresses/abuse.big/lookup", params={"message_id": secrets.token_hex(8)}
            )
            self.count("lookups of missing ids", f"HTTP {r.status_code}")

    async def groups(self) -> None:
        for g in range(2 * ABUSER["max_groups"]):
            r = await self.http.post(
                "/v1/addresses/abuse.jobs/claims", json={"group": f"g{g}", "max": 1}
            )
            self.count("groups", f"HTTP {r.status_code}")

    async def stalled_reader(self) -> None:
        """A subscriber of the large address that never reads (but keeps sending heartbeats)."""
        ws = await self.socket(max_queue=1)
        await ws.send(
            json.dumps(
                [
                    {"op": "open", "token": self.token, "idle": 0},
                    {"op": "begin", "ch": 0},
                    {
                        "op": "attach",
                        "ch": 0,
                        "handle": 0,
                        "role": "receiver",
                        "address": "abuse.big",
                        "from": "^",
                        "credit": 100_000,
                    },
                ]
            )
        )
        self.held.append(ws)

    async def heartbeats(self) -> None:
        for ws in list(self.held):
            try:
                await asyncio.wait_for(ws.send("[]"), 1)
            except (TimeoutError, websockets.WebSocketException):
                self.held.remove(ws)
                self.count("stalled reader", "dropped by the gateway")
                with contextlib.suppress(Exception):
                    ws.transport.abort()

    async def half_open_upgrades(self) -> None:
        """Unauthenticated connections that send half an upgrade and wait."""
        socks = []
        for _ in range(300):
            try:
                r, w = await asyncio.open_connection("127.0.0.1", self.port)
                w.write(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
                socks.append((r, w))
            except OSError:
                self.count("half-open upgrades", "refused")
        await asyncio.sleep(8)
        closed = sum(1 for r, _ in socks if r.at_eof() or r.exception() is not None)
        self.outcomes["half-open upgrades: closed by the gateway within 8 s"] += closed
        for _, w in socks:
            w.close()

    async def cycle(self) -> None:
        attacks = [
            self.connections,
            self.links,
            self.addresses,
            self.big_messages,
            self.idempotency_keys,
            self.lookups,
            self.groups,
            self.stalled_reader,
            self.half_open_upgrades,
        ]
        results = await asyncio.gather(*(a() for a in attacks), return_exceptions=True)
        for a, r in zip(attacks, results, strict=True):
            if isinstance(r, BaseException):
                self.count(a.__name__, f"error {type(r).__name__}")
        await self.heartbeats()


async def publisher_main(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    accepted = await publish(args.port, args.token, args.rate, args.addresses, stop)
    print(json.dumps({"accepted": accepted}), flush=True)


async def abuser_main(args: argparse.Namespace) -> None:
    abuse = Abuse(args.port, args.token)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    cycles = 0
    while not stop.is_set():
        await abuse.cycle()
        cycles += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 5)
    print(json.dumps({"cycles": cycles, "outcomes": dict(abuse.outcomes)}), flush=True)


# -- the publisher (this process) ----------------------------------------------------------------


async def publish(
    port: int, token: str, rate: float, addresses: int, stop: asyncio.Event
) -> list[int]:
    """``rate`` messages/s round-robin over the addresses, one sender link each; returns how many
    the gateway accepted per address (each body carries its per-address sequence number)."""
    ws = await websockets.connect(
        f"ws://127.0.0.1:{port}/ws",
        subprotocols=[websockets.Subprotocol("wsq.v1")],
        compression=None,
        ping_interval=None,
    )
    frames: list[Any] = [{"op": "open", "token": token, "idle": 0}, {"op": "begin", "ch": 0}]
    frames += [
        {"op": "attach", "ch": 0, "handle": a, "role": "sender", "address": f"soak.a{a}"}
        for a in range(addresses)
    ]
    await ws.send(json.dumps(frames))
    accepted = [0] * addresses
    outstanding: dict[int, int] = {}  # delivery -> address
    credit = [0] * addresses

    async def reader() -> None:
        async for text in ws:
            value = json.loads(text)
            for f in value if isinstance(value, list) else [value]:
                op = f.get("op")
                if op == "flow":
                    credit[f["handle"]] += f["credit"]
                elif op == "disposition":
                    for d in range(f["first"], f.get("last", f["first"]) + 1):
                        a = outstanding.pop(d)
                        if f["outcome"] == "accepted":
                            accepted[a] += 1
                        else:
                            raise RuntimeError(f"publish refused: {f}")
                elif op in ("close", "detach", "end"):
                    raise RuntimeError(f"publisher ended by the gateway: {f}")

    read = asyncio.create_task(reader())
    seq = [0] * addresses
    delivery = 0
    start = time.monotonic()
    sent = 0
    last_beat = time.monotonic()
    while not stop.is_set():
        due = int((time.monotonic() - start) * rate)
        batch = []
        while sent < due:
            a = sent % addresses
            if credit[a] <= 0:
                break
            credit[a] -= 1
            outstanding[delivery] = a
            batch.append(
                {
                    "op": "transfer",
                    "ch": 0,
                    "handle": a,
                    "delivery": delivery,
                    "body": {"n": seq[a]},
                }
            )
            seq[a] += 1
            delivery += 1
            sent += 1
        if batch:
            await ws.send(json.dumps(batch))
            last_beat = time.monotonic()
        elif time.monotonic() - last_beat > 10:
            await ws.send("[]")
            last_beat = time.monotonic()
        if read.done():
            read.result()
        await asyncio.sleep(0.01)
    for _ in range(500):  # the last dispositions
        if not outstanding:
            break
        await asyncio.sleep(0.01)
    read.cancel()
    await ws.close()
    if outstanding:
        raise RuntimeError(f"{len(outstanding)} publishes never settled")
    return accepted


# -- the run -------------------------------------------------------------------------------------


def spawn_role(role: str, *flags: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, "--role", role, *flags],
        stdout=subprocess.PIPE,
        text=True,
    )


def read_json_line(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("{"):
            return dict(json.loads(line))
        if not line and proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
    raise TimeoutError(f"{proc.args} said nothing")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    keys = {t: secrets.token_hex(24) for t in ("steady", "abuser")}
    tmp = Path(tempfile.mkdtemp(prefix="wsq-soak-"))
    config = tmp / "wsq.toml"
    write_config(config, keys, args.connections)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WSQ_")}
    cmd = [sys.executable, "-m", "wsq", "serve", "--config", str(config), "--port", str(port)]
    cmd += ["--broker", args.broker, "--log-level", "warning"]
    gateway = subprocess.Popen(cmd, env=env, cwd=ROOT)
    children: list[subprocess.Popen[str]] = []
    try:
        wait_healthy(port, gateway)
        steady = _token("steady", keys["steady"], "soak")
        t0 = time.monotonic()
        samples: list[dict[str, float]] = []
        rss0, _ = proc_sample(gateway.pid)
        samples.append({"t": 0.0, "rss_mib": rss0 / 1024, "cpu_pct": 0.0, "phase": 0})
        left = args.connections
        k = 0
        while left > 0:
            n = min(PER_PROCESS, left)
            children.append(
                spawn_role(
                    "subscribers",
                    f"--port={port}",
                    f"--token={steady}",
                    f"--first={args.connections - left}",
                    f"--count={n}",
                    f"--addresses={args.addresses}",
                    f"--source=127.0.0.{2 + k}",
                )
            )
            left -= n
            k += 1
        with ThreadPoolExecutor(len(children) + 2) as pool:
            ready = [pool.submit(read_json_line, c, 900) for c in children]
            last_cpu, last_t = proc_sample(gateway.pid)[1], time.monotonic()

            def sample(phase: int) -> None:
                nonlocal last_cpu, last_t
                rss, cpu = proc_sample(gateway.pid)
                now = time.monotonic()
                pct = 100 * (cpu - last_cpu) / max(now - last_t, 1e-3)
                samples.append(
                    {"t": now - t0, "rss_mib": rss / 1024, "cpu_pct": pct, "phase": phase}
                )
                last_cpu, last_t = cpu, now
                print(
                    f"soak: {now - t0:5.0f} s  RSS {rss / 1024:7.1f} MiB  CPU {pct:5.1f} %",
                    flush=True,
                )

            while not all(f.done() for f in ready):
                time.sleep(1)
                sample(0)
            connected = sum(f.result()["ready"] for f in ready)
            connect_s = time.monotonic() - t0
            print(f"soak: {connected} subscribers attached in {connect_s:.0f} s", flush=True)
            roles = [
                spawn_role(
                    "publisher",
                    f"--port={port}",
                    f"--token={steady}",
                    f"--rate={args.rate}",
                    f"--addresses={args.addresses}",
                )
            ]
            if args.abuse:
                token = _token("abuser", keys["abuser"], "evil")
                roles.append(spawn_role("abuser", f"--port={port}", f"--token={token}"))
            children += roles
            end = time.monotonic() + args.minutes * 60
            while time.monotonic() < end:
                time.sleep(args.sample)
                for r in roles:
                    if r.poll() is not None:
                        raise RuntimeError(f"the {r.args[3]} exited early with {r.returncode}")
                sample(1)
            for r in roles:
                r.send_signal(signal.SIGTERM)
            accepted = read_json_line(roles[0], 120)["accepted"]
            abuse = read_json_line(roles[1], 120) if args.abuse else {}
            time.sleep(5)  # the last deliveries
            for c in children[: len(ready)]:
                c.send_signal(signal.SIGTERM)
            reports = list(pool.map(lambda c: read_json_line(c, 300), children[: len(ready)]))
    finally:
        for c in children:
            if c.poll() is None:
                c.kill()
        gateway.send_signal(signal.SIGINT)
        try:
            gateway.wait(20)
        except subprocess.TimeoutExpired:
            gateway.kill()
    received: Counter[int] = Counter()
    subs: Counter[int] = Counter()
    for r in reports:
        received.update({int(a): n for a, n in r["received"].items()})
        subs.update({int(a): n for a, n in r["subscribers"].items()})
    expected = sum(accepted[a] * subs[a] for a in range(args.addresses))
    got = sum(received.values())
    result = {
        "connections": args.connections,
        "minutes": args.minutes,
        "rate": args.rate,
        "addresses": args.addresses,
        "broker": args.broker,
        "abuse": args.abuse,
        "connect_seconds": round(connect_s, 1),
        "published": sum(accepted),
        "deliveries_expected": expected,
        "deliveries_received": got,
        "lost": expected - got,
        "duplicates": sum(r["duplicates"] for r in reports),
        "disorder": sum(r["disorder"] for r in reports),
        "subscribers_dropped": sum(r["dropped"] for r in reports),
        "abuser": abuse,
        "samples": samples,
    }
    summarize(result)
    (out / "soak.json").write_text(json.dumps(result, indent=1))
    (out / "soak.md").write_text(markdown(result))
    chart(result, out / "soak.png")
    print(markdown(result))
    ok = result["lost"] == 0 and result["subscribers_dropped"] == 0 and not result["duplicates"]
    return 0 if ok else 1


def summarize(result: dict[str, Any]) -> None:
    """RSS at the start of the steady phase, at its middle and at the end; CPU on average."""
    steady = [s for s in result["samples"] if s["phase"] == 1]
    if not steady:
        return
    half = steady[len(steady) // 2 :]
    result["rss_mib_first"] = round(steady[0]["rss_mib"], 1)
    result["rss_mib_middle"] = round(half[0]["rss_mib"], 1)
    result["rss_mib_last"] = round(steady[-1]["rss_mib"], 1)
    result["rss_mib_max"] = round(max(s["rss_mib"] for s in steady), 1)
    result["cpu_pct_mean"] = round(sum(s["cpu_pct"] for s in steady) / len(steady), 1)
    # Growth over the second half, per minute: flat is ~0.
    span = (half[-1]["t"] - half[0]["t"]) / 60
    growth = (half[-1]["rss_mib"] - half[0]["rss_mib"]) / span if span > 0 else 0.0
    result["rss_mib_per_min_second_half"] = round(growth, 2)


def markdown(r: dict[str, Any]) -> str:
    lines = [
        f"# Soak: {r['connections']} connections, {r['minutes']} min, {r['rate']} msg/s over "
        f"{r['addresses']} addresses ({r['broker']}), abuser {'on' if r['abuse'] else 'off'}",
        "",
        "| figure | value |",
        "|---|---|",
    ]
    for key in (
        "connect_seconds",
        "published",
        "deliveries_expected",
        "deliveries_received",
        "lost",
        "duplicates",
        "disorder",
        "subscribers_dropped",
        "rss_mib_first",
        "rss_mib_middle",
        "rss_mib_last",
        "rss_mib_max",
        "rss_mib_per_min_second_half",
        "cpu_pct_mean",
    ):
        if key in r:
            lines.append(f"| {key.replace('_', ' ')} | {r[key]} |")
    if r["abuser"]:
        lines += ["", f"Abuser: {r['abuser']['cycles']} cycles.", "", "| attack: outcome | count |"]
        lines.append("|---|---|")
        for k, v in sorted(r["abuser"]["outcomes"].items()):
            lines.append(f"| {k} | {v} |")
    return "\n".join(lines) + "\n"


def chart(r: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("soak: no matplotlib, no chart", file=sys.stderr)
        return
    t = [s["t"] / 60 for s in r["samples"]]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(t, [s["rss_mib"] for s in r["samples"]], color="tab:blue", label="RSS (MiB)")
    ax.set_xlabel("minutes")
    ax.set_ylabel("RSS (MiB)", color="tab:blue")
    ax.set_ylim(bottom=0)
    ax2 = ax.twinx()
    ax2.plot(t, [s["cpu_pct"] for s in r["samples"]], color="tab:red", label="CPU (%)")
    ax2.set_ylabel("CPU (% of one core)", color="tab:red")
    ax2.set_ylim(0, 100)
    ax.set_title(
        f"wsq serve: {r['connections']} connections, {r['rate']} msg/s, abuser "
        f"{'on' if r['abuse'] else 'off'}; lost {r['lost']}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(port: int, proc: subprocess.Popen[Any], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the gateway exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError("the gateway did not become healthy")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--connections", type=int, default=10_000)
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--rate", type=float, default=50, help="messages/s published (steady)")
    p.add_argument("--addresses", type=int, default=100)
    p.add_argument("--broker", default="memory://")
    p.add_argument("--sample", type=float, default=5, help="seconds between samples")
    p.add_argument("--abuse", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--out", default=str(DEFAULT_OUT))
    # internal: the child processes
    p.add_argument("--role", choices=["subscribers", "abuser", "publisher"], help=argparse.SUPPRESS)
    for flag in ("--port", "--first", "--count"):
        p.add_argument(flag, type=int, help=argparse.SUPPRESS)
    p.add_argument("--token", help=argparse.SUPPRESS)
    p.add_argument("--source", help=argparse.SUPPRESS)
    args = p.parse_args()
    # Each process holds thousands of sockets: the soft limit up to the hard one.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    if args.role == "subscribers":
        asyncio.run(subscribers_main(args))
        return 0
    if args.role == "abuser":
        asyncio.run(abuser_main(args))
        return 0
    if args.role == "publisher":
        asyncio.run(publisher_main(args))
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
