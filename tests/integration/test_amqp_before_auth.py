"""AMQP sockets that never send a token, against a real ``wsq serve``: what they send before it
is counted in bytes (docs/security.md, "Before authentication"), and what the gateway keeps of
it must stay near those bytes.

Before: a client that chose SASL ANONYMOUS (its token to come on ``$cbs``) attached ``$cbs``
links whose attach frames carried large values; each decoded attach was kept for the link's
life at up to 64 bytes per byte (a list of empty lists). 16 sockets from 8 sources, 4 attaches
of 240 KB each (15 MiB in all, within the pending-bytes budget): the process's RSS +360 MiB.

And at the other end of a token's life: an AMQP connection ends when its token expires.
"""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Iterator

import pytest
import websockets
from amqp_proton import ProtonClient, over_websocket
from wsq_harness import SECRET_ACME, Gateway, Served, serve_config

from wsq.amqp import frames as F
from wsq.amqp.codec import Described, Symbol, Uint, Ulong

#: Large strings are mmapped (and unmapped when freed): RSS is what the process holds.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
SOURCES = 8
PER_SOURCE = 2
ATTACHES = 4
#: Each attach's properties: an empty list and three nulls, 60,000 times (240 KB).
GROUPS = 60_000
#: What the RSS may grow by while the sockets hold what they sent (15 MiB on the wire).
RSS_BOUND_KIB = 60 * 1024


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    config = tmp_path_factory.mktemp("amqp-before-auth") / "wsq.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [tenants.acme]
            keys = [{{ kid = "k1", alg = "HS256", secret = "{SECRET_ACME}" }}]
            """
        )
    )
    with serve_config(config, env=MALLOC_ENV) as server:
        yield server


def opening() -> bytes:
    """SASL ANONYMOUS, the AMQP header, open and begin: then nothing but attaches."""
    init = F.frame(0, F.SASL_INIT, [Symbol("ANONYMOUS")], kind=F.FRAME_SASL)
    open_ = F.frame(0, F.OPEN, ["probe", None, Uint(1 << 20)])
    begin = F.frame(0, F.BEGIN, [None, Uint(0), Uint(100), Uint(100)])
    return F.SASL_HEADER + init + F.AMQP_HEADER + open_ + begin


def cbs_attach(handle: int, properties: object) -> bytes:
    target = Described(Ulong(F.TARGET), ["$cbs"])
    fields = [f"l{handle}", Uint(handle), False, None, None, None, target, None, None, Uint(0)]
    return F.frame(0, F.ATTACH, [*fields, None, None, None, properties])


async def test_attaches_before_the_token_keep_little_of_what_they_carried(
    served: Served,
) -> None:
    value = [x for _ in range(GROUPS) for x in ([], None, None, None)]
    attaches = [cbs_attach(h, value) for h in range(ATTACHES)]
    sockets = []
    before = served.rss_kib()
    sent = 0
    try:
        for source in range(3, 3 + SOURCES):
            for _ in range(PER_SOURCE):
                ws = await websockets.connect(
                    f"ws://127.0.0.1:{served.port}/ws",
                    subprotocols=["amqp"],
                    local_addr=(f"127.0.0.{source}", 0),
                )
                sockets.append(ws)
                await ws.send(opening())
                for frame in attaches:
                    await ws.send(frame)
                    sent += len(frame)
        await asyncio.sleep(1.0)  # all of it read and decoded
        grown = served.rss_kib() - before
        alive = sum(1 for ws in sockets if ws.state is websockets.State.OPEN)
        print(f"\n{sent / 2**20:.1f} MiB of attaches, {alive} sockets open: RSS +{grown} KiB")
        assert alive == SOURCES * PER_SOURCE  # all within the budget: nothing was refused
        assert grown < RSS_BOUND_KIB
    finally:
        for ws in sockets:
            await ws.close()


async def test_an_amqp_connection_ends_when_its_token_expires(gateway: Gateway) -> None:
    # The token's exp holds over AMQP as over wsq.v1: the connection closes at it, with
    # amqp:unauthorized-access (wsq-condition wsq:token-expired), unless a put-token refreshed it.
    client = ProtonClient(gateway.token(ttl_s=2))
    async with over_websocket(gateway.url, client) as until:
        await until(lambda: client.opened)
        await until(lambda: client.transport.closed or client.closed, timeout=15)
    assert client.connection.remote_condition is not None
    assert client.connection.remote_condition.name == "amqp:unauthorized-access"
    info = client.connection.remote_condition.info or {}
    assert info.get("wsq-condition") == "wsq:token-expired"
