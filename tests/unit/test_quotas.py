"""``wsq.quotas`` without sockets: the checks, the refusals counted and logged, the cache of
confirmed addresses, and what one socket gives back (docs/security.md, "Per-tenant quotas")."""

from __future__ import annotations

import logging
from types import MappingProxyType

import pytest

from wsq.broker.memory import MemoryBroker
from wsq.config import Settings, TenantConfig
from wsq.core.errors import ADDRESSES, CONNECTIONS, GROUPS, LINKS, QuotaExceeded
from wsq.quotas import CONFIRM_S, LOG_EVERY_S, Held, Quotas


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def tenant(name: str, **quotas: int) -> TenantConfig:
    return TenantConfig(name=name, issuer=name, keys=(), **quotas)


TENANTS = MappingProxyType(
    {
        "acme": tenant(
            "acme",
            max_connections=2,
            max_links=3,
            max_addresses=2,
            max_groups=1,
            idle_expiry_ms=60_000,
        ),
        "other": tenant("other"),
    }
)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def broker(clock: Clock) -> MemoryBroker:
    return MemoryBroker(Settings(tenants=TENANTS).storage_policies(), clock=clock)


@pytest.fixture
def quotas(broker: MemoryBroker, clock: Clock) -> Quotas:
    return Quotas(TENANTS, broker, clock=clock)


async def test_connections_and_links_are_refused_past_the_bound_and_given_back(
    quotas: Quotas,
) -> None:
    await quotas.connect("acme")
    await quotas.connect("acme")
    with pytest.raises(QuotaExceeded) as refused:
        await quotas.connect("acme")
    assert refused.value.to_error() == {
        "condition": "wsq:resource-limit-exceeded",
        "description": "the tenant's quota of 2 connections is reached",
    }
    await quotas.connect("other")  # another tenant is not counted with acme
    quotas.disconnect("acme")
    await quotas.connect("acme")
    for _ in range(3):
        await quotas.attach("acme")
    with pytest.raises(QuotaExceeded):
        await quotas.attach("acme")
    quotas.detach("acme", 2)
    await quotas.attach("acme")
    await quotas.attach("acme")
    assert quotas.refusals == {("acme", CONNECTIONS): 1, ("acme", LINKS): 1}


async def test_a_socket_gives_back_its_connection_and_every_link_it_held(
    quotas: Quotas,
) -> None:
    one, two = Held(quotas), Held(quotas)
    await one.connect("acme")
    await one.attach("l1")
    await one.attach("l2")
    await two.connect("acme")
    await two.attach("l3")
    with pytest.raises(QuotaExceeded):
        await two.attach("l4")
    one.ended("l1")
    one.ended("never-held")  # a link refused at its attach gives nothing back
    await two.attach("l4")
    one.release()
    one.release()  # once only
    await two.attach("l5")
    await Held(quotas).connect("acme")
    with pytest.raises(QuotaExceeded):
        await Held(quotas).connect("acme")


async def test_addresses_are_live_until_they_idle_out(
    quotas: Quotas, broker: MemoryBroker, clock: Clock
) -> None:
    asked: list[str] = []
    admit = broker.quota_store.admit

    async def counting(tenant: str, address: str, limit: int, ttl_ms: int) -> int:
        asked.append(address)
        return await admit(tenant, address, limit, ttl_ms)

    broker.quota_store.admit = counting  # type: ignore[method-assign]
    await quotas.address("acme", "a")
    await quotas.address("acme", "a")  # confirmed lately: no question
    await quotas.address("acme", "b")
    with pytest.raises(QuotaExceeded) as refused:
        await quotas.address("acme", "c")
    assert refused.value.kind == ADDRESSES
    assert refused.value.retry_after_s == pytest.approx(60.0)
    assert asked == ["a", "b", "c"]
    # Past a quarter of idle_expiry_ms (at most CONFIRM_S) "a" is confirmed again.
    clock.now += min(CONFIRM_S, 15.0) + 0.1
    await quotas.address("acme", "a")
    assert asked[-1] == "a"
    clock.now += 45.0  # "b" idled out (60 s after its admission); "a" was admitted again
    await quotas.address("acme", "c")
    with pytest.raises(QuotaExceeded):
        await quotas.address("acme", "d")


async def test_a_group_past_the_bound_is_refused_and_counted(quotas: Quotas) -> None:
    await quotas.group("acme", "jobs", "g1")
    await quotas.group("acme", "jobs", "g1")
    with pytest.raises(QuotaExceeded) as refused:
        await quotas.group("acme", "jobs", "g2")
    assert refused.value.kind == GROUPS and refused.value.retry_after_s is None
    assert "1 groups per address" in refused.value.description
    assert quotas.refusals[("acme", GROUPS)] == 1


async def test_refusals_are_logged_once_per_interval_without_what_was_asked(
    quotas: Quotas, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "wsq.quotas")
    await quotas.address("acme", "a")
    await quotas.address("acme", "b")
    for _ in range(5):
        with pytest.raises(QuotaExceeded):
            await quotas.address("acme", "secret.address.42")
    clock.now += LOG_EVERY_S
    with pytest.raises(QuotaExceeded):
        await quotas.address("acme", "secret.address.42")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "tenant 'acme': 1 refused past its quota of 2 addresses (1 in all)",
        "tenant 'acme': 5 refused past its quota of 2 addresses (6 in all)",
    ]


async def test_a_tenant_that_is_not_configured_has_no_quota(quotas: Quotas) -> None:
    for _ in range(5):
        await quotas.connect("nobody")
        await quotas.attach("nobody")
        await quotas.address("nobody", "x")
    quotas.disconnect("nobody")
    assert not quotas.refusals
