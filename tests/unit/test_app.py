"""Routes of the app that need no socket: driven through httpx's ASGI transport."""

from __future__ import annotations

import httpx
import jwt

from wsq.app import create_app
from wsq.config import load_settings


async def get(client_host: str, path: str) -> httpx.Response:
    app = create_app(load_settings(environ={}))
    transport = httpx.ASGITransport(app=app, client=(client_host, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://wsq") as http:
        return await http.get(path)


async def test_dev_token_is_handed_to_loopback_clients() -> None:
    answer = await get("127.0.0.1", "/dev/token?sub=page")
    assert answer.status_code == 200
    claims = jwt.decode(answer.json()["token"], options={"verify_signature": False})
    assert claims["iss"] == "dev" and claims["sub"] == "page"


async def test_dev_token_is_refused_to_other_hosts() -> None:
    answer = await get("203.0.113.7", "/dev/token")
    assert answer.status_code == 403
    assert answer.json()["error"]["condition"] == "wsq:forbidden"
    assert "token" not in answer.json()
