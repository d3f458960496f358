"""wsq.v1's bounds hold over AMQP 1.0 at the same scope (docs/amqp.md, "Errors and their
scope"): the tenant's publish rate rejects the transfer and the link goes on; its max_links
and max_connections refuse the link and the connection; an over-long subject is a rejected
message; the handshake's choice, text on an AMQP socket, AMQP without SASL. Mostly with
python-qpid-proton's engine over a real WebSocket to an in-process gateway."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import websockets
from amqp_proton import ProtonClient, over_websocket
from proton import Delivery, Endpoint, Message
from wsq_harness import Gateway


@pytest.mark.gateway(publish_rate=0.001)  # a bucket of one message, hardly refilled
async def test_publishes_over_the_rate_are_rejected_and_the_link_goes_on(gateway: Gateway) -> None:
    client = ProtonClient(gateway.token("pub"))
    async with over_websocket(gateway.url, client) as until:
        snd = client.sender("rated.amqp")
        await until(lambda: snd.credit > 0)
        first = client.send(snd, Message(body=1))
        await until(lambda: bool(first.remote_state))
        assert first.remote_state == Delivery.ACCEPTED
        second = client.send(snd, Message(body=2))
        await until(lambda: bool(second.remote_state))
        assert second.remote_state == Delivery.REJECTED
        assert second.remote.condition.name == "amqp:resource-limit-exceeded"
        assert second.remote.condition.info["wsq-condition"] == "wsq:resource-limit-exceeded"
        assert snd.state & Endpoint.REMOTE_ACTIVE, "the link goes on"


@pytest.mark.gateway(max_links=2)
async def test_links_past_the_tenant_quota_are_refused_at_link_scope(gateway: Gateway) -> None:
    client = ProtonClient(gateway.token("links"))
    async with over_websocket(gateway.url, client) as until:
        links = [client.receiver(f"quota.n{i}", credit=1) for i in range(3)]

        def answered() -> bool:
            return all(lk.state & (Endpoint.REMOTE_ACTIVE | Endpoint.REMOTE_CLOSED) for lk in links)

        await until(answered)
        refused = [lk for lk in links if lk.state & Endpoint.REMOTE_CLOSED]
        assert len(refused) == 1
        assert refused[0].remote_condition.name == "amqp:resource-limit-exceeded"
        assert client.opened and not client.closed


@pytest.mark.gateway(max_connections=1)
async def test_connections_past_the_tenant_quota_fail_sasl(gateway: Gateway) -> None:
    first = ProtonClient(gateway.token("one"))
    async with over_websocket(gateway.url, first) as until:
        await until(lambda: first.opened)
        second = ProtonClient(gateway.token("two"))
        async with over_websocket(gateway.url, second) as until2:
            await until2(lambda: second.transport.closed or second.opened)
            assert not second.opened
            assert second.transport.condition is not None
            assert "amqp:unauthorized-access" in str(second.transport.condition.name)


async def test_a_message_that_breaks_a_prop_rule_is_rejected_with_the_reason(
    gateway: Gateway,
) -> None:
    client = ProtonClient(gateway.token("props"))
    async with over_websocket(gateway.url, client) as until:
        snd = client.sender("props.amqp")
        await until(lambda: snd.credit > 0)
        bad = client.send(snd, Message(body=1, id="x" * 2000))
        await until(lambda: bool(bad.remote_state))
        assert bad.remote_state == Delivery.REJECTED
        assert "message-id" in bad.remote.condition.description


async def test_a_handshake_offering_both_gets_wsq_v1_and_amqp_alone_gets_amqp(
    gateway: Gateway,
) -> None:
    async with websockets.connect(gateway.url, subprotocols=["amqp", "wsq.v1"]) as ws:
        assert ws.subprotocol == "wsq.v1"
    async with websockets.connect(gateway.url, subprotocols=["amqp"]) as ws:
        assert ws.subprotocol == "amqp"


async def test_a_text_message_on_an_amqp_socket_ends_it(gateway: Gateway) -> None:
    async with websockets.connect(gateway.url, subprotocols=["amqp"]) as ws:
        await ws.send("AMQP in text")
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 5)


async def test_sasl_is_required_an_amqp_header_gets_the_sasl_header_and_the_end(
    gateway: Gateway,
) -> None:
    async with websockets.connect(gateway.url, subprotocols=["amqp"]) as ws:
        await ws.send(b"AMQP\x00\x01\x00\x00")
        assert await asyncio.wait_for(ws.recv(), 5) == b"AMQP\x03\x01\x00\x00"
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)


async def test_a_draining_queue_receiver_gets_what_waits_then_its_drain_answer(
    gateway: Gateway,
) -> None:
    token = gateway.token("drainer")
    async with httpx.AsyncClient() as http:
        for n in range(2):
            answer = await http.post(
                f"{gateway.http}/v1/addresses/drain.q/messages",
                headers={"Authorization": f"Bearer {token}"},
                json={"body": n},
            )
            assert answer.status_code == 201
    client = ProtonClient(token)
    async with over_websocket(gateway.url, client) as until:
        rcv = client.receiver("drain.q::workers", mode="move")
        await until(lambda: bool(rcv.state & Endpoint.REMOTE_ACTIVE))
        rcv.drain(5)
        got: list[Any] = []

        def drained() -> bool:
            got.extend(ProtonClient.received(rcv))
            return not rcv.draining()

        await until(drained)
        got.extend(ProtonClient.received(rcv))
        assert sorted(m.body for _, m in got) == [0, 1]
        assert rcv.credit == 0
