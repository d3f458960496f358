"""The scale scenario (issue 18): as many subscribed sockets as one node holds, on one process or
over ``wsq serve --workers N``; not a row of the bench and not part of CI (its smoke test runs it
at 50 connections).

Run it through ``scripts/bench`` (which installs node, the bench's npm packages and redis-server)::

    scripts/bench --only scale --connections 19500              # one process, memory broker
    scripts/bench --only scale --connections 100000 --workers 6 # Redis broker (its own)
    scripts/bench --only scale --help                           # its own options (--rate, ...)
    scripts/bench --only scale --tiny                           # 50 connections, 2 workers

or directly: ``.venv/bin/python bench/scale.py --connections 20000 --workers 2``.

What runs, each in its own process:

- ``wsq serve`` (``--workers N``: uvicorn's supervisor and N workers sharing the listening
  socket; more than one needs a shared broker, so the scenario starts a ``redis-server`` of its
  own on a free port, no persistence; one worker runs on the memory broker unless ``--broker
  redis``), every setting its default but the connection quotas, which the scenario raises past
  ``--connections``;
- the load generator, split over processes of ``bench/node/scale_client.mjs`` (Node ``ws``, as
  the bench's generator; per socket it takes 18 KiB against a Python ``websockets`` client's
  14, bench/scale_client_rss.py: memory is not what limits here), each holding at most
  ``--per-generator`` sockets (a process may
  have 20,000 open files here) from one loopback source address, 127.0.0.2, 127.0.0.3, ... (a
  source has ~28k ephemeral ports towards one server port; at most ``--per-source`` on each);
- this process, which publishes over the HTTP bridge and reads the others' /proc.

Phases, in order: **connect** (every generator connects its sockets at once, ``open`` + ``begin``
+ ``attach`` of a receiver on one address each; the connect rate is the sockets subscribed over
the wall time), **memory** (the RSS of the server's process tree, all workers and the
supervisor, before the first socket and 2 s after the last, over the sockets: KiB per
subscribed socket; and how many sockets each worker holds), **idle** (the server tree's CPU
over ``--idle-seconds`` while every socket heartbeats at the default idle: ``[]`` from each
client every 10 s, the gateway's own when it has sent nothing for half its idle),
**broadcast** (``--broadcasts`` single messages, one at a time, each published once the last
has reached every socket: publish-to-receipt p50 / p99 / max over every receipt, and the time
each took to reach them all; the body carries the publish time, one machine, one clock) and
**steady** (``--rate`` messages per second for ``--steady-seconds``, by default 20,000
deliveries a second: 1 message a second up to 20,000 sockets, 0.2 at 100,000; receipts against what
was expected, connections lost, latency and the server's CPU per delivery). Why sockets
ended is recorded throughout, by reason: each handshake that failed (``connect.
failed_by_reason``: the error, or the gateway's ``close`` frame's condition and description
with the WebSocket close code) and each subscribed socket the gateway closed or detached
(``closed_by_reason``).

Results: ``scale-<connections>-w<workers>.json`` and ``.md`` in ``--out`` (``bench/out/``,
git-ignored, unless it names another folder: the committed reference is in
``bench/results/scale/``, written only when named: ``--out bench/results/scale``). The report
ends with issue 18's targets this size checks (one worker and 19,000 sockets or more: that many
subscribed at <= 16 KiB each; 100,000: all subscribed, a broadcast's p99 <= 1 s, none lost over
the steady minute). Exits 1 when a socket failed to subscribe, a connection was lost or a
delivery is missing, 4 when the run completed and a target was missed (as bench/run.py), and
at once, before anything starts, when a worker or a generator process would need more open
files than ``ulimit -Hn`` allows.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import json
import math
import os
import queue
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from _machine import machine  # noqa: E402
from run import (  # noqa: E402  (bench/ is not a package: the bench's own /proc helpers)
    BENCH_TENANT_QUOTA,
    VENV_BIN,
    _wait_healthz,
    _wait_processes,
    _wsq_env,
    _wsq_token,
    free_port,
    process_tree,
    rss_bytes,
    tree_cpu_seconds,
    wait_port,
)

DEFAULT_OUT = BENCH / "out"
ADDRESS = "bench.scale"
#: every socket sends a heartbeat this often: under half the gateway's default idle (30 s)
HEARTBEAT_MS = 10_000
#: sockets a generator process opens at once
CONCURRENCY = 50
#: bytes of padding in a body, so that a delivery is about the bench's ~100-byte message
PAD = "x" * 60

TINY = dict(
    connections=50,
    workers=2,
    per_generator=25,
    per_source=25,
    idle_seconds=1.0,
    broadcasts=2,
    rate=2.0,
    steady_seconds=2.0,
)
#: the steady phase's default rate, in deliveries (messages x sockets) a second
STEADY_DELIVERIES_PER_S = 20_000
#: what a worker or generator process opens beside its sockets (listening socket, loop, Redis,
#: logs, Node's own), with room
FILES_BESIDES_SOCKETS = 200
FULL = dict(
    connections=19_500,
    workers=1,
    per_generator=10_000,
    per_source=20_000,
    idle_seconds=30.0,
    broadcasts=5,
    rate=1.0,
    steady_seconds=60.0,
)


# -- the generator's processes ------------------------------------------------------------------


class Generator:
    """One ``scale_client.mjs``: commands on its stdin, one JSON answer a line on its stdout."""

    def __init__(self, spec: dict[str, Any], log: Path) -> None:
        self.spec = spec
        self.proc = subprocess.Popen(
            ["node", str(BENCH / "node" / "scale_client.mjs"), json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log.open("w"),
            text=True,
            cwd=BENCH / "node",
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def started(self) -> None:
        """Once Node has started and reads its commands: its start is not the connect time."""
        self.answer(60)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put("")

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def answer(self, timeout: float) -> dict[str, Any]:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(
                f"generator {self.spec['source']}: no answer in {timeout} s"
            ) from None
        if not line:
            raise RuntimeError(f"generator {self.spec['source']} exited ({self.proc.poll()})")
        return dict(json.loads(line))

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.send("stop")
            self.answer(10)
        with contextlib.suppress(Exception):
            self.proc.wait(5)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def ask(gens: list[Generator], command: str, timeout: float) -> list[dict[str, Any]]:
    for g in gens:
        g.send(command)
    return [g.answer(timeout) for g in gens]


#: the source ports the generators bind, from here up on each source address (a port taken by
#: another program on that address is skipped), apart from the kernel's own choice of ports
FIRST_PORT = 2_000


def plan(connections: int, per_generator: int, per_source: int) -> list[tuple[int, str, int]]:
    """(sockets, source address, first source port) of each generator process: no process over
    per_generator, no source over per_source, no two processes on the same ports."""
    count = math.ceil(connections / per_generator)
    sources = math.ceil(connections / per_source)
    count = math.ceil(count / sources) * sources  # as many generators on every source
    sizes = [connections // count + (i < connections % count) for i in range(count)]
    out = []
    for i, n in enumerate(sizes):
        # the generators of one source get ranges of ports apart, with room for ports skipped
        first = FIRST_PORT + (i // sources) * (per_generator + 2_000)
        out.append((n, f"127.0.0.{2 + i % sources}", first))
    for s in {src for _, src, _ in out}:
        assert sum(n for n, src, _ in out if src == s) <= per_source, (s, out)
    assert max(first for *_, first in out) + per_generator + 2_000 < 65_536, out
    return out


# -- figures ------------------------------------------------------------------------------------


def merge(hists: list[dict[str, int]]) -> dict[int, int]:
    total: dict[int, int] = {}
    for h in hists:
        for tenth, n in h.items():
            total[int(tenth)] = total.get(int(tenth), 0) + n
    return total


def percentiles(hist: dict[int, int]) -> dict[str, float | None]:
    """p50, p99 and max in ms of a histogram of tenths of a ms."""
    count = sum(hist.values())
    if not count:
        return {"count": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    out: dict[str, float | None] = {"count": count}
    ordered = sorted(hist.items())
    for name, q in (("p50_ms", 0.50), ("p99_ms", 0.99)):
        need, seen = math.ceil(q * count), 0
        for tenth, n in ordered:
            seen += n
            if seen >= need:
                out[name] = tenth / 10
                break
    out["max_ms"] = ordered[-1][0] / 10
    return out


def client_sockets(port: int) -> dict[str, str]:
    """The established TCP sockets whose local port is ``port`` (the server's side of its
    clients' connections, /proc/net/tcp): inode -> the client's address."""
    inodes = {}
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            # local and remote ip:port in hex (the ip's bytes little-endian), state 01 is
            # ESTABLISHED, the inode is the tenth field
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                ip = bytes.fromhex(fields[2].split(":")[0])[::-1]
                inodes[fields[9]] = ".".join(str(b) for b in ip)
    return inodes


def sockets_held(pid: int, inodes: dict[str, str]) -> int:
    """How many of ``inodes`` process ``pid`` has open."""
    n = 0
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                n += os.readlink(f"/proc/{pid}/fd/{fd}")[8:-1] in inodes
    return n


def cpu_of(pids: list[int]) -> float:
    return sum(tree_cpu_seconds(p) for p in pids)


class Publisher:
    """POST /v1/addresses/bench.scale/messages, a connection each: the gateway closes a kept-alive
    one that sends no request within its handshake_timeout_ms (5 s), which a broadcast to
    100,000 sockets outlasts. A 503 (the broker unavailable: nothing was done) or 429 is tried
    again, as a bridge client must, with the same ``message_id`` (the address's dedup window
    makes a retry safe) and the first try's time (its latency counts the retries)."""

    #: tries of one message before the scenario gives up on it
    TRIES = 5

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.retries = 0

    def publish(self, k: int) -> None:
        body = {"k": k, "t": time.time() * 1000, "pad": PAD}  # the publish time: the first try
        message = json.dumps({"body": body, "message_id": f"scale-{os.getpid()}-{k}"})
        for attempt in range(self.TRIES):
            status = self._post(message)
            if status < 300:
                return
            if status not in (429, 503) or attempt == self.TRIES - 1:
                raise RuntimeError(f"publish refused: HTTP {status}")
            self.retries += 1
            time.sleep(0.2 * 2**attempt)

    def _post(self, message: str) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.connect()
            conn.request("POST", f"/v1/addresses/{ADDRESS}/messages", message, self.headers)
            r = conn.getresponse()
            r.read()
            return r.status
        finally:
            conn.close()


def by_reason(answers: list[dict[str, Any]], key: str) -> dict[str, int]:
    """The generators' counts by reason under ``key`` (failed handshakes, closed sockets),
    summed, the most frequent first."""
    total: Counter[str] = Counter()
    for answer in answers:
        total.update(answer.get(key, {}))
    return dict(total.most_common())


def receipts(reports: list[dict[str, Any]]) -> dict[int, tuple[int, float]]:
    """message number -> (receipts, the latest receipt's latency ms) over every generator."""
    out: dict[int, tuple[int, float]] = {}
    for r in reports:
        for k, (n, worst) in r["per_k"].items():
            seen, prev = out.get(int(k), (0, 0.0))
            out[int(k)] = (seen + n, max(prev, worst))
    return out


def open_files_past(n: int, workers: int, per_generator: int, hard: int) -> str | None:
    """Why a run of ``n`` sockets cannot be had with ``hard`` open files a process, or None.
    Each worker holds its share of the sockets and each generator process its own, plus the
    files they open besides: past the limit a run would fail minutes in, unclearly."""
    per_worker = -(-n // workers) + FILES_BESIDES_SOCKETS
    per_gen = min(per_generator, n) + FILES_BESIDES_SOCKETS
    if max(per_worker, per_gen) <= hard:
        return None
    return (
        f"scale: {per_worker:,} open files a worker and {per_gen:,} a generator process "
        f"would be needed, and a process may open {hard:,} here (ulimit -Hn): more --workers "
        "or a smaller --per-generator"
    )


# -- the run ------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    n, workers = args.connections, args.workers
    broker = args.broker or ("memory" if workers == 1 else "redis")
    if workers > 1 and broker == "memory":
        raise SystemExit("scale: --workers > 1 needs --broker redis (memory:// is one process)")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the generators inherit it
    doc: dict[str, Any] = {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "connections": n,
        "workers": workers,
        "broker": broker,
        "settings": {k: getattr(args, k) for k in FULL},
        "machine": machine() | {"nofile_hard": hard},
        "failures": [],
    }
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="wsq-scale-")))
        env = _wsq_env()
        config = tmp / "wsq.toml"
        config.write_text(
            f"[server]\nmax_connections = {n + 1_000}\n\n"
            "[tenants.dev]\n"
            f'keys = [{{ alg = "HS256", secret = "{env["WSQ_DEV_SECRET"]}" }}]\n'
            f"max_connections = {BENCH_TENANT_QUOTA}\nmax_links = {BENCH_TENANT_QUOTA}\n"
        )
        token = _wsq_token(env, config=config)
        aux: list[int] = []
        url = "memory://"
        if broker == "redis":
            rport = free_port()
            redis = subprocess.Popen(
                [
                    *("redis-server", "--port", str(rport), "--bind", "127.0.0.1"),
                    *("--save", "", "--appendonly", "no", "--dir", str(tmp)),
                ],
                stdout=(tmp / "redis.log").open("w"),
                stderr=subprocess.STDOUT,
            )
            stack.callback(_stop, redis)
            wait_port(rport, redis)
            aux.append(redis.pid)
            url = f"redis://127.0.0.1:{rport}/0"
        port = free_port()
        cmd = [str(VENV_BIN / "wsq"), "serve", "--host", "127.0.0.1", "--port", str(port)]
        cmd += ["--broker", url, "--log-level", "warning", "--config", str(config)]
        cmd += ["--workers", str(workers)] if workers > 1 else []
        log = tmp / "wsq.log"
        server = subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
        stack.callback(_stop, server)
        try:
            wait_port(port, server)
            _wait_healthz(port)
            _wait_processes(server.pid, workers)
            time.sleep(1.0)
            measure(args, doc, server.pid, aux, port, token, tmp, stack)
        except Exception as e:
            doc["failures"].append(f"{type(e).__name__}: {e}")
            for f in (log, *sorted(tmp.glob("gen*.log"))):
                sys.stderr.write(f"-- {f.name}\n" + f.read_text(errors="replace")[-2000:])
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return doc


