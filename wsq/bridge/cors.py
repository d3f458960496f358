"""The bridge's CORS answers: ``Access-Control-Allow-Origin`` only for ``[server]
allowed_origins`` (wsq.origins).

By default (``allowed_origins`` unset) the bridge answers no CORS at all: pages of the gateway's
own origin need none, and a page of any other origin may send a request the browser allows
without asking (no ``Authorization`` header: answered 401) but never reads an answer. Tokens are
never ambient (no cookies), so a request a page cannot read the answer of does it no good.
"""

from __future__ import annotations

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from wsq.origins import OriginPolicy

#: What a browser page may send and read across origins.
METHODS = ("GET", "POST")
REQUEST_HEADERS = (
    "Authorization",
    "Content-Type",
    "Idempotency-Key",
    "Wsq-Stream-Secret",
    "Wsq-Seq",
)
EXPOSED_HEADERS = ("Location", "Retry-After", "Idempotent-Replayed", "WWW-Authenticate")
PREFLIGHT_MAX_AGE_S = 600


def cors_middleware(policy: OriginPolicy) -> list[Middleware]:
    """The middleware for the ``/v1`` mount: none when no origin is listed."""
    origins = policy.cors_origins()
    if not origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=METHODS,
            allow_headers=REQUEST_HEADERS,
            expose_headers=EXPOSED_HEADERS,
            max_age=PREFLIGHT_MAX_AGE_S,
        )
    ]
