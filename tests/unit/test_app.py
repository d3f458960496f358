"""Routes of the app that need no socket: driven through httpx's ASGI transport."""

from __future__ import annotations

import httpx
import jwt
import pytest

from wsq.app import create_app
from wsq.config import load_settings


async def get(
    client_host: str, path: str, host: str = "127.0.0.1:8000", origin: str | None = None
) -> httpx.Response:
    """GET ``path`` from ``client_host`` with this ``Host`` header (and ``Origin``)."""
    app = create_app(load_settings(environ={}))
    transport = httpx.ASGITransport(app=app, client=(client_host, 40000))
    headers = {"Host": host}
    if origin is not None:
        headers["Origin"] = origin
    async with httpx.AsyncClient(transport=transport, base_url="http://wsq") as http:
        return await http.get(path, headers=headers)


def assert_refused(answer: httpx.Response) -> None:
    assert answer.status_code == 403
    assert answer.json()["error"]["condition"] == "wsq:forbidden"
    assert "token" not in answer.json()


async def test_dev_token_is_handed_to_loopback_clients() -> None:
    answer = await get("127.0.0.1", "/dev/token?sub=page")
    assert answer.status_code == 200
    claims = jwt.decode(answer.json()["token"], options={"verify_signature": False})
    assert claims["iss"] == "dev" and claims["sub"] == "page"


async def test_dev_token_is_refused_to_other_hosts() -> None:
    assert_refused(await get("203.0.113.7", "/dev/token"))


@pytest.mark.parametrize(
    ("host", "origin"),
    [
        ("127.0.0.1:8000", None),
        ("localhost:8000", None),
        ("[::1]:8000", None),
        ("localhost", None),
        ("127.0.0.1:8000", "http://127.0.0.1:8000"),  # the demo page
        ("localhost:8000", "http://localhost:8000"),
        ("127.0.0.1:8000", "http://localhost:5173"),  # a local dev server's page
    ],
)
async def test_dev_token_answers_local_names_and_local_pages(host: str, origin: str | None) -> None:
    answer = await get("127.0.0.1", "/dev/token", host=host, origin=origin)
    assert answer.status_code == 200, answer.text
    assert answer.json()["token"].startswith("eyJ")


@pytest.mark.parametrize(
    ("host", "origin"),
    [
        # DNS rebinding: attacker.example resolves to 127.0.0.1 after the page loaded; the
        # browser sends the page's own name as Host (and Origin, if it sends one).
        ("attacker.example:8000", None),
        ("attacker.example:8000", "http://attacker.example:8000"),
        ("127.0.0.1.attacker.example:8000", None),
        # A local name, but asked for by a page of another site.
        ("127.0.0.1:8000", "https://attacker.example"),
        ("127.0.0.1:8000", "null"),
        ("", None),
    ],
)
async def test_dev_token_is_refused_to_other_names_and_other_pages(
    host: str, origin: str | None
) -> None:
    assert_refused(await get("127.0.0.1", "/dev/token", host=host, origin=origin))
