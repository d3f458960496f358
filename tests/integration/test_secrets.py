"""Secrets stay out of logs and out of worker environments, on real ``wsq serve`` processes.

- At ``--log-level debug`` the log never shows a token (nor any 10-character piece of its
  payload or signature) nor a message body: frames are logged as op / ch / handle / size.
- At ``--log-level info`` and ``debug`` uvicorn's request lines show paths without their query
  strings: a token a client put in a URL stays out of the log.
- With ``--workers 2`` no worker's environment (``/proc/<pid>/environ``) holds a tenant secret:
  the settings reach workers through a file only the user can read, gone when the server stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets
from wsq_harness import Client, RedisServer, attach_frame, free_port, wait_healthy

from wsq.auth import mint_token
from wsq.config import KeyConfig, TenantConfig

SECRET = "tenant-secret-Qx7vL2pM9nR4tW8yZ1aB3cD5eF6gH0jK"
ENV_SECRET = "env-secret-Mn4bV7cX1zL9kJ3hG5fD8sA2pO6iU0yT"
BODY_MARK = "BODY-6f1c2d9e-not-for-logs"
HTTP_BODY_MARK = "HTTPBODY-8a7b6c5d-not-for-logs"


def write_config(tmp_path: Path, server: str = "") -> Path:
    config = tmp_path / "wsq.toml"
    config.write_text(
        f"[server]\n{server}\n"
        "[tenants.acme]\n"
        f'keys = [{{ kid = "k1", alg = "HS256", secret = "{SECRET}" }},\n'
        '        { kid = "k2", alg = "HS256", secret_env = "ACME_K2_SECRET" }]\n'
    )
    return config


def serve(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WSQ_")}
    return subprocess.Popen(
        [sys.executable, "-m", "wsq", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**clean, **(env or {})},
    )


def stop(proc: subprocess.Popen[str]) -> str:
    """Stop ``proc`` (SIGINT, as Ctrl-C) and answer everything it printed."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            stop(proc)


def pieces(text: str, size: int = 10) -> set[str]:
    return {text[i : i + size] for i in range(len(text) - size + 1)}


async def test_debug_logs_show_neither_tokens_nor_bodies(
    tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    port = free_port()
    env = {"ACME_K2_SECRET": ENV_SECRET}
    proc = serve(
        ["--config", str(write_config(tmp_path)), "--port", str(port), "--log-level", "debug"],
        env,
    )
    procs.append(proc)
    await asyncio.to_thread(wait_healthy, port, proc)
    tenant = TenantConfig("acme", "acme", (KeyConfig("HS256", kid="k1", secret=SECRET),))
    token = mint_token(tenant, "alice", publish=[">"], subscribe=[">"], ttl_s=600, kid="k1")
    refreshed = mint_token(tenant, "alice", publish=[">"], subscribe=[">"], ttl_s=900, kid="k1")

    async with websockets.connect(f"ws://127.0.0.1:{port}/ws", subprotocols=["wsq.v1"]) as ws:
        client = Client(ws)
        await client.send(
            {"op": "open", "token": token},
            {"op": "begin", "ch": 1},
            attach_frame(1, 0, "receiver", "logs.room", credit=5),
            attach_frame(1, 1, "sender", "logs.room"),
        )
        await client.expect("flow")
        # A short frame (a logger showing head and tail shows all of it) and a long one.
        await client.send(
            {"op": "transfer", "ch": 1, "handle": 1, "delivery": 0, "body": BODY_MARK}
        )
        assert (await client.expect("transfer"))["body"] == BODY_MARK
        long_body = {"pad": "x" * 300, "text": BODY_MARK, "tail": BODY_MARK}
        await client.send(
            {"op": "transfer", "ch": 1, "handle": 1, "delivery": 1, "body": long_body}
        )
        assert (await client.expect("transfer"))["body"] == long_body
        await client.send({"op": "refresh", "token": refreshed})
        await client.expect("refresh")
        await client.send({"op": "close"})
        await client.expect("close")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        answer = await http.post(
            "/v1/addresses/logs.room/messages",
            headers={"Authorization": f"Bearer {token}"},
            json={"body": HTTP_BODY_MARK},
        )
        assert answer.status_code == 201
        # A refused token is not logged either.
        assert (
            await http.get(
                "/v1/addresses/logs.room/messages",
                headers={"Authorization": f"Bearer {token[:-4]}AAAA"},
            )
        ).status_code == 401
    log = stop(proc)

    # The log is at debug level, and it does log the frames (by op, without their content).
    assert "DEBUG" in log.upper() or "debug" in log
    assert "transfer" in log, log[-3000:]
    for secret in (token, refreshed, SECRET, ENV_SECRET, BODY_MARK, HTTP_BODY_MARK):
        assert secret not in log, f"{secret[:12]}... is in the log"
    for jwt in (token, refreshed):
        _, payload, signature = jwt.split(".")
        leaked = sorted(piece for piece in pieces(signature) | pieces(payload) if piece in log)
        assert not leaked, f"pieces of a token in the log: {leaked[:5]}"
    for body in (BODY_MARK, HTTP_BODY_MARK):
        leaked = sorted(piece for piece in pieces(body) if piece in log)
        assert not leaked, f"pieces of a body in the log: {leaked[:5]}"


@pytest.mark.parametrize("level", ["info", "debug"])
async def test_request_lines_leave_query_strings_out(
    tmp_path: Path, procs: list[subprocess.Popen[str]], level: str
) -> None:
    """wsq reads no token from a URL, but a client may put one there: uvicorn's request lines
    (HTTP requests, WebSocket handshakes accepted and refused) print the path, never the query."""
    port = free_port()
    proc = serve(
        # The request lines are asked for (access_log; off, they are debug lines, and at
        # --log-level debug they are there either way).
        [
            *("--config", str(write_config(tmp_path, "access_log = true"))),
            *("--port", str(port), "--log-level", level),
        ],
        {"ACME_K2_SECRET": ENV_SECRET},
    )
    procs.append(proc)
    await asyncio.to_thread(wait_healthy, port, proc)
    tenant = TenantConfig("acme", "acme", (KeyConfig("HS256", kid="k1", secret=SECRET),))
    token = mint_token(tenant, "alice", publish=[">"], subscribe=[">"], ttl_s=600, kid="k1")
    query = f"?token={token}&access_token={token}"
    async with websockets.connect(
        f"ws://127.0.0.1:{port}/ws{query}", subprotocols=["wsq.v1"]
    ) as ws:
        await Client(ws).open(token)
    with pytest.raises(websockets.InvalidStatus):  # a foreign page: 403 before the accept
        await websockets.connect(
            f"ws://127.0.0.1:{port}/ws{query}",
            subprotocols=["wsq.v1"],
            origin=websockets.Origin("https://elsewhere.example"),
        )
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        assert (await http.get(f"/healthz{query}")).status_code == 200
        answer = await http.post(
            f"/v1/addresses/logs.room/messages{query}",
            headers={"Authorization": f"Bearer {token}"},
            json={"body": 1},
        )
        assert answer.status_code == 201
        assert (await http.get(f"/nowhere{query}")).status_code == 404
    log = stop(proc)

    leaked = sorted(piece for piece in pieces(token.split(".")[2]) if piece in log)
    assert token not in log and "token=" not in log and not leaked, log[-3000:]
    # The request lines are there, with their paths.
    for line in (
        '"WebSocket /ws?…" [accepted]',
        '"WebSocket /ws?…" 403',
        '"GET /healthz?… HTTP/1.1" 200',
        '"POST /v1/addresses/logs.room/messages?… HTTP/1.1" 201',
        '"GET /nowhere?… HTTP/1.1" 404',
    ):
        assert line in log, log[-3000:]


def children_of(pid: int) -> list[int]:
    """Every descendant process of ``pid`` (from /proc)."""
    found: list[int] = []
    parents = {pid}
    changed = True
    while changed:
        changed = False
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in found:
                continue
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid in parents:
                found.append(int(entry.name))
                parents.add(int(entry.name))
                changed = True
    return found


def workers_of(pid: int) -> list[int]:
    """The uvicorn worker processes (multiprocessing spawns) under ``pid``."""
    found = []
    for child in children_of(pid):
        with contextlib.suppress(OSError):
            if b"--multiprocessing-fork" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(child)
    return found


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if item)
    return {name: value for name, _, value in pairs}


