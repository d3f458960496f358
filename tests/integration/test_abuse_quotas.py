"""Per-tenant quotas (issue 13; docs/security.md, "Per-tenant quotas"): a real ``wsq serve``
probed as a hostile or careless tenant would, with small quotas.

Each test reproduces one finding (2,000 sockets on one token all accepted; 262,144 links on one
socket, +996 MiB still held after it closed; 100k addresses kept for 7 days; dedup ids,
Idempotency-Keys and groups without bound) and shows it refused at the narrowest scope with
``wsq:resource-limit-exceeded`` (429 on HTTP), given back when released, and a bystander tenant
still served. The last test runs two ``wsq serve`` on one Redis: they share the counts, and
the counts of a node that is killed are given back after its ``quota_lease_ms``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from wsq_harness import (
    SECRET_ACME,
    SECRET_OTHER,
    Client,
    RedisServer,
    Served,
    attach_frame,
    serve_config,
)

from wsq.auth import mint_token
from wsq.config import KeyConfig, TenantConfig

MAX_CONNECTIONS = 20
MAX_LINKS = 300
MAX_ADDRESSES = 400
#: The "tiny" tenant's addresses, which idle out after IDLE_MS.
SMALL_ADDRESSES = 12
IDLE_MS = 2000
MAX_GROUPS = 2
MAX_DEDUP_IDS = 5
MAX_IDEMPOTENCY_KEYS = 3
#: What the process's RSS may have grown by after a second round of MAX_LINKS links attached
#: and their sockets closed (the first round warms the allocator up).
RSS_BOUND_KIB = 2 * 1024
SECRET_SMALL = "small-secret-small-secret-small-secret-003"
SECRET_TINY = "tiny-secret-tiny-secret-tiny-secret-tiny-04"
LIMIT = "wsq:resource-limit-exceeded"


def config_text(broker: str = "memory://", lease_ms: int = 30_000, **acme: int) -> str:
    quotas = {
        "max_connections": MAX_CONNECTIONS,
        "max_links": MAX_LINKS,
        "max_addresses": MAX_ADDRESSES,
        **acme,
    }
    acme_lines = "\n".join(f"{k} = {v}" for k, v in quotas.items())
    return textwrap.dedent(
        f"""
        [server]
        max_sessions = 64
        [broker]
        url = "{broker}"
        quota_lease_ms = {lease_ms}
        [tenants.acme]
        keys = [{{ kid = "k1", alg = "HS256", secret = "{SECRET_ACME}" }}]
        {{acme}}
        [tenants.tiny]
        keys = [{{ alg = "HS256", secret = "{SECRET_TINY}" }}]
        idle_expiry_ms = {IDLE_MS}
        max_addresses = {SMALL_ADDRESSES}
        [tenants.small]
        keys = [{{ alg = "HS256", secret = "{SECRET_SMALL}" }}]
        max_groups = {MAX_GROUPS}
        max_dedup_ids = {MAX_DEDUP_IDS}
        max_idempotency_keys = {MAX_IDEMPOTENCY_KEYS}
        [tenants.other]
        keys = [{{ alg = "HS256", secret = "{SECRET_OTHER}" }}]
        """
    ).replace("{acme}", acme_lines)


def token(tenant: str = "acme", sub: str = "alice") -> str:
    secrets = {"acme": SECRET_ACME, "small": SECRET_SMALL, "tiny": SECRET_TINY}
    secret = secrets.get(tenant, SECRET_OTHER)
    kid = "k1" if tenant == "acme" else None
    config = TenantConfig(tenant, tenant, (KeyConfig(alg="HS256", kid=kid, secret=secret),))
    return mint_token(config, sub, publish=(">",), subscribe=(">",), ttl_s=600)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    config = tmp_path_factory.mktemp("quotas") / "wsq.toml"
    config.write_text(config_text())
    with serve_config(config) as server:
        yield server


async def connect(port: int) -> Client:
    ws = await websockets.connect(
        f"ws://127.0.0.1:{port}/ws", subprotocols=["wsq.v1"], max_size=None
    )
    return Client(ws)


async def opened(port: int, tenant: str = "acme") -> Client:
    client = await connect(port)
    await client.open(token(tenant))
    return client


@contextlib.asynccontextmanager
async def clients(*made: Client) -> AsyncIterator[list[Client]]:
    out = list(made)
    try:
        yield out
    finally:
        for c in out:
            await c.close()


async def attach_many(
    client: Client, ch: int, addresses: list[str], role: str = "receiver", **fields: Any
) -> tuple[int, list[dict[str, Any]]]:
    """Attach one link per address on session ``ch`` in one batch: (attached, refusals)."""
    await client.begin(ch)
    await client.send(*(attach_frame(ch, h, role, a, **fields) for h, a in enumerate(addresses)))
    attached, refused = 0, []
    while attached + len(refused) < len(addresses):
        frame = await client.recv()
        if frame["op"] == "attach":
            attached += 1
        elif frame["op"] == "detach":
            refused.append(frame)
    return attached, refused


def auth(tenant: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(tenant)}"}


# -- connections -------------------------------------------------------------------------------


async def test_connections_past_the_bound_are_refused_while_a_bystander_connects(
    served: Served,
) -> None:
    async with clients(*[await opened(served.port) for _ in range(MAX_CONNECTIONS)]) as held:
        extra = await connect(served.port)
        await extra.send({"op": "open", "token": token()})
        frame = await extra.closed_with(LIMIT)
        assert "20 connections" in frame["error"]["description"]
        bystander = await opened(served.port, "other")
        assert bystander.opened["tenant"] == "other"
        await bystander.close()
        # A socket that goes gives its slot back.
        await held.pop().close()
        for _ in range(50):
            again = await connect(served.port)
            await again.send({"op": "open", "token": token()})
            first = await again.recv()
            held.append(again)
            if first["op"] == "open":
                break
            await asyncio.sleep(0.05)
        assert first["op"] == "open"
    assert "tenant 'acme': 1 refused past its quota of 20 connections" in served.log()
    assert token() not in served.log()


# -- links -------------------------------------------------------------------------------------


async def test_links_past_the_bound_across_two_sockets_are_refused_and_given_back(
    served: Served,
) -> None:
    addresses = [f"links.a{i}" for i in range(MAX_LINKS)]
    rss: list[int] = []
    for _ in range(2):
        rss.append(served.rss_kib())
        async with clients(await opened(served.port), await opened(served.port)) as (one, two):
            got, refused = await attach_many(one, 1, addresses[:200])
            assert (got, refused) == (200, [])
            got, refused = await attach_many(two, 1, addresses[100:], role="sender")
            assert got == MAX_LINKS - 200 and len(refused) == 100
            assert {f["error"]["condition"] for f in refused} == {LIMIT}
            # The other tenant attaches as it likes meanwhile.
            async with clients(await opened(served.port, "other")) as (bystander,):
                assert await attach_many(bystander, 1, addresses[:50]) == (50, [])
            # A link that ends gives its slot back.
            await one.send({"op": "detach", "ch": 1, "handle": 0})
            await one.expect("detach", ch=1, handle=0)
            assert await attach_many(two, 2, addresses[:1]) == (1, [])
            assert (await attach_many(two, 3, addresses[:1]))[0] == 0
        # Both sockets closed: every slot is back.
        await asyncio.sleep(0.3)
        async with clients(await opened(served.port)) as (three,):
            assert await attach_many(three, 1, addresses[:150]) == (150, [])
            assert await attach_many(three, 2, addresses[150:]) == (MAX_LINKS - 150, [])
        await asyncio.sleep(0.3)
    rss.append(served.rss_kib())
    # What 300 links cost is given back: a second round leaves the process where the first did.
    assert rss[2] - rss[1] < RSS_BOUND_KIB, rss


# -- addresses, groups, dedup ids, idempotency keys -----------------------------------------


async def test_addresses_past_the_bound_are_refused_at_the_narrowest_scope(
    served: Served,
) -> None:
    async with httpx.AsyncClient(base_url=served.url) as http:
        for i in range(SMALL_ADDRESSES - 1):
            r = await http.post(
                f"/v1/addresses/addr.{i}/messages", json={"body": i}, headers=auth("tiny")
            )
            assert r.status_code == 201, r.text
        async with clients(await opened(served.port, "tiny")) as (ws,):
            # The last slot: a receiver; one more receiver is detached, its session goes on.
            _, refused = await attach_many(ws, 1, ["addr.last", "addr.past"])
            assert [f["handle"] for f in refused] == [1]
            assert refused[0]["error"]["condition"] == LIMIT
            # A sender attaches (it creates nothing), its transfers are rejected.
            assert await attach_many(ws, 2, ["addr.new", "addr.0"], role="sender") == (2, [])
            await ws.send({"op": "transfer", "ch": 2, "handle": 0, "delivery": 0, "body": 1})
            d = await ws.expect("disposition", ch=2)
            assert d["outcome"] == "rejected" and d["error"]["condition"] == LIMIT
            # ... while a live address takes messages on the same session.
            await ws.send({"op": "transfer", "ch": 2, "handle": 1, "delivery": 1, "body": 2})
            assert (await ws.expect("disposition", ch=2))["outcome"] == "accepted"
            # HTTP: 429, the error body, and when the oldest address idles out.
            r = await http.post(
                "/v1/addresses/addr.http/messages", json={"body": 1}, headers=auth("tiny")
            )
            assert r.status_code == 429
            assert r.json()["error"]["condition"] == LIMIT
            assert 1 <= int(r.headers["retry-after"]) <= IDLE_MS // 1000
            # The bystander tenant publishes wherever it likes.
            r = await http.post(
                "/v1/addresses/addr.http/messages", json={"body": 1}, headers=auth("other")
            )
            assert r.status_code == 201
            # Addresses idle out: then there is room again (addr.last stays tailed, addr.0 used).
            await asyncio.sleep(IDLE_MS / 1000 + 0.3)
            r = await http.post(
                "/v1/addresses/addr.http/messages", json={"body": 1}, headers=auth("tiny")
            )
            assert r.status_code == 201, r.text


async def test_groups_past_the_bound_are_refused(served: Served) -> None:
    async with httpx.AsyncClient(base_url=served.url) as http:
        claims = "/v1/addresses/jobs.q/claims"
        for group in ("g1", "g2"):
            r = await http.post(claims, json={"group": group}, headers=auth("small"))
            assert r.status_code == 204, r.text
        r = await http.post(claims, json={"group": "g3"}, headers=auth("small"))
        assert r.status_code == 429 and r.json()["error"]["condition"] == LIMIT
        assert "retry-after" not in r.headers  # a group frees no slot by waiting
        async with clients(await opened(served.port, "small")) as (ws,):
            _, refused = await attach_many(ws, 1, ["jobs.q", "jobs.q"], mode="move", group="g3")
            assert len(refused) == 2 and refused[0]["error"]["condition"] == LIMIT
            assert await attach_many(ws, 2, ["jobs.q"], mode="move", group="g1") == (1, [])


async def test_dedup_ids_and_idempotency_keys_are_bounded_per_address(served: Served) -> None:
    url = "/v1/addresses/dedup.a/messages"
    async with httpx.AsyncClient(base_url=served.url) as http:
        for i in range(MAX_DEDUP_IDS + 2):
            r = await http.post(url, json={"body": i, "message_id": f"m{i}"}, headers=auth("small"))
            assert r.status_code == 201
        r = await http.post(
            url, json={"body": 0, "message_id": f"m{MAX_DEDUP_IDS + 1}"}, headers=auth("small")
        )
        assert r.status_code == 200  # remembered: a duplicate
        r = await http.post(url, json={"body": 0, "message_id": "m0"}, headers=auth("small"))
        assert r.status_code == 201  # the oldest was forgotten: stored again
        first = []
        for i in range(MAX_IDEMPOTENCY_KEYS + 1):
            headers = {**auth("small"), "Idempotency-Key": f"key-{i}"}
            first.append((await http.post(url, json={"body": i}, headers=headers)).json())
        # The same request again: the newest keys replay their first answer ...
        last = MAX_IDEMPOTENCY_KEYS
        headers = {**auth("small"), "Idempotency-Key": f"key-{last}"}
        r = await http.post(url, json={"body": last}, headers=headers)
        assert r.headers.get("idempotent-replayed") == "true" and r.json() == first[-1]
        # ... the oldest was forgotten: published again.
        headers = {**auth("small"), "Idempotency-Key": "key-0"}
        r = await http.post(url, json={"body": 0}, headers=headers)
        assert "idempotent-replayed" not in r.headers and r.json() != first[0]


# -- across processes on Redis ---------------------------------------------------------------


async def test_two_nodes_on_one_redis_share_the_counts_and_a_killed_node_gives_them_back(
    tmp_path: Path,
) -> None:
    with RedisServer(tmp_path) as redis_server:
        config = tmp_path / "wsq.toml"
        config.write_text(
            config_text(redis_server.url, lease_ms=1500, max_connections=4, max_links=6)
        )
        with serve_config(config) as a, serve_config(config) as b:
            async with clients() as held:
                for node in (a, b, a, b):
                    held.append(await opened(node.port))
                for node in (a, b):
                    extra = await connect(node.port)
                    await extra.send({"op": "open", "token": token()})
                    await extra.closed_with(LIMIT)
                # Links: 3 on a, 3 on b; the seventh is refused on either.
                assert await attach_many(held[0], 1, ["x.1", "x.2", "x.3"]) == (3, [])
                assert await attach_many(held[1], 1, ["x.1", "x.2", "x.3"]) == (3, [])
                assert (await attach_many(held[2], 1, ["x.4"]))[0] == 0
                assert (await attach_many(held[3], 1, ["x.4"]))[0] == 0
                # Node a is killed: its 2 connections and 3 links stay counted for its lease,
                # then b may have them.
                a.proc.send_signal(signal.SIGKILL)
                killed = time.monotonic()
                late = await connect(b.port)
                await late.send({"op": "open", "token": token()})
                await late.closed_with(LIMIT)
                while True:
                    client = await connect(b.port)
                    held.append(client)
                    await client.send({"op": "open", "token": token()})
                    if (await client.recv())["op"] == "open":
                        break
                    assert time.monotonic() - killed < 5, "a's connections were never released"
                    await asyncio.sleep(0.1)
                released = time.monotonic() - killed
                assert 1.0 < released < 5, released
                # Its links likewise (their share may have been written a moment later).
                for ch in range(1, 50):
                    got, refused = await attach_many(held[-1], ch, ["x.5", "x.6", "x.7", "x.8"])
                    if got:
                        break
                    assert time.monotonic() - killed < 5, "a's links were never released"
                    await asyncio.sleep(0.1)
                assert (got, len(refused)) == (3, 1)
