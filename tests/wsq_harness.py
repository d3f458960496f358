"""Test support: a real gateway (uvicorn on a free port) and a small wsq.v1 client on
``websockets``. No mocks: frames go over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import httpx
import pytest
import redis
import uvicorn
import websockets
from redis.crc import key_slot
from websockets.asyncio.client import ClientConnection

from wsq.app import create_app
from wsq.auth import mint_token
from wsq.broker.base import Broker
from wsq.broker.redis import RedisBroker
from wsq.config import BrokerConfig, KeyConfig, ServerConfig, Settings, TenantConfig
from wsq.ws_protocol import WS_PROTOCOL, uvicorn_options

SECRET_ACME = "acme-secret-acme-secret-acme-secret-0001"
SECRET_OTHER = "other-secret-other-secret-other-secret-02"


def tenants(**overrides: Any) -> dict[str, TenantConfig]:
    acme = TenantConfig(
        name="acme",
        issuer="acme",
        keys=(KeyConfig(alg="HS256", kid="k1", secret=SECRET_ACME),),
        dedup_window_ms=60_000,
        redelivery_delay_ms=100,
    )
    other = TenantConfig(
        name="other", issuer="other", keys=(KeyConfig(alg="HS256", secret=SECRET_OTHER),)
    )
    return {"acme": replace(acme, **overrides), "other": other}


def make_settings(
    server: Mapping[str, Any] | None = None,
    *,
    broker_url: str = "memory://",
    **tenant_overrides: Any,
) -> Settings:
    return Settings(
        server=replace(ServerConfig(port=0), **(server or {})),
        broker=BrokerConfig(url=broker_url),
        tenants=MappingProxyType(tenants(**tenant_overrides)),
    )


class Gateway:
    def __init__(self, settings: Settings, server: uvicorn.Server) -> None:
        self.settings = settings
        self.server = server
        sock = server.servers[0].sockets[0]
        self.port: int = sock.getsockname()[1]
        self.url = f"ws://127.0.0.1:{self.port}/ws"
        self.http = f"http://127.0.0.1:{self.port}"

    def token(
        self,
        sub: str = "alice",
        *,
        tenant: str = "acme",
        publish: tuple[str, ...] = (">",),
        subscribe: tuple[str, ...] = (">",),
        ttl_s: int = 3600,
        ops: bool = False,
    ) -> str:
        return mint_token(
            self.settings.tenants[tenant],
            sub,
            publish=publish,
            subscribe=subscribe,
            ops=ops,
            ttl_s=ttl_s,
        )

    async def client(
        self, *, open: bool = True, sub: str = "alice", rcvbuf: int | None = None, **kw: Any
    ) -> Client:
        """A connected client. ``rcvbuf`` makes it a client that can stop reading: its socket's
        receive buffer is fixed (no autotuning to 32 MiB) and websockets queues at most two
        messages, so when the test stops calling recv() the gateway must wait after a few KiB."""
        sock = None
        if rcvbuf is not None:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", self.port))
        try:
            ws = await websockets.connect(
                self.url,
                subprotocols=["wsq.v1"],
                max_size=None,
                sock=sock,
                max_queue=2 if rcvbuf is not None else 16,
            )
        except BaseException:
            if sock is not None:
                sock.close()  # else left to the garbage collector: a ResourceWarning, later
            raise
        client = Client(ws)
        if open:
            await client.open(self.token(sub, **kw))
        return client

    async def subscriber(
        self, address: str, *, sub: str = "alice", credit: int = 100, **fields: Any
    ) -> Client:
        """A client with session 1 and receiver link 0 on ``address`` (attach ``fields``)."""
        client = await self.client(sub=sub)
        await client.begin(1)
        await client.subscribe(1, 0, address, credit=credit, **fields)
        return client

    async def sender(self, address: str, *, sub: str = "alice") -> Client:
        """A client with session 1 and sender link 0 on ``address``, its credit received."""
        client = await self.client(sub=sub)
        await client.begin(1)
        await client.sender(1, 0, address)
        return client


@contextlib.asynccontextmanager
async def running_gateway(
    settings: Settings, broker: Broker | None = None, *, ws: str | type[Any] = WS_PROTOCOL
) -> AsyncIterator[Gateway]:
    """A gateway in this process: uvicorn on a free port of 127.0.0.1 (``ws``: uvicorn's
    WebSocket protocol), stopped on exit."""
    app = create_app(settings, broker)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        **{**uvicorn_options(settings.server), "ws": ws},
        lifespan="on",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 10
    while not server.started:
        if task.done():
            task.result()
        if time.monotonic() > deadline:
            raise RuntimeError("gateway did not start")
        await asyncio.sleep(0.01)
    try:
        yield Gateway(settings, server)
    finally:
        server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(task), 10)
        except TimeoutError:
            # Seen twice under a load average of 13-16 (a cluster pair's shutdown), never on a
            # quiet machine: say what the loop was still waiting for.
            pending = _pending_tasks()
            task.cancel()
            raise AssertionError(f"the gateway did not stop within 10 s:\n{pending}") from None


def _pending_tasks() -> str:
    """Every task of the running loop but this one, with the chain of awaits it is suspended in."""
    lines = []
    for t in asyncio.all_tasks():
        if t is asyncio.current_task():
            continue
        chain: list[str] = []
        coro: Any = t.get_coro()
        while coro is not None and len(chain) < 8:
            frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
            name = getattr(coro, "__qualname__", type(coro).__name__)
            chain.append(f"{name}:{frame.f_lineno}" if frame is not None else name)
            coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        lines.append(f"{t.get_name()}: {' -> '.join(chain)}")
    return "\n".join(sorted(lines)[:60])


B = TypeVar("B", bound=Broker)


@contextlib.asynccontextmanager
async def started(broker: B) -> AsyncIterator[B]:
    """``broker`` started, and closed on exit."""
    await broker.start()
    try:
        yield broker
    finally:
        await broker.close()


@contextlib.asynccontextmanager
async def redis_brokers(settings: Settings, n: int = 1) -> AsyncIterator[list[RedisBroker]]:
    """``n`` started Redis brokers on ``settings`` (as many gateway processes), closed on exit."""
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                started(RedisBroker(settings.broker.url, settings.storage_policies()))
            )
            for _ in range(n)
        ]


def attach_frame(ch: int, handle: int, role: str, address: str, **fields: Any) -> dict[str, Any]:
    """An ``attach`` frame of the client's."""
    return {"op": "attach", "ch": ch, "handle": handle, "role": role, "address": address, **fields}


