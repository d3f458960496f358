"""An HTTP stream before authentication is bounded as a WebSocket is (wsq.admission): pending
from its request head until its ``open`` is verified, counted against ``max_pending_per_ip``,
and closed at ``open_timeout_ms`` when no open comes. A real ``wsq serve`` (its HTTP protocol
does the counting)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from http_stream import http_stream, open_frame
from wsq_harness import SECRET_ACME, Served, serve_config

from wsq.auth import mint_token
from wsq.config import load_settings

PER_IP = 2


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    config = tmp_path / "wsq.toml"
    config.write_text(
        f"[server]\nmax_pending_per_ip = {PER_IP}\nopen_timeout_ms = 1500\n"
        f'[tenants.acme]\nkeys = [{{ alg = "HS256", secret = "{SECRET_ACME}" }}]\n'
    )
    with serve_config(config) as server:
        server.token = mint_token(  # type: ignore[attr-defined]
            load_settings(config_path=str(config)).tenants["acme"], "alice", ttl_s=600
        )
        yield server


async def status_of_one_more(served: Served) -> int:
    async with httpx.AsyncClient() as http:
        return (await http.get(f"{served.url}/v1/openapi.json")).status_code


async def test_streams_without_an_open_are_pending_and_bounded(served: Served) -> None:
    async with contextlib.AsyncExitStack() as stack:
        streams = [
            await stack.enter_async_context(http_stream(served.url, [])) for _ in range(PER_IP)
        ]
        assert all(s.response.status_code == 200 for s in streams)
        # Both hold this source's pending places: one more connection is refused at once.
        assert await status_of_one_more(served) == 503
        # ... until the open timeout ends them.
        closed = await streams[0].until("close", timeout=10)
        assert closed["error"]["condition"] == "wsq:idle-timeout"
        await streams[0].rest()
        await streams[1].rest()
    assert await status_of_one_more(served) == 200


async def test_a_stream_whose_open_is_verified_is_pending_no_more(served: Served) -> None:
    token = served.token  # type: ignore[attr-defined]
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(PER_IP + 2):
            stream = await stack.enter_async_context(http_stream(served.url, open_frame(token)))
            await stream.until("open")
        assert await status_of_one_more(served) == 200
