"""The wsq benchmark: every system on this machine, the same load generator, ratios to a ceiling.

Run it through ``scripts/bench`` (which installs what the peers need first)::

    scripts/bench [--quick | --tiny] [--out DIR] [--only wsq-memory,ceiling]
    scripts/bench --only fairness        # an optional part: bench/queue_fairness.py
    scripts/bench --only scale --connections 100000 --workers 6   # another: bench/scale.py

For each system it starts the server on free ports, then runs three scenarios against it with
``bench/node/loadgen.mjs`` (one Node process; the same client code for all, with a small adapter
per protocol):

- ``idle``: K subscribed connections; the server tree's RSS before and after (KiB per
  connection; "n/a (too noisy at this size)" when the tree gave memory back in between, a
  garbage collector returning pages, or grew too little to read) and the connect+open+attach
  rate;
- ``fanout``: N subscribers x M messages of ~100 bytes published in batches by one publisher
  (at most ``window`` batches in flight); delivered messages/s, and the server tree's user+system
  CPU per delivery (from /proc/<pid>/stat of every process in the tree);
- ``latency``: N subscribers, R messages/s for D seconds; publish->deliver p50/p99/max on the
  client's clock, from a timestamp in the body;
- for the rows on a Redis of their own (started by the bench on a free port, as are a RabbitMQ
  node's epmd and everything else): Redis commands per published message at a low and a high
  number of subscribers (INFO commandstats around one publish run).

The server is pinned to CPU 0 and the generator to CPU 1 (``--no-pin`` to let them float), so
that on a 2-core machine neither steals the other's core. Results: a table on stdout, and
``results.json``, ``results.md`` and ``results.png`` (matplotlib, when importable) in ``--out``:
``bench/out/`` (git-ignored) unless it names another folder. The committed reference figures of
docs/performance.md are in ``bench/results/``, written only by ``--out bench/results``.
Exits 3 when a row's tool is missing (scripts/bench installs them), 1 when a row fails, 4 when
a run at the full sizes (no --quick, --tiny or size flag) misses a target; the targets that were
not met are named at the end. Figures at other sizes are not comparable with the targets: such a
run says so and does not fail on them.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _machine import machine

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
#: where a run writes unless --out says: git-ignored, never the committed reference
DEFAULT_OUT = BENCH / "out"
REFERENCE = BENCH / "results"
NODE_DIR = BENCH / "node"
VENV_BIN = Path(sys.executable).parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

SIZES: dict[str, dict[str, Any]] = {
    # default: the sizes, modest enough for a 2-core machine
    "full": dict(
        subs=200,
        messages=2000,
        batch=100,
        window=32,
        rounds=5,
        min_seconds=1.0,
        lat_subs=100,
        rate=500,
        duration=5.0,
        conns=2000,
        size=100,
        timeout=60.0,
        cmd_subs_low=10,
        cmd_subs_high=1000,
        cmd_messages=200,
    ),
    # about three minutes for every row (a few seconds each; use --only for fewer)
    "quick": dict(
        subs=50,
        messages=500,
        batch=100,
        window=32,
        rounds=3,
        min_seconds=0.2,
        lat_subs=50,
        rate=500,
        duration=1.0,
        # 1000, not fewer: a runtime's garbage collector returns a few MB now and then (V8's
        # ~8 s after start), the size of what 200 connections take, which made figures negative
        conns=1000,
        size=100,
        timeout=20.0,
        cmd_subs_low=10,
        cmd_subs_high=200,
        cmd_messages=100,
        settle_ms=300,
    ),
    # the smoke test: only that every row completes
    "tiny": dict(
        subs=4,
        messages=100,
        batch=20,
        window=4,
        rounds=1,
        min_seconds=0.0,
        lat_subs=4,
        rate=100,
        duration=0.5,
        conns=10,
        size=100,
        timeout=15.0,
        cmd_subs_low=2,
        cmd_subs_high=8,
        cmd_messages=20,
        settle_ms=100,
    ),
}


# -- /proc -----------------------------------------------------------------------------------


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def process_tree(pid: int) -> list[int]:
    children = _children_map()
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, ()))
    return tree


def tree_cpu_seconds(pid: int) -> float:
    """User+system CPU of ``pid`` and its descendants (and their reaped children)."""
    ticks = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # after the comm: state=0 ... utime=11 stime=12 cutime=13 cstime=14
        ticks += sum(int(x) for x in fields[11:15])
    return ticks / CLK_TCK


def process_cpu_seconds(pid: int) -> float:
    """User+system CPU of ``pid`` alone (not its children)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree_rss_bytes(pid: int) -> int:
    return rss_bytes(process_tree(pid))


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
        except OSError:
            continue
    return total


class RssWatch:
    """The RSS of a process tree every 10 ms from ``start`` to ``stop``: how much memory it gave
    back to the system meanwhile (the sum of its drops: a garbage collector returning pages),
    which the difference of two readings cannot tell from memory that was never taken."""

    def __init__(self, pid: int) -> None:
        self.pids = process_tree(pid)
        self.samples = [rss_bytes(self.pids)]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.samples.append(rss_bytes(self.pids))

    def stop(self) -> int:
        """The bytes given back between start and now."""
        self._stop.set()
        self._thread.join()
        self.samples.append(rss_bytes(self.pids))
        return sum(max(0, a - b) for a, b in zip(self.samples, self.samples[1:], strict=False))


# -- systems ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


@dataclass
class Running:
    pid: int
    url: str
    adapter: str
    token: str = ""
    # helper processes a system needs (its Redis, its epmd): their CPU is reported apart
    aux_pids: tuple[int, ...] = ()
    redis_port: int | None = None
    boot_s: float = 0.0  # from starting the server (and its helpers) to its answering


@dataclass
class Ctx:
    """What a system's start function gets: a temp dir, and a way to start helper processes
    (a broker) that live as long as the row and are stopped after it."""

    tmp: Path
    pin: bool
    stack: contextlib.ExitStack
    aux_pids: list[int] = field(default_factory=list)
    redis_port: int | None = None
    #: --ws-compression: the wsq rows' [server] ws_compression (None: wsq's default).
    ws_compression: str | None = None

    def spawn(
        self,
        name: str,
        cmd: list[str],
        port: int,
        env: dict[str, str] | None = None,
        timeout: float = 20.0,
        report: bool = True,
    ) -> int:
        """Start a helper process and wait for its port; with ``report`` its CPU is reported
        in the row (a Redis), without it is not (an epmd)."""
        proc = self.stack.enter_context(_process(name, cmd, env or {}, self.pin, self.tmp))
        wait_port(port, proc, timeout)
        if report:
            self.aux_pids.append(proc.pid)
        return proc.pid

    def redis(self) -> str:
        """A redis-server of our own on a free port, no persistence: its URL."""
        if self.redis_port is None:
            port = free_port()
            self.spawn(
                "redis",
                [
                    "redis-server",
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.tmp),
                ],
                port,
            )
            self.redis_port = port
        return f"redis://127.0.0.1:{self.redis_port}/0"


StartResult = tuple[list[str], dict[str, str], int, Callable[[int], Running]]


@dataclass
class System:
    name: str
    what: str
    start: Callable[[Ctx], StartResult]
    needs: tuple[str, ...] = ()
    # seconds the server may take to listen (a RabbitMQ node boots slowly)
    boot_timeout: float = 20.0
    # worker processes the server forks (uvicorn --workers): all must be up before measuring
    workers: int = 1
    # wsq subscribers ask for the compact delivery form and its rows in their open
    compact: bool = False
    # the generator's clients offer permessage-deflate as Chromium does (a browser-real row)
    deflate: bool = False


def _node(script: str, *flags: str) -> Callable[[Ctx], StartResult]:
    def start(_ctx: Ctx) -> StartResult:
        port = free_port()
        return (
            ["node", str(NODE_DIR / script), str(port), *flags],
            {},
            port,
            lambda pid: Running(
                pid,
                f"ws://127.0.0.1:{port}" + ("/ws" if script == "ceiling.mjs" else ""),
                "wsq" if script == "ceiling.mjs" else "raw",
            ),
        )

    return start


