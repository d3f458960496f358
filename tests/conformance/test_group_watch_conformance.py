"""A group's watchers in every broker (issue 14: the Redis group code's poll and watches had
no test in the fast suites; the other conformance tests wait on claims, never on a watcher):
a lease that runs out and a release each wake the group's watchers, with nothing else looking
at the group; and a dead letter's copy ends with the group's copier done and nothing logged."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
from types import MappingProxyType
from typing import Any

import pytest
from test_broker_conformance import DEAD_LETTER, dead_letters, eventually, publish

from wsq.broker.base import Broker
from wsq.config import Settings, TenantConfig
from wsq.core.messages import Outcome


def _tenant(name: str, **changes: Any) -> TenantConfig:
    base = TenantConfig(name=name, issuer=name, keys=(), redelivery_delay_ms=200)
    return dataclasses.replace(base, **changes)


@pytest.fixture
def broker_settings() -> Settings:
    return Settings(
        tenants=MappingProxyType(
            {
                "acme": _tenant("acme"),
                "dl": _tenant("dl", dead_letter=DEAD_LETTER),
            }
        )
    )


class Woken:
    def __init__(self, broker: Broker, tenant: str, address: str) -> None:
        self.times = 0
        self.handle = broker.watch_group(tenant, address, "g", self.wake)

    def wake(self) -> None:
        self.times += 1


async def test_a_lease_that_runs_out_wakes_the_watchers(broker: Broker, address: str) -> None:
    await publish(broker, address, "job")
    woken = Woken(broker, "acme", address)
    await eventually(lambda: woken.times > 0)  # something waits: said at once
    [d] = await broker.claim("acme", address, "g", "c1", 1, 100)
    woken.times = 0
    await eventually(lambda: woken.times > 0)  # by the lease running out, nothing else
    [again] = await broker.claim("acme", address, "g", "c2", 1, 60_000)
    assert (again.message.id, again.redelivered) == (d.message.id, 1)
    woken.handle.close()


async def test_a_release_wakes_the_watchers(broker: Broker, address: str) -> None:
    await publish(broker, address, "job")
    woken = Woken(broker, "acme", address)
    [d] = await broker.claim("acme", address, "g", "c1", 1, 60_000)
    await asyncio.sleep(0.05)
    woken.times = 0
    await broker.settle("acme", address, "g", "c1", [d.message.id], Outcome.RELEASED)
    await eventually(lambda: woken.times > 0)
    woken.handle.close()


async def test_a_rejected_message_is_copied_once_and_its_copier_ends_quietly(
    broker: Broker, address: str, caplog: pytest.LogCaptureFixture
) -> None:
    start = await broker.last_position("dl", DEAD_LETTER)
    await publish(broker, address, "bad", tenant="dl")
    [d] = await broker.claim("dl", address, "g", "c1", 1, 60_000)
    with caplog.at_level(logging.WARNING):
        await broker.settle("dl", address, "g", "c1", [d.message.id], Outcome.REJECTED)
        await dead_letters(broker, "dl", start, 1)
        # The Redis broker copies in the background, then takes the copies out of the group.
        await eventually(lambda: not getattr(broker, "_dead_letterers", None))
        gc.collect()  # a copier task that died is logged when it is collected
    assert [r.getMessage() for r in caplog.records] == []
    assert await broker.claim("dl", address, "g", "c2", 10, 60_000) == []