def _stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def say(what: str) -> None:
    print(f"scale: {what}", file=sys.stderr, flush=True)


def measure(
    args: argparse.Namespace,
    doc: dict[str, Any],
    pid: int,
    aux: list[int],
    port: int,
    token: str,
    tmp: Path,
    stack: contextlib.ExitStack,
) -> None:
    n = args.connections
    tree0 = process_tree(pid)
    rss0 = rss_bytes(tree0)
    gens: list[Generator] = []
    for i, (count, source, first) in enumerate(plan(n, args.per_generator, args.per_source)):
        spec = dict(url=f"ws://127.0.0.1:{port}/ws", token=token, address=ADDRESS, count=count)
        spec |= dict(source=source, first_port=first, concurrency=args.concurrency)
        spec |= dict(heartbeat_ms=HEARTBEAT_MS)
        gens.append(Generator(spec, tmp / f"gen{i}.log"))
        stack.callback(gens[-1].stop)
    for g in gens:
        g.started()
    doc["generators"] = [{"sockets": g.spec["count"], "source": g.spec["source"]} for g in gens]
    say(f"connecting {n} sockets from {len(gens)} generator processes")
    t0 = time.monotonic()
    connected = ask(gens, "connect", timeout=120 + n / 50)
    wall = time.monotonic() - t0
    ready = sum(c["ready"] for c in connected)
    failed = sum(c["failed"] for c in connected)
    doc["connect"] = {
        "ready": ready,
        "failed": failed,
        "seconds": round(wall, 2),
        "per_s": round(ready / wall, 1),
        "first_error": next((c["first_error"] for c in connected if c["first_error"]), None),
        # why each failed: the error, or the gateway's close frame and WebSocket close code
        "failed_by_reason": by_reason(connected, "failed_by_reason"),
    }
    if failed:
        doc["failures"].append(f"{failed} sockets failed to subscribe")
    say(f"connected {ready} in {wall:.1f} s ({ready / wall:.0f}/s), {failed} failed")

    # -- memory
    time.sleep(2.0)
    tree = process_tree(pid)
    rss1 = rss_bytes(tree)
    inodes = client_sockets(port)
    procs = [
        {"pid": p, "rss_mib": round(rss_bytes([p]) / 2**20, 1), "sockets": sockets_held(p, inodes)}
        for p in tree
    ]
    reports = ask(gens, "report", 60)
    gen_rss = [r["rss"] for r in reports]
    doc["closed_by_reason"] = by_reason(reports, "closed_by_reason")
    doc["memory"] = {
        "rss_before_mib": round(rss0 / 2**20, 1),
        "rss_after_mib": round(rss1 / 2**20, 1),
        "kib_per_socket": round((rss1 - rss0) / 1024 / max(ready, 1), 2),
        "processes": procs,
        "by_source": dict(sorted(Counter(inodes.values()).items())),
        "generator_kib_per_socket": round(sum(gen_rss) / 1024 / max(ready, 1), 2),
    }
    say(f"RSS {doc['memory']['kib_per_socket']} KiB per socket; processes {procs}")

    # -- idle
    gen_pids = [g.proc.pid for g in gens]
    c0, a0, g0 = tree_cpu_seconds(pid), cpu_of(aux), cpu_of(gen_pids)
    time.sleep(args.idle_seconds)
    c1, a1, g1 = tree_cpu_seconds(pid), cpu_of(aux), cpu_of(gen_pids)
    doc["idle"] = {
        "seconds": args.idle_seconds,
        "server_cpu_pct": round(100 * (c1 - c0) / args.idle_seconds, 1),
        "redis_cpu_pct": round(100 * (a1 - a0) / args.idle_seconds, 1),
        "generators_cpu_pct": round(100 * (g1 - g0) / args.idle_seconds, 1),
    }
    say(f"idle: {doc['idle']}")

    # -- broadcast: one message at a time, each once the last has reached every socket
    publisher = Publisher(port, token)
    hists: list[dict[str, int]] = []
    reach: list[float | None] = []
    # What a broadcast costs the machine: CPU from the publish until every socket has it (the
    # polls of the generators count in: small), raw: at 100,000 sockets the idle load alone
    # keeps most of the 2 cores busy, so "less the idle rate" says little.
    spent = {"server": 0.0, "generators": 0.0, "seconds": 0.0}
    for b in range(args.broadcasts):
        ask(gens, "reset", 30)
        c0, g0, t0 = tree_cpu_seconds(pid), cpu_of(gen_pids), time.monotonic()
        publisher.publish(b)
        deadline = time.monotonic() + 30
        while True:
            time.sleep(0.2)
            reports = ask(gens, "report", 60)
            got = receipts(reports).get(b, (0, 0.0))
            if got[0] >= ready or time.monotonic() > deadline:
                break
        spent["server"] += tree_cpu_seconds(pid) - c0
        spent["generators"] += cpu_of(gen_pids) - g0
        spent["seconds"] += time.monotonic() - t0
        hists += [r["hist"] for r in reports]
        reach.append(round(got[1], 1) if got[0] >= ready else None)
        if got[0] < ready:
            doc["failures"].append(f"broadcast {b}: {got[0]} of {ready} sockets reached")
        time.sleep(0.5)
    per = max(args.broadcasts, 1)
    server_s, gens_s = spent["server"] / per, spent["generators"] / per
    doc["broadcast"] = percentiles(merge(hists)) | {
        "reached_all_ms": reach,
        # core-seconds a broadcast (publish to the last receipt seen), and its wall seconds
        "server_cpu_s": round(server_s, 3),
        "generators_cpu_s": round(gens_s, 3),
        "wall_s": round(spent["seconds"] / per, 3),
        "server_cpu_us_per_delivery": round(1e6 * server_s / max(ready, 1), 2),
        "generators_cpu_us_per_delivery": round(1e6 * gens_s / max(ready, 1), 2),
    }
    say(f"broadcast: {doc['broadcast']}")

    # -- steady rate
    ask(gens, "reset", 30)
    lost0 = sum(r["lost"] for r in ask(gens, "report", 60))
    c0, a0 = tree_cpu_seconds(pid), cpu_of(aux)
    t0 = time.monotonic()
    published = 0
    first = 1_000_000
    while time.monotonic() - t0 < args.steady_seconds:
        publisher.publish(first + published)
        published += 1
        time.sleep(max(0.0, t0 + published / args.rate - time.monotonic()))
    deadline = time.monotonic() + 30
    while True:
        time.sleep(0.5)
        reports = ask(gens, "report", 60)
        got = sum(n for n, _ in receipts(reports).values())
        if got >= published * ready or time.monotonic() > deadline:
            break
    seconds = time.monotonic() - t0
    c1, a1 = tree_cpu_seconds(pid), cpu_of(aux)
    lost = sum(r["lost"] for r in reports)
    # every socket the gateway closed (or detached) since it subscribed, by why
    doc["closed_by_reason"] = by_reason(reports, "closed_by_reason")
    doc["steady"] = percentiles(merge([r["hist"] for r in reports])) | {
        "rate": args.rate,
        "published": published,
        "expected": published * ready,
        "received": got,
        "connections_lost": lost,
        "connections_lost_before": lost0,
        "closed_by_gateway": sum(r["refused"] for r in reports),
        "open_at_end": sum(r["open"] for r in reports),
        # publishes the bridge answered 429/503 to, tried again (broadcasts included)
        "publish_retries": publisher.retries,
        "server_cpu_pct": round(100 * (c1 - c0) / seconds, 1),
        "redis_cpu_pct": round(100 * (a1 - a0) / seconds, 1),
        "server_cpu_us_per_delivery": round(1e6 * (c1 - c0) / max(got, 1), 2),
        # less what the idle phase burnt in as long (heartbeats, timers): the deliveries' own
        "server_cpu_us_per_delivery_net": round(
            1e6 * ((c1 - c0) - doc["idle"]["server_cpu_pct"] / 100 * seconds) / max(got, 1), 2
        ),
    }
    if got < published * ready:
        doc["failures"].append(f"steady: {published * ready - got} deliveries missing")
    if lost:
        doc["failures"].append(f"{lost} connections lost")
    say(f"steady: {doc['steady']}")


