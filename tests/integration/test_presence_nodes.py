"""Presence across two real ``wsq serve`` processes on one real ``redis-server``: members of
one node are seen on the other, and a node SIGKILLed takes its members with it within its
lease (``[broker] quota_lease_ms``) while the other node's members are told of their leave."""

from __future__ import annotations

import signal
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from wsq_harness import SECRET_ACME, Client, RedisServer, Served, serve_config, tenants

from wsq.auth import mint_token

#: The lease of a node's members (ms): the least the configuration takes.
LEASE_MS = 1000
#: What the contract promises after a node dies: its lease, a watcher's sweep (a third of it),
#: a notice; doubled, and a margin for a loaded machine. A bound on convergence, not a timing.
WITHIN_S = 2 * (LEASE_MS / 1000 + LEASE_MS / 3000 + 0.2) + 5


@pytest.fixture
def two_nodes(tmp_path: Path) -> Iterator[tuple[Served, Served]]:
    with RedisServer(tmp_path) as redis:
        config = tmp_path / "wsq.toml"
        config.write_text(
            textwrap.dedent(
                f"""
                [broker]
                url = "{redis.url}"
                quota_lease_ms = {LEASE_MS}
                [tenants.acme]
                keys = [ {{ kid = "k1", alg = "HS256", secret = "{SECRET_ACME}" }} ]
                """
            )
        )
        with serve_config(config) as a, serve_config(config) as b:
            yield a, b


def token(sub: str) -> str:
    return mint_token(tenants()["acme"], sub, subscribe=[">"])


async def present(node: Served, sub: str, address: str) -> Client:
    ws = await websockets.connect(
        f"ws://127.0.0.1:{node.port}/ws", subprotocols=["wsq.v1"], max_size=None
    )
    client = Client(ws)
    await client.open(token(sub))
    await client.begin(1)
    await client.subscribe(1, 0, address, presence=True)
    return client


async def occupancy(node: Served, address: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        answer = await http.get(
            f"{node.url}/v1/addresses/{address}/presence",
            headers={"authorization": f"Bearer {token('ops')}"},
        )
    assert answer.status_code == 200
    body: dict[str, Any] = answer.json()
    return body


async def test_a_killed_node_takes_its_members_with_it(two_nodes: tuple[Served, Served]) -> None:
    a, b = two_nodes
    address = "lobby.main"
    watcher = await present(b, "watcher", address)
    assert (await watcher.expect("presence"))["count"] == 1
    on_a = [await present(a, f"user{n}", address) for n in range(2)]
    joined = {(await watcher.expect("presence", timeout=10))["join"]["sub"] for _ in on_a}
    assert joined == {"user0", "user1"}
    snapshot = await on_a[1].expect("presence")
    assert snapshot["count"] == 3
    assert (await occupancy(b, address))["count"] == 3

    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(10)
    killed = time.monotonic()
    left = [await watcher.expect("presence", timeout=WITHIN_S) for _ in on_a]
    # The figure the report quotes (not asserted: the bound above is the contract's).
    print(f"leaves seen {time.monotonic() - killed:.2f} s after the SIGKILL (lease {LEASE_MS} ms)")
    assert sorted(f["leave"]["sub"] for f in left) == ["user0", "user1"]
    assert {f["leave"]["node"] for f in left} == {on_a[0].opened["node"]}
    answer = await occupancy(b, address)
    assert answer["count"] == 1
    assert [m["sub"] for m in answer["members"]] == ["watcher"]
    await watcher.nothing("presence", wait=0.3)  # no leave twice, no ghost join
    for client in on_a:
        await client.close()
    await watcher.close()
