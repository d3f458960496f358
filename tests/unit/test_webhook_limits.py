"""The tenants' webhook bounds in one process: ``max_webhook_queue`` (events queued over all of
a tenant's entries; past it dropped and refused) and ``max_webhook_requests`` (requests in
flight at once; past it they wait their turn, counted), against a real local receiver."""

from __future__ import annotations

import asyncio
import base64
from types import MappingProxyType

from wsq_harness import receiver

from wsq.config.settings import TenantConfig, WebhookConfig
from wsq.webhooks.delivery import DROPPED, Webhooks
from wsq.webhooks.requests import OK, Requests

SECRET = "whsec_" + base64.b64encode(b"webhook-limits-key-0123456789abc").decode()


def tenant(url: str, **quotas: int) -> TenantConfig:
    hooks = tuple(
        WebhookConfig(url=url, events=("connection.opened",), secret=SECRET) for _ in range(2)
    )
    return TenantConfig("acme", "acme", (), webhooks=hooks, **quotas)  # type: ignore[arg-type]


async def test_the_tenant_queue_bound_drops_and_counts_past_it() -> None:
    with receiver() as rec:
        config = tenant(rec.url, max_webhook_queue=3)
        hooks = Webhooks(MappingProxyType({"acme": config}), "n1")
        for n in range(2):  # two entries each: 4 wanted, 3 queued, 1 refused
            hooks.connection_opened("acme", "alice", n)
        assert hooks.queued() == 3
        assert hooks.refused["acme"] == 1
        assert hooks.deliveries["acme", DROPPED] == 1
        await hooks.close()  # sends what is queued first (up to its flush time)
        assert len(rec.requests) == 3


async def test_requests_past_the_tenant_bound_wait_their_turn() -> None:
    with receiver() as rec:
        requests = Requests(MappingProxyType({"acme": tenant(rec.url, max_webhook_requests=1)}))
        try:
            posts = [requests.post("acme", rec.url, f"msg_{n}", b"{}", (b"k" * 24,), 2000)
                     for n in range(3)]  # fmt: skip
            assert await asyncio.gather(*posts) == [True, True, True]
        finally:
            await requests.close()
        assert requests.waited["acme"] == 2
        assert requests.results["acme", OK] == 3
        assert len(rec.requests) == 3
