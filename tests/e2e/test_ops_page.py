"""The operator view at ``/ops`` in real headless Chromium (playwright-core, tests/e2e/
ops_page.mjs): with tenants, two gateways on one real Redis (and a third stopped before, to be
shown stale) publishing their figures every 200 ms; in development mode, one gateway. Screenshots
of a desktop and a phone go to tests/e2e/screenshots/ (gitignored), or ``$WSQ_SCREENSHOTS``."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from wsq_harness import Gateway, RedisServer, eventually, make_settings, running_gateway

from wsq.config import Settings, load_settings

HERE = Path(__file__).parent
SCREENSHOTS = Path(os.environ.get("WSQ_SCREENSHOTS") or HERE / "screenshots")
FAST = {"stats_interval_ms": 200}
#: Figures each gateway has published before the page opens: its charts must show them at once.
HISTORY = 5


def state_of(gw: Gateway) -> Any:
    """``app.state`` of ``gw``'s Starlette application (wsq.app.create_app)."""
    app: Any = gw.server.config.app
    return app.state


def published(gw: Gateway) -> int:
    """How many snapshots ``gw`` has published on ``$sys.stats``."""
    return int(state_of(gw).figures.published)


async def run_page(*args: str) -> str:
    await asyncio.to_thread(SCREENSHOTS.mkdir, parents=True, exist_ok=True)
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(HERE / "ops_page.mjs"),
        *args,
        cwd=HERE,
        env={**os.environ, "SCREENSHOTS": str(SCREENSHOTS)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 90)
    text = out.decode()
    assert proc.returncode == 0, text
    return text


def on_redis(url: str, node: str) -> Settings:
    return make_settings({**FAST, "node_id": node}, broker_url=url, ops=True)


async def test_ops_page_shows_every_node_of_a_cluster(tmp_path: Path) -> None:
    with RedisServer(tmp_path) as redis:
        # A node that reported, then stopped: its figures are retained, and shown stale.
        async with running_gateway(on_redis(redis.url, "gw-old")) as old:
            await eventually(lambda: published(old) >= HISTORY, "gw-old's figures", within=10)
        async with (
            running_gateway(on_redis(redis.url, "gw-a")) as a,
            running_gateway(on_redis(redis.url, "gw-b")) as b,
        ):
            await eventually(
                lambda: min(published(a), published(b)) >= HISTORY, "figures", within=10
            )
            # What a drain does first (wsq.drain): B says draining and not ready, and serves on.
            state_of(b).set_draining(True)
            text = await run_page(
                "tenants",
                a.http,
                b.http,
                "gw-old",
                a.token("backend"),
                a.token("operator", ops=True),
                a.token("page"),  # acme may grant ops; this token does not carry it
            )
    assert "ops (tenants): no console errors" in text, text
    assert "a token without ops: refused with wsq:forbidden" in text, text
    for shot in ("desktop", "phone"):
        assert (SCREENSHOTS / f"ops-tenants-{shot}.png").stat().st_size > 10_000


async def test_ops_page_in_development_mode() -> None:
    settings = load_settings(environ={})  # no tenants: development mode, /dev/token
    settings = dataclasses.replace(settings, server=dataclasses.replace(settings.server, **FAST))
    async with running_gateway(settings) as gw:
        text = await run_page("dev", gw.http)
    assert "ops (dev): no console errors" in text, text
    for shot in ("desktop", "phone"):
        assert (SCREENSHOTS / f"ops-dev-{shot}.png").stat().st_size > 10_000


@pytest.mark.parametrize("path", ["/ops", "/"])
async def test_pages_link_each_other(path: str) -> None:
    import httpx

    async with running_gateway(make_settings()) as gw, httpx.AsyncClient() as http:
        page = await http.get(gw.http + path)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    other = '<a href="/">Live dashboard</a>' if path == "/ops" else '<a href="/ops">'
    assert other in page.text


def test_ops_figures_arithmetic_in_node() -> None:
    # static/figures.js (rates, restarts, duplicates, staleness) under node's own test runner.
    proc = subprocess.run(
        ["node", "--test", "ops_figures.test.mjs"],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "# pass 5" in proc.stdout, proc.stdout
