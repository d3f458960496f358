from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from wsq_harness import Gateway, make_settings, running_gateway


@pytest.fixture
async def gateway(request: pytest.FixtureRequest) -> AsyncIterator[Gateway]:
    """A gateway on the memory broker. ``@pytest.mark.gateway(server={...}, **tenant)``
    changes its settings."""
    marker = request.node.get_closest_marker("gateway")
    kwargs = dict(marker.kwargs) if marker else {}
    async with running_gateway(make_settings(**kwargs)) as gw:
        yield gw
