"""``[server] access_log``: uvicorn's lines for each request and each WebSocket are debug lines
unless it is on (a real ``wsq serve``: its own log configuration, its own output)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import websockets
from wsq_harness import SECRET_ACME, Served, serve_config

PER_SOCKET = ('"WebSocket /ws" [accepted]', "connection open")


def config(tmp_path: Path, server: str) -> Path:
    path = tmp_path / "wsq.toml"
    path.write_text(
        f"[server]\n{server}\n[tenants.acme]\n"
        f'keys = [{{ alg = "HS256", secret = "{SECRET_ACME}" }}]\n'
    )
    return path


async def one_socket_and_one_request(served: Served) -> None:
    async with websockets.connect(
        f"ws://127.0.0.1:{served.port}/ws", subprotocols=["wsq.v1"]
    ) as ws:
        await ws.send("[]")  # a heartbeat; the client then closes
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{served.url}/healthz?probe=1")).status_code == 200


@pytest.mark.parametrize(
    ("server", "args", "shown", "level"),
    [
        ("", (), False, None),  # the default: off
        ("access_log = true", (), True, "INFO"),
        ("", ("--log-level", "debug"), True, "DEBUG"),  # off, but asked for debug lines
    ],
    ids=["default", "on", "off-at-debug"],
)
async def test_per_socket_lines_are_debug_lines_unless_access_log_is_on(
    tmp_path: Path, server: str, args: tuple[str, ...], shown: bool, level: str | None
) -> None:
    with serve_config(config(tmp_path, server), *args) as served:
        await one_socket_and_one_request(served)
    log = served.log()  # whole: the process has exited and its output has been read
    lines = [line for line in log.splitlines() if any(p in line for p in PER_SOCKET)]
    if not shown:
        assert lines == [], lines
        assert "GET /healthz" not in log  # uvicorn's access log is off too
        return
    assert [p for p in PER_SOCKET if any(p in line for line in lines)] == list(PER_SOCKET)
    assert len(lines) == 2, lines
    assert all(line.startswith(f"{level}:") for line in lines), lines
    # uvicorn's request line too, at the same level, its query string dropped.
    request = [line for line in log.splitlines() if '"GET /healthz?… HTTP/1.1" 200' in line]
    assert len(request) == 1 and request[0].startswith(f"{level}:"), request
