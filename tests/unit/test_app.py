"""Routes of the app that need no socket: driven through httpx's ASGI transport."""

from __future__ import annotations

import httpx
import jwt
import pytest
from wsq_harness import make_settings

from wsq.app import create_app
from wsq.config import Settings, load_settings


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


async def get_from(app_settings: Settings, path: str, origin: str | None = None) -> httpx.Response:
    """GET ``path`` from a loopback client by a local name, on an app with these settings."""
    app = create_app(app_settings)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    headers = {"Host": "127.0.0.1:8000"} | ({"Origin": origin} if origin else {})
    async with httpx.AsyncClient(transport=transport, base_url="http://wsq") as http:
        return await http.get(path, headers=headers)


async def test_demo_config_says_a_dev_token_is_there_for_a_local_page() -> None:
    answer = await get("127.0.0.1", "/demo/config", origin="http://127.0.0.1:8000")
    assert answer.status_code == 200
    assert answer.json() == {"dev_token": True}
    assert answer.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    ("client_host", "host", "origin"),
    [
        ("203.0.113.7", "127.0.0.1:8000", None),  # not on this machine
        ("127.0.0.1", "attacker.example:8000", None),  # DNS rebinding
        ("127.0.0.1", "127.0.0.1:8000", "https://attacker.example"),
    ],
)
async def test_demo_config_says_no_dev_token_where_dev_token_would_refuse(
    client_host: str, host: str, origin: str | None
) -> None:
    answer = await get(client_host, "/demo/config", host=host, origin=origin)
    assert answer.json() == {"dev_token": False}
    assert_refused(await get(client_host, "/dev/token", host=host, origin=origin))


async def test_with_tenants_demo_config_says_no_dev_token_and_there_is_no_dev_token() -> None:
    with_tenants = make_settings()
    answer = await get_from(with_tenants, "/demo/config", origin="http://127.0.0.1:8000")
    assert answer.status_code == 200
    assert answer.json() == {"dev_token": False}
    assert (await get_from(with_tenants, "/dev/token")).status_code == 404
