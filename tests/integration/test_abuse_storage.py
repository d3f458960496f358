"""Memory bounded by bytes (issue 13; docs/security.md, "Memory bounded by bytes"): a real
``wsq serve`` fed as a careless or hostile tenant would feed it.

Each test reproduces one finding, scaled down (retention by count only, trimmed messages held
until compaction, headers kept as a dict, a stuck subscriber pinning the hub's recent cache,
lookups that read the stream back, idempotency results kept as objects), and asserts that the
gateway's RSS grows less than the bound it states, and that a bystander tenant is still served.
The gateway runs with a fixed glibc mmap threshold, so that RSS shows what the process holds
rather than what the allocator keeps cached after a free (large strings are mmapped and given
back at once).
"""

from __future__ import annotations

import asyncio
import json
import textwrap
import time
import uuid
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

MIB = 1024 * 1024
#: retention_max_bytes of the abusive tenant (default 64 MiB; smaller here to stay quick).
RETENTION_BYTES = 8 * MIB
#: Large strings are mmapped (and unmapped when freed): RSS is what the process holds.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
#: "acme" and "short" are the abusive tenants, "other" the bystander.
SECRETS = {"acme": SECRET_ACME, "short": SECRET_ACME[::-1], "other": SECRET_OTHER}


def config(path: Path, broker: str = "memory://") -> Path:
    path.write_text(
        textwrap.dedent(
            f"""
            [server]
            max_frame_bytes = {2 * MIB}
            [broker]
            url = "{broker}"
            [tenants.acme]
            keys = [{{ alg = "HS256", secret = "{SECRETS["acme"]}" }}]
            retention_max_bytes = {RETENTION_BYTES}
            [tenants.short]
            keys = [{{ alg = "HS256", secret = "{SECRETS["short"]}" }}]
            retention_max_len = 16
            retention_max_age_ms = 3000
            [tenants.other]
            keys = [{{ alg = "HS256", secret = "{SECRETS["other"]}" }}]
            """
        )
    )
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    path = config(tmp_path_factory.mktemp("abuse-storage") / "wsq.toml")
    with serve_config(path, env=MALLOC_ENV) as server:
        yield server


def token(tenant: str, sub: str = "svc") -> str:
    cfg = TenantConfig(tenant, tenant, (KeyConfig(alg="HS256", secret=SECRETS[tenant]),))
    return mint_token(cfg, sub, publish=[">"], subscribe=[">"])


@pytest.fixture
async def http(served: Served) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
        yield client


def messages_url(address: str) -> str:
    return f"/v1/addresses/{address}/messages"


async def post(
    http: httpx.AsyncClient, tenant: str, address: str, doc: Any, **headers: str
) -> httpx.Response:
    r = await http.post(
        messages_url(address),
        content=json.dumps(doc),
        headers={
            "Authorization": f"Bearer {token(tenant)}",
            "Content-Type": "application/json",
            **headers,
        },
    )
    assert r.status_code in (200, 201), r.text
    return r


def rss_mib(served: Served) -> float:
    return served.rss_kib() / 1024


