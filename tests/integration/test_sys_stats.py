"""The gateway's own figures on ``$sys.stats`` (wsq.sys_stats): published by every process once
an interval, received only with the ``ops`` right of a tenant that may grant it, never
published to by anyone else, on the memory broker and across two gateways on one Redis."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from wsq_harness import (
    Client,
    Gateway,
    RedisServer,
    attach_frame,
    make_settings,
    running_gateway,
)

FAST = {"stats_interval_ms": 100}


async def ops_client(gw: Gateway, **fields: Any) -> Client:
    client = await gw.client(ops=True)
    await client.begin(1)
    await client.subscribe(1, 0, "$sys.stats", credit=1000, **fields)
    return client


async def snapshot(client: Client, **where: Any) -> dict[str, Any]:
    """The next snapshot whose figures match ``where`` (earlier ones are skipped)."""
    for _ in range(100):
        frame = await client.expect("transfer", timeout=5)
        body = frame["body"]
        if all(body.get(k) == v for k, v in where.items()):
            return frame
    raise AssertionError(f"no snapshot with {where}")


@pytest.mark.gateway(server=FAST, ops=True)
async def test_an_operator_sees_this_nodes_figures_change(gateway: Gateway) -> None:
    client = await ops_client(gateway)
    node = client.opened["node"]
    frame = await snapshot(client, connections={"acme": 1})
    assert frame["body"]["node"] == node
    assert frame["props"]["subject"] == node
    assert frame["props"]["content_type"] == "application/json"
    other = await gateway.client(sub="bob")
    try:
        frame = await snapshot(client, connections={"acme": 2})
        assert frame["body"]["node"] == node
    finally:
        await other.close()
    await snapshot(client, connections={"acme": 1})
    await client.close()


async def refusal_of(gw: Gateway, ops: bool, role: str, address: str, **fields: Any) -> str:
    """The condition of the detach that answers one attach; the session and socket go on."""
    client = await gw.client(ops=ops)
    await client.begin(1)
    await client.send(attach_frame(1, 0, role, address, credit=10, **fields))
    refusal = await client.expect("detach", ch=1, handle=0)
    await client.subscribe(1, 1, "sys.stats", credit=10)  # a tenant address still works
    await client.close()
    return str(refusal["error"]["condition"])


@pytest.mark.gateway(server=FAST, ops=True)
@pytest.mark.parametrize(
    ("ops", "role", "fields", "condition"),
    [
        (False, "receiver", {}, "wsq:forbidden"),  # acme may grant ops; this token lacks it
        (True, "sender", {}, "wsq:forbidden"),  # nobody publishes on the gateway's addresses
        (True, "receiver", {"mode": "move"}, "wsq:forbidden"),  # nor takes figures from others
    ],
    ids=["no-right", "sender", "move"],
)
async def test_only_a_copy_receiver_with_the_right_may_attach(
    gateway: Gateway, ops: bool, role: str, fields: dict[str, Any], condition: str
) -> None:
    assert await refusal_of(gateway, ops, role, "$sys.stats", **fields) == condition


@pytest.mark.gateway(server=FAST)  # acme is not configured with ops = true
async def test_a_tenant_that_may_not_grant_ops_cannot_watch(gateway: Gateway) -> None:
    assert await refusal_of(gateway, True, "receiver", "$sys.stats") == "wsq:forbidden"


@pytest.mark.gateway(server=FAST, ops=True)
async def test_a_dollar_address_that_is_not_sys_is_an_invalid_frame(gateway: Gateway) -> None:
    assert await refusal_of(gateway, True, "receiver", "$other.stats") == "wsq:invalid-frame"


@pytest.mark.gateway(server=FAST, ops=True)
async def test_a_tenant_publishing_on_sys_stats_lookalike_reaches_no_operator(
    gateway: Gateway,
) -> None:
    """``sys.stats`` is an address of the tenant's; ``$sys.stats`` is the gateway's."""
    watcher = await ops_client(gateway)
    sender = await gateway.sender("sys.stats")
    await sender.send(
        {"op": "transfer", "ch": 1, "handle": 0, "delivery": 0, "body": {"connections": 999}}
    )
    for _ in range(5):
        frame = await watcher.expect("transfer", timeout=5)
        assert frame["body"].get("connections") != 999
        assert frame["props"]["publisher"] == watcher.opened["node"]
    await sender.close()
    await watcher.close()


async def test_two_gateways_on_one_redis_each_publish_their_figures(
    redis_server: RedisServer,
) -> None:
    settings = make_settings(server=FAST, broker_url=redis_server.url, ops=True)
    async with contextlib.AsyncExitStack() as stack:
        a = await stack.enter_async_context(running_gateway(settings))
        b = await stack.enter_async_context(running_gateway(settings))
        watcher = await ops_client(a)
        on_b = await b.client(sub="bob")
        nodes: dict[str, int] = {}
        for _ in range(200):
            body = (await watcher.expect("transfer", timeout=5))["body"]
            nodes[body["node"]] = sum(body["connections"].values())
            if len(nodes) == 2 and sorted(nodes.values()) == [1, 1]:
                break
        assert len(nodes) == 2, nodes
        assert sorted(nodes.values()) == [1, 1], json.dumps(nodes)
        await on_b.close()
        await watcher.close()
