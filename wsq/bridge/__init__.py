"""The HTTP bridge (contract section 9): publish, read, claim and reconcile over HTTP, for PHP
and other request/response backends. ``routes()`` is mounted at ``/v1`` by ``create_app``;
docs/http-api.md is its manual, ``/v1/openapi.json`` its OpenAPI document."""

from wsq.bridge.cors import cors_middleware
from wsq.bridge.errors import http_exception
from wsq.bridge.routes import routes

__all__ = ["cors_middleware", "http_exception", "routes"]