def peak_mib(served: Served) -> float:
    """VmHWM: the most RSS the process ever had."""
    for line in Path(f"/proc/{served.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


async def bystander_is_served(served: Served) -> None:
    """Tenant "other": a new socket subscribes, publishes and receives; /healthz answers."""
    async with httpx.AsyncClient() as plain:
        assert (await plain.get(f"{served.url}/healthz")).status_code == 200
    ws = await websockets.connect(
        f"ws://127.0.0.1:{served.port}/ws", subprotocols=["wsq.v1"], max_size=None
    )
    client = Client(ws)
    try:
        await client.open(token("other", "bystander"))
        await client.begin(1)
        await client.subscribe(1, 0, "room", credit=10)
        await client.send(attach_frame(1, 1, "sender", "room"))
        await client.expect("flow", ch=1, handle=1)
        await client.send(
            {"op": "transfer", "ch": 1, "handle": 1, "delivery": 0, "body": {"hi": 1}}
        )
        got = await client.expect("transfer", ch=1, handle=0)
        assert got["body"] == {"hi": 1}
    finally:
        await client.close()


async def settle(served: Served) -> float:
    await asyncio.sleep(0.3)
    return rss_mib(served)


# -- 1. retention counts bytes ---------------------------------------------------------------


async def test_retention_is_bounded_by_bytes(served: Served, http: httpx.AsyncClient) -> None:
    """80 x 512 KiB (40 MiB) on one address keep RETENTION_BYTES (8 MiB). Before: all of it
    (retention by count only: 10,000 messages)."""
    before = await settle(served)
    body = "x" * (512 * 1024)
    for _ in range(80):
        await post(http, "acme", "big.feed", {"body": body})
    grown = await settle(served) - before
    assert grown < 20, f"RSS +{grown:.1f} MiB (bound 20 MiB; 40 MiB published)"
    r = await http.get(
        messages_url("big.feed"),
        params={"limit": 100},
        headers={"Authorization": f"Bearer {token('acme')}"},
    )
    assert r.status_code == 200
    await bystander_is_served(served)


# -- 2. trimmed messages are released --------------------------------------------------------


async def test_trimmed_messages_are_released(served: Served, http: httpx.AsyncClient) -> None:
    """Retention 16 messages / 3 s: 160 x 256 KiB (40 MiB) keep 16 (4 MiB). Before: every one
    held until 1,024 slots were trimmed."""
    before = await settle(served)
    body = "y" * (256 * 1024)
    for _ in range(160):
        await post(http, "short", "trimmed", {"body": body})
    grown = await settle(served) - before
    assert grown < 16, f"RSS +{grown:.1f} MiB (bound 16 MiB; 4 MiB retained of 40 MiB)"
    await bystander_is_served(served)


# -- 3. headers are kept encoded -------------------------------------------------------------


async def test_headers_of_many_small_keys_are_kept_encoded(
    served: Served, http: httpx.AsyncClient
) -> None:
    """8 messages with 70,000 small header keys (0.93 MiB of JSON each, 7.4 MiB in all) cost
    about their text. Before: each kept as a dict of 6.8 MiB (54 MiB)."""
    headers = {f"k{i}": i for i in range(70_000)}
    assert len(json.dumps(headers)) > 0.9 * MIB
    before = await settle(served)
    for _ in range(8):
        await post(http, "acme", "headers", {"body": 1, "headers": headers})
    grown = await settle(served) - before
    assert grown < 24, f"RSS +{grown:.1f} MiB (bound 24 MiB; 7.4 MiB of JSON)"
    await bystander_is_served(served)


# -- 4. a stuck subscriber pins at most the recent bytes ------------------------------------


async def test_a_subscriber_that_stops_granting_credit_pins_little(
    served: Served, http: httpx.AsyncClient
) -> None:
    """A link with credit 1 that never grants more, while 100 x 512 KiB (50 MiB) are published
    on its address: the hub keeps at most its recent bytes (4 MiB, twice that amortised), the
    broker its retention (8 MiB). Before: the hub's recent cache kept up to 2,048 messages."""
    ws = await websockets.connect(
        f"ws://127.0.0.1:{served.port}/ws", subprotocols=["wsq.v1"], max_size=None
    )
    stuck = Client(ws)
    try:
        await stuck.open(token("acme", "stuck"))
        await stuck.begin(1)
        await stuck.subscribe(1, 0, "pinned", credit=1)
        before = await settle(served)
        body = "z" * (512 * 1024)
        for _ in range(100):
            await post(http, "acme", "pinned", {"body": body})
        await stuck.expect("transfer", ch=1, handle=0)  # its one credit
        grown = await settle(served) - before
        assert grown < 28, f"RSS +{grown:.1f} MiB (bound 28 MiB; 50 MiB published)"
        await bystander_is_served(served)
    finally:
        await stuck.close()


# -- 6. idempotency keys keep compact results ------------------------------------------------


async def test_idempotency_keys_keep_compact_results(
    served: Served, http: httpx.AsyncClient
) -> None:
    """200 requests of 1,000 small messages (13 KB each), each with its own Idempotency-Key:
    the keys cost a few dozen bytes each. Before: 135 KiB each (26 MiB)."""
    batch = {"messages": [{"body": i} for i in range(1000)]}
    assert len(json.dumps(batch)) > 13_000
    # Fill the address's retention (10,000 messages) first: what is measured is the keys.
    for _ in range(10):
        await post(http, "acme", "keyed", batch)
    before = await settle(served)
    for _ in range(200):
        r = await post(http, "acme", "keyed", batch, **{"Idempotency-Key": str(uuid.uuid4())})
        assert r.status_code == 201
    grown = await settle(served) - before
    assert grown < 10, f"RSS +{grown:.1f} MiB (bound 10 MiB; 200 keys)"
    await bystander_is_served(served)


# -- 5. lookups never read the stream back (Redis) -------------------------------------------


@pytest.fixture(scope="module")
def served_on_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    workdir = tmp_path_factory.mktemp("abuse-storage-redis")
    with RedisServer(workdir) as redis_server:
        path = config(workdir / "wsq.toml", redis_server.url)
        with serve_config(path, env=MALLOC_ENV) as server:
            yield server


async def test_a_lookup_of_a_missing_message_id_reads_no_bodies(
    served_on_redis: Served,
) -> None:
    """On Redis, 16 x 512 KiB retained (8 MiB): four lookups at once of message_ids that are
    not there answer 404 at once, and the gateway's peak RSS does not move. Before: each read
    the whole stream back, bodies included (32 MiB through the gateway here)."""
    served = served_on_redis
    auth = {"Authorization": f"Bearer {token('acme')}"}
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as http:
        body = "w" * (512 * 1024)
        for i in range(16):
            await post(http, "acme", "looked.up", {"body": body, "message_id": f"m{i}"})
        found = await http.get("/v1/addresses/looked.up/lookup", params={"message_id": "m15"})
        assert found.status_code == 401  # no token: nothing read either
        found = await http.get(
            "/v1/addresses/looked.up/lookup", params={"message_id": "m15"}, headers=auth
        )
        assert found.status_code == 200 and found.json()["body"] == body
        await asyncio.sleep(0.3)
        peak = peak_mib(served)
        started = time.monotonic()
        answers = await asyncio.gather(
            *(
                http.get(
                    "/v1/addresses/looked.up/lookup",
                    params={"message_id": f"absent-{i}"},
                    headers=auth,
                )
                for i in range(4)
            )
        )
        took = time.monotonic() - started
        assert [a.status_code for a in answers] == [404] * 4
        risen = peak_mib(served) - peak
        assert risen < 4, f"peak RSS +{risen:.1f} MiB (bound 4 MiB)"
        assert took < 1.0, f"{took:.2f} s for four lookups (bound 1 s)"
        await bystander_is_served(served)
