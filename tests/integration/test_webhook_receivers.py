"""The example receivers (examples/python/webhook_receiver.py with ``standardwebhooks``,
examples/php/webhook_receiver.php by hand with hash_hmac) accept what wsq signs and refuse a
tampered body, a replayed old timestamp and a wrong secret; a real ``wsq serve`` with one
webhook entry for each reaches both. Without ``php`` the PHP half is skipped, except in CI
(``CI=true``) where it fails."""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets
from wsq_harness import SECRET_ACME, Client, eventually, free_port, serve_config, tenants

from wsq.auth import mint_token
from wsq.webhooks.events import event_body
from wsq.webhooks.signing import key_of, signature_headers

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SECRET = "whsec_" + base64.b64encode(b"receiver-example-key-0123456789ab").decode()
HOOKED = ("connection.opened", "address.occupied", "address.vacated")
EVENTS = ", ".join(f'"{t}"' for t in (*HOOKED, "presence.join", "presence.leave"))
OTHER = "whsec_" + base64.b64encode(b"some-other-key-0123456789abcdefgh").decode()


def _php() -> str:
    php = shutil.which("php")
    if php is None:
        if os.environ.get("CI") == "true":
            pytest.fail("php is not installed (required in CI)")
        pytest.skip("php is not installed")
    return php


def _command(kind: str, port: int) -> list[str]:
    if kind == "python":
        return [sys.executable, str(EXAMPLES / "python" / "webhook_receiver.py"), str(port)]
    return [_php(), "-S", f"127.0.0.1:{port}", str(EXAMPLES / "php" / "webhook_receiver.php")]


@contextlib.contextmanager
def running_receiver(kind: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = free_port()
    proc = subprocess.Popen(
        _command(kind, port),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "WSQ_WEBHOOK_SECRET": SECRET},
    )
    url = f"http://127.0.0.1:{port}/hook"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                httpx.post(url, content=b"", timeout=1)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"the {kind} receiver did not start") from None
                time.sleep(0.05)
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(5)
        assert proc.stdout is not None
        proc.stdout.close()


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    return httpx.post(url, content=body, headers=headers, timeout=5).status_code


@pytest.mark.parametrize("kind", ["python", "php"])
def test_a_receiver_accepts_ours_and_refuses_forgeries(kind: str) -> None:
    with running_receiver(kind) as (url, _):
        now = int(time.time())
        body = event_body("connection.opened", {"tenant": "acme", "sub": "alice"}, now)
        signed = signature_headers("msg_ok", now, body, [key_of(SECRET)])
        assert _post(url, body, signed) == 204
        assert _post(url, body.replace(b"alice", b"mallory"), signed) == 400
        old = now - 600
        assert _post(url, body, signature_headers("msg_old", old, body, [key_of(SECRET)])) == 400
        assert _post(url, body, signature_headers("msg_other", now, body, [key_of(OTHER)])) == 400
        rotation = signature_headers("msg_rot", now, body, [key_of(OTHER), key_of(SECRET)])
        assert _post(url, body, rotation) == 204
        assert _post(url, body, {}) == 400


async def test_a_served_gateway_reaches_both_receivers(tmp_path: Path) -> None:
    _php()
    with running_receiver("python") as (py_url, py), running_receiver("php") as (php_url, php):
        entries = ", ".join(
            f'{{ url = "{u}", events = [{EVENTS}], secret_env = "HOOK_SECRET" }}'
            for u in (py_url, php_url)
        )
        config = tmp_path / "wsq.toml"
        config.write_text(
            "[tenants.acme]\n"
            f'keys = [{{ kid = "k1", alg = "HS256", secret = "{SECRET_ACME}" }}]\n'
            f"webhooks = [{entries}]\n"
        )
        with serve_config(config, env={"HOOK_SECRET": SECRET}) as served:
            ws = await websockets.connect(
                f"ws://127.0.0.1:{served.port}/ws", subprotocols=["wsq.v1"]
            )
            client = Client(ws)
            await client.open(mint_token(tenants()["acme"], "alice", publish=(), subscribe=(">",)))
            await client.begin(1)
            await client.subscribe(1, 0, "room", presence=True)
            await client.close()
            # Five events (opened, join, occupied, leave, vacated) to each of two receivers.
            metric = 'wsq_webhook_deliveries_total{outcome="delivered",tenant="acme"} 10.0'
            await eventually(
                lambda: metric in httpx.get(f"{served.url}/metrics").text, "both", within=10
            )
        for proc in (py, php):
            proc.terminate()
            out, _ = proc.communicate(timeout=5)
            for event_type in ("connection.opened", "presence.join", "address.vacated"):
                assert f"{event_type} msg_" in out
