"""A broker that fails a publish in a way nobody planned for costs that publish, never the link,
the session or the connection: the transfers are rejected with wsq:internal-error, over
WebSocket and HTTP alike."""

from __future__ import annotations

from collections.abc import Sequence

import httpx
import pytest
from wsq_harness import make_settings, running_gateway

from wsq.broker.memory import MemoryBroker
from wsq.core.messages import NewMessage, Published


class ShortAnswers(MemoryBroker):
    """Answers one result fewer than it was given messages (a broker bug)."""

    async def publish(
        self, tenant: str, address: str, messages: Sequence[NewMessage]
    ) -> list[Published]:
        return (await super().publish(tenant, address, messages))[:-1]


class Explodes(MemoryBroker):
    """Raises something that is not a wsq error."""

    async def publish(
        self, tenant: str, address: str, messages: Sequence[NewMessage]
    ) -> list[Published]:
        raise RuntimeError("boom")


@pytest.mark.parametrize("broker_type", [ShortAnswers, Explodes])
async def test_an_unexpected_broker_answer_rejects_the_transfers_and_the_link_goes_on(
    broker_type: type[MemoryBroker],
) -> None:
    settings = make_settings()
    async with running_gateway(settings, broker_type(settings.storage_policies())) as gw:
        client = await gw.client()
        await client.begin(1)
        await client.sender(1, 0, "fail.here")
        await client.send(
            {"op": "transfer", "ch": 1, "handle": 0, "delivery": 0, "body": 1},
            {"op": "transfer", "ch": 1, "handle": 0, "delivery": 1, "body": 2},
        )
        d = await client.expect("disposition", ch=1)
        assert d["outcome"] == "rejected" and (d["first"], d["last"]) == (0, 0)
        assert d["error"] == {
            "condition": "wsq:internal-error",
            "description": "the message could not be stored",
        }
        assert (await client.expect("disposition", ch=1))["first"] == 1
        flow = await client.expect("flow", ch=1, handle=0)
        assert flow["credit"] == 2  # the link is refilled and goes on
        await client.nothing("close", wait=0.2)
        headers = {"Authorization": f"Bearer {gw.token()}"}
        async with httpx.AsyncClient(base_url=gw.http, headers=headers) as http:
            got = await http.post("/v1/addresses/fail.here/messages", json={"body": 3})
        assert got.status_code == 500
        assert got.json()["error"]["description"] == "the message could not be stored"
        await client.close()
