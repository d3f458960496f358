"""The documentation's examples, run as a new user would run them, against a real gateway:
the README's shell lines (its Python example, on wsq.client, is test_python_client_docs.py's), the worked
session of docs/protocol.md section 12 frame by frame, and every curl line of README.md and
docs/http-api.md checked against the OpenAPI document the gateway serves."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from types import MappingProxyType
from typing import Any

import httpx
import jsonschema
import pytest
import websockets
from wsq_harness import free_port, make_settings, running_gateway, wait_healthy

from wsq.auth import mint_token
from wsq.config import KeyConfig, ServerConfig, Settings, TenantConfig

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
HTTP_API = (ROOT / "docs" / "http-api.md").read_text()
PROTOCOL = (ROOT / "docs" / "protocol.md").read_text()

# -- README: the Python example is tests/integration/test_python_client_docs.py's ----------------


# -- README: the tour's shell lines, in order, in a fresh shell -----------------------------------


def _readme_shell_blocks() -> list[str]:
    return [str(b) for b in re.findall(r"```sh\n(.*?)```", README, re.S)]


def test_readme_tour_commands_work_in_order() -> None:
    """Start the gateway as the tour says, then run its shell lines as written in another
    shell: export the secret the banner printed, mint $TOKEN, publish with curl (201)."""
    blocks = _readme_shell_blocks()
    start = next(b for b in blocks if b.startswith("scripts/run --port 8000"))
    mint = next(b for b in blocks if "export WSQ_DEV_SECRET=..." in b)
    curl = next(b for b in blocks if b.startswith("curl -X POST") and "$TOKEN" in b)
    assert blocks.index(start) < blocks.index(mint) < blocks.index(curl)
    # `scripts/run --port 8000` is `.venv/bin/wsq serve --port 8000` once .venv is installed.
    assert ".venv/bin/wsq serve" in start
    venv_bin = Path(sys.executable).parent
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WSQ_") and k != "TOKEN"}
    server = subprocess.Popen(
        [str(venv_bin / "wsq"), "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        assert server.stdout is not None
        banner, deadline = "", time.monotonic() + 20
        while "export WSQ_DEV_SECRET=" not in banner and time.monotonic() < deadline:
            banner += server.stdout.readline()
        export = re.search(r"export WSQ_DEV_SECRET=\S+", banner)
        assert export, banner
        script = "set -euo pipefail\n" + mint + curl
        script = script.replace("export WSQ_DEV_SECRET=...", export.group(0))
        script = script.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        if not (ROOT / ".venv" / "bin" / "wsq").exists():  # tests run from another venv
            script = script.replace(".venv/bin/", f"{venv_bin}/")
        wait_healthy(port)
        done = subprocess.run(
            ["bash", "-c", script], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60
        )
    finally:
        server.terminate()
        server.wait(10)
        if server.stdout is not None:
            server.stdout.close()
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer == {"ids": [answer["ids"][0]]}, answer  # 201 {"ids":[...]}, not a 401


# -- docs/protocol.md section 12: the worked session ---------------------------------------------

POSITION = re.compile(r"^\d+-\d+$")
# Fields whose values differ from run to run; their type must still match.
VARIABLE = {"node", "exp", "ts", "expires"}


def _worked_session() -> list[tuple[str, Any]]:
    """("send" | "recv", message) in the doc's order, up to the resume example (which needs a
    second connection and the doc's own ids), and ("closed", None) for the closing note."""
    section = PROTOCOL.split("## 12. A worked session", 1)[1].split("\n## 13.", 1)[0]
    section = section.split("**Resuming after a disconnect.**", 1)[0]
    steps: list[tuple[str, Any]] = []
    for block in re.findall(r"```\n(.*?)```", section, re.S):
        # A message starts on a line with an arrow; indented lines continue it.
        for chunk in re.split(r"\n(?=[→←] |\s*…|\s*\(WebSocket closed)", block):
            head = chunk.strip()
            if head.startswith(("→ ", "← ")):
                kind = "send" if head.startswith("→") else "recv"
                steps.append((kind, json.loads(head[2:].replace("\n", " "))))
            elif head.startswith("(WebSocket closed"):
                steps.append(("closed", None))
    return steps


def _frames(message: Any) -> list[dict[str, Any]]:
    return message if isinstance(message, list) else [message]


def _match(doc: Any, real: Any, positions: dict[str, str], path: str) -> None:
    if isinstance(doc, dict):
        assert isinstance(real, dict) and set(real) == set(doc), f"{path}: {real} vs doc {doc}"
        for key, value in doc.items():
            if key in VARIABLE:
                assert type(real[key]) is type(value), f"{path}.{key}: {real[key]!r}"
            else:
                _match(value, real[key], positions, f"{path}.{key}")
    elif isinstance(doc, list):
        assert isinstance(real, list) and len(real) == len(doc), f"{path}: {real} vs doc {doc}"
        for i, (d, r) in enumerate(zip(doc, real, strict=True)):
            _match(d, r, positions, f"{path}[{i}]")
    elif isinstance(doc, str) and POSITION.match(doc) and doc != "0-0":
        # The doc's positions stand for the real ones: the same doc id, the same real id.
        assert isinstance(real, str) and POSITION.match(real), f"{path}: {real!r}"
        expected = positions.setdefault(doc, real)
        assert real == expected, f"{path}: {real} where the doc's {doc} was {expected}"
        assert list(positions.values()).count(real) == 1, f"{path}: {real} stands for two ids"
    else:
        assert real == doc, f"{path}: {real!r} vs doc {doc!r}"


