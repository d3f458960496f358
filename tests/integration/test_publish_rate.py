"""The tenant's publish_rate on WebSocket publishes: transfers over it are rejected with
wsq:resource-limit-exceeded, and the link, the session and the connection go on."""

from __future__ import annotations

import asyncio

import pytest
from wsq_harness import Gateway


@pytest.mark.gateway(publish_rate=0.5)  # a bucket of one message, refilled in 2 s
async def test_websocket_publishes_over_the_rate_are_rejected_and_the_link_goes_on(
    gateway: Gateway,
) -> None:
    client = await gateway.sender("rated", sub="pub")

    def transfer(delivery: int) -> dict[str, object]:
        return {"op": "transfer", "ch": 1, "handle": 0, "delivery": delivery, "body": delivery}

    await client.send(transfer(0))
    d = await client.expect("disposition", ch=1)
    assert d["outcome"] == "accepted", d
    await client.send(transfer(1))
    d = await client.expect("disposition", ch=1)
    assert d["outcome"] == "rejected" and d["first"] == 1
    assert d["error"]["condition"] == "wsq:resource-limit-exceeded"
    await asyncio.sleep(2.05)  # one token back
    await client.send(transfer(2))
    d = await client.expect("disposition", ch=1)
    assert d["outcome"] == "accepted" and d["first"] == 2
    await client.close()