async def test_workers_environments_hold_no_secret(
    tmp_path: Path, redis_server: RedisServer, procs: list[subprocess.Popen[str]]
) -> None:
    if not os.path.exists("/proc/self/environ"):  # noqa: ASYNC240 (once, before any work)
        if os.environ.get("CI") == "true":
            pytest.fail("/proc is needed to read the workers' environments (required in CI)")
        pytest.skip("needs /proc")
    port = free_port()
    args = ["--config", str(write_config(tmp_path)), "--port", str(port)]
    args += ["--workers", "2", "--broker", redis_server.url]
    proc = serve(args, {"ACME_K2_SECRET": ENV_SECRET})
    procs.append(proc)
    await asyncio.to_thread(wait_healthy, port, proc)
    workers: list[int] = []
    for _ in range(100):  # both workers started
        workers = workers_of(proc.pid)
        if len(workers) >= 2:
            break
        await asyncio.sleep(0.1)
    assert len(workers) == 2, children_of(proc.pid)
    settings_files: set[str] = set()
    for pid in children_of(proc.pid):
        env = environ_of(pid)
        text = "\0".join(f"{k}={v}" for k, v in env.items())
        for secret in (SECRET, ENV_SECRET):
            assert secret not in text, f"a tenant secret is in the environment of process {pid}"
        if "WSQ_SETTINGS_FILE" in env:
            settings_files.add(env["WSQ_SETTINGS_FILE"])
    # The settings reached the workers through a file that only this user can read...
    (path,) = settings_files
    mode = os.stat(path).st_mode
    assert stat.S_IMODE(mode) == 0o600, oct(mode)
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    # ... and the workers serve with them.
    tenant = TenantConfig("acme", "acme", (KeyConfig("HS256", kid="k2", secret=ENV_SECRET),))
    token = mint_token(tenant, "bob", publish=[">"], subscribe=[">"], ttl_s=600, kid="k2")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        answer = await http.post(
            "/v1/addresses/env.check/messages",
            headers={"Authorization": f"Bearer {token}"},
            json={"body": 1},
        )
    assert answer.status_code == 201, answer.text
    stop(proc)
    assert not await asyncio.to_thread(os.path.exists, path), "the settings file outlived us"
