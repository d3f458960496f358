"""A gateway process SIGKILLed mid-stream: its subscriber resumes on another node, losing
nothing and repeating nothing. Two real ``wsq serve`` processes on one real ``redis-server``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from wsq_harness import SECRET_ACME, Client, RedisServer, StreamPublisher, free_port, tenants

from wsq.auth import mint_token


class Node:
    """``python -m wsq serve`` on a free port."""

    def __init__(self, config: Path, log: Path) -> None:
        self.port = free_port()
        clean = {k: v for k, v in os.environ.items() if not k.startswith("WSQ_")}
        self.log = log.open("w")
        argv = [sys.executable, "-m", "wsq", "serve", "--config", str(config)]
        self.proc = subprocess.Popen(
            [*argv, "--port", str(self.port)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=clean,
        )
        self.url = f"ws://127.0.0.1:{self.port}/ws"

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient() as http:
            while True:
                if self.proc.poll() is not None:
                    raise AssertionError(f"wsq serve exited with {self.proc.returncode}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"http://127.0.0.1:{self.port}/readyz")).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise AssertionError("wsq serve did not become ready")
                await asyncio.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[tuple[Node, Node]]:
    redis = RedisServer(tmp_path)
    redis.start()
    config = tmp_path / "wsq.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [broker]
            url = "{redis.url}"
            [tenants.acme]
            keys = [ {{ kid = "k1", alg = "HS256", secret = "{SECRET_ACME}" }} ]
            """
        )
    )
    started: list[Node] = []
    try:
        started.append(Node(config, tmp_path / "a.log"))
        started.append(Node(config, tmp_path / "b.log"))
        yield started[0], started[1]
    finally:
        for node in started:
            node.stop()
        redis.stop()


async def connect(node: Node, sub: str) -> Client:
    ws = await websockets.connect(node.url, subprotocols=["wsq.v1"], max_size=None)
    client = Client(ws)
    await client.open(mint_token(tenants()["acme"], sub, publish=[">"], subscribe=[">"]))
    return client


async def test_subscriber_resumes_on_another_node_after_sigkill(
    nodes: tuple[Node, Node],
) -> None:
    a, b = nodes
    await asyncio.gather(a.wait_ready(), b.wait_ready())
    address = f"kill.{uuid.uuid4().hex[:10]}"
    reader = await connect(a, "reader")
    await reader.begin(1)
    await reader.subscribe(1, 0, address, credit=100_000)
    stream = StreamPublisher(await connect(b, "writer"), address)
    task = asyncio.create_task(stream.run())
    delivered: list[dict[str, Any]] = []
    again: Client | None = None
    try:
        while len(delivered) < 30:
            delivered.append(await reader.expect("transfer", timeout=10))
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(10)
        # Whatever node A had already written to the socket still counts as delivered.
        with contextlib.suppress(websockets.ConnectionClosed, TimeoutError):
            while True:
                delivered.append(await reader.expect("transfer", timeout=5))
        last = delivered[-1]["id"]
        again = await connect(b, "reader")
        await again.begin(1)
        answer = await again.subscribe(1, 0, address, credit=100_000, **{"from": last})
        assert answer["recovered"] is True
        mark = len(stream.accepted)
        deadline = time.monotonic() + 20
        while len(stream.accepted) < mark + 30:
            assert time.monotonic() < deadline, "the publisher stalled"
            await asyncio.sleep(0.05)
        stream.stop.set()
        await asyncio.wait_for(task, 20)
        accepted = stream.accepted
        assert not stream.refusals
        for _ in accepted[accepted.index(last) + 1 :]:
            delivered.append(await again.expect("transfer", timeout=10))
        await again.nothing("transfer", wait=0.3)
    finally:
        stream.stop.set()
        for client in (reader, stream.client, again):
            if client is not None:
                await client.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 20)
    # Nothing lost, nothing twice, in order: every accepted message, exactly once.
    assert [t["id"] for t in delivered] == accepted
    assert [t["body"] for t in delivered] == list(range(len(accepted)))
