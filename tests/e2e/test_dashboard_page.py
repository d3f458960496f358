"""The live dashboard at ``/`` in real headless Chromium (playwright-core, tests/e2e/
dashboard_page.mjs), against a real gateway: in development mode (the page fetches /dev/token)
and with tenants (the page takes its token from ``#token=``). Screenshots of a desktop and a
phone go to tests/e2e/screenshots/ (gitignored), or where ``$WSQ_SCREENSHOTS`` says."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from wsq_harness import make_settings, running_gateway

from wsq.config import Settings, load_settings

HERE = Path(__file__).parent
SCREENSHOTS = Path(os.environ.get("WSQ_SCREENSHOTS") or HERE / "screenshots")


def test_playwright_core_is_installed() -> None:
    # scripts/test installs it (npm install in tests/e2e); without it the browser tests fail.
    assert (HERE / "node_modules" / "playwright-core").is_dir(), "run scripts/test"


def settings_for(mode: str) -> tuple[Settings, str]:
    """The gateway's settings in ``mode``, and the tenant whose tokens it takes."""
    if mode == "dev":
        return load_settings(environ={}), "dev"  # no tenants: development mode
    return make_settings(), "acme"


@pytest.mark.parametrize("mode", ["dev", "tenants"])
async def test_dashboard_shows_latest_live_and_conflated_values(mode: str) -> None:
    settings, tenant = settings_for(mode)
    await asyncio.to_thread(SCREENSHOTS.mkdir, parents=True, exist_ok=True)
    async with running_gateway(settings) as gw:
        bridge_token = gw.token("backend", tenant=tenant)
        # The page's token may only use the demo's addresses: the rights a real page would get.
        page_token = gw.token("page", tenant=tenant, publish=("demo.>",), subscribe=("demo.>",))
        proc = await asyncio.create_subprocess_exec(
            "node",
            str(HERE / "dashboard_page.mjs"),
            mode,
            gw.http,
            bridge_token,
            page_token,
            cwd=HERE,
            env={**os.environ, "SCREENSHOTS": str(SCREENSHOTS)},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 90)
    text = out.decode()
    assert proc.returncode == 0, text
    assert f"dashboard ({mode}): no console errors" in text, text
    for shot in ("desktop", "phone"):
        assert (SCREENSHOTS / f"dashboard-{mode}-{shot}.png").stat().st_size > 10_000
