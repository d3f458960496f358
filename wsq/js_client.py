"""The JavaScript client (``js-client/src``), served to pages by the gateway.

Pages ``import { Client } from "/wsq-client.js"``. That URL answers a two-line module that
re-exports ``/wsq-client/index.js``; the client's modules are served under ``/wsq-client/``, so
their relative imports (``./wire.js``, …) resolve among themselves. No build step: each file is
served as it is in the checkout.

Only a plain ``<name>.js`` (lower-case letters, digits, ``-`` and ``_``) lying directly in the
source folder is served. Nothing else can be reached through ``/wsq-client/``: no ``..``, no
sub-folder, no ``index.d.ts``, no symlink leading out of the folder.
"""

from __future__ import annotations

import re
from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

ENTRY_PATH = "/wsq-client.js"
MODULES_PATH = "/wsq-client/"
ENTRY_MODULE = (
    b"// wsq-client (js-client/src): its modules are served under /wsq-client/.\n"
    b'export * from "./wsq-client/index.js";\n'
    b'export { default } from "./wsq-client/index.js";\n'
)
_MODULE_NAME = re.compile(r"[a-z][a-z0-9_-]*\.js")
_MEDIA_TYPE = "text/javascript"


def module_file(src: Path, name: str) -> Path | None:
    """The file of module ``name`` in ``src``, or None when ``name`` is not one we serve."""
    if not _MODULE_NAME.fullmatch(name):
        return None
    try:
        folder = src.resolve(strict=True)
        path = (src / name).resolve(strict=True)
    except (OSError, ValueError):  # missing, a loop, a NUL byte
        return None
    if path.parent != folder or not path.is_file():
        return None
    return path


def routes(src: Path) -> list[Route]:
    """``/wsq-client.js`` and ``/wsq-client/<module>.js``, served from the folder ``src``."""

    def missing(what: str) -> Response:
        return JSONResponse({"error": what}, status_code=404)

    async def entry(request: Request) -> Response:
        if module_file(src, "index.js") is None:
            return missing("the JavaScript client is not built")
        return Response(ENTRY_MODULE, media_type=_MEDIA_TYPE)

    async def module(request: Request) -> Response:
        path = module_file(src, request.path_params["name"])
        if path is None:
            return missing("no such module of the JavaScript client")
        return Response(path.read_bytes(), media_type=_MEDIA_TYPE)

    return [Route(ENTRY_PATH, entry), Route(MODULES_PATH + "{name}", module)]
