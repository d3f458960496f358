"""The tenant's publish_rate on WebSocket publishes: transfers over it are rejected with
wsq:resource-limit-exceeded, and the link, the session and the connection go on."""

from __future__ import annotations

import asyncio

import pytest
from wsq_harness import Gateway


@pytest.mark.gateway(publish_rate=2.0)
async def test_websocket_publishes_over_the_rate_are_rejected_and_the_link_goes_on(
    gateway: Gateway,
) -> None:
    client = await gateway.client(sub="pub")
    await client.begin(1)
    await client.sender(1, 0, "rated")

    def transfer(delivery: int) -> dict[str, object]:
        return {"op": "transfer", "ch": 1, "handle": 0, "delivery": delivery, "body": delivery}

    for delivery in range(2):
        await client.send(transfer(delivery))
        d = await client.expect("disposition", ch=1)
        assert d["outcome"] == "accepted", d
    await client.send(transfer(2))
    d = await client.expect("disposition", ch=1)
    assert d["outcome"] == "rejected" and d["first"] == 2
    assert d["error"]["condition"] == "wsq:resource-limit-exceeded"
    await asyncio.sleep(0.6)  # 2 messages/s: one token back
    await client.send(transfer(3))
    d = await client.expect("disposition", ch=1)
    assert d["outcome"] == "accepted" and d["first"] == 3
    await client.close()