def markdown(doc: dict[str, Any]) -> str:
    c, m, i = doc.get("connect", {}), doc.get("memory", {}), doc.get("idle", {})
    b, s = doc.get("broadcast", {}), doc.get("steady", {})
    workers = doc["workers"]
    lines = [
        f"wsq scale: {doc['connections']:,} subscribed sockets, {workers} worker(s), "
        f"{doc['broker']} broker, {doc['when']}, commit {doc['machine']['commit']}, "
        f"{doc['machine']['cpus']} CPUs, {doc['machine']['platform']}, "
        f"Python {doc['machine']['python']}, Node {doc['machine']['node']}",
        "",
        "| figure | value |",
        "|---|---|",
        f"| sockets subscribed (failed) | {c.get('ready', 0):,} ({c.get('failed', 0)}) |",
        f"| connect rate (open+begin+attach) | {c.get('per_s')}/s over {c.get('seconds')} s |",
        f"| RSS per socket (server tree) | {m.get('kib_per_socket')} KiB |",
        f"| server RSS before / after | {m.get('rss_before_mib')} / {m.get('rss_after_mib')} MiB |",
        "| sockets per process (RSS MiB) | "
        + ", ".join(f"{p['sockets']:,} ({p['rss_mib']})" for p in m.get("processes", []))
        + " |",
        f"| idle CPU, server / Redis / generators (% of a core) | {i.get('server_cpu_pct')} / "
        f"{i.get('redis_cpu_pct')} / {i.get('generators_cpu_pct')} |",
        f"| broadcast to all: p50 / p99 / max | {b.get('p50_ms')} / {b.get('p99_ms')} / "
        f"{b.get('max_ms')} ms |",
        f"| broadcast: each reached every socket after (ms) | {b.get('reached_all_ms')} |",
        "| broadcast: CPU a broadcast, server / generators (core-s in its wall s; µs a delivery) | "
        f"{b.get('server_cpu_s')} / {b.get('generators_cpu_s')} in {b.get('wall_s')} s "
        f"({b.get('server_cpu_us_per_delivery')} / {b.get('generators_cpu_us_per_delivery')}) |",
        f"| steady {s.get('rate')} msg/s: received / expected | {s.get('received', 0):,} / "
        f"{s.get('expected', 0):,} |",
        f"| steady: p50 / p99 / max | {s.get('p50_ms')} / {s.get('p99_ms')} / {s.get('max_ms')} ms |",
        f"| steady: connections lost | {s.get('connections_lost')} |",
        f"| publishes tried again (bridge 429/503) | {s.get('publish_retries', 0)} |",
        f"| steady: server CPU (% of a core), per delivery | {s.get('server_cpu_pct')} %, "
        f"{s.get('server_cpu_us_per_delivery')} µs ({s.get('server_cpu_us_per_delivery_net')} µs "
        "less the idle phase's rate) |",
        f"| generator RSS per socket (Node ws) | {m.get('generator_kib_per_socket')} KiB |",
    ]
    for title, counts in (
        ("Handshakes failed, by reason", c.get("failed_by_reason", {})),
        (
            "Subscribed sockets the gateway closed or detached, by reason",
            doc.get("closed_by_reason", {}),
        ),
    ):
        lines += ["", f"{title}: " + ("none" if not counts else "")]
        lines += [f"- {n:,} {reason}" for reason, n in counts.items()]
    checked = targets(doc)
    lines += ["", "| target (issue 18) | this run | met |", "|---|---|---|"]
    lines += [f"| {t} | {v} | {'yes' if ok else 'NO'} |" for t, v, ok in checked]
    if not checked:
        lines += ["| (none at this size: 19,000+ on one worker, or 100,000) | - | - |"]
    if doc["failures"]:
        lines += ["", "FAILURES: " + "; ".join(doc["failures"])]
    return "\n".join(lines) + "\n"


