"""The demo page in real headless Chromium (playwright-core), against a real gateway."""

from __future__ import annotations

import asyncio
from pathlib import Path

from wsq_harness import running_gateway

from wsq.config import load_settings

HERE = Path(__file__).parent


def test_playwright_core_is_installed() -> None:
    # scripts/test installs it (npm install in tests/e2e); without it the browser tests fail.
    assert (HERE / "node_modules" / "playwright-core").is_dir(), "run scripts/test"


async def test_demo_page_delivers_what_one_tab_publishes_to_another(tmp_path: Path) -> None:
    settings = load_settings(environ={})  # development mode: the page fetches /dev/token
    async with running_gateway(settings) as gw:
        proc = await asyncio.create_subprocess_exec(
            "node",
            str(HERE / "demo_page.mjs"),
            gw.http + "/",
            str(tmp_path / "demo.png"),
            cwd=HERE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()
    assert (tmp_path / "demo.png").stat().st_size > 0