def _py_broadcast(*flags: str) -> Callable[[Ctx], StartResult]:
    def start(_ctx: Ctx) -> StartResult:
        port = free_port()
        cmd = [sys.executable, str(BENCH / "peers" / "ws_broadcast.py"), str(port), *flags]
        return cmd, {}, port, lambda pid: Running(pid, f"ws://127.0.0.1:{port}", "raw")

    return start


def _wsq_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WSQ_")}
    env["WSQ_DEV_SECRET"] = "bench-" + secrets.token_urlsafe(48)
    return env


#: The wsq rows' tenant quotas: past anything the bench opens (a tenant's default
#: max_connections, 1,000, is below the idle scenario's 2,000 sockets).
BENCH_TENANT_QUOTA = 1_000_000


def _wsq_config(path: Path, env: dict[str, str], ws_compression: str | None) -> None:
    """The wsq rows' configuration: tenant ``dev`` with the development secret of ``env`` and
    quotas that the bench never meets, and the row's ``ws_compression`` (wsq's default when
    None): every other setting is wsq's default."""
    server = f'ws_compression = "{ws_compression}"\n' if ws_compression is not None else ""
    path.write_text(
        f"[server]\n{server}\n"
        "[tenants.dev]\n"
        f'keys = [{{ alg = "HS256", secret = "{env["WSQ_DEV_SECRET"]}" }}]\n'
        f"max_connections = {BENCH_TENANT_QUOTA}\n"
        f"max_links = {BENCH_TENANT_QUOTA}\n"
    )


