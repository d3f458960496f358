"""wsq-client (js-client/src, served at /wsq-client.js and /wsq-client/<module>.js) in real
headless Chromium."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from wsq_harness import Gateway, make_settings, running_gateway

from wsq.app import JS_CLIENT

HERE = Path(__file__).parent


async def raw_get(gw: Gateway, path: str) -> bytes:
    """A GET of exactly ``path`` (no client normalises its dots): the status line and body."""
    host, port = gw.http.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET {path} HTTP/1.1\r\nHost: wsq\r\nConnection: close\r\n\r\n".encode())
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return answer


async def test_the_gateway_serves_the_client_module() -> None:
    async with running_gateway(make_settings()) as gw, httpx.AsyncClient() as http:
        entry = await http.get(gw.http + "/wsq-client.js")
        index = await http.get(gw.http + "/wsq-client/index.js")
        outside = [
            await raw_get(gw, path)
            for path in (
                "/wsq-client/../../pyproject.toml",
                "/wsq-client/%2e%2e/%2e%2e/pyproject.toml",
                "/wsq-client/..%2f..%2fpyproject.toml",
                "/wsq-client/..",
                "/wsq-client/index.d.ts",
            )
        ]
    assert entry.status_code == 200
    assert entry.headers["content-type"].startswith("text/javascript")
    assert b'export * from "./wsq-client/index.js";' in entry.content
    assert index.status_code == 200
    assert index.headers["content-type"].startswith("text/javascript")
    assert index.content == JS_CLIENT.read_bytes()
    for answer in outside:
        assert answer.startswith(b"HTTP/1.1 404 "), answer[:200]
        assert b"[project]" not in answer and b"export" not in answer


@pytest.mark.parametrize(
    "ws_compression, extensions",
    [
        ("off", ""),
        ("deflate", "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"),
    ],
)
async def test_a_page_imports_the_client_subscribes_publishes_and_receives(
    ws_compression: str, extensions: str
) -> None:
    """With either [server] ws_compression: Chromium always offers permessage-deflate."""
    settings = make_settings({"ws_compression": ws_compression})
    async with running_gateway(settings) as gw:
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
    assert f"extensions: {json.dumps(extensions)}".encode() in out, out.decode()


async def test_a_page_receives_compact_deliveries_the_same_as_plain_ones() -> None:
    """The client's default (compact, rows) and compact: false in Chromium: Chromium's own record
    of the frames (CDP) shows compact frames on one socket and per-message ones on the other; a
    live publish of several messages in one request arrives as compact rows, and the handlers see
    the same messages as the plain client's."""
    async with running_gateway(make_settings()) as gw:
        token = gw.token("browser", publish=("browser.>",), subscribe=("browser.>",))
        proc = await asyncio.create_subprocess_exec(
            "node",
            str(HERE / "compact_deliveries.mjs"),
            gw.http,
            token,
            cwd=HERE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, out.decode()
    assert b"compact and plain deliveries agree" in out, out.decode()
    assert b"live rows and plain deliveries agree" in out, out.decode()
