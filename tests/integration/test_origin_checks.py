"""``[server] allowed_origins`` on a real gateway: the WebSocket handshake (refused with 403
before accept) and the HTTP bridge's CORS answers (``Access-Control-Allow-Origin`` only for the
origins allowed)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import websockets
from websockets.typing import Origin
from wsq_harness import Client, Gateway

APP = "https://app.example.com"
EVIL = "https://evil.example"


async def handshake(gateway: Gateway, origin: str | None, host: str = "127.0.0.1") -> int:
    """The HTTP status of a wsq.v1 handshake with this ``Origin``, to the gateway by the name
    ``host`` (101 when accepted, then a round trip of ``open`` to show the socket serves)."""
    try:
        ws = await websockets.connect(
            f"ws://{host}:{gateway.port}/ws",
            subprotocols=["wsq.v1"],
            origin=Origin(origin) if origin is not None else None,
        )
    except websockets.InvalidStatus as e:
        return e.response.status_code
    async with ws:
        client = Client(ws)
        await client.open(gateway.token())
    return 101


def peers(gateway: Gateway) -> set[Any]:
    app: Any = gateway.server.config.app
    result: set[Any] = app.state.gateway.peers
    return result


async def test_by_default_the_gateways_own_pages_and_programs_connect(gateway: Gateway) -> None:
    own = f"http://127.0.0.1:{gateway.port}"
    assert await handshake(gateway, None) == 101  # not a browser: no Origin
    assert await handshake(gateway, own) == 101  # the demo page, served by the gateway
    local = f"http://localhost:{gateway.port}"
    assert await handshake(gateway, local, host="localhost") == 101


async def test_by_default_other_sites_pages_are_refused_before_accept(gateway: Gateway) -> None:
    assert await handshake(gateway, EVIL) == 403
    assert await handshake(gateway, "null") == 403
    # Another port of the same machine is another site.
    assert await handshake(gateway, f"http://127.0.0.1:{gateway.port + 1}") == 403
    assert peers(gateway) == set()  # no socket was accepted, no peer made


@pytest.mark.gateway(server={"allowed_origins": (APP, "http://localhost:3000")})
async def test_a_list_allows_exactly_its_origins(gateway: Gateway) -> None:
    assert await handshake(gateway, APP) == 101
    assert await handshake(gateway, "http://localhost:3000") == 101
    assert await handshake(gateway, None) == 101
    assert await handshake(gateway, EVIL) == 403
    assert await handshake(gateway, APP + ".evil.example") == 403
    # A list replaces the same-host default.
    assert await handshake(gateway, f"http://127.0.0.1:{gateway.port}") == 403


@pytest.mark.gateway(server={"allowed_origins": ("*",)})
async def test_star_allows_any_page(gateway: Gateway) -> None:
    assert await handshake(gateway, EVIL) == 101


# -- the HTTP bridge's CORS answers ------------------------------------------------------------


async def preflight(gateway: Gateway, origin: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=gateway.http) as http:
        return await http.options(
            "/v1/addresses/chat.room1/messages",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )


async def publish(gateway: Gateway, origin: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=gateway.http) as http:
        return await http.post(
            "/v1/addresses/chat.room1/messages",
            headers={"Origin": origin, "Authorization": f"Bearer {gateway.token()}"},
            json={"body": "hi"},
        )


async def test_by_default_the_bridge_answers_no_cors(gateway: Gateway) -> None:
    for origin in (EVIL, f"http://127.0.0.1:{gateway.port}"):
        assert "access-control-allow-origin" not in (await preflight(gateway, origin)).headers
        answer = await publish(gateway, origin)
        assert answer.status_code == 201
        assert "access-control-allow-origin" not in answer.headers


@pytest.mark.gateway(server={"allowed_origins": (APP,)})
async def test_the_bridge_answers_cors_for_allowed_origins_only(gateway: Gateway) -> None:
    ok = await preflight(gateway, APP)
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == APP
    allowed_headers = ok.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed_headers and "content-type" in allowed_headers
    assert "POST" in ok.headers["access-control-allow-methods"]
    answer = await publish(gateway, APP)
    assert answer.status_code == 201
    assert answer.headers["access-control-allow-origin"] == APP
    assert "origin" in answer.headers["vary"].lower()

    refused = await preflight(gateway, EVIL)
    assert refused.status_code >= 400
    assert "access-control-allow-origin" not in refused.headers
    answer = await publish(gateway, EVIL)
    assert "access-control-allow-origin" not in answer.headers


@pytest.mark.gateway(server={"allowed_origins": ("*",)})
async def test_the_bridge_answers_cors_for_any_origin_with_star(gateway: Gateway) -> None:
    ok = await preflight(gateway, EVIL)
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] in ("*", EVIL)