def _wsq_token(
    env: dict[str, str], wsq: list[str] | None = None, config: Path | None = None
) -> str:
    """A token of tenant ``dev`` for ``bench.>`` (development mode, or ``config``'s tenant
    ``dev``), minted by ``wsq`` (a command: this venv's ``wsq`` unless given, e.g. another
    checkout's ``python -m wsq``)."""
    out = subprocess.run(
        [
            *(wsq or [str(VENV_BIN / "wsq")]),
            "token",
            *(["--config", str(config)] if config is not None else []),
            "--tenant",
            "dev",
            "--sub",
            "bench",
            "--publish",
            "bench.>",
            "--subscribe",
            "bench.>",
            "--ttl",
            "7200",
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def _wsq(
    broker: str, workers: int = 1, ws_compression: str | None = None, adapter: str = "wsq"
) -> Callable[[Ctx], StartResult]:
    """``ws_compression``: the row's ``[server] ws_compression`` (None: --ws-compression, else
    wsq's default); ``adapter``: the generator's clients (``amqp``: rhea over AMQP 1.0)."""

    def start(ctx: Ctx) -> StartResult:
        url = ctx.redis() if broker == "redis" else "memory://"
        port = free_port()
        env = _wsq_env()
        config = ctx.tmp / f"wsq-bench-{port}.toml"
        _wsq_config(config, env, ws_compression or ctx.ws_compression)
        token = _wsq_token(env, config=config)
        cmd = [
            str(VENV_BIN / "wsq"),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--broker",
            url,
            "--log-level",
            "warning",
            "--config",
            str(config),
        ]
        if workers > 1:
            cmd += ["--workers", str(workers)]
        return cmd, env, port, lambda pid: Running(pid, f"ws://127.0.0.1:{port}/ws", adapter, token)

    return start


def _socketio(redis: bool, workers: int = 1) -> Callable[[Ctx], StartResult]:
    def start(ctx: Ctx) -> StartResult:
        port = free_port()
        cmd = [sys.executable, str(BENCH / "peers" / "sio_server.py"), str(port)]
        if redis:
            cmd += ["--redis", ctx.redis()]
        if workers > 1:
            cmd += ["--workers", str(workers)]
        return cmd, {}, port, lambda pid: Running(pid, f"ws://127.0.0.1:{port}", "socketio")

    return start


def _nats(compression: bool) -> Callable[[Ctx], StartResult]:
    """nats-server with its WebSocket listener; ``compression``: its ``websocket { compression }``
    (accepts a client's permessage-deflate offer; off by default)."""

    def start(ctx: Ctx) -> StartResult:
        port, ws_port = free_port(), free_port()
        conf = ctx.tmp / "nats.conf"
        conf.write_text(
            f"listen: 127.0.0.1:{port}\n"
            "max_payload: 1048576\n"
            f'websocket {{\n  listen: "127.0.0.1:{ws_port}"\n  no_tls: true\n'
            f"  compression: {'true' if compression else 'false'}\n}}\n"
        )
        return (
            ["nats-server", "-c", str(conf)],
            {},
            ws_port,
            lambda pid: Running(pid, f"ws://127.0.0.1:{ws_port}", "nats"),
        )

    return start


RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
# TCP_NODELAY on the node's listeners (Web-STOMP's included), as ws, uvicorn and NATS have it
ADVANCED = "[{kernel, [{inet_default_listen_options, [{nodelay, true}]}]}].\n"


def _rabbitmq(ctx: Ctx) -> StartResult:
    """A RabbitMQ node of our own (never the machine's service): its own node name, ports,
    epmd, cookie (HOME), data, logs, config and plugins file, in the row's temp dir."""
    base = ctx.tmp / "rabbitmq"
    home = base / "home"
    home.mkdir(parents=True, exist_ok=True)
    amqp, dist, stomp, ws, epmd = (free_port() for _ in range(5))
    # Our own epmd on a free port: the node registers there, not with the machine's epmd.
    ctx.spawn("epmd", ["epmd", "-address", "127.0.0.1", "-port", str(epmd)], epmd, report=False)
    (base / "enabled_plugins").write_text("[rabbitmq_web_stomp].\n")
    (base / "rabbitmq.conf").write_text(
        f"listeners.tcp.1 = 127.0.0.1:{amqp}\n"
        f"stomp.listeners.tcp.1 = 127.0.0.1:{stomp}\n"
        f"web_stomp.tcp.port = {ws}\n"
        "web_stomp.tcp.ip = 127.0.0.1\n"
        # Cowboy closes a WebSocket that has sent nothing for 60 s (its default): our
        # subscribers send nothing once subscribed (heart-beats off, as for every peer), and a
        # full run keeps them longer than that.
        "web_stomp.ws_opts.idle_timeout = 3600000\n"
        "log.console = false\n"
        "log.file.level = warning\n"
    )
    (base / "advanced.config").write_text(ADVANCED)
    (base / "rabbitmq-env.conf").write_text("")
    env = {
        "HOME": str(home),
        "RABBITMQ_NODENAME": "wsqbench@localhost",
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(amqp),
        "RABBITMQ_DIST_PORT": str(dist),
        "ERL_EPMD_PORT": str(epmd),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
        "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
        "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
        "RABBITMQ_LOG_BASE": str(base / "log"),
        "RABBITMQ_PID_FILE": str(base / "rabbitmq.pid"),
        # the distribution port on loopback too (it binds every interface otherwise)
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
    }
    return (
        [RABBITMQ_SERVER],
        env,
        ws,
        lambda pid: Running(pid, f"ws://127.0.0.1:{ws}/ws", "stomp"),
    )


def _mosquitto(ctx: Ctx) -> StartResult:
    port = free_port()
    conf = ctx.tmp / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous true\n"
        "persistence false\n"
        # as every other peer (ws, uvicorn, NATS) does: no Nagle delay on small messages
        "set_tcp_nodelay true\n"
        # QoS 0 fan-out: never drop a subscriber's messages for a queue limit; the generator
        # bounds what is in flight itself, as for every system.
        "max_queued_messages 0\n"
        "max_queued_bytes 0\n"
        "log_type error\n"
        "log_type warning\n"
        "log_dest stderr\n"
    )
    return (
        ["mosquitto", "-c", str(conf)],
        {},
        port,
        lambda pid: Running(pid, f"tcp://127.0.0.1:{port}", "mqtt"),
    )


SYSTEMS: dict[str, System] = {
    s.name: s
    for s in (
        System(
            "ceiling",
            "Node ws relay, one pre-encoded batch for all (wsq.v1)",
            _node("ceiling.mjs"),
            ("node",),
        ),
        System(
            "ceiling-bare",
            "the ceiling sending bare bodies, no transfer envelope (framing cost of wsq.v1)",
            _node("ceiling.mjs", "--bare"),
            ("node",),
        ),
        System(
            "ceiling-compact",
            "the ceiling sending one compact frame (transfers) of rows per batch",
            _node("ceiling.mjs", "--compact"),
            ("node",),
            compact=True,
        ),
        System("wsq-memory", "wsq serve, memory broker (wsq.v1)", _wsq("memory")),
        System(
            "wsq-memory-compact",
            "wsq serve, memory broker, subscribers ask for compact deliveries and rows",
            _wsq("memory"),
            compact=True,
        ),
        System(
            "wsq-memory-amqp",
            "wsq serve, memory broker, rhea clients over AMQP 1.0 (subprotocol amqp)",
            _wsq("memory", adapter="amqp"),
            ("node",),
        ),
        System(
            "wsq-redis",
            "wsq serve, Redis broker (own redis-server), 1 worker (wsq.v1)",
            _wsq("redis"),
            ("redis-server",),
        ),
        System(
            "wsq-redis-2w",
            "wsq serve --workers 2, Redis broker (wsq.v1)",
            _wsq("redis", workers=2),
            ("redis-server",),
            workers=2,
        ),
        System("py-websockets", "websockets broadcast(), one frame per message", _py_broadcast()),
        System(
            "socketio",
            "python-socketio on uvicorn, emit to a room, one process",
            _socketio(redis=False),
            ("py:socketio",),
        ),
        System(
            "socketio-redis-2w",
            "python-socketio, AsyncRedisManager, 2 uvicorn workers",
            _socketio(redis=True, workers=2),
            ("py:socketio", "redis-server"),
            workers=2,
        ),
        System(
            "node-ws",
            "Node ws broadcaster, one frame per message",
            _node("broadcast.mjs"),
            ("node",),
        ),
        System(
            "nats-ws",
            "nats-server WebSocket listener (NATS protocol)",
            _nats(compression=False),
            ("nats-server",),
        ),
        System(
            "rabbitmq-stomp",
            "RabbitMQ Web-STOMP, own node, /topic/ destination (STOMP 1.2)",
            _rabbitmq,
            ("epmd", RABBITMQ_SERVER),
            boot_timeout=90.0,
        ),
        System(
            "mosquitto-tcp",
            "Mosquitto, MQTT 3.1.1 QoS 0 over plain TCP (Debian's has no WebSocket listener)",
            _mosquitto,
            ("mosquitto",),
        ),
        # The browser-real rows: the generator's clients offer permessage-deflate exactly as
        # Chromium 156 does ("permessage-deflate; client_max_window_bits") and compress what
        # they send; each row reports what the server answered (a peer that declines is
        # measured as a browser meets it too).
        System(
            "ceiling-deflate",
            "the ceiling accepting permessage-deflate (ws defaults): one compression per socket",
            _node("ceiling.mjs", "--deflate"),
            ("node",),
            deflate=True,
        ),
        System(
            "wsq-memory-offered",
            "wsq-memory, browsers' offer met by the default ws_compression = off (declined)",
            _wsq("memory"),
            deflate=True,
        ),
        System(
            "wsq-memory-deflate",
            "wsq-memory with ws_compression = deflate (the offer accepted)",
            _wsq("memory", ws_compression="deflate"),
            deflate=True,
        ),
        System(
            "py-websockets-deflate",
            "websockets broadcast() with its default compression='deflate'",
            _py_broadcast("--deflate"),
            deflate=True,
        ),
        System(
            "socketio-deflate",
            "python-socketio on uvicorn as configured above (uvicorn accepts deflate by default)",
            _socketio(redis=False),
            ("py:socketio",),
            deflate=True,
        ),
        System(
            "node-ws-deflate",
            "Node ws broadcaster with perMessageDeflate: true (ws defaults, context kept)",
            _node("broadcast.mjs", "--deflate"),
            ("node",),
            deflate=True,
        ),
        System(
            "rabbitmq-stomp-deflate",
            "the rabbitmq-stomp row unchanged: its Web-STOMP listener accepts deflate by default",
            _rabbitmq,
            ("epmd", RABBITMQ_SERVER),
            boot_timeout=90.0,
            deflate=True,
        ),
        System(
            "nats-ws-deflate",
            "nats-server WebSocket listener with compression: true",
            _nats(compression=True),
            ("nats-server",),
            deflate=True,
        ),
    )
}
#: ``--only`` names for sets of rows: the browser-real rows with the rows their targets compare
GROUPS: dict[str, tuple[str, ...]] = {
    "browser": (
        "ceiling",
        "wsq-memory",
        "py-websockets",
        *(name for name, s in SYSTEMS.items() if s.deflate),
    ),
}


@contextlib.contextmanager
def _process(
    name: str, cmd: list[str], extra_env: dict[str, str], pin: bool, tmp: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A server-side process on CPU 0, in its own session; its whole group stopped after."""
    env = {**os.environ, **extra_env}
    if pin:
        cmd = ["taskset", "-c", "0", *cmd]
    log = open(tmp / f"{name}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            proc.wait()
        log.close()


@contextlib.contextmanager
def running(
    system: System, pin: bool, tmp: Path, ws_compression: str | None = None
) -> Iterator[Running]:
    with contextlib.ExitStack() as stack:
        t0 = time.monotonic()
        ctx = Ctx(tmp, pin, stack, ws_compression=ws_compression)
        cmd, extra_env, port, make = system.start(ctx)
        proc = stack.enter_context(_process(system.name, cmd, extra_env, pin, tmp))
        wait_port(port, proc, system.boot_timeout)
        if system.name.startswith("wsq"):
            _wait_healthz(port)
        _wait_processes(proc.pid, system.workers)
        srv = make(proc.pid)
        srv.aux_pids = tuple(ctx.aux_pids)
        srv.redis_port = ctx.redis_port
        srv.boot_s = time.monotonic() - t0
        yield srv


def _wait_processes(pid: int, count: int, timeout: float = 20.0) -> None:
    """Until the server has forked ``count`` workers (multiprocessing spawns, as uvicorn does),
    then a moment for the last to start accepting: connections must spread over all."""
    if count <= 1:
        return
    deadline = time.monotonic() + timeout

    def workers() -> int:
        n = 0
        for p in process_tree(pid):
            with contextlib.suppress(OSError), open(f"/proc/{p}/cmdline", "rb") as f:
                n += b"spawn_main" in f.read()
        return n

    while workers() < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server has not {count} workers after {timeout} s")
        time.sleep(0.1)
    time.sleep(2.0)


def _wait_healthz(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r,
        ):
            if r.status == 200:
                return
        time.sleep(0.05)
    raise RuntimeError("wsq did not answer /healthz")


# -- driving the load generator --------------------------------------------------------------


def run_loadgen(
    spec: dict[str, Any],
    srv: Running,
    pin: bool,
    on_mark: Callable[[str], None] | None = None,
    watch_rss: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """Run one scenario; sample the server's /proc at each mark. Answers the result, with
    ``marks``: {name: {"cpu": s, "rss": bytes, "t": s, "gen_cpu": s, "aux_cpu": s}}. With
    ``watch_rss`` (two marks), the server's RSS is also watched between them, and the second
    mark has ``rss_released``: the bytes the server gave back meanwhile (RssWatch)."""
    server_pid = srv.pid
    cmd = ["node", str(NODE_DIR / "loadgen.mjs"), json.dumps(spec)]
    if pin:
        cmd = ["taskset", "-c", "1", *cmd]
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
    )
    assert proc.stdin is not None and proc.stdout is not None
    marks: dict[str, dict[str, float]] = {}
    result: dict[str, Any] | None = None
    error = None
    watch: RssWatch | None = None
    for line in proc.stdout:
        msg = json.loads(line)
        if "mark" in msg:
            name = msg["mark"]
            released = None
            if watch is not None and watch_rss is not None and name == watch_rss[1]:
                released = watch.stop()
                watch = None
            marks[name] = {
                "t": time.monotonic(),
                "cpu": tree_cpu_seconds(server_pid),
                "cpu_by_pid": {p: process_cpu_seconds(p) for p in process_tree(server_pid)},
                "rss": tree_rss_bytes(server_pid),
                "gen_cpu": tree_cpu_seconds(proc.pid),
                "aux_cpu": sum(tree_cpu_seconds(p) for p in srv.aux_pids),
                "aux_rss": sum(tree_rss_bytes(p) for p in srv.aux_pids),
            }
            if released is not None:
                marks[name]["rss_released"] = released
            if watch_rss is not None and name == watch_rss[0]:
                watch = RssWatch(server_pid)
            if on_mark is not None:
                on_mark(name)
            proc.stdin.write("ok\n")
            proc.stdin.flush()
        elif "result" in msg:
            result = msg["result"]
        elif "error" in msg:
            error = msg["error"]
    proc.wait()
    if watch is not None:
        watch.stop()
    if result is None:
        raise RuntimeError(f"load generator failed ({spec['scenario']}): {error}")
    result["marks"] = marks
    return result


def measure(
    system: System,
    sizes: dict[str, Any],
    pin: bool,
    tmp: Path,
    profile_dir: Path | None,
    deflate: bool = False,
    ws_compression: str | None = None,
) -> dict[str, Any]:
    """One row. ``deflate``: the generator's clients offer permessage-deflate as Chromium does;
    ``ws_compression``: the wsq rows' setting (None: wsq's default)."""
    row: dict[str, Any] = {"system": system.name, "what": system.what}
    deflate = deflate or system.deflate
    row["deflate_offered"] = deflate
    with running(system, pin, tmp, ws_compression) as srv:
        row["boot_s"] = srv.boot_s
        base = {
            "adapter": srv.adapter,
            "url": srv.url,
            "token": srv.token,
            "size": sizes["size"],
            "timeout": sizes["timeout"],
            "concurrency": 50,
            "settle_ms": sizes.get("settle_ms", 1000),
            "deflate": deflate,
            "compact": system.compact,
        }
        # idle first, on a fresh server
        r = run_loadgen(
            {**base, "scenario": "idle", "address": "bench.idle", "conns": sizes["conns"]},
            srv,
            pin,
            watch_rss=("before", "after"),
        )
        # What the clients offered and the server answered ("" when none or declined).
        row["offered"] = r.get("offered")
        row["extensions"] = r.get("extensions")
        row["idle"] = idle_figures(r)
        time.sleep(0.3)  # let the server see the closes

        profiler = _Profiler(srv.pid, profile_dir, system.name) if profile_dir else None
        r = run_loadgen(
            {
                **base,
                "scenario": "fanout",
                "address": "bench.fanout",
                "subs": sizes["subs"],
                "messages": sizes["messages"],
                "batch": sizes["batch"],
                "window": sizes["window"],
                "rounds": sizes["rounds"],
                "min_seconds": sizes["min_seconds"],
            },
            srv,
            pin,
            profiler.on_mark if profiler else None,
        )
        row["fanout"] = _median_round(r)
        if profiler:
            row["fanout"]["profile"] = profiler.finish()
        time.sleep(0.3)

        r = run_loadgen(
            {
                **base,
                "scenario": "latency",
                "address": "bench.latency",
                "subs": sizes["lat_subs"],
                "rate": sizes["rate"],
                "duration": sizes["duration"],
            },
            srv,
            pin,
        )
        row["latency"] = _with_cpu(r, r.pop("marks"), r["delivered"])
        if srv.redis_port is not None:
            row["redis_commands"] = {
                str(subs): redis_commands_per_message(srv, base, sizes, subs, pin)
                for subs in (sizes["cmd_subs_low"], sizes["cmd_subs_high"])
            }
    return row


#: Below this growth of the server's RSS the idle figure is page and allocator granularity.
IDLE_MIN_GROWTH = 256 * 1024
#: More given back than this share of the growth while the connections were opened, and the
#: before/after difference is not what they take (a runtime's GC returned older memory).
IDLE_MAX_RELEASED = 0.05
TOO_NOISY = "n/a (too noisy at this size)"


def idle_figures(r: dict[str, Any]) -> dict[str, Any]:
    """The idle scenario's figures. ``kib_per_conn`` is None (``noisy`` says why) unless the
    server's RSS grew enough to read and gave (almost) nothing back while it grew: the
    difference of two readings is the connections' cost only then."""
    before, after = r["marks"]["before"], r["marks"]["after"]
    conns = r["conns"]
    growth = after["rss"] - before["rss"]
    released = after.get("rss_released", 0)
    measured = growth / 1024 / conns
    noisy = None
    if released > IDLE_MAX_RELEASED * max(growth, 0):
        # What it gave back was older memory, or some of the connections' own: their cost is
        # between the difference and the difference plus all of it.
        upper = (growth + released) / 1024 / conns
        moved = (
            f"grew {growth / 1024:,.0f} KiB"
            if growth >= 0
            else f"ended {-growth / 1024:,.0f} KiB lower"
        )
        noisy = (
            f"its RSS gave back {released / 1024:,.0f} KiB (a garbage collector) and {moved} "
            f"with {conns:,} connections: somewhere between {max(measured, 0.0):.1f} and "
            f"{upper:.1f} KiB/conn"
        )
    elif growth < IDLE_MIN_GROWTH:
        noisy = (
            f"its RSS grew {growth / 1024:,.0f} KiB with {conns:,} connections, under "
            f"{IDLE_MIN_GROWTH // 1024} KiB: pages and allocator chunks, not a figure"
        )
    return {
        "conns": conns,
        "rss_before_kib": before["rss"] / 1024,
        "rss_after_kib": after["rss"] / 1024,
        "rss_released_kib": released / 1024,
        "kib_per_conn_measured": measured,
        "kib_per_conn": None if noisy else measured,
        "noisy": noisy,
        "connects_per_s": r["connects_per_s"],
    }


def _commandstats(client: Any) -> dict[str, int]:
    stats = client.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


#: The gateways' own figures: every wsq process publishes a snapshot on ``$sys.stats`` once a
#: second (wsq.sys_stats), whatever else is published; their keys are the ``$sys`` tenant's.
SYS_KEY_PREFIX = "wsq:{%24sys:"
_MONITOR_LINE = re.compile(r'^\+[\d.]+ \[\d+ ([^\]]+)\] "([^"]*)"((?: "(?:[^"\\]|\\.)*")*)')
_MONITOR_ARG = re.compile(r'"((?:[^"\\]|\\.)*)"')


class RedisMonitor:
    """``MONITOR`` on a row's Redis over a commands run: which of the commands that ``INFO
    commandstats`` counted served the gateways' own figures (``$sys.stats``, once a second per
    process) rather than the publish run. A window that lasts longer holds more of them: at
    1,000 subscribers the run lasts about 0.5 s, at 10 about 0.1 s."""

    def __init__(self, port: int) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self._sock.sendall(b"MONITOR\r\n")
        self._sock.settimeout(None)
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            for raw in self._sock.makefile("rb"):
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\r\n"))

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(5)

    def window(self) -> dict[str, dict[str, int]]:
        """Commands between the two ``INFO commandstats`` of the marks (the window they count),
        by command, split into ``sys`` (a script on ``$sys`` keys and what it ran, or a command
        on such a key) and ``other``."""
        out: dict[str, dict[str, int]] = {"sys": {}, "other": {}}
        infos = 0
        script_sys = False
        for line in self.lines:
            m = _MONITOR_LINE.match(line)
            if m is None:
                continue
            client, name, rest = m.group(1), m.group(2).lower(), m.group(3)
            if name == "info" and client != "lua":
                infos += 1
                if infos == 2:
                    break
                continue
            if infos != 1:
                continue
            args = _MONITOR_ARG.findall(rest)
            if client == "lua":
                is_sys = script_sys
            else:
                script = name in ("evalsha", "eval")
                # a script's first key follows its body (or sha) and its number of keys
                keys = args[2:3] if script else args[:1]
                is_sys = bool(keys) and keys[0].startswith(SYS_KEY_PREFIX)
                if script:
                    script_sys = is_sys
            part = out["sys" if is_sys else "other"]
            part[name] = part.get(name, 0) + 1
        return out


def redis_commands_per_message(
    srv: Running, base: dict[str, Any], sizes: dict[str, Any], subs: int, pin: bool
) -> dict[str, Any]:
    """Redis commands (INFO commandstats, all clients) per published message over one publish
    run to ``subs`` subscribers: what a publish costs Redis, which must not grow with them.
    ``per_message_net`` leaves out what the gateways' own figures (``$sys.stats``) cost in the
    window (``RedisMonitor``): one snapshot a second per process, published whatever else is,
    so a run that lasts longer holds more of them without a publish costing more."""
    import redis  # wsq's own dependency, in the bench's venv

    assert srv.redis_port is not None
    stats: dict[str, dict[str, int]] = {}
    # One connection for both readings: a new one would count its HELLO in the window.
    client = redis.Redis(host="127.0.0.1", port=srv.redis_port)
    client.ping()
    monitor = RedisMonitor(srv.redis_port)

    def on_mark(name: str) -> None:
        if name in ("start:0", "end:0"):
            stats[name] = _commandstats(client)

    messages = sizes["cmd_messages"]
    try:
        r = run_loadgen(
            {
                **base,
                "scenario": "fanout",
                "address": f"bench.cmds{subs}",
                "subs": subs,
                "messages": messages,
                "batch": sizes["batch"],
                "window": sizes["window"],
                "rounds": 1,
                "min_seconds": 0,
            },
            srv,
            pin,
            on_mark,
        )
        # MONITOR's lines come after the commands: the second INFO is in them once read.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and sum('"INFO"' in line for line in monitor.lines) < 2:
            time.sleep(0.05)
    finally:
        monitor.stop()
        client.close()
    run = r["rounds"][0]
    before, after = stats["start:0"], stats["end:0"]
    # the INFO that read ``before`` is counted in ``after``: not the system's
    calls = {
        k: after[k] - before.get(k, 0)
        for k in after
        if k != "info" and after[k] - before.get(k, 0) > 0
    }
    total = sum(calls.values())
    window = monitor.window()
    own = sum(window["sys"].values())
    return {
        "subs": subs,
        "messages": messages,
        "complete": run["complete"],
        "commands": total,
        "per_message": total / messages,
        "by_command": dict(sorted(calls.items(), key=lambda kv: -kv[1])),
        # what MONITOR saw in the same window: the gateways' own figures apart
        "sys_stats_commands": own,
        "sys_stats_by_command": dict(sorted(window["sys"].items(), key=lambda kv: -kv[1])),
        "sys_stats_snapshots": window["sys"].get("evalsha", 0) + window["sys"].get("eval", 0),
        "monitor_commands": own + sum(window["other"].values()),
        "per_message_net": (total - own) / messages,
    }


def _median_round(r: dict[str, Any]) -> dict[str, Any]:
    """The fan-out figures of the median round (by msgs/s), CPU measured over that round."""
    marks = r.pop("marks")
    rounds = [
        _with_cpu(x, {"start": marks[f"start:{i}"], "end": marks[f"end:{i}"]}, x["delivered"])
        for i, x in enumerate(r.pop("rounds"))
    ]
    ranked = sorted(rounds, key=lambda x: x["msgs_per_s"])
    median = ranked[len(ranked) // 2]
    return (
        r
        | median
        | {
            "complete": all(x["complete"] for x in rounds),
            "error": next((x["error"] for x in rounds if x["error"]), None),
            "rounds_msgs_per_s": [x["msgs_per_s"] for x in rounds],
            "rounds_cpu_us_per_delivery": [x["cpu_us_per_delivery"] for x in rounds],
        }
    )


def _with_cpu(
    r: dict[str, Any], marks: dict[str, dict[str, float]], delivered: int
) -> dict[str, Any]:
    start, end = marks["start"], marks["end"]
    wall = max(end["t"] - start["t"], 1e-9)
    cpu = end["cpu"] - start["cpu"]
    aux = end["aux_cpu"] - start["aux_cpu"]
    return r | {
        "server_cpu_s": cpu,
        # each process's own CPU, busiest first: how the workers split the load
        "cpu_s_by_process": sorted(
            (
                end["cpu_by_pid"][p] - start["cpu_by_pid"].get(p, 0.0)
                for p in end["cpu_by_pid"]
                if len(end["cpu_by_pid"]) > 1
            ),
            reverse=True,
        ),
        "cpu_us_per_delivery": cpu * 1e6 / delivered if delivered else None,
        "aux_cpu_s": aux,
        # only rows with a helper process (their Redis) have one: its RSS is never 0
        "aux_cpu_us_per_delivery": aux * 1e6 / delivered
        if delivered and start["aux_rss"]
        else None,
        "server_cpu_util": cpu / wall,
        "generator_cpu_util": (end["gen_cpu"] - start["gen_cpu"]) / wall,
    }


class _Profiler:
    """py-spy on the server during every fan-out round (raw collapsed stacks into ``out``)."""

    def __init__(self, pid: int, out: Path, name: str) -> None:
        self.pid = pid
        self.file = out / f"{name}-fanout.txt"
        self.proc: subprocess.Popen[bytes] | None = None

    def on_mark(self, mark: str) -> None:
        spy = shutil.which("py-spy") or str(VENV_BIN / "py-spy")
        if mark == "start:0" and Path(spy).exists():
            self.file.parent.mkdir(parents=True, exist_ok=True)
            cmd = [spy, "record", "--pid", str(self.pid), "--rate", "250", "--format", "raw"]
            self.proc = subprocess.Popen(
                [*cmd, "--output", str(self.file), "--nonblocking"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

    def finish(self) -> str | None:
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        self.proc.wait(30)
        return str(self.file)


# -- reporting -------------------------------------------------------------------------------

# (key, label, path into a row, format, better): ratios are to the ceiling's figure.
COLUMNS: list[tuple[str, str, tuple[str, str], str, str]] = [
    ("fanout", "fan-out msg/s", ("fanout", "msgs_per_s"), "{:,.0f}", "higher"),
    ("cpu", "CPU us/deliv", ("fanout", "cpu_us_per_delivery"), "{:.2f}", "lower"),
    ("p50", "p50 ms", ("latency", "p50_ms"), "{:.2f}", "lower"),
    ("p99", "p99 ms", ("latency", "p99_ms"), "{:.2f}", "lower"),
    ("max", "max ms", ("latency", "max_ms"), "{:.1f}", "lower"),
    ("lat_cpu", "CPU us/deliv @rate", ("latency", "cpu_us_per_delivery"), "{:.2f}", "lower"),
    ("redis_cpu", "+Redis CPU us/deliv", ("fanout", "aux_cpu_us_per_delivery"), "{:.2f}", "lower"),
    ("rss", "KiB/idle conn", ("idle", "kib_per_conn"), "{:.1f}", "lower"),
    # TCP bytes the subscribers read per delivered message (fan-out, median round)
    ("wire", "wire B/deliv", ("fanout", "wire_bytes_per_delivery"), "{:.1f}", "lower"),
    ("connect", "connect/s", ("idle", "connects_per_s"), "{:,.0f}", "higher"),
]


def value(row: dict[str, Any], path: tuple[str, str]) -> float | None:
    v = row.get(path[0], {}).get(path[1])
    return float(v) if isinstance(v, int | float) else None


def add_ratios(rows: list[dict[str, Any]]) -> None:
    ceiling = next((r for r in rows if r["system"] == "ceiling"), None)
    for row in rows:
        ratios: dict[str, float | None] = {}
        for key, _label, path, _fmt, _better in COLUMNS:
            v = value(row, path)
            c = value(ceiling, path) if ceiling else None
            ratios[key] = v / c if v is not None and c else None
        row["ratio_to_ceiling"] = ratios


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: each figure with its ratio to the ceiling in parentheses."""
    head = ["system", *[c[1] for c in COLUMNS], "complete"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["system"]]
        for key, _label, path, fmt, _better in COLUMNS:
            v = value(row, path)
            ratio = row["ratio_to_ceiling"].get(key)
            cell = "-" if v is None else fmt.format(v)
            if key == "rss" and row.get("idle", {}).get("noisy"):
                cell = TOO_NOISY
            if ratio is not None and row["system"] != "ceiling":
                cell += f" ({ratio:.2f}x)"
            cells.append(cell)
        ok = all(row.get(s, {}).get("complete", True) for s in ("fanout", "latency"))
        cells.append("yes" if ok else "NO")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def noisy_note(rows: list[dict[str, Any]]) -> str:
    """Why a row's KiB per idle connection is n/a."""
    lines = [
        f"- {row['system']}: {row['idle']['noisy']}"
        for row in rows
        if row.get("idle", {}).get("noisy")
    ]
    return f"KiB/idle conn {TOO_NOISY}:\n\n" + "\n".join(lines) if lines else ""


def generator_note(rows: list[dict[str, Any]]) -> str:
    out = [
        "| system | fan-out: server CPU | fan-out: generator CPU | latency: server CPU |",
        "|---|---|---|---|",
    ]
    for row in rows:
        f, lat = row.get("fanout", {}), row.get("latency", {})
        out.append(
            f"| {row['system']} | {f.get('server_cpu_util', 0):.0%} | "
            f"{f.get('generator_cpu_util', 0):.0%} | {lat.get('server_cpu_util', 0):.0%} |"
        )
    return "\n".join(out)


def deflate_table(rows: list[dict[str, Any]]) -> str:
    """The rows whose clients offered permessage-deflate: the offer, the answer, what the wire
    carried per delivery beside the same system's uncompressed row."""
    by = {r["system"]: r for r in rows}
    lines = [
        "| system | offered | answered | wire B/deliv | uncompressed row | its wire B/deliv |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        if not row.get("deflate_offered"):
            continue
        plain = row["system"].removesuffix("-deflate").removesuffix("-offered")
        wire = value(row, ("fanout", "wire_bytes_per_delivery"))
        other = value(by.get(plain, {}), ("fanout", "wire_bytes_per_delivery"))
        answer = row.get("extensions")
        lines.append(
            f"| {row['system']} | `{row.get('offered') or '-'}` | "
            f"{f'`{answer}`' if answer else 'none'} | "
            f"{'-' if wire is None else f'{wire:.1f}'} | {plain if plain in by else '-'} | "
            f"{'-' if other is None else f'{other:.1f}'} |"
        )
    return "\n".join(lines) if len(lines) > 2 else ""


PYTHON_PEERS = ("py-websockets", "socketio", "socketio-redis-2w")


def targets(rows: list[dict[str, Any]], sizes: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 7's targets that this run's rows can check (wsq on the memory broker unless the
    target names another row)."""
    by = {r["system"]: r for r in rows if "error" not in r}
    out: list[dict[str, Any]] = []

    def ratio(path: tuple[str, str], a: str, b: str) -> float | None:
        x, y = value(by.get(a, {}), path), value(by.get(b, {}), path)
        return x / y if x is not None and y else None

    def check(name: str, figure: float | None, goal: float | None, higher: bool, fmt: str) -> None:
        met = (
            None if figure is None or goal is None else figure >= goal if higher else figure <= goal
        )
        shown = "-" if figure is None else fmt.format(figure)
        out.append({"target": name, "figure": figure, "shown": shown, "met": met})

    fan = ("fanout", "msgs_per_s")
    cpu = ("fanout", "cpu_us_per_delivery")
    p99 = ("latency", "p99_ms")
    check("fan-out >= 0.6x ceiling", ratio(fan, "wsq-memory", "ceiling"), 0.6, True, "{:.2f}x")
    check(
        "fan-out >= 3x websockets broadcast()",
        ratio(fan, "wsq-memory", "py-websockets"),
        3,
        True,
        "{:.2f}x",
    )
    check("fan-out >= 3x Node ws", ratio(fan, "wsq-memory", "node-ws"), 3, True, "{:.2f}x")
    rate = sizes["lat_subs"] * sizes["rate"]
    for name in ("wsq-memory", "wsq-redis"):
        check(
            f"{name}: p99 <= 25 ms at 50k deliveries/s (this run: {rate:,}/s)",
            value(by.get(name, {}), p99),
            25,
            False,
            "{:.1f} ms",
        )
    check(
        "<= 24 KiB RSS per idle connection",
        value(by.get("wsq-memory", {}), ("idle", "kib_per_conn")),
        24,
        False,
        "{:.1f} KiB",
    )
    if by.get("wsq-memory", {}).get("idle", {}).get("noisy"):
        out[-1]["shown"] = TOO_NOISY
    peers = [p for p in PYTHON_PEERS if value(by.get(p, {}), cpu)]
    best = min(peers, key=lambda p: value(by[p], cpu) or 0.0) if peers else None
    check(
        f"lowest CPU per delivery of the Python peers (x {best or 'the best of them'})",
        ratio(cpu, "wsq-memory", best) if best else None,
        1.0,
        False,
        "{:.2f}x",
    )
    check(
        "connect rate >= 0.5x websockets",
        ratio(("idle", "connects_per_s"), "wsq-memory", "py-websockets"),
        0.5,
        True,
        "{:.2f}x",
    )
    check(
        "wsq-redis: fan-out >= 0.8x wsq-memory",
        ratio(fan, "wsq-redis", "wsq-memory"),
        0.8,
        True,
        "{:.2f}x",
    )
    check(
        "wsq-redis-2w: CPU per delivery <= 1.2x one worker's",
        ratio(cpu, "wsq-redis-2w", "wsq-redis"),
        1.2,
        False,
        "{:.2f}x",
    )
    for name in ("wsq-redis", "wsq-redis-2w"):
        cmds = by.get(name, {}).get("redis_commands", {})
        low, high = cmds.get(str(sizes["cmd_subs_low"])), cmds.get(str(sizes["cmd_subs_high"]))
        # Net of the gateways' own $sys.stats snapshots (once a second per process, whatever
        # is published): a run that lasts longer holds more of them (RedisMonitor).
        growth = (
            high.get("per_message_net", high["per_message"])
            / low.get("per_message_net", low["per_message"])
            if low and high
            else None
        )
        check(
            f"{name}: Redis commands per message do not grow from {sizes['cmd_subs_low']} to "
            f"{sizes['cmd_subs_high']} subscribers (ratio, net of $sys.stats, <= 1.05)",
            growth,
            1.05,
            False,
            "{:.2f}x",
        )
    check(
        "fan-out vs NATS WebSocket (report only)",
        ratio(fan, "wsq-memory", "nats-ws"),
        None,
        True,
        "{:.2f}x",
    )
    check(
        "compact form: fan-out >= 1.0x NATS WebSocket",
        ratio(fan, "wsq-memory-compact", "nats-ws"),
        1.0,
        True,
        "{:.2f}x",
    )
    check(
        "compact form: fan-out >= 0.9x the compact ceiling",
        ratio(fan, "wsq-memory-compact", "ceiling-compact"),
        0.9,
        True,
        "{:.2f}x",
    )
    # Browser-real (issue 18): clients offer permessage-deflate as Chromium does; wsq at its
    # default setting (ws_compression = "off": the offer declined), websockets with its default
    # (compression accepted).
    check(
        "browser-real: wsq-memory-offered fan-out >= 3x py-websockets-deflate",
        ratio(fan, "wsq-memory-offered", "py-websockets-deflate"),
        3,
        True,
        "{:.2f}x",
    )
    check(
        "browser-real: wsq-memory-offered CPU per delivery <= 1.5x wsq-memory's",
        ratio(cpu, "wsq-memory-offered", "wsq-memory"),
        1.5,
        False,
        "{:.2f}x",
    )
    check(
        "browser-real: wsq-memory-offered <= 24 KiB RSS per idle connection",
        value(by.get("wsq-memory-offered", {}), ("idle", "kib_per_conn")),
        24,
        False,
        "{:.1f} KiB",
    )
    if by.get("wsq-memory-offered", {}).get("idle", {}).get("noisy"):
        out[-1]["shown"] = TOO_NOISY
    # the offer accepted (ws_compression = "deflate"): not the default, reported beside
    for what, path, other in (
        ("fan-out vs py-websockets-deflate", fan, "py-websockets-deflate"),
        ("CPU per delivery vs wsq-memory's", cpu, "wsq-memory"),
        (
            "wire bytes per delivery vs wsq-memory's",
            ("fanout", "wire_bytes_per_delivery"),
            "wsq-memory",
        ),
    ):
        check(
            f"wsq-memory-deflate: {what} (report only)",
            ratio(path, "wsq-memory-deflate", other),
            None,
            True,
            "{:.2f}x",
        )
    return out


def not_comparable_note(preset: str) -> str:
    return (
        f"These are {preset} figures: the targets are set for the full sizes (scripts/bench with "
        "no --quick, --tiny or size flag), and figures at other sizes are not comparable with "
        "them. A target below is checked only for a look, and not being met here is not a miss."
    )


def targets_table(checks: list[dict[str, Any]], comparable: bool = True) -> str:
    column = "met" if comparable else "met at these sizes (not comparable)"
    lines = [f"| target (wsq-memory unless named) | this run | {column} |", "|---|---|---|"]
    for c in checks:
        met = {True: "yes", False: "NO" if comparable else "no", None: "-"}[c["met"]]
        lines.append(f"| {c['target']} | {c['shown']} | {met} |")
    return "\n".join(lines)


def targets_summary(checks: list[dict[str, Any]], comparable: bool, preset: str) -> list[str]:
    """The last words of a run about the targets: which were not met, plainly."""
    missed = [c for c in checks if c["met"] is False]
    checked = [c for c in checks if c["met"] is not None]
    unchecked = len(checks) - len(checked)
    not_run = (
        f"; {unchecked} not checked (rows not in this run, or report only)" if unchecked else ""
    )
    if not comparable:
        lines = [
            f"targets: not checked: {preset} figures are not comparable with the targets, which "
            "are set for the full sizes (run scripts/bench with no --quick, --tiny or size flag)"
        ]
        if missed:
            lines.append(
                "  for a look only, below target at these sizes: "
                + "; ".join(f"{c['target']} ({c['shown']})" for c in missed)
            )
        return lines
    if not missed:
        return [f"targets: all {len(checked)} checked are met{not_run}"]
    return [
        f"targets NOT met: {len(missed)} of the {len(checked)} checked{not_run}:",
        *(f"  - {c['target']}: {c['shown']}" for c in missed),
    ]


def redis_table(rows: list[dict[str, Any]], sizes: dict[str, Any]) -> str:
    """Redis commands per published message (INFO commandstats), for the rows on Redis."""
    low, high = str(sizes["cmd_subs_low"]), str(sizes["cmd_subs_high"])
    lines = [
        f"| system | Redis cmds/msg at {low} subs | at {high} subs | net of $sys.stats, at "
        f"{low} / {high} subs | $sys.stats snapshots (commands) at {low} / {high} subs "
        f"| commands at {high} subs |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        cmds = row.get("redis_commands")
        if not cmds:
            continue
        cells = [row["system"]]
        for key in (low, high):
            c = cmds.get(key)
            cells.append("-" if c is None else f"{c['per_message']:.2f}")
        net, own = [], []
        for key in (low, high):
            c = cmds.get(key) or {}
            net.append(f"{c['per_message_net']:.2f}" if "per_message_net" in c else "-")
            own.append(
                f"{c['sys_stats_snapshots']} ({c['sys_stats_commands']})"
                if "sys_stats_commands" in c
                else "-"
            )
        cells += (" / ".join(net), " / ".join(own))
        top = cmds.get(high, {}).get("by_command", {})
        cells.append(", ".join(f"{k} {v}" for k, v in list(top.items())[:8]) or "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


def chart(rows: list[dict[str, Any]], path: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no chart"
    panels = [c for c in COLUMNS if c[0] in ("fanout", "cpu", "p99", "rss")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2))
    names = [r["system"] for r in rows]
    for ax, (key, label, _path, _fmt, better) in zip(axes, panels, strict=True):
        ratios = [r["ratio_to_ceiling"].get(key) or 0.0 for r in rows]
        colors = [
            "#888888" if n == "ceiling" else "#d62728" if n.startswith("wsq") else "#1f77b4"
            for n in names
        ]
        shown = [v for v in ratios if v > 0]
        # ratios that span two decades (the slowest peers) read on a log axis
        log = bool(shown) and max(shown) / min(shown) > 100
        ax.barh(names, ratios, color=colors, left=min(shown) / 2 if log else 0)
        if log:
            ax.set_xscale("log")
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.invert_yaxis()
        scale = ", log scale" if log else ""
        ax.set_title(f"{label}\n(x ceiling, {better} is better{scale})", fontsize=10)
        for y, v in enumerate(ratios):
            ax.text(v, y, f" {v:.2f}", va="center", fontsize=8)
        ax.margins(x=0.25)
    fig.suptitle("wsq bench: ratios to the ceiling server, same machine, same run")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


# -- main ------------------------------------------------------------------------------------

MISSING_TOOLS = 3  # the exit status when a peer's tool is not installed
#: optional parts, run only when --only names them (not rows: no ceiling, no load generator);
#: each is a script of bench/ given --out (and --quick or --tiny), and the tools it needs
PARTS: dict[str, tuple[str, tuple[str, ...]]] = {
    # competing move-mode consumers sharing a batch of jobs: queue_fairness.json / .md
    "fairness": ("queue_fairness.py", ("redis-server",)),
    # as many subscribed sockets as one node holds, on one process or --workers N (issue 18):
    # scale-<connections>-w<workers>.json / .md
    "scale": ("scale.py", ("redis-server", "node")),
}
TARGETS_MISSED = 4  # the exit status when a run at the full sizes misses a target


def _have(tool: str) -> bool:
    """A command on PATH (or an absolute path), or ``py:module`` importable in this Python."""
    if tool.startswith("py:"):
        import importlib.util

        return importlib.util.find_spec(tool[3:]) is not None
    return shutil.which(tool) is not None


def _shown(path: Path) -> str:
    """``path`` relative to the current directory when it is under it, for messages."""
    path = path.resolve()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def _missing(tools: set[str]) -> bool:
    """Whether any of ``tools`` is not installed (said on stderr)."""
    missing = sorted(t for t in tools if not _have(t))
    if missing:
        print(
            f"bench: missing tools: {', '.join(missing)} (scripts/bench installs them)",
            file=sys.stderr,
        )
    return bool(missing)


def _part_alone(argv: list[str]) -> tuple[str, list[str]] | None:
    """The part and its script's command line when ``--only`` names one optional part and
    nothing else: every other argument is the script's own (scale's ``--rate`` is a float, the
    rows' an int; ``--help`` is the script's help)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--only")
    known, rest = pre.parse_known_args(argv)
    if known.only not in PARTS:
        return None
    return known.only, [sys.executable, str(BENCH / PARTS[known.only][0]), *rest]


def main(argv: list[str] | None = None) -> int:
    alone = _part_alone(sys.argv[1:] if argv is None else argv)
    if alone is not None:
        part, command = alone
        if _missing(set(PARTS[part][1])):
            return MISSING_TOOLS
        return subprocess.run(command).returncode
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small sizes, about three minutes")
    mode.add_argument("--tiny", action="store_true", help="a few seconds: for the smoke test")
    p.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="results folder (default bench/out/, git-ignored; the committed reference figures "
        "are in bench/results/: --out bench/results to replace them)",
    )
    p.add_argument(
        "--only",
        help="comma-separated systems (default: all): "
        + ", ".join(SYSTEMS)
        + "; groups of rows: "
        + ", ".join(f"{g} ({', '.join(rows)})" for g, rows in GROUPS.items())
        + "; and optional parts, run only when named here: "
        + ", ".join(PARTS),
    )
    p.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="do not pin the server to CPU 0 and the generator to CPU 1",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the Python servers during fan-out (raw stacks into --out)",
    )
    p.add_argument("--no-chart", dest="chart", action="store_false")
    p.add_argument(
        "--connections", type=int, help="the scale part's sockets (bench/scale.py; default 19,500)"
    )
    p.add_argument(
        "--workers",
        type=int,
        help="the scale part's wsq serve --workers (default 1: memory broker)",
    )
    p.add_argument(
        "--deflate",
        action="store_true",
        help="the generator's clients offer permessage-deflate as Chromium does "
        "('permessage-deflate; client_max_window_bits') and compress every message they send",
    )
    p.add_argument(
        "--ws-compression",
        choices=("off", "deflate"),
        help="the wsq rows' [server] ws_compression (default: wsq's default)",
    )
    for key in SIZES["full"]:
        p.add_argument(
            f"--{key.replace('_', '-')}",
            type=type(SIZES["full"][key]),
            dest=key,
            help=f"size override (full: {SIZES['full'][key]})",
        )
    args = p.parse_args(argv)
    preset = "tiny" if args.tiny else "quick" if args.quick else "full"
    sizes = dict(SIZES[preset])
    for key in SIZES["full"]:
        if getattr(args, key) is not None:
            sizes[key] = getattr(args, key)
    names = args.only.split(",") if args.only else list(SYSTEMS)
    names = list(dict.fromkeys(m for n in names for m in GROUPS.get(n, (n,))))
    parts = [n for n in names if n in PARTS]
    names = [n for n in names if n not in PARTS]
    unknown = [n for n in names if n not in SYSTEMS]
    if unknown:
        p.error(f"unknown systems: {', '.join(unknown)}")
    pin = args.pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    # --profile without py-spy would run and write no profile, looking like one that did.
    spy = {shutil.which("py-spy") or str(VENV_BIN / "py-spy")} if args.profile else set()
    if _missing(
        {t for n in names for t in (*SYSTEMS[n].needs, "node")}
        | {t for n in parts for t in PARTS[n][1]}
        | spy
    ):
        return MISSING_TOOLS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 4 * sizes["conns"] + 1024))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    args.out.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    for part in parts:
        print(f"bench: {part} ...", file=sys.stderr, flush=True)
        size = ["--quick"] if args.quick else ["--tiny"] if args.tiny else []
        script = str(BENCH / PARTS[part][0])
        extra = [
            f"--{flag}={getattr(args, flag)}"
            for flag in ("connections", "workers")
            if part == "scale" and getattr(args, flag) is not None
        ]
        status = subprocess.run(
            [sys.executable, script, "--out", str(args.out), *size, *extra]
        ).returncode
        if status:
            failures.append(f"{part}: {PARTS[part][0]} exited with {status}")
    if not names:  # parts only: the rows' results files are left alone
        if failures:
            print("FAILED: " + "; ".join(failures), file=sys.stderr)
        return 1 if failures else 0
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="wsq-bench-") as tmpdir:
        tmp = Path(tmpdir)
        for name in names:
            t0 = time.monotonic()
            print(f"bench: {name} ...", file=sys.stderr, flush=True)
            try:
                profile = (
                    args.out / "profiles"
                    if args.profile and name.startswith(("wsq", "py-"))
                    else None
                )
                rows.append(
                    measure(
                        SYSTEMS[name], sizes, pin, tmp, profile, args.deflate, args.ws_compression
                    )
                )
            except Exception as e:  # one broken peer must not hide the others' figures
                failures.append(f"{name}: {e}")
                print(f"bench: {name} FAILED: {e}", file=sys.stderr)
                log = tmp / f"{name}.log"
                if log.exists():
                    sys.stderr.write(log.read_text(errors="replace")[-2000:])
                rows.append({"system": name, "what": SYSTEMS[name].what, "error": str(e)})
            print(f"bench: {name} done in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    add_ratios(rows)
    checks = targets(rows, sizes)
    # the targets are set for the full sizes: figures at any other size are not comparable
    comparable = sizes == SIZES["full"]
    doc = {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "preset": preset,
        "sizes": sizes,
        "pinned": pin,
        "deflate_offered": args.deflate,
        "ws_compression": args.ws_compression,
        "machine": machine(),
        "seconds": time.monotonic() - started,
        "rows": rows,
        "targets": checks,
        "targets_comparable": comparable,
        "failures": failures,
    }
    (args.out / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
    md = (
        f"wsq bench, {preset} sizes {json.dumps(sizes)}, {doc['when']}, "
        f"commit {doc['machine']['commit'] or '?'}, "
        f"{'server on CPU 0, generator on CPU 1' if pin else 'not pinned'}"
        f"{', clients offer permessage-deflate' if args.deflate else ''}"
        f"{f', wsq ws_compression = {args.ws_compression}' if args.ws_compression else ''}\n\n"
        f"{table(rows)}\n\n"
    )
    noisy = noisy_note(rows)
    if noisy:
        md += f"{noisy}\n\n"
    md += f"CPU use during the measured windows (1.0 = one core):\n\n{generator_note(rows)}\n\n"
    offers = deflate_table(rows)
    if offers:
        md += (
            "permessage-deflate: what the generator's clients offered (as Chromium 156 does) and "
            f"what each server answered (none: declined):\n\n{offers}\n\n"
        )
    if not comparable:
        md += f"{not_comparable_note(preset)}\n\n"
    md += f"{targets_table(checks, comparable)}\n"
    redis = redis_table(rows, sizes)
    if redis:
        md += (
            "\nRedis commands per published message (INFO commandstats over one publish run of "
            f'{sizes["cmd_messages"]} messages, every client of that Redis; "net" leaves out '
            "the gateways' own figures, a $sys.stats snapshot a second per process, counted by "
            f"MONITOR in the same window):\n\n{redis}\n"
        )
    (args.out / "results.md").write_text(md)
    print(md)
    if args.chart:
        note = chart(rows, args.out / "results.png")
        print(note or f"chart: {_shown(args.out / 'results.png')}")
    print(f"results: {_shown(args.out / 'results.json')} ({doc['seconds']:.0f} s)")
    if args.out.resolve() != REFERENCE.resolve():
        print(f"  (the committed reference figures in {_shown(REFERENCE)}/ are untouched)")
    print("\n".join(targets_summary(checks, comparable, preset)))
    if failures:
        print("FAILED: " + "; ".join(failures), file=sys.stderr)
        return 1
    missed = [c for c in checks if c["met"] is False]
    if comparable and missed:
        print(f"bench: {len(missed)} target(s) not met (exit {TARGETS_MISSED})", file=sys.stderr)
        return TARGETS_MISSED
    return 0


if __name__ == "__main__":
    sys.exit(main())