#: Starts a gateway: ``start(server={...}, **tenant_overrides)`` is an async context manager.
StartGateway = Callable[..., contextlib.AbstractAsyncContextManager[Gateway]]


class Client:
    """A raw wsq.v1 client: frames in and out, batches flattened, heartbeats counted."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.inbox: list[dict[str, Any]] = []
        self.heartbeats = 0
        self.opened: dict[str, Any] = {}

    async def send(self, *frames: Any) -> None:
        """One frame as an object, several as one batch."""
        await self.ws.send(json.dumps(frames[0] if len(frames) == 1 else list(frames)))

    async def send_raw(self, text: str | bytes) -> None:
        await self.ws.send(text)

    async def _fill(self, timeout: float) -> None:
        text = await asyncio.wait_for(self.ws.recv(), timeout)
        value = json.loads(text)
        if value == []:
            self.heartbeats += 1
        elif isinstance(value, list):
            self.inbox.extend(value)
        else:
            self.inbox.append(value)

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next frame (heartbeats skipped)."""
        deadline = time.monotonic() + timeout
        while not self.inbox:
            await self._fill(max(0.001, deadline - time.monotonic()))
        return self.inbox.pop(0)

    async def expect(self, op: str, timeout: float = 5.0, **fields: Any) -> dict[str, Any]:
        """The next frame with this op (and fields); frames before it are kept."""
        deadline = time.monotonic() + timeout
        i = 0
        while True:
            while i < len(self.inbox):
                frame = self.inbox[i]
                if frame.get("op") == op and all(frame.get(k) == v for k, v in fields.items()):
                    return self.inbox.pop(i)
                i += 1
            await self._fill(max(0.001, deadline - time.monotonic()))

    async def nothing(self, op: str | None = None, wait: float = 0.3) -> None:
        """Assert no frame (of ``op``) arrives within ``wait`` seconds."""
        with contextlib.suppress(TimeoutError):
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                await self._fill(max(0.001, deadline - time.monotonic()))
        unexpected = [f for f in self.inbox if op is None or f.get("op") == op]
        assert not unexpected, f"unexpected frames: {unexpected}"

    async def bodies_until_quiet(self, quiet: float = 0.5) -> list[Any]:
        """The bodies of the transfers that come until none has come for ``quiet`` seconds."""
        bodies: list[Any] = []
        with contextlib.suppress(TimeoutError):
            while True:
                bodies.append((await self.expect("transfer", timeout=quiet))["body"])
        return bodies

    async def closed_with(self, condition: str | None, timeout: float = 5.0) -> dict[str, Any]:
        frame = await self.expect("close", timeout)
        assert (frame.get("error") or {}).get("condition") == condition, frame
        await self.wait_closed(timeout)
        return frame

    async def wait_closed(self, timeout: float = 5.0) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                await asyncio.wait_for(self.ws.recv(), timeout)

    async def open(self, token: str, **fields: Any) -> dict[str, Any]:
        await self.send({"op": "open", "token": token, **fields})
        self.opened = await self.expect("open")
        return self.opened

    async def begin(self, ch: int) -> None:
        await self.send({"op": "begin", "ch": ch})
        await self.expect("begin", ch=ch)

    async def subscribe(
        self, ch: int, handle: int, address: str, credit: int = 100, **fields: Any
    ) -> dict[str, Any]:
        await self.send(attach_frame(ch, handle, "receiver", address, credit=credit, **fields))
        return await self.expect("attach", ch=ch, handle=handle)

    async def sender(self, ch: int, handle: int, address: str) -> None:
        await self.send(attach_frame(ch, handle, "sender", address))
        await self.expect("attach", ch=ch, handle=handle)
        await self.expect("flow", ch=ch, handle=handle)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()


