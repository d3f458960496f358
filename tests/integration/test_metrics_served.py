"""``wsq serve`` as run in production: /metrics summed over ``--workers 2``, JSON log lines."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from test_metrics import Figures, parse, value
from wsq_harness import (
    SECRET_ACME,
    Client,
    Publisher,
    RedisServer,
    Served,
    attach_frame,
    eventually,
    make_settings,
    serve_config,
)

from wsq.auth import mint_token

ACME = make_settings().tenants["acme"]


def config(tmp_path: Path, broker: str = "memory://", max_links: int = 100) -> Path:
    path = tmp_path / "wsq.toml"
    path.write_text(
        textwrap.dedent(
            f"""\
            [broker]
            url = "{broker}"
            [tenants.acme]
            keys = [{{ kid = "k1", alg = "HS256", secret = "{SECRET_ACME}" }}]
            max_links = {max_links}
            """
        )
    )
    return path


async def client(port: int, token: str) -> Client:
    ws = await websockets.connect(f"ws://127.0.0.1:{port}/ws", subprotocols=["wsq.v1"])
    c = Client(ws)
    await c.open(token)
    return c


async def scrape_until(url: str, cond: Any, what: str, within: float = 15.0) -> Figures:
    deadline = time.monotonic() + within
    async with httpx.AsyncClient() as http:
        while True:
            figures = parse((await http.get(f"{url}/metrics")).text)
            if cond(figures):
                return figures
            if time.monotonic() > deadline:
                pytest.fail(f"not in time: {what}: {figures}")
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def two_workers(tmp_path: Path) -> AsyncIterator[Served]:
    """``wsq serve --workers 2`` on a Redis of its own, once both workers have started (until
    then a worker's gauges are not yet its own: wsq_ready 0, say)."""
    with (
        RedisServer(tmp_path) as redis,
        serve_config(config(tmp_path, broker=redis.url), "--workers", "2") as served,
    ):
        await eventually(
            lambda: sum("Application startup complete" in line for line in served.lines) == 2,
            "both workers started",
            within=30,
        )
        yield served


def metrics_dirs_of_children(pid: int) -> set[str]:
    """``PROMETHEUS_MULTIPROC_DIR`` in the environment of the processes ``pid`` started."""
    found = set()
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit():
                continue
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid != pid:
                continue
            for entry in (proc / "environ").read_bytes().split(b"\0"):
                if entry.startswith(b"PROMETHEUS_MULTIPROC_DIR="):
                    found.add(entry.split(b"=", 1)[1].decode())
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return found


@pytest.mark.slow
async def test_metrics_of_two_workers_are_summed(tmp_path: Path) -> None:
    async with two_workers(tmp_path) as served:
        # The workers share one private directory, made by wsq serve.
        (directory,) = metrics_dirs_of_children(served.proc.pid)
        assert os.stat(directory).st_mode & 0o777 == 0o700
        token = mint_token(ACME, "w", publish=[">"], subscribe=[">"], ttl_s=600)
        # Many sockets at once, so that both workers accept some.
        subscribers = await asyncio.gather(*(client(served.port, token) for _ in range(2)))
        for s in subscribers:
            await s.begin(1)
            await s.subscribe(1, 0, "w", credit=1000)
        publishers = await asyncio.gather(*(client(served.port, token) for _ in range(8)))
        await asyncio.gather(*(Publisher(p).publish("w", *range(7)) for p in publishers))
        for s in subscribers:
            assert len(await s.bodies_until_quiet()) == 56
        figures = await scrape_until(
            served.url,
            lambda f: value(f, "wsq_deliveries_total", tenant="acme") == 112,
            "112 deliveries summed over the workers",
        )
        assert value(figures, "wsq_publishes_total", tenant="acme") == 56
        assert value(figures, "wsq_connections", tenant="acme") == 10
        assert value(figures, "wsq_links", tenant="acme", role="sender") == 8
        assert value(figures, "wsq_links", tenant="acme", role="receiver") == 2
        assert value(figures, "wsq_ready") == 1
        for c in (*subscribers, *publishers):
            await c.close()
        figures = await scrape_until(
            served.url,
            lambda f: value(f, "wsq_closes_total", reason="client") == 10,
            "10 closes summed over the workers",
        )
        assert value(figures, "wsq_connections", tenant="acme") == 0
        assert value(figures, "wsq_publishes_total", tenant="acme") == 56
    assert os.path.basename(directory) not in os.listdir(os.path.dirname(directory))


JWT_IN_PATH = "/eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJtYWxsb3J5In0.c2lnbmF0dXJlLWhlcmU"


async def test_json_log_lines_name_the_connection_and_never_a_token(tmp_path: Path) -> None:
    with serve_config(
        config(tmp_path, max_links=3), "--log-format", "json", "--log-level", "debug"
    ) as served:
        async with httpx.AsyncClient() as http:
            assert (await http.get(served.url + JWT_IN_PATH)).status_code == 404
        token = mint_token(ACME, "carol", publish=[">"], subscribe=[">"], ttl_s=600)
        c = await client(served.port, token)
        await c.begin(1)
        for handle in range(4):  # the fourth is past max_links = 3
            await c.send(attach_frame(1, handle, "receiver", "logs", credit=1))
        await c.expect("detach", ch=1, handle=3)
        await c.close()
        await eventually(
            lambda: "refused past its quota" in served.log(), "the refusal logged", within=10
        )
    log = served.log()
    assert token not in log
    assert JWT_IN_PATH[1:] not in log
    lines = [json.loads(line) for line in log.splitlines() if line.strip()]
    for line in lines:
        assert {"time", "level", "logger", "message"} <= line.keys(), line
    assert any("[redacted]" in line["message"] for line in lines)
    peer = [x for x in lines if x["logger"] == "wsq.gateway" and x.get("tenant") == "acme"]
    assert peer, "no line of the socket's own"
    assert all(x["sub"] == "carol" and isinstance(x["conn"], int) for x in peer)
    refusal = [x for x in lines if "refused past its quota" in x["message"]]
    assert refusal[0]["condition"] == "wsq:resource-limit-exceeded"
    assert refusal[0]["tenant"] == "acme"


@pytest.mark.slow
async def test_a_worker_reports_ready_as_soon_as_it_has_started(tmp_path: Path) -> None:
    # Until a worker first copies its figures, its gauges read 0 in the files, and wsq_ready
    # (the least of the live workers') said the whole node was not ready for a second after
    # every worker's start: a scrape right after both have started finds the node ready.
    async with two_workers(tmp_path) as served:
        async with httpx.AsyncClient() as http:
            figures = parse((await http.get(f"{served.url}/metrics")).text)
        assert value(figures, "wsq_ready") == 1
