"""What the demo page at ``/`` asks the gateway besides wsq.v1: ``GET /demo/config`` (may the page
ask for a development token?) and ``GET /dev/token`` (development mode only).

The page asks ``/demo/config`` first, so that on a gateway with tenants it never requests a
route that does not exist (a 404 in the browser's console) and asks its user for a token
instead. ``dev_token`` is true exactly when ``/dev/token`` would hand *this* request a token: one
rule, :func:`dev_token_refusal`, answers both.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from wsq.auth import mint_token
from wsq.config import Settings
from wsq.origins import is_local_host, is_local_origin

#: The development token's lifetime; the page asks for a fresh one on every (re)connect.
DEV_TOKEN_TTL_S = 3600
#: Longest ``sub`` a development token is minted for (the rest is cut).
MAX_DEV_SUB = 64


def dev_token_refusal(request: Request) -> str | None:
    """Why ``/dev/token`` refuses this request, or None when it answers it.

    Only clients on this machine (a dev gateway bound to 0.0.0.0 must not hand full rights to the
    network), asking by a local name from a local page or none: a page of another site that
    rebinds its own DNS name to 127.0.0.1 reaches us with its own Host and Origin (DNS
    rebinding), and gets nothing."""
    client = request.client.host if request.client else ""
    if client not in ("127.0.0.1", "::1", "localhost"):
        return "loopback only"
    if not is_local_host(request.headers.get("host")):
        return "only for Host localhost, 127.0.0.1 or [::1]"
    if not is_local_origin(request.headers.get("origin")):
        return "only for pages of localhost, 127.0.0.1 or [::1]"
    return None


def routes(settings: Settings) -> list[Route]:
    """``/demo/config`` always; ``/dev/token`` in development mode only."""

    async def demo_config(request: Request) -> Response:
        dev_token = settings.dev_mode and dev_token_refusal(request) is None
        return JSONResponse({"dev_token": dev_token}, headers={"Cache-Control": "no-store"})

    async def dev_token(request: Request) -> Response:
        refusal = dev_token_refusal(request)
        if refusal is not None:
            return JSONResponse(
                {"error": {"condition": "wsq:forbidden", "description": refusal}},
                status_code=403,
            )
        tenant = settings.tenants["dev"]
        sub = request.query_params.get("sub", "demo")[:MAX_DEV_SUB] or "demo"
        token = mint_token(
            tenant, sub, publish=[">"], subscribe=[">"], ops=True, ttl_s=DEV_TOKEN_TTL_S
        )
        return JSONResponse(
            {"token": token, "tenant": "dev", "sub": sub}, headers={"Cache-Control": "no-store"}
        )

    found = [Route("/demo/config", demo_config)]
    if settings.dev_mode:
        found.append(Route("/dev/token", dev_token))
    return found