class Publisher:
    """A client with one session and one sender link per address, numbering its deliveries."""

    def __init__(self, client: Client, ch: int = 60_000) -> None:
        self.client = client
        self.ch = ch
        self.next_delivery = 0
        self.handles: dict[str, int] = {}

    async def publish(self, address: str, *bodies: Any, **props: Any) -> list[str]:
        """Publish bodies (one batch) and return their positions."""
        client = self.client
        if not self.handles:
            await client.begin(self.ch)
        handle = self.handles.get(address)
        if handle is None:
            handle = self.handles[address] = len(self.handles)
            await client.sender(self.ch, handle, address)
        frames = []
        first = self.next_delivery
        for body in bodies:
            frame: dict[str, Any] = {
                "op": "transfer",
                "ch": self.ch,
                "handle": handle,
                "delivery": self.next_delivery,
                "body": body,
            }
            if props:
                frame["props"] = props
            frames.append(frame)
            self.next_delivery += 1
        await client.send(*frames)
        ids: list[str] = []
        while len(ids) < len(bodies):
            d = await client.expect("disposition", ch=self.ch)
            assert d["outcome"] == "accepted", d
            assert d["first"] == first + len(ids)
            ids.extend(d["ids"])
        return ids


class StreamPublisher:
    """A publisher streaming numbered messages one at a time, each retried with its
    ``message_id`` until accepted (as a client does after a refusal)."""

    def __init__(self, client: Client, address: str) -> None:
        self.client = client
        self.address = address
        self.accepted: list[str] = []  # positions, in order
        self.accepted_at: list[float] = []  # when each was acknowledged (monotonic)
        self.refusals: list[dict[str, Any]] = []
        self.delivery = 0
        self.stop = asyncio.Event()

    async def publish(self, body: Any, message_id: str) -> dict[str, Any]:
        frame = {
            "op": "transfer",
            "ch": 9,
            "handle": 0,
            "delivery": self.delivery,
            "body": body,
            "props": {"message_id": message_id},
        }
        self.delivery += 1
        await self.client.send(frame)
        return await self.client.expect("disposition", ch=9, timeout=15)

    async def run(self) -> None:
        await self.client.begin(9)
        await self.client.sender(9, 0, self.address)
        n = 0
        while not self.stop.is_set():
            while True:
                d = await self.publish(n, f"m{n}")
                if d["outcome"] == "accepted":
                    self.accepted += d["ids"]
                    self.accepted_at += [time.monotonic()] * len(d["ids"])
                    break
                self.refusals.append(d)
                await asyncio.sleep(0.05)
            n += 1
            await asyncio.sleep(0.01)


