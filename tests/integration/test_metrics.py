"""/metrics and /readyz of a real served gateway: the counters move by exactly what was done."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from wsq_harness import (
    Gateway,
    Publisher,
    RedisServer,
    attach_frame,
    make_settings,
    running_gateway,
    transfers,
)

Figures = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Figures:
    figures: Figures = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            figures[s.name, frozenset(s.labels.items())] = s.value
    return figures


async def scrape(http: str) -> Figures:
    async with httpx.AsyncClient() as client:
        answer = await client.get(f"{http}/metrics")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(answer.text)


def value(figures: Figures, name: str, **labels: str) -> float:
    return figures.get((name, frozenset(labels.items())), 0.0)


async def scraped_until(
    http: str, cond: Callable[[Figures], bool], what: str, within: float = 10.0
) -> Figures:
    """Scrape until ``cond`` holds (a socket's close is counted when its task ends)."""
    deadline = time.monotonic() + within
    while True:
        figures = await scrape(http)
        if cond(figures):
            return figures
        if time.monotonic() > deadline:
            pytest.fail(f"not in time: {what}")
        await asyncio.sleep(0.05)


@pytest.mark.gateway(max_links=4)
async def test_counters_and_gauges_move_by_exactly_what_was_done(gateway: Gateway) -> None:
    before = await scrape(gateway.http)
    # Configured tenants are shown from the start, at 0.
    assert value(before, "wsq_publishes_total", tenant="acme") == 0
    assert value(before, "wsq_connections", tenant="other") == 0
    assert ("wsq_publishes_total", frozenset({("tenant", "other")})) in before
    a = await gateway.subscriber("dash", sub="a")
    b = await gateway.subscriber("dash", sub="b")
    publisher = Publisher(await gateway.client(sub="pub"))
    await publisher.publish("nobody-listens", *range(7))
    await publisher.publish("dash", 1, 2, 3)
    await transfers(a, 3)
    await transfers(b, 3)
    # A fifth link of the tenant is past its max_links: refused, with its kind.
    late = await gateway.client(sub="late")
    await late.begin(1)
    await late.send(attach_frame(1, 0, "receiver", "dash", credit=1))
    detach = await late.expect("detach", ch=1, handle=0)
    assert detach["error"]["condition"] == "wsq:resource-limit-exceeded"

    after = await scrape(gateway.http)
    assert value(after, "wsq_publishes_total", tenant="acme") == 10
    assert value(after, "wsq_deliveries_total", tenant="acme") == 6
    assert value(after, "wsq_refusals_total", tenant="acme", kind="links") == 1
    assert value(after, "wsq_errors_total", condition="wsq:resource-limit-exceeded") == 1
    assert value(after, "wsq_connections", tenant="acme") == 4
    assert value(after, "wsq_sessions") == 4
    assert value(after, "wsq_links", tenant="acme", role="receiver") == 2
    assert value(after, "wsq_links", tenant="acme", role="sender") == 2
    assert value(after, "wsq_publishes_total", tenant="other") == 0
    assert value(after, "wsq_ready") == 1
    assert value(after, "wsq_draining") == 0
    # Two publish commands on the broker, timed.
    assert value(after, "wsq_broker_command_seconds_count", command="publish") == 2

    await a.close()
    closed = await scraped_until(
        gateway.http,
        lambda f: value(f, "wsq_connections", tenant="acme") == 3,
        "the closed socket gone from wsq_connections",
    )
    assert value(closed, "wsq_closes_total", reason="client") == 1
    assert value(closed, "wsq_links", tenant="acme", role="receiver") == 1


async def test_dispositions_are_counted_by_outcome(gateway: Gateway) -> None:
    worker = await gateway.client(sub="worker")
    await worker.begin(1)
    await worker.subscribe(1, 0, "jobs", credit=10, mode="move")
    await Publisher(await gateway.client(sub="p")).publish("jobs", *range(5))
    got = await transfers(worker, 5)
    first = got[0]["delivery"]
    frames = [
        {"op": "disposition", "ch": 1, "first": first, "last": first + 2, "outcome": "accepted"},
        {"op": "disposition", "ch": 1, "first": first + 3, "outcome": "rejected"},
        {"op": "disposition", "ch": 1, "first": first + 4, "outcome": "released"},
    ]
    await worker.send(*frames)
    figures = await scraped_until(
        gateway.http,
        lambda f: value(f, "wsq_dispositions_total", outcome="released") > 0,
        "the dispositions counted",
    )
    assert value(figures, "wsq_dispositions_total", outcome="accepted") == 3
    assert value(figures, "wsq_dispositions_total", outcome="rejected") == 1
    assert value(figures, "wsq_dispositions_total", outcome="released") == 1


@pytest.mark.gateway(server={"idle_ms": 1000})
async def test_a_silent_client_is_closed_and_counted_as_a_heartbeat_close(
    gateway: Gateway,
) -> None:
    silent = await gateway.client(sub="silent")
    await silent.closed_with("wsq:idle-timeout")
    figures = await scraped_until(
        gateway.http,
        lambda f: value(f, "wsq_closes_total", reason="heartbeat") == 1,
        "the heartbeat close counted",
    )
    assert value(figures, "wsq_errors_total", condition="wsq:idle-timeout") == 1
    assert value(figures, "wsq_closes_total", reason="client") == 0
    assert value(figures, "wsq_connections", tenant="acme") == 0


@pytest.mark.gateway(server={"metrics_allow": ("10.0.0.0/8",)})
async def test_metrics_is_not_found_outside_metrics_allow(gateway: Gateway) -> None:
    async with httpx.AsyncClient() as client:
        answer = await client.get(f"{gateway.http}/metrics")
    assert answer.status_code == 404
    assert "wsq_" not in answer.text


@pytest.mark.gateway(server={"metrics_allow": ()})
async def test_metrics_allow_empty_serves_no_metrics(gateway: Gateway) -> None:
    async with httpx.AsyncClient() as client:
        answer = await client.get(f"{gateway.http}/metrics")
    assert answer.status_code == 404


async def readyz(http: str) -> tuple[int, dict[str, object]]:
    async with httpx.AsyncClient() as client:
        answer = await client.get(f"{http}/readyz", timeout=10)
    return answer.status_code, answer.json()


async def healthz(http: str) -> int:
    async with httpx.AsyncClient() as client:
        return (await client.get(f"{http}/healthz", timeout=10)).status_code


async def test_readyz_is_red_while_redis_is_down_and_green_again(tmp_path: Path) -> None:
    with RedisServer(tmp_path) as redis:
        async with running_gateway(make_settings(broker_url=redis.url)) as gw:
            status, body = await readyz(gw.http)
            assert (status, body["status"], body["reasons"]) == (200, "ready", [])
            assert body["node"]
            redis.stop()
            status, body = await readyz(gw.http)
            assert (status, body["status"], body["reasons"]) == (
                503,
                "not-ready",
                ["broker-unavailable"],
            )
            # Liveness is not readiness: the process is alive.
            assert await healthz(gw.http) == 200
            figures = await scrape(gw.http)
            assert value(figures, "wsq_ready") == 0
            redis.start()
            deadline = time.monotonic() + 15
            while (await readyz(gw.http))[0] != 200:
                assert time.monotonic() < deadline, "not ready again in time"
                await asyncio.sleep(0.1)
            assert value(await scrape(gw.http), "wsq_ready") == 1


async def test_readyz_says_draining_once_the_drain_says_so(gateway: Gateway) -> None:
    app = gateway.server.config.app
    app.state.set_draining(True)
    status, body = await readyz(gateway.http)
    assert (status, body["reasons"]) == (503, ["draining"])
    figures = await scrape(gateway.http)
    assert (value(figures, "wsq_draining"), value(figures, "wsq_ready")) == (1, 0)
    app.state.set_draining(False)
    assert (await readyz(gateway.http))[0] == 200


async def test_the_http_bridge_counts_its_publishes_and_its_errors(gateway: Gateway) -> None:
    headers = {"Authorization": f"Bearer {gateway.token('backend')}"}
    async with httpx.AsyncClient(base_url=gateway.http, timeout=10) as http:
        published = await http.post(
            "/v1/addresses/bridge/messages",
            json={"messages": [{"body": i} for i in range(4)]},
            headers=headers,
        )
        assert published.status_code == 201
        refused = await http.post("/v1/addresses/bridge/messages", json={"body": 1})
        assert refused.status_code == 401
    figures = await scrape(gateway.http)
    assert value(figures, "wsq_publishes_total", tenant="acme") == 4
    assert value(figures, "wsq_errors_total", condition="wsq:unauthorized") == 1
