"""Which addresses a sink with patterns follows (``Sinks.match``): the live ones its patterns
match, at most ``max_addresses`` (the rest counted as refused and followed once room is made),
never the tenant's dead-letter address unless listed, and no more once they are not live."""

from __future__ import annotations

import base64
from types import MappingProxyType

from wsq.broker.memory import MemoryBroker
from wsq.config.settings import SinkConfig, TenantConfig
from wsq.core.policy import StoragePolicies
from wsq.webhooks.sinks import Sinks

SECRET = "whsec_" + base64.b64encode(b"sink-pattern-key-0123456789abcdef").decode()


def tenant(*addresses: str, max_addresses: int = 2) -> TenantConfig:
    sink = SinkConfig(
        url="http://127.0.0.1:1/",
        addresses=addresses,
        secret=SECRET,
        max_addresses=max_addresses,
    )
    return TenantConfig("acme", "acme", (), dead_letter="orders.dead", sinks=(sink,))


def followed(sinks: Sinks) -> set[str]:
    return {address for _, _, address in sinks._followed}


async def test_patterns_follow_live_matches_within_their_bound() -> None:
    config = tenant("orders.*", "audit", max_addresses=3)
    sinks = Sinks(MappingProxyType({"acme": config}), MemoryBroker(StoragePolicies()), "n1")
    sinks.start()
    try:
        assert followed(sinks) == {"audit"}  # listed: followed from the start
        sinks.match("acme", config, ["orders.eu", "orders.dead", "other", "orders.eu.x"])
        assert followed(sinks) == {"audit", "orders.eu"}
        sinks.match("acme", config, ["orders.eu", "orders.us", "orders.asia"])
        # One place left (audit and orders.eu hold two of three): the other match waits.
        assert followed(sinks) == {"audit", "orders.asia", "orders.eu"}
        assert sinks.refused["acme"] == 1
        assert sinks.followed("acme") == 3
        # orders.eu idled out: let go, which makes room for orders.us; audit stays.
        sinks.match("acme", config, ["orders.us", "orders.asia"])
        assert followed(sinks) == {"audit", "orders.asia", "orders.us"}
    finally:
        await sinks.close()
    assert followed(sinks) == set()
