"""Error answers of the HTTP bridge: ``{"error":{"condition":"wsq:…","description":"…"}}``.

Every failure of a bridge request ends here, so that a client only ever sees this shape: never a
stack trace, never a framework's plain-text page.
"""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from wsq.core import codec
from wsq.core.errors import (
    BrokerUnavailable,
    PublishRateExceeded,
    QuotaExceeded,
    TokenExpired,
    Unauthorized,
    WsqError,
)
from wsq.ratelimit import retry_after_header

log = logging.getLogger("wsq.bridge")

JSON = "application/json"


def json_response(
    value: object, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(codec.dumps(value), status_code=status, headers=headers, media_type=JSON)


def error_response(exc: WsqError) -> Response:
    headers: dict[str, str] = {}
    if isinstance(exc, Unauthorized | TokenExpired):
        # RFC 6750 section 3: a 401 names the scheme it wants.
        error = "invalid_token" if isinstance(exc, TokenExpired) else "invalid_request"
        headers["WWW-Authenticate"] = f'Bearer realm="wsq", error="{error}"'
    elif isinstance(exc, PublishRateExceeded):
        headers["Retry-After"] = retry_after_header(exc.retry_after_s)
    elif isinstance(exc, QuotaExceeded) and exc.retry_after_s is not None:
        # max_addresses: when the tenant's oldest live address idles out (a group frees none).
        headers["Retry-After"] = retry_after_header(exc.retry_after_s)
    elif isinstance(exc, BrokerUnavailable):
        headers["Retry-After"] = "1"
    return json_response({"error": exc.to_error()}, exc.http_status, headers)


_HTTP_CONDITIONS = {404: "wsq:not-found", 413: "wsq:frame-too-large"}


async def http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 / 405 (no route, wrong method) under ``/v1/``, in the bridge's shape;
    elsewhere (static pages) Starlette's plain answer."""
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers) if exc.headers else None
    if not request.url.path.startswith("/v1/"):
        return Response(exc.detail, status_code=exc.status_code, headers=headers)
    condition = _HTTP_CONDITIONS.get(exc.status_code, "wsq:invalid-frame")
    description = exc.detail
    if exc.status_code == 404:
        description = f"no such endpoint: {request.url.path}"
    elif exc.status_code == 405:
        description = f"method {request.method} is not allowed here"
    return json_response(
        {"error": {"condition": condition, "description": description}},
        exc.status_code,
        headers,
    )
