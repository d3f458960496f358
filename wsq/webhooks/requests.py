"""Every webhook request of this process (lifecycle events and sinks): one HTTP client, at most
``max_webhook_requests`` requests of one tenant at once, each counted by its result.

A tenant's requests past its bound wait for a slot (counted in ``waited``, a refusal of
``webhook_requests``): a tenant with many entries and sinks, or a slow receiver, holds that
many sockets and no more, and never the other tenants' slots.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Mapping

import httpx

from wsq.config.settings import TenantConfig
from wsq.webhooks.signing import signature_headers

log = logging.getLogger("wsq.webhooks")

USER_AGENT = "wsq-webhooks/1"
#: ``results`` of one request (wsq_webhook_requests_total{tenant,result}).
OK = "ok"  # a 2xx answer
STATUS = "status"  # another answer
TIMEOUT = "timeout"  # no whole answer within the entry's timeout_ms
ERROR = "error"  # the connection failed (refused, reset, DNS, TLS)
#: A tenant that is not configured (never in practice): its requests' bound.
DEFAULT_REQUESTS = 8


class Requests:
    def __init__(self, tenants: Mapping[str, TenantConfig]) -> None:
        self._limits = {name: t.max_webhook_requests for name, t in tenants.items()}
        self._gates: dict[str, asyncio.Semaphore] = {}
        #: (tenant, result) -> requests.
        self.results: Counter[tuple[str, str]] = Counter()
        #: tenant -> requests that waited for one of the tenant's slots.
        self.waited: Counter[str] = Counter()
        self._client: httpx.AsyncClient | None = None

    def _gate(self, tenant: str) -> asyncio.Semaphore:
        gate = self._gates.get(tenant)
        if gate is None:
            gate = asyncio.Semaphore(self._limits.get(tenant, DEFAULT_REQUESTS))
            self._gates[tenant] = gate
        return gate

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            # Redirects are not followed: a webhook URL says where the events go, once.
            self._client = httpx.AsyncClient(
                follow_redirects=False, headers={"user-agent": USER_AGENT}
            )
        return self._client

    async def post(
        self,
        tenant: str,
        url: str,
        msg_id: str,
        body: bytes,
        keys: tuple[bytes, ...],
        timeout_ms: int,
    ) -> bool:
        """One attempt, within the tenant's bound; True on a 2xx."""
        gate = self._gate(tenant)
        if gate.locked():
            self.waited[tenant] += 1
        async with gate:
            result = await post_signed(self._http(), url, msg_id, body, keys, timeout_ms)
        self.results[tenant, result] += 1
        return result == OK

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


async def post_signed(
    client: httpx.AsyncClient,
    url: str,
    msg_id: str,
    body: bytes,
    keys: tuple[bytes, ...],
    timeout_ms: int,
) -> str:
    """One attempt: ``body`` POSTed with a fresh timestamp and signature; its result (OK...).

    The answer's body is never read: a receiver cannot make wsq hold what it sends back. httpx's
    timeout bounds each read and write, not the request: the whole attempt is bounded here, or
    a receiver drip-feeding its answer's head held it (and a slot of its tenant) at will.
    """
    headers = signature_headers(msg_id, int(time.time()), body, keys)
    headers["content-type"] = "application/json"
    seconds = timeout_ms / 1000
    try:
        async with asyncio.timeout(seconds):
            async with client.stream(
                "POST", url, content=body, headers=headers, timeout=seconds
            ) as answer:
                status = answer.status_code
    except (httpx.TimeoutException, TimeoutError):
        log.info("webhook %s: timed out", msg_id)
        return TIMEOUT
    except httpx.HTTPError as exc:
        log.info("webhook %s: %s", msg_id, type(exc).__name__)
        return ERROR
    if 200 <= status < 300:
        return OK
    log.info("webhook %s: answered %d", msg_id, status)
    return STATUS
