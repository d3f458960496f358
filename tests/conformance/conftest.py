"""The ``broker`` fixture of the conformance suite: one run per broker implementation.

Every test of this directory runs once per entry of ``BROKER_FACTORIES``. A factory takes the
``Settings`` (the ``broker_settings`` fixture, which a test module overrides with the tenants it
needs) and gives an async context manager yielding a started broker, closed on exit.

To add a broker (the Redis one), add an entry to ``BROKER_FACTORIES``: a factory that uses a real
``redis-server`` started once per session on a free port (skip when the binary is missing), and
yields the Redis broker built with ``dataclasses.replace(settings, broker=BrokerConfig(url=...))``.
Tests use fresh addresses (the ``address`` fixture), so a shared server needs no cleanup between
tests.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager

import pytest

from wsq.broker.base import Broker
from wsq.broker.memory import MemoryBroker
from wsq.config import Settings

BrokerFactory = Callable[[Settings], AbstractAsyncContextManager[Broker]]


@asynccontextmanager
async def memory_broker(settings: Settings) -> AsyncIterator[Broker]:
    broker = MemoryBroker(settings)
    await broker.start()
    try:
        yield broker
    finally:
        await broker.close()


#: One entry per broker implementation; the Redis broker adds "redis" here.
BROKER_FACTORIES: dict[str, BrokerFactory] = {
    "memory": memory_broker,
}


@pytest.fixture(params=sorted(BROKER_FACTORIES))
def broker_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
def broker_settings() -> Settings:
    """The settings brokers are built with; test modules override it with their tenants."""
    return Settings()


@pytest.fixture
async def make_broker(broker_kind: str) -> AsyncIterator[Callable[[Settings], Awaitable[Broker]]]:
    """Build brokers of the kind under test (another process's view, other settings, ...)."""
    async with AsyncExitStack() as stack:

        async def make(settings: Settings) -> Broker:
            return await stack.enter_async_context(BROKER_FACTORIES[broker_kind](settings))

        yield make


@pytest.fixture
async def broker(
    make_broker: Callable[[Settings], Awaitable[Broker]], broker_settings: Settings
) -> Broker:
    return await make_broker(broker_settings)


@pytest.fixture
def address() -> str:
    """An address no other test uses."""
    return f"conf.{uuid.uuid4().hex[:16]}"
