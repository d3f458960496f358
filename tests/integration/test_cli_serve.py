"""``wsq serve`` as a new user runs it: a real process, a real port."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from wsq_harness import Client, attach_frame, free_port, wait_healthy

WSQ = [sys.executable, "-m", "wsq"]


def serve(
    args: list[str],
    env: dict[str, str] | None = None,
    command: list[str] = WSQ,
    cwd: Path | None = None,
) -> subprocess.Popen[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WSQ_")}
    return subprocess.Popen(
        [*command, "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**clean, **(env or {})},
        cwd=cwd,
    )


def read_banner(proc: subprocess.Popen[str], until: str, timeout: float = 20) -> str:
    """The start banner up to (and with) the first line holding ``until``."""
    assert proc.stdout is not None
    banner = ""
    deadline = time.monotonic() + timeout
    while until not in banner and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        banner += line
    assert until in banner, banner
    return banner


@pytest.fixture
def stop() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        if p.stdout:
            p.stdout.close()


async def roundtrip(port: int, token: str) -> dict[str, Any]:
    url = f"ws://127.0.0.1:{port}/ws"
    async with websockets.connect(url, subprotocols=["wsq.v1"]) as ws:
        client = Client(ws)
        await client.send(
            {"op": "open", "token": token},
            {"op": "begin", "ch": 1},
            attach_frame(1, 0, "receiver", "tour", credit=5),
            attach_frame(1, 1, "sender", "tour"),
        )
        await client.expect("flow")
        await client.send({"op": "transfer", "ch": 1, "handle": 1, "delivery": 0, "body": "hello"})
        return await client.expect("transfer")


async def test_serve_with_no_config_prints_a_dev_token_that_works(
    stop: list[subprocess.Popen[str]],
) -> None:
    port = free_port()
    proc = serve(["--port", str(port)])
    stop.append(proc)
    assert proc.stdout is not None
    banner = ""
    token = None
    deadline = time.monotonic() + 20
    while token is None and time.monotonic() < deadline:
        line = proc.stdout.readline()
        banner += line
        m = re.search(r"(eyJ[\w-]+\.[\w-]+\.[\w-]+)", line)
        if m:
            token = m.group(1)
    assert token, banner
    await asyncio.to_thread(wait_healthy, port, proc)
    delivered = await roundtrip(port, token)
    assert delivered["body"] == "hello"
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        page = await http.get("/")
        dev = (await http.get("/dev/token")).json()
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert (await roundtrip(port, dev["token"]))["body"] == "hello"


async def test_serve_with_a_config_file_serves_its_tenants(
    tmp_path: Path, stop: list[subprocess.Popen[str]]
) -> None:
    port = free_port()
    secret = "s3cret-s3cret-s3cret-s3cret-s3cret-42"
    config = tmp_path / "wsq.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [server]
            idle_ms = 20000
            [tenants.acme]
            keys = [ {{ kid = "k1", alg = "HS256", secret = "{secret}" }} ]
            """
        )
    )
    minted = await asyncio.to_thread(
        subprocess.run,
        [
            *WSQ,
            "token",
            "--config",
            str(config),
            "--tenant",
            "acme",
            "--sub",
            "svc",
            "--publish",
            "tour",
            "--subscribe",
            "tour",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    token = minted.stdout.strip()
    proc = serve(["--config", str(config), "--port", str(port)])
    stop.append(proc)
    await asyncio.to_thread(wait_healthy, port, proc)
    delivered = await roundtrip(port, token)
    assert delivered["props"]["publisher"] == "svc"
    # No dev tenant, no dev token endpoint when tenants are configured.
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"http://127.0.0.1:{port}/dev/token")).status_code == 404


async def test_sigterm_tells_every_client_going_away_before_the_process_exits(
    stop: list[subprocess.Popen[str]],
) -> None:
    port = free_port()
    proc = serve(["--port", str(port)], env={"WSQ_DEV_SECRET": "d" * 43})
    stop.append(proc)
    await asyncio.to_thread(wait_healthy, port, proc)
    async with httpx.AsyncClient() as http:
        token = (await http.get(f"http://127.0.0.1:{port}/dev/token")).json()["token"]
    url = f"ws://127.0.0.1:{port}/ws"
    async with websockets.connect(url, subprotocols=["wsq.v1"]) as ws:
        await ws.send(json.dumps({"op": "open", "token": token}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["op"] == "open"
        proc.send_signal(signal.SIGTERM)
        frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert frame["op"] == "close"
        assert frame["error"]["condition"] == "wsq:going-away"
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 1001
    # Drained, then uvicorn re-raises the signal it caught: the exit status says SIGTERM (a crash
    # on the way out would say 1).
    assert await asyncio.to_thread(proc.wait, 10) == -signal.SIGTERM
    # ... so the shutdown is judged by its log too: every step of it ran without an error.
    assert proc.stdout is not None
    log = proc.stdout.read()
    assert "Traceback" not in log and "ERROR" not in log, log


@pytest.mark.parametrize("launcher", ["venv script", "python -m wsq"])
async def test_the_banners_token_command_runs_as_printed(
    launcher: str, tmp_path: Path, stop: list[subprocess.Popen[str]]
) -> None:
    """The banner's `export WSQ_DEV_SECRET=...` and `then: ... token ...` lines, pasted into
    another shell (another directory, no virtualenv on PATH), mint a token the server takes."""
    if launcher == "venv script":
        # As scripts/run starts it: `.venv/bin/wsq serve` from the directory holding .venv.
        script = Path(sys.executable).parent / "wsq"
        if not script.is_file():
            if os.environ.get("CI") == "true":
                pytest.fail(f"no wsq script beside {sys.executable} (scripts/test installs it)")
            pytest.skip(f"no wsq script beside {sys.executable}")
        venv = script.parent.parent
        command, cwd = [str(script.relative_to(venv.parent))], venv.parent
    else:
        command, cwd = WSQ, None
    port = free_port()
    proc = serve(["--port", str(port)], command=command, cwd=cwd)
    stop.append(proc)
    lines = read_banner(proc, "then:").splitlines()
    export = next(line for line in lines if "export WSQ_DEV_SECRET=" in line).split("with: ")[1]
    then = next(line for line in lines if line.strip().startswith("then:"))
    mint = then.split("then:", 1)[1].strip()
    assert not mint.startswith("wsq "), "wsq is not on PATH here"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WSQ_")}
    env["PATH"] = "/usr/bin:/bin"
    minted = await asyncio.to_thread(
        subprocess.run,
        ["bash", "-c", f"set -e\n{export}\n{mint}"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.strip()
    await asyncio.to_thread(wait_healthy, port, proc)
    async with websockets.connect(
        f"ws://127.0.0.1:{port}/ws", subprotocols=[websockets.Subprotocol("wsq.v1")]
    ) as ws:
        await ws.send(json.dumps({"op": "open", "token": token}))
        answer = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert answer["op"] == "open" and answer["sub"] == "alice", answer