async def transfers(
    client: Client, n: int, timeout: float = 5.0, **fields: Any
) -> list[dict[str, Any]]:
    return [await client.expect("transfer", timeout, **fields) for _ in range(n)]


async def work(client: Client, n: int, ch: int = 1, handle: int = 0) -> list[Any]:
    """The bodies of ``n`` transfers on a move link, each accepted and its credit given back one
    at a time: a worker that really takes one job after another."""
    bodies = []
    for _ in range(n):
        t = await client.expect("transfer", ch=ch, handle=handle)
        bodies.append(t["body"])
        await client.send(
            {"op": "disposition", "ch": ch, "first": t["delivery"], "outcome": "accepted"},
            {"op": "flow", "ch": ch, "handle": handle, "credit": 1},
        )
    return bodies


class RedisServer:
    """A throwaway ``redis-server`` that can be killed and started again on the same port."""

    def __init__(
        self, workdir: Path, *, aof: bool = False, cluster: bool = False, args: Sequence[str] = ()
    ) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            if os.environ.get("CI") == "true":
                pytest.fail("redis-server is not installed (required in CI)")
            pytest.skip("redis-server is not installed")
        self.exe = exe
        self.workdir = workdir
        self.aof = aof
        self.cluster = cluster
        self.args = tuple(args)  # more redis-server options
        self.port: int = free_port()
        self.bus_port: int = free_port() if cluster else 0
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = False  # once started, a restart keeps the port

    def start(self) -> None:
        # free_port() only found the port free a moment ago: on a busy machine (a bench holding
        # tens of thousands of loopback ports) another process may take it first, and
        # redis-server exits at once. On a first start, try other ports; a restart must keep
        # its port (its clients and the cluster know it).
        for _ in range(1 if self.started else 3):
            if self._spawn():
                self.started = True
                return
            assert self.proc is not None
            if self.proc.poll() is None:
                break  # running but not answering: no other port would help
            self.proc.wait()
            self.port = free_port()
            self.bus_port = free_port() if self.cluster else 0
            self.url = f"redis://127.0.0.1:{self.port}/0"
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(
                10
            )  # reaped here: a Popen collected while running warns in some later test
            self.proc = None
        pytest.fail(f"redis-server did not start on port {self.port}")

    def _spawn(self) -> bool:
        """Start redis-server on ``port``; whether it answered PING in time."""
        persistence = ("--appendonly", "yes", "--appendfsync", "always") if self.aof else ()
        # The cluster bus gets its own free port (the default, port + 10000, may not exist).
        cluster: tuple[str, ...] = ()
        if self.cluster:
            cluster = (
                *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
                *("--cluster-port", str(self.bus_port)),
            )
        self.proc = subprocess.Popen(
            [
                *(self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""),
                *(persistence or ("--appendonly", "no")),
                *cluster,
                *self.args,
                *("--dir", str(self.workdir), "--logfile", str(self.workdir / "redis.log")),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(64).startswith(b"+PONG"):
                        return True
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                return False
            time.sleep(0.02)

    def __enter__(self) -> RedisServer:
        """Started; stopped on exit."""
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None


async def eventually(cond: Callable[[], bool], what: str = "condition", *, within: float) -> None:
    """Wait until ``cond()`` holds; fail the test after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"not in time: {what}")
        await asyncio.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(port: int, proc: subprocess.Popen[str] | None = None, timeout: float = 20) -> None:
    """Wait until ``/healthz`` on ``port`` answers 200; fail at once if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the gateway process exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the gateway on port {port} did not become healthy")


@dataclass
class Served:
    """A real ``wsq serve`` process (``serve_config``): its port and everything it printed."""

    proc: subprocess.Popen[str]
    port: int
    lines: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def log(self) -> str:
        return "".join(self.lines)


@contextlib.contextmanager
def serve_config(
    config: Path, *args: str, env: Mapping[str, str] | None = None, port: int | None = None
) -> Iterator[Served]:
    """Run ``wsq serve --config config`` on a free port (or ``port``: a gateway started again
    where its clients reconnect) with no WSQ_ variables of ours until the block ends; stopped by
    SIGINT, killed if it will not go."""
    port = port or free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WSQ_")}
    clean.update(env or {})
    proc = subprocess.Popen(
        [sys.executable, "-m", "wsq", "serve", "--config", str(config), "--port", str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=clean,
    )
    server = Served(proc, port)

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            server.lines.append(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        wait_healthy(port, proc)
        yield server
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(5)
        assert proc.stdout is not None
        proc.stdout.close()


class RedisCluster:
    """A throwaway local Redis Cluster: ``masters`` ``redis-server --cluster-enabled yes`` on free
    ports in ``workdir``, each with ``replicas`` replicas, joined by ``redis-cli --cluster
    create``. ``node_timeout_ms`` (``cluster-node-timeout``) sets how soon a master that stops
    answering is failed over to its replica (Redis's default is 15 s)."""

    def __init__(
        self,
        workdir: Path,
        *,
        masters: int = 3,
        replicas: int = 0,
        node_timeout_ms: int | None = None,
    ) -> None:
        cli = shutil.which("redis-cli")
        if shutil.which("redis-server") is None or cli is None:
            if os.environ.get("CI") == "true":
                pytest.fail("redis-server / redis-cli are not installed (required in CI)")
            pytest.skip("redis-server / redis-cli are not installed")
        self.cli = cli
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        # No delay before a replica's first sync (Redis waits 5 s for more replicas by default).
        args = ("--repl-diskless-sync-delay", "0")
        self.nodes: list[RedisServer] = []
        for i in range(masters * (1 + replicas)):
            node_dir = workdir / f"node{i}"
            node_dir.mkdir(parents=True, exist_ok=True)
            self.nodes.append(RedisServer(node_dir, cluster=True, args=args))
        # Every node's port; ``redis-cli`` makes the first ``masters`` of them masters.
        self.ports = [n.port for n in self.nodes]
        self.url = f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        # A node may have moved to another port to start (RedisServer.start).
        self.ports = [n.port for n in self.nodes]
        self.url = f"redis+cluster://127.0.0.1:{self.ports[0]}"
        try:
            subprocess.run(
                [
                    self.cli,
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{p}" for p in self.ports),
                    "--cluster-replicas",
                    str(self.replicas),
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=30,
            )
            deadline = time.monotonic() + 45
            while not all(self._state_ok(p) for p in self.ports) or not self._replicas_synced():
                if time.monotonic() > deadline:
                    pytest.fail(
                        "the Redis Cluster did not reach cluster_state:ok with its replicas "
                        f"synced:\n{self._diagnosis()}"
                    )
                time.sleep(0.05)
            if self.node_timeout_ms is not None:
                # A short node timeout only once the cluster stands: set at start, a loaded
                # machine's slow first sync could look like a dead master and fail it over
                # while the cluster is still being made (CI saw it never settle).
                timeout = ("--cluster-node-timeout", str(self.node_timeout_ms))
                for node in self.nodes:
                    self._info(node.port, "config", "set", *(t.lstrip("-") for t in timeout))
                    node.args = (*node.args, *timeout)  # kept when a test restarts the node
        except BaseException:
            self.stop()
            raise

    def __enter__(self) -> RedisCluster:
        """Started; stopped on exit."""
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _info(self, port: int, *what: str) -> str:
        return subprocess.run(
            [self.cli, "-p", str(port), *what], capture_output=True, text=True
        ).stdout

    def _diagnosis(self) -> str:
        """Each node's view of the cluster, for a failure message."""
        return "\n".join(
            f"-- {port}: {self._info(port, 'cluster', 'info').splitlines()[:1]}\n"
            f"{self._info(port, 'cluster', 'nodes')}"
            f"{self._info(port, 'info', 'replication')}"
            for port in self.ports
        )

    def _state_ok(self, port: int) -> bool:
        return "cluster_state:ok" in self._info(port, "cluster", "info")

    def _replicas_synced(self) -> bool:
        """Every master has its replicas, each has finished its first sync, and every node's
        slot map lists them (gossip may lag behind the replication links)."""
        if not self.replicas:
            return True
        for port in self.ports:
            with redis.Redis(port=port) as r:
                if any(
                    len(rng) - 3 != self.replicas for rng in r.execute_command("CLUSTER", "SLOTS")
                ):
                    return False
        masters = self.masters()
        for port in self.ports:
            info = self._info(port, "info", "replication")
            if port in masters:
                if f"connected_slaves:{self.replicas}" not in info:
                    return False
            elif "master_link_status:up" not in info:
                return False
        return True

    def _slots(self) -> list[Any]:
        """``CLUSTER SLOTS`` as seen by a live node."""
        for node in self.nodes:
            if node.proc is None:
                continue
            with contextlib.suppress(redis.RedisError), redis.Redis(port=node.port) as r:
                return list(r.execute_command("CLUSTER", "SLOTS"))
        raise AssertionError("no live node in the cluster")

    def masters(self) -> list[int]:
        """The ports of the nodes that own slots now, in port order."""
        return sorted({int(master[1]) for _, _, master, *_ in self._slots()})

    def replicas_of(self, port: int) -> list[int]:
        """The ports of ``port``'s replicas (as the slot map lists them)."""
        for _, _, master, *replicas in self._slots():
            if int(master[1]) == port:
                return sorted(int(r[1]) for r in replicas)
        return []

    def node(self, port: int) -> RedisServer:
        return next(n for n in self.nodes if n.port == port)

    def port_of(self, key: str) -> int:
        """The port of the master that holds ``key``'s slot."""
        slot = key_slot(key.encode())
        for start, end, master, *_ in self._slots():
            if start <= slot <= end:
                return int(master[1])
        raise AssertionError(f"no master owns slot {slot}")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def spread_addresses(cluster: RedisCluster, per_master: int) -> dict[int, list[str]]:
    """Fresh addresses of tenant acme, ``per_master`` on each master (by their keys' slot)."""
    slots = cluster._slots()
    out: dict[int, list[str]] = {port: [] for port in cluster.masters()}
    while any(len(v) < per_master for v in out.values()):
        address = f"spread.{uuid.uuid4().hex[:10]}"
        slot = key_slot(f"wsq:{{acme:{address}}}:s".encode())
        port = next(int(m[1]) for start, end, m, *_ in slots if start <= slot <= end)
        if len(out[port]) < per_master:
            out[port].append(address)
    return out


def haproxy_config(
    port: int,
    servers: Mapping[str, int],
    *,
    stats_port: int,
    check_inter_ms: int = 100,
    host: str = "127.0.0.1",
) -> str:
    """An HAProxy configuration for wsq: ``port`` in front of ``servers`` (name -> port on
    ``host``), round robin, each health-checked on ``/readyz`` every ``check_inter_ms`` (one
    failure takes it out), WebSocket-aware (``timeout tunnel`` once upgraded), an upgrade
    answered 503 (a draining gateway) or not connected retried on another server; the server
    states as CSV at ``http://127.0.0.1:<stats_port>/stats;csv``. docker/haproxy.cfg is the
    same shape."""
    backends = "\n".join(f"    server {name} {host}:{p} check" for name, p in servers.items())
    return f"""global
    maxconn 4096

defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    # An upgraded WebSocket is a tunnel: the gateway heartbeats well within this.
    timeout tunnel 1h
    timeout client-fin 5s
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response 503

frontend wsq
    bind 127.0.0.1:{port}
    default_backend gateways

backend gateways
    balance roundrobin
    option httpchk
    http-check send meth GET uri /readyz
    http-check expect status 200
    default-server inter {check_inter_ms}ms fastinter {check_inter_ms}ms fall 1 rise 2
{backends}

frontend stats
    bind 127.0.0.1:{stats_port}
    stats enable
    stats uri /stats
"""


class HAProxy:
    """A real ``haproxy`` (the Debian package) running ``haproxy_config`` in the foreground on
    free ports; missing, its tests skip, except in CI (``CI=true``) where they fail."""

    def __init__(self, workdir: Path, servers: Mapping[str, int], **config: Any) -> None:
        exe = shutil.which("haproxy") or (
            "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").is_file() else None
        )
        if exe is None:
            if os.environ.get("CI") == "true":
                pytest.fail("haproxy is not installed (required in CI: apt-get install haproxy)")
            pytest.skip("haproxy is not installed")
        self.exe = exe
        self.port = free_port()
        self.stats_port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}/ws"
        self.http = f"http://127.0.0.1:{self.port}"
        self.path = workdir / "haproxy.cfg"
        self.path.write_text(
            haproxy_config(self.port, servers, stats_port=self.stats_port, **config)
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def check(self) -> subprocess.CompletedProcess[str]:
        """``haproxy -c``: the configuration's own check."""
        return subprocess.run(
            [self.exe, "-c", "-f", str(self.path)], capture_output=True, text=True, timeout=30
        )

    def states(self) -> dict[str, str]:
        """Each backend server's state: ``UP``, ``DOWN``, ``UP 1/2`` (rising), ..."""
        answer = httpx.get(f"http://127.0.0.1:{self.stats_port}/stats;csv", timeout=2)
        rows = answer.text.lstrip("# ").splitlines()
        header = rows[0].split(",")
        name, state = header.index("svname"), header.index("status")
        found = {}
        for row in rows[1:]:
            cells = row.split(",")
            if len(cells) > state and cells[0] == "gateways" and cells[1] != "BACKEND":
                found[cells[name]] = cells[state]
        return found

    def start(self, *, all_up_within: float = 10) -> None:
        self.proc = subprocess.Popen(
            [self.exe, "-db", "-f", str(self.path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + all_up_within
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"haproxy exited with {self.proc.returncode}")
            with contextlib.suppress(httpx.HTTPError, ValueError, IndexError):
                states = self.states()
                if states and all(s == "UP" for s in states.values()):
                    return
            if time.monotonic() > deadline:
                raise AssertionError("haproxy: not every server UP in time")
            time.sleep(0.05)

    def __enter__(self) -> HAProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


@dataclass
class Receiver:
    """A tiny HTTP server: records every request, answers the next of ``statuses`` (then 204)."""

    statuses: list[int] = field(default_factory=list)
    #: While set, every request is answered 503 (a receiver that is down).
    failing: bool = False
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


@contextlib.contextmanager
def receiver(statuses: list[int] | None = None) -> Iterator[Receiver]:
    rec = Receiver(statuses=list(statuses or []))
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            with lock:
                headers = {k.lower(): v for k, v in self.headers.items()}
                status = 503 if rec.failing else rec.statuses.pop(0) if rec.statuses else 204
                headers["x-answered"] = str(status)
                rec.requests.append((headers, body))
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    rec.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
