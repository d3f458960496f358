"""wsq.origins: the Origin policy of the WebSocket handshake, the bridge's CORS and /dev/token."""

from __future__ import annotations

import pytest

from wsq.origins import OriginPolicy, is_local_host, is_local_origin, normalize_origin

SAME_HOST = OriginPolicy(None)


@pytest.mark.parametrize(
    ("origin", "host"),
    [
        (None, "127.0.0.1:8000"),  # not a browser
        (None, None),
        ("http://127.0.0.1:8000", "127.0.0.1:8000"),  # the demo page
        ("http://localhost:8000", "localhost:8000"),
        ("http://[::1]:8000", "[::1]:8000"),
        ("https://ws.example.com", "ws.example.com"),
        ("https://WS.example.com", "ws.example.com:443"),
        ("http://ws.example.com", "ws.example.com:80"),
    ],
)
def test_same_host_allows_the_gateways_own_pages(origin: str | None, host: str | None) -> None:
    assert SAME_HOST.allows(origin, host)


@pytest.mark.parametrize(
    ("origin", "host"),
    [
        ("https://evil.example", "127.0.0.1:8000"),
        ("http://localhost:8000", "127.0.0.1:8000"),  # another name is another origin
        ("http://127.0.0.1:9000", "127.0.0.1:8000"),  # another port too
        ("https://ws.example.com", "ws.example.com:80"),
        ("null", "127.0.0.1:8000"),  # sandboxed frames, file: pages
        ("http://127.0.0.1:8000", None),
        ("http://127.0.0.1:8000/", "127.0.0.1:8000"),
        ("garbage", "garbage"),
    ],
)
def test_same_host_refuses_other_pages(origin: str, host: str | None) -> None:
    assert not SAME_HOST.allows(origin, host)


def test_a_list_allows_exactly_its_origins() -> None:
    policy = OriginPolicy(["https://app.example.com", "http://localhost:3000"])
    assert policy.allows("https://app.example.com", "ws.example.com")
    assert policy.allows("https://APP.example.com:443", "ws.example.com")
    assert policy.allows("http://localhost:3000", "127.0.0.1:8000")
    assert policy.allows(None, "ws.example.com")
    assert not policy.allows("https://app.example.com.evil.example", "ws.example.com")
    assert not policy.allows("http://app.example.com", "ws.example.com")  # not https
    # Listing origins replaces the same-host default.
    assert not policy.allows("https://ws.example.com", "ws.example.com")
    assert policy.cors_origins() == ["http://localhost:3000", "https://app.example.com"]


def test_star_allows_any_origin_and_an_empty_list_none() -> None:
    star = OriginPolicy(["*"])
    assert star.allows("https://anything.example", "ws.example.com")
    assert star.cors_origins() == ["*"]
    none = OriginPolicy([])
    assert not none.allows("https://ws.example.com", "ws.example.com")
    assert none.allows(None, "ws.example.com")
    assert none.cors_origins() == []
    assert SAME_HOST.cors_origins() is None


def test_normalize_origin() -> None:
    assert normalize_origin("HTTPS://App.Example.COM:443") == "https://app.example.com"
    assert normalize_origin("http://[::1]:80") == "http://[::1]"
    assert normalize_origin("http://127.0.0.1:8000") == "http://127.0.0.1:8000"
    for bad in ("null", "", "https://a.example/", "https://a.example/x", "https://*.example"):
        assert normalize_origin(bad) is None, bad


@pytest.mark.parametrize(
    ("host", "local"),
    [
        ("localhost", True),
        ("localhost:8000", True),
        ("LOCALHOST:8000", True),
        ("127.0.0.1:8000", True),
        ("[::1]:8000", True),
        ("[::1]", True),
        (None, False),
        ("", False),
        ("evil.example:8000", False),
        ("127.0.0.1.evil.example", False),
        ("localhost.evil.example", False),
        ("192.168.1.5:8000", False),
        ("0.0.0.0:8000", False),
        ("127.0.0.1@evil.example", False),
    ],
)
def test_is_local_host(host: str | None, local: bool) -> None:
    assert is_local_host(host) is local


@pytest.mark.parametrize(
    ("origin", "local"),
    [
        (None, True),
        ("http://127.0.0.1:8000", True),
        ("http://localhost:5173", True),
        ("https://[::1]", True),
        ("http://evil.example", False),
        ("http://127.0.0.1.evil.example:8000", False),
        ("null", False),
        ("file://", False),
    ],
)
def test_is_local_origin(origin: str | None, local: bool) -> None:
    assert is_local_origin(origin) is local
