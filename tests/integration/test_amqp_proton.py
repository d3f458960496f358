"""AMQP 1.0 over WebSocket with python-qpid-proton's engine as the client (tests/amqp_proton.py),
against real ``wsq serve`` processes on a real ``redis-server``: a feed receiver SIGKILLed with
its gateway resumes on another from its last position (a source filter), losing nothing and
repeating nothing; a queue consumer's unsettled messages go to a consumer on the other node
once their lease runs out."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from amqp_proton import ProtonClient, over_websocket
from proton import Delivery, Endpoint, symbol
from proton import Described as PDescribed
from wsq_harness import SECRET_ACME, Client, RedisServer, Served, StreamPublisher, serve_config

from wsq.auth import mint_token
from wsq.config import KeyConfig, TenantConfig

ACME = TenantConfig(name="acme", issuer="acme", keys=(KeyConfig(alg="HS256", secret=SECRET_ACME),))
TOKEN = mint_token(ACME, "reader", publish=(">",), subscribe=(">",))


@pytest.fixture
def two_nodes(tmp_path: Path) -> Iterator[tuple[Served, Served]]:
    with RedisServer(tmp_path) as redis:
        config = tmp_path / "wsq.toml"
        config.write_text(
            f'[broker]\nurl = "{redis.url}"\n'
            f'[tenants.acme]\nissuer = "acme"\nkeys = [{{ alg = "HS256", secret = "{SECRET_ACME}" }}]\n'
        )
        with serve_config(config) as a, serve_config(config) as b:
            yield a, b


def ws_url(node: Served) -> str:
    return f"ws://127.0.0.1:{node.port}/ws"


def position_filter(position: str) -> dict[Any, Any]:
    return {symbol("from"): PDescribed(symbol("wsq:position-filter:string"), position)}


def ids(got: list[tuple[Delivery, Any]]) -> list[str]:
    return [m.annotations["x-opt-wsq-id"] for _, m in got]


async def test_a_feed_receiver_resumes_on_another_node_after_sigkill(
    two_nodes: tuple[Served, Served],
) -> None:
    a, b = two_nodes
    address = f"kill.amqp{uuid.uuid4().hex[:8]}"
    writer_ws = await websockets.connect(ws_url(b), subprotocols=["wsq.v1"], max_size=None)
    writer = Client(writer_ws)
    await writer.open(mint_token(ACME, "writer", publish=(">",)))
    stream = StreamPublisher(writer, address)
    delivered: list[str] = []
    client = ProtonClient(TOKEN)
    task: asyncio.Task[None] | None = None
    try:
        async with over_websocket(ws_url(a), client) as until:
            rcv = client.receiver(address, credit=100_000)
            await until(lambda: bool(rcv.state & Endpoint.REMOTE_ACTIVE))
            props = rcv.remote_properties or {}
            assert symbol("wsq-from") in props
            task = asyncio.create_task(stream.run())

            def collect() -> bool:
                delivered.extend(ids(ProtonClient.received(rcv)))
                return len(delivered) >= 30

            await until(collect, 20)
            a.proc.send_signal(signal.SIGKILL)
            a.proc.wait(10)
            # What node A wrote before it died still counts as delivered.
            with contextlib.suppress(websockets.ConnectionClosed, TimeoutError):
                await until(lambda: collect() and False, 3)
            delivered.extend(ids(ProtonClient.received(rcv)))
        last = delivered[-1]
        again = ProtonClient(TOKEN)
        async with over_websocket(ws_url(b), again) as until:
            rcv = again.receiver(address, credit=100_000, filters=position_filter(last))
            await until(lambda: bool(rcv.state & Endpoint.REMOTE_ACTIVE))
            assert rcv.remote_properties[symbol("wsq-from")] == last
            assert rcv.remote_properties[symbol("wsq-recovered")] is True
            applied = rcv.remote_source.filter
            applied.rewind()
            applied.next()
            assert list(applied.get_dict()) == [symbol("from")], "the filter is in our answer"
            async with httpx.AsyncClient() as http:
                metrics = (await http.get(b.url + "/metrics")).text
            assert 'wsq_connections_by_subprotocol{subprotocol="amqp"} 1.0' in metrics
            mark = len(stream.accepted)

            def published_more() -> bool:
                return len(stream.accepted) >= mark + 30

            await until(published_more, 30)
            stream.stop.set()
            await asyncio.wait_for(task, 20)
            accepted = stream.accepted
            assert not stream.refusals

            def caught_up() -> bool:
                delivered.extend(ids(ProtonClient.received(rcv)))
                return len(delivered) >= len(accepted)

            await until(caught_up, 20)
        assert delivered == accepted, "no message lost, none repeated, in order"
    finally:
        stream.stop.set()
        if task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10)
        await writer_ws.close()


async def test_a_queue_consumer_killed_with_its_node_leaves_its_messages_to_another(
    two_nodes: tuple[Served, Served],
) -> None:
    a, b = two_nodes
    address = f"jobs.amqp{uuid.uuid4().hex[:8]}"
    queue = f"{address}::workers"
    async with httpx.AsyncClient() as http:
        for n in range(3):
            answer = await http.post(
                f"{b.url}/v1/addresses/{address}/messages",
                headers={"Authorization": f"Bearer {TOKEN}"},
                json={"body": {"job": n}},
            )
            assert answer.status_code == 201, answer.text
    doomed = ProtonClient(TOKEN)
    async with over_websocket(ws_url(a), doomed) as until:
        rcv = doomed.session.receiver("doomed")
        rcv.source.address = queue
        rcv.source.distribution_mode = rcv.source.DIST_MODE_MOVE
        rcv.properties = {symbol("wsq-lease"): 500}
        rcv.open()
        rcv.flow(3)
        held: list[Any] = []

        def holding() -> bool:
            held.extend(ProtonClient.received(rcv))
            return len(held) == 3

        await until(holding)
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(10)
    survivor = ProtonClient(TOKEN)
    async with over_websocket(ws_url(b), survivor) as until:
        rcv = survivor.receiver(queue, credit=10, mode="move")
        got: list[Any] = []

        def given() -> bool:
            got.extend(ProtonClient.received(rcv))
            return len(got) >= 3

        await until(given, 20)
        assert sorted(m.body["job"] for _, m in got) == [0, 1, 2]
        assert all(m.delivery_count == 1 for _, m in got), "counted as redelivered"
        for delivery, _ in got:
            delivery.update(Delivery.ACCEPTED)
            delivery.settle()
        await until(lambda: not survivor.output() and True, 1)
