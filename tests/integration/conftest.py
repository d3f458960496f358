from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from wsq_harness import Gateway, RedisServer, StartGateway, make_settings, running_gateway


@pytest.fixture
async def gateway(request: pytest.FixtureRequest) -> AsyncIterator[Gateway]:
    """A gateway on the memory broker. ``@pytest.mark.gateway(server={...}, **tenant)``
    changes its settings."""
    marker = request.node.get_closest_marker("gateway")
    kwargs = dict(marker.kwargs) if marker else {}
    async with running_gateway(make_settings(**kwargs)) as gw:
        yield gw


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A ``redis-server`` of the test module's own: a free port, a temporary directory, no
    persistence (never the machine's Redis on 6379). Missing ``redis-server`` skips the tests
    that take it, except in CI (``CI=true``) where it fails them."""
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(params=["memory", "redis"])
def start_gateway(request: pytest.FixtureRequest) -> StartGateway:
    """Start a gateway on the broker under test: ``start_gateway(server={...}, **tenant)``, an
    async context manager. A test that takes it (or ``gateway_on_each_broker``) runs twice: on
    the memory broker and on the module's ``redis_server``."""
    url = "memory://"
    if request.param == "redis":
        url = request.getfixturevalue("redis_server").url
    return lambda **kw: running_gateway(make_settings(broker_url=url, **kw))


@pytest.fixture
async def gateway_on_each_broker(start_gateway: StartGateway) -> AsyncIterator[Gateway]:
    """A gateway with the default settings, on each broker in turn (see ``start_gateway``)."""
    async with start_gateway() as gw:
        yield gw
