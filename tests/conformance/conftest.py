"""The ``broker`` fixture of the conformance suite: one run per broker implementation.

Every test of this directory runs once per entry of ``BROKER_FACTORIES``. A factory takes the
``Settings`` (the ``broker_settings`` fixture, which a test module overrides with the tenants it
needs) and gives an async context manager yielding a started broker, closed on exit.

The "redis" entry uses a real ``redis-server`` started once per session on a free port, in a
temporary directory, without persistence (never the machine's own Redis); the "cluster" entry a
real local Redis Cluster of three masters (``redis-cli --cluster create``), reached with
``redis+cluster://``. When the binaries are missing the Redis runs are skipped, except in CI
(``CI=true``) where that is a failure. Tests use fresh addresses (the ``address`` fixture, random
so they spread over the cluster's masters), so the shared servers need no cleanup between tests.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack

import pytest
from wsq_harness import RedisCluster, RedisServer, started

from wsq.broker.base import Broker
from wsq.broker.memory import MemoryBroker
from wsq.broker.redis import RedisBroker
from wsq.config import Settings

BrokerFactory = Callable[[Settings], AbstractAsyncContextManager[Broker]]


def memory_broker(settings: Settings) -> AbstractAsyncContextManager[Broker]:
    return started(MemoryBroker(settings.storage_policies()))


#: The URL of this session's test Redis and the seed URL of its test Redis Cluster (set by the
#: ``redis_server`` and ``redis_cluster`` fixtures).
REDIS_URL: list[str] = []
CLUSTER_URL: list[str] = []


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        REDIS_URL[:] = [server.url]
        yield server.url


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with RedisCluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        CLUSTER_URL[:] = [cluster.url]
        yield cluster.url


def _redis_broker_on(urls: list[str]) -> BrokerFactory:
    """A factory of Redis brokers on the one URL a session fixture put in ``urls``."""

    def factory(settings: Settings) -> AbstractAsyncContextManager[Broker]:
        [url] = urls
        return started(RedisBroker(url, settings.storage_policies()))

    return factory


redis_broker = _redis_broker_on(REDIS_URL)
cluster_broker = _redis_broker_on(CLUSTER_URL)


#: One entry per broker implementation (and Redis deployment).
BROKER_FACTORIES: dict[str, BrokerFactory] = {
    "memory": memory_broker,
    "redis": redis_broker,
    "cluster": cluster_broker,
}
_SERVERS = {"redis": "redis_server", "cluster": "redis_cluster"}


@pytest.fixture(params=sorted(BROKER_FACTORIES))
def broker_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    if kind in _SERVERS:
        request.getfixturevalue(_SERVERS[kind])
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
