"""Publishing, one way for every front end: the WebSocket gateway and the HTTP bridge both call
``PublishService.publish`` (the right, the tenant's rate and address quota, the broker, the
result)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence

from wsq.auth import Principal
from wsq.broker.base import Broker
from wsq.config import TenantConfig
from wsq.core.errors import Forbidden, InternalError, WsqError
from wsq.core.messages import NewMessage, PublishedOnce
from wsq.quotas import Quotas
from wsq.ratelimit import PublishRateLimiter

log = logging.getLogger("wsq.publishing")


class PublishService:
    """Stores messages that a principal publishes to an address, or says why not."""

    def __init__(
        self, broker: Broker, tenants: Mapping[str, TenantConfig], quotas: Quotas | None = None
    ) -> None:
        self._broker = broker
        self._tenants = tenants
        self._quotas = quotas if quotas is not None else Quotas(tenants, broker)
        # Per-tenant publish_rate of this process: HTTP bridge and WebSocket publishes alike.
        self.rate = PublishRateLimiter()
        #: Messages stored (duplicates answered as such included, replays not), by tenant.
        self.published: Counter[str] = Counter()

    def check_right(self, principal: Principal, address: str) -> None:
        if not principal.rights.can_publish(address):
            raise Forbidden(f"the token may not publish to {address}")

    async def publish(
        self,
        principal: Principal,
        address: str,
        messages: Sequence[NewMessage],
        idempotency: tuple[str, str] | None = None,
    ) -> PublishedOnce:
        """Publish ``messages`` (in order, ``publisher`` the principal's sub) to ``address``.

        ``idempotency``: ``(key, fingerprint)`` of an HTTP ``Idempotency-Key``. Raises
        ``Forbidden`` without the right, ``PublishRateExceeded`` over the tenant's rate,
        ``QuotaExceeded`` for one address more than the tenant's ``max_addresses``,
        ``BrokerUnavailable`` when nothing could be stored, and ``InternalError`` for anything
        unexpected (logged here): a ``WsqError`` every time, so every front end can answer it.
        """
        broker = self._broker
        try:
            self.check_right(principal, address)
            tenant = self._tenants.get(principal.tenant)
            if tenant is not None:
                self.rate.check(tenant, len(messages))
            # A new address past max_addresses: QuotaExceeded, nothing stored.
            await self._quotas.address(principal.tenant, address)
            if idempotency is None:
                once = PublishedOnce(await broker.publish(principal.tenant, address, messages))
            else:
                key, fingerprint = idempotency
                once = await broker.publish_once(
                    principal.tenant, address, messages, key, fingerprint
                )
            if len(once.results) != len(messages):
                raise RuntimeError(f"{len(once.results)} results for {len(messages)} messages")
            if not once.replayed:
                self.published[principal.tenant] += len(messages)
            return once
        except WsqError:
            raise
        except Exception:
            log.exception("publish failed on %s", address)
            raise InternalError("the message could not be stored") from None