#: issue 18's targets for this scenario, each checked only at the size it names
ONE_PROCESS_SOCKETS = 19_000
ONE_PROCESS_KIB = 16.0
NODE_SOCKETS = 100_000
BROADCAST_P99_MS = 1000.0


def targets(doc: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(target, this run's figure, met) for the targets this run's size checks: one process
    holding >= 19,000 sockets at <= 16 KiB each (one worker, asked for at least 19,000), and
    100,000 over workers, every broadcast's p99 <= 1 s, none lost over the steady minute."""
    c, m = doc.get("connect", {}), doc.get("memory", {})
    b, s = doc.get("broadcast", {}), doc.get("steady", {})
    ready, n = c.get("ready", 0), doc["connections"]
    rows: list[tuple[str, str, bool]] = []
    if doc["workers"] == 1 and n >= ONE_PROCESS_SOCKETS:
        rows.append(
            (
                f"one process holds >= {ONE_PROCESS_SOCKETS:,} subscribed sockets",
                f"{ready:,}",
                ready >= ONE_PROCESS_SOCKETS,
            )
        )
        kib = m.get("kib_per_socket")
        rows.append(
            (
                f"<= {ONE_PROCESS_KIB:g} KiB per subscribed socket",
                f"{kib} KiB",
                kib is not None and kib <= ONE_PROCESS_KIB,
            )
        )
    if n >= NODE_SOCKETS:
        rows.append(
            (f"{NODE_SOCKETS:,} subscribed over workers", f"{ready:,}", ready >= NODE_SOCKETS)
        )
        p99 = b.get("p99_ms")
        rows.append(
            (
                "a broadcast reaches all with p99 <= 1 s",
                f"{p99} ms",
                p99 is not None and p99 <= BROADCAST_P99_MS and not doc["failures"],
            )
        )
        lost, secs = s.get("connections_lost"), doc["settings"]["steady_seconds"]
        rows.append(
            (
                "no connection lost over the steady minute",
                f"{lost} over {secs:g} s",
                lost == 0 and secs >= 60,
            )
        )
    return rows


def _interrupted(signum: int, _frame: Any) -> None:
    """SIGTERM as ^C: the server, Redis and the generators are stopped on the way out."""
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--tiny", action="store_true", help="50 sockets over 2 workers: the smoke test")
    p.add_argument("--quick", action="store_true", help="(the same sizes as without it)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--broker", choices=("memory", "redis"), help="default: memory for 1 worker")
    p.add_argument(
        "--concurrency",
        type=int,
        default=CONCURRENCY,
        help=f"handshakes in flight per generator process (default {CONCURRENCY})",
    )
    for key, value in FULL.items():
        p.add_argument(f"--{key.replace('_', '-')}", type=type(value), dest=key)
    args = p.parse_args(argv)
    for key, value in (TINY if args.tiny else FULL).items():
        if getattr(args, key) is None and (key != "rate" or args.tiny):
            setattr(args, key, value)
    if args.rate is None:
        # The steady phase's deliveries, not its messages, are what costs: 20,000 a second by
        # default (one message a second up to 20,000 sockets, 0.2 at 100,000), what these 2
        # cores carry beside the idle load; more and the phase measures a backlog.
        args.rate = min(FULL["rate"], STEADY_DELIVERIES_PER_S / args.connections)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    too_many = open_files_past(args.connections, args.workers, args.per_generator, hard)
    if too_many is not None:
        raise SystemExit(too_many)  # before anything starts
    doc = run(args)
    doc["targets"] = [{"target": t, "value": v, "met": ok} for t, v, ok in targets(doc)]
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"scale-{args.connections}-w{args.workers}"
    stem.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    md = markdown(doc)
    stem.with_suffix(".md").write_text(md)
    print(md)
    print(f"results: {stem}.json")
    if doc["failures"]:
        return 1
    missed = [t["target"] for t in doc["targets"] if not t["met"]]
    if missed:
        print("targets missed: " + "; ".join(missed))
        return 4  # as bench/run.py: a run that completed and missed a target
    return 0


if __name__ == "__main__":
    # Here, not in main: a test that calls main in its own process keeps its own handler (the
    # pytest run that installed this one named scale.py in every later SIGTERM's trace).
    signal.signal(signal.SIGTERM, _interrupted)
    sys.exit(main())
