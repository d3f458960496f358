"""The HTTP bridge examples with their real interpreters against a real gateway: the PHP
publisher and claim worker (``php``, standard library only) and the Node publisher (``node``,
fetch only), each while a wsq.v1 WebSocket client is connected; and the Python dashboard feed
(``httpx``). Without ``php`` / ``node`` these tests are skipped, except in CI (``CI=true``) where
that is a failure."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from wsq_harness import SECRET_ACME, Gateway, make_settings, running_gateway

from wsq.config import load_settings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _tool(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is not installed (required in CI)")
        pytest.skip(f"{name} is not installed")
    return exe


async def _run(
    gw: Gateway, *argv: str, env: dict[str, str | None] | None = None
) -> tuple[int, str, str]:
    """Run an example with the gateway's URL and tenant acme's secret in its environment
    (``env`` adds to it; a None value unsets a variable)."""
    environ = {
        "PATH": os.environ.get("PATH", ""),
        "WSQ_URL": gw.http,
        "WSQ_ISSUER": "acme",
        "WSQ_SECRET": SECRET_ACME,
        "WSQ_KID": "k1",
    }
    for name, value in (env or {}).items():
        if value is None:
            environ.pop(name, None)
        else:
            environ[name] = value
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env=environ,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _received_by_websocket(gw: Gateway, *argv: str) -> None:
    """Run a publisher example while a WebSocket subscriber listens: it gets the message."""
    ws = await gw.subscriber("chat.room1", sub="browser")
    code, out, err = await _run(gw, *argv, "chat.room1", '{"text": "hello from a backend"}', "m-1")
    assert code == 0, err
    position = out.strip()
    t = await ws.expect("transfer")
    assert t["id"] == position
    assert t["body"] == {"text": "hello from a backend"}
    assert t["props"]["message_id"] == "m-1"
    await ws.close()


async def test_php_publisher_reaches_a_websocket_subscriber() -> None:
    php = _tool("php")
    async with running_gateway(make_settings()) as gw:
        await _received_by_websocket(gw, php, str(EXAMPLES / "php" / "publish.php"))
        # Published again with the same message_id: the same position, stored once.
        code, out, err = await _run(
            gw, php, str(EXAMPLES / "php" / "publish.php"), "chat.room1", '"again"', "m-1"
        )
        assert code == 0, err
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {gw.token()}"}) as client:
            listed = (await client.get(f"{gw.http}/v1/addresses/chat.room1/messages")).json()
        assert [m["id"] for m in listed["messages"]] == [out.strip()]


async def test_php_publisher_reports_errors_with_their_condition() -> None:
    php = _tool("php")
    async with running_gateway(make_settings()) as gw:
        # A token signed with another secret: 401 with its condition, exit code 1.
        code, _, err = await _run(
            gw,
            php,
            str(EXAMPLES / "php" / "publish.php"),
            "chat.room1",
            "1",
            env={"WSQ_SECRET": "s" * 40},
        )
        assert code == 1
        assert "401 wsq:unauthorized" in err


async def test_php_claim_worker_shares_the_queue_and_settles() -> None:
    php = _tool("php")
    async with running_gateway(make_settings()) as gw:
        headers = {"Authorization": f"Bearer {gw.token()}"}
        base = f"{gw.http}/v1/addresses/jobs.php"
        async with httpx.AsyncClient(headers=headers) as client:
            r = await client.post(
                f"{base}/messages", json={"messages": [{"body": {"job": i}} for i in range(3)]}
            )
            ids = r.json()["ids"]
            code, out, err = await _run(
                gw, php, str(EXAMPLES / "php" / "worker.php"), "jobs.php", "--max", "3"
            )
            assert code == 0, err
            lines = out.strip().splitlines()
            assert lines == [f'{pos} {{"job":{i}}}' for i, pos in enumerate(ids)]
            # Accepted: gone for the group.
            assert (await client.post(f"{base}/claims")).status_code == 204
            # An idle worker stops by itself.
            code, out, err = await _run(
                gw, php, str(EXAMPLES / "php" / "worker.php"), "jobs.php", "--idle", "0.3"
            )
            assert code == 0 and out == "", err


async def test_node_publisher_reaches_a_websocket_subscriber() -> None:
    node = _tool("node")
    async with running_gateway(make_settings()) as gw:
        await _received_by_websocket(gw, node, str(EXAMPLES / "node" / "publish.mjs"))


@pytest.mark.parametrize(
    ("tool", "script"), [("php", "php/publish.php"), ("node", "node/publish.mjs")]
)
@pytest.mark.parametrize("unset", ["WSQ_SECRET", "WSQ_ISSUER"])
async def test_publishers_say_which_credentials_are_missing(
    tool: str, script: str, unset: str
) -> None:
    exe = _tool(tool)
    async with running_gateway(make_settings()) as gw:
        code, out, err = await _run(
            gw, exe, str(EXAMPLES / script), "chat.room1", "1", env={unset: None}
        )
    # One line naming what to set, no stack trace, nothing published.
    assert code == 2, err
    assert err == "set WSQ_TOKEN, or WSQ_ISSUER and WSQ_SECRET\n"
    assert out == ""


async def _listed(gw: Gateway, address: str, token: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as client:
        answer = await client.get(f"{gw.http}/v1/addresses/{address}/messages?limit=1000")
    assert answer.status_code == 200, answer.text
    messages: list[dict[str, Any]] = answer.json()["messages"]
    return messages


def _check_feed(messages: list[dict[str, Any]], ticks: int) -> None:
    """``ticks`` batches of the 20 metrics, in the same order each time."""
    assert len(messages) == 20 * ticks
    subjects = [m["props"]["subject"] for m in messages]
    first = subjects[:20]
    assert subjects == first * ticks
    assert sorted(first) == sorted(
        f"{kind}.web-{n}" for kind in ("cpu", "mem", "rps", "p99", "queue") for n in range(1, 5)
    )
    for m in messages:
        assert set(m["body"]) == {"value", "unit"}
        assert isinstance(m["body"]["value"], int | float)


async def test_python_dashboard_feed_publishes_the_metrics_through_the_bridge() -> None:
    """With the tenant's secret: a token minted for the address only; three batches of 20."""
    feed = EXAMPLES / "python" / "dashboard_feed.py"
    async with running_gateway(make_settings()) as gw:
        code, out, err = await _run(
            gw, sys.executable, str(feed), "demo.feed", "--ticks", "3", "--interval", "0.01"
        )
        assert code == 0, err
        assert out == "published 60 values to demo.feed\n"
        _check_feed(await _listed(gw, "demo.feed", gw.token()), 3)


async def test_python_dashboard_feed_takes_a_dev_token_or_says_what_is_missing() -> None:
    feed = EXAMPLES / "python" / "dashboard_feed.py"
    no_secret: dict[str, str | None] = {"WSQ_ISSUER": None, "WSQ_SECRET": None}
    # Development mode, on this machine: /dev/token.
    async with running_gateway(load_settings(environ={})) as gw:
        code, out, err = await _run(gw, sys.executable, str(feed), "--ticks", "1", env=no_secret)
        assert code == 0, err
        assert out == "published 20 values to demo.metrics\n"
        _check_feed(await _listed(gw, "demo.metrics", gw.token(tenant="dev")), 1)
    # With tenants there is no /dev/token: exit code 2, one line, nothing published.
    async with running_gateway(make_settings()) as gw:
        code, out, err = await _run(gw, sys.executable, str(feed), "--ticks", "1", env=no_secret)
        assert code == 2, err
        assert err == "set WSQ_TOKEN, or WSQ_ISSUER and WSQ_SECRET (no /dev/token here: HTTP 404)\n"
        assert out == ""
