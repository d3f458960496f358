"""The JavaScript client as the gateway serves it: /wsq-client.js and /wsq-client/<module>.js.

Every module the entry point imports, directly or not, must be served as it is in js-client/src;
nothing outside that folder (nor anything but its plain .js files) may be."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from wsq.app import JS_CLIENT, create_app
from wsq.config import load_settings
from wsq.js_client import module_file

SRC = JS_CLIENT.parent
# Every static import or re-export, a statement at the start of a line: `import … from "x"`,
# `export … from "x"`, `import "x"` (the client has no dynamic import).
_IMPORT = re.compile(r"""^(?:(?:import|export)\b[^;]*?\bfrom|import)\s*["']([^"']+)["']""", re.M)


async def get(path: str) -> httpx.Response:
    """GET ``path`` as the app sees it: percent escapes are decoded before routing, as uvicorn
    does, so ``%2E%2E%2F`` reaches the router as ``../``."""
    app = create_app(load_settings(environ={}))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://wsq") as http:
        return await http.get(path)


def imports(source: bytes) -> list[str]:
    return _IMPORT.findall(source.decode())


async def test_the_entry_point_and_every_module_it_imports_are_served() -> None:
    entry = await get("/wsq-client.js")
    assert entry.status_code == 200
    assert entry.headers["content-type"].startswith("text/javascript")
    assert imports(entry.content) == ["./wsq-client/index.js", "./wsq-client/index.js"]

    served: dict[str, bytes] = {}
    todo = ["index.js"]
    while todo:
        name = todo.pop()
        if name in served:
            continue
        response = await get(f"/wsq-client/{name}")
        assert response.status_code == 200, f"{name} is imported but not served"
        assert response.headers["content-type"].startswith("text/javascript")
        assert response.content == (SRC / name).read_bytes()
        served[name] = response.content
        for spec in imports(response.content):
            # Relative imports in the same folder only: what the browser asks for next.
            assert re.fullmatch(r"\./[a-z][a-z0-9_-]*\.js", spec), f"{name} imports {spec}"
            todo.append(spec[2:])

    # Every module of the client is reached from the entry point (none left behind), and the
    # entry point re-exports what index.js exports.
    assert sorted(served) == sorted(p.name for p in SRC.glob("*.js"))
    assert b"export class Client" in b"".join(served.values())


@pytest.mark.parametrize(
    "path",
    [
        "/wsq-client/%2E%2E",
        "/wsq-client/%2E%2E%2Fpackage.json",
        "/wsq-client/%2E%2E%2F%2E%2E%2Fpyproject.toml",
        "/wsq-client/%2E%2E%2F%2E%2E%2Fwsq%2Fapp.py",
        "/wsq-client/%2Fetc%2Fpasswd",
        "/wsq-client/index.d.ts",
        "/wsq-client/.index.js",
        "/wsq-client/Index.js",
        "/wsq-client/index.js%00.txt",
        "/wsq-client/no-such-module.js",
        "/wsq-client/x/index.js",
    ],
)
async def test_nothing_else_is_served_under_the_client_path(path: str) -> None:
    response = await get(path)
    assert response.status_code == 404
    assert b"export" not in response.content


def test_module_file_answers_plain_js_files_of_the_folder_only(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "wire.js").write_text("export {};\n")
    (src / "index.d.ts").write_text("export {};\n")
    (src / "sub").mkdir()
    (src / "sub" / "x.js").write_text("export {};\n")
    (src / "dir.js").mkdir()
    secret = tmp_path / "secret.js"
    secret.write_text("the secret\n")
    (src / "leak.js").symlink_to(secret)

    assert module_file(src, "wire.js") == (src / "wire.js").resolve()
    for name in [
        "..",
        "../secret.js",
        "sub/x.js",
        "./wire.js",
        "index.d.ts",
        "dir.js",
        "leak.js",
        "missing.js",
        str(secret),
        "wire.js\n",
        "wire.js\x00.txt",
    ]:
        assert module_file(src, name) is None, name
    assert module_file(tmp_path / "absent", "wire.js") is None


async def test_a_gateway_without_the_client_answers_404(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("wsq.app.JS_CLIENT", tmp_path / "src" / "index.js")
    assert (await get("/wsq-client.js")).status_code == 404
    assert (await get("/wsq-client/index.js")).status_code == 404