def _address(frame: dict[str, Any], addresses: dict[int, str], published: dict[int, int]) -> str:
    """The address a frame from the server is about: its link's, or for a disposition of the
    client's transfers, the link those were published on."""
    if "handle" in frame:
        return addresses[frame["handle"]]
    if frame["op"] == "disposition":
        return addresses[published[frame["first"]]]
    return ""


def _dev_settings() -> Settings:
    # The development tenant as `wsq serve` makes it with no configuration.
    key = KeyConfig(alg="HS256", kid="dev", secret="dev-secret-dev-secret-dev-secret-0001")
    dev = TenantConfig(name="dev", issuer="dev", keys=(key,))
    return Settings(server=ServerConfig(port=0), tenants=MappingProxyType({"dev": dev}))


async def test_protocol_worked_session_happens_as_documented() -> None:
    steps = _worked_session()
    assert sum(kind == "send" for kind, _ in steps) >= 15  # the parse found the session
    settings = _dev_settings()
    token = mint_token(settings.tenants["dev"], "alice", publish=(">",), subscribe=(">",))
    # The doc's positions stand for real ones address by address: two addresses' streams may
    # give the same id to messages published in one millisecond.
    positions: dict[str, dict[str, str]] = {}
    addresses: dict[int, str] = {}  # the client's link handles
    published: dict[int, int] = {}  # the client's transfers: delivery -> handle
    subprotocols = [websockets.Subprotocol("wsq.v1")]
    async with (
        running_gateway(settings) as gw,
        websockets.connect(gw.url, subprotocols=subprotocols) as ws,
    ):
        i = 0
        while i < len(steps):
            kind, message = steps[i]
            if kind == "send":
                for frame in _frames(message):
                    if frame["op"] == "attach":
                        addresses[frame["handle"]] = frame["address"]
                    elif frame["op"] == "transfer":
                        published[frame["delivery"]] = frame["handle"]
                await ws.send(json.dumps(message).replace('"<JWT>"', json.dumps(token)))
                i += 1
                continue
            if kind == "closed":
                await asyncio.wait_for(ws.wait_closed(), 5)
                assert ws.close_code == 1000
                i += 1
                continue
            # The answers up to the next frame the client sends: compared as one sequence of
            # frames (how the server splits them into WebSocket messages may vary), in order
            # of link and delivery (two links' frames may cross).
            expected: list[dict[str, Any]] = []
            while i < len(steps) and steps[i][0] == "recv":
                expected.extend(_frames(steps[i][1]))
                i += 1
            got: list[dict[str, Any]] = []
            while len(got) < len(expected):
                text = await asyncio.wait_for(ws.recv(), 5)
                got.extend(_frames(json.loads(text)))

            def order(f: dict[str, Any]) -> tuple[str, int, int]:
                return (f["op"], f.get("handle", -1), f.get("delivery", f.get("first", -1)))

            expected.sort(key=order)
            got.sort(key=order)
            assert len(got) == len(expected), f"answer to step {i}: {got} vs doc {expected}"
            for n, (doc, real) in enumerate(zip(expected, got, strict=True)):
                scope = positions.setdefault(_address(doc, addresses, published), {})
                _match(doc, real, scope, f"answer to step {i}[{n}]")


# -- README.md and docs/http-api.md: curl lines against the OpenAPI document ---------------------


def _curl_commands(markdown: str) -> list[list[str]]:
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", markdown, re.S):
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            line = line.split(" # ", 1)[0] if not line.lstrip().startswith("#") else ""
            at = line.find("curl ")
            if at < 0:
                continue
            cmd = line[at:]
            if line[:at].rstrip().endswith("$("):
                cmd = cmd[: cmd.rindex(")")]
            commands.append(shlex.split(cmd))
    return commands


def _request(argv: list[str]) -> tuple[str, str, Any]:
    """(method, path, JSON body or None) of a curl argv."""
    method, url, data = "GET", "", None
    it = iter(argv[1:])
    for arg in it:
        if arg == "-X":
            method = next(it)
        elif arg in ("-H", "--header"):
            next(it)
        elif arg in ("-d", "--data"):
            data = next(it)
            method = "POST" if method == "GET" else method
        elif not arg.startswith("-"):
            url = arg
    path = re.sub(r"^(\$WSQ|http://127\.0\.0\.1:8000)", "", url).split("?", 1)[0]
    body = None
    if data is not None:
        body = json.loads(data.replace("$IDS", '["1732200000123-0"]'))
    return method, path, body


def _operation(spec: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    for template, item in spec["paths"].items():
        pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path) and method.lower() in item:
            return dict(item[method.lower()])
    raise AssertionError(f"{method} {path}: no such operation in /v1/openapi.json")


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    # jsonschema resolves "#/components/..." against the root it is given: the whole document.
    return {**schema, "components": spec.get("components", {})}


@pytest.mark.parametrize("doc", ["README.md", "docs/http-api.md"])
async def test_curl_examples_match_the_openapi_document(doc: str) -> None:
    commands = _curl_commands((ROOT / doc).read_text())
    assert commands, f"{doc} has curl examples"
    async with running_gateway(make_settings()) as gw, httpx.AsyncClient() as http:
        spec = (await http.get(f"{gw.http}/v1/openapi.json")).json()
    for argv in commands:
        method, path, body = _request(argv)
        assert path.startswith("/v1/"), f"{doc}: {argv}"
        path = path.replace("$CLAIM", "default~q3Jb0yS2wYcJpI6x")
        op = _operation(spec, method, path)
        if body is not None:
            schema = op["requestBody"]["content"]["application/json"]["schema"]
            jsonschema.validate(body, _resolve(spec, schema))
