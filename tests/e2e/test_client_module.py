"""wsq-client (js-client/src/index.js, served at /wsq-client.js) in real headless Chromium."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from wsq_harness import make_settings, running_gateway

from wsq.app import JS_CLIENT

HERE = Path(__file__).parent


async def test_the_gateway_serves_the_client_module() -> None:
    async with running_gateway(make_settings()) as gw, httpx.AsyncClient() as http:
        response = await http.get(gw.http + "/wsq-client.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.content == JS_CLIENT.read_bytes()
    assert b"export class Client" in response.content


async def test_a_page_imports_the_client_subscribes_publishes_and_receives() -> None:
    async with running_gateway(make_settings()) as gw:
        token = gw.token("browser", publish=("browser.>",), subscribe=("browser.>",))
        proc = await asyncio.create_subprocess_exec(
            "node",
            str(HERE / "client_module.mjs"),
            gw.http,
            token,
            cwd=HERE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()
    assert b"subscribed, published, received" in out
