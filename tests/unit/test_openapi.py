"""The bridge's OpenAPI document is a valid OpenAPI 3.1 document and names what the code does."""

from __future__ import annotations

from openapi_spec_validator import validate

from wsq.bridge.openapi import openapi_document
from wsq.bridge.routes import routes


def test_openapi_document_validates() -> None:
    validate(openapi_document())  # raises on any violation of the OpenAPI 3.1 schema


def test_every_bridge_route_is_documented_with_its_methods() -> None:
    paths = openapi_document()["paths"]
    for route in routes():
        documented = paths["/v1" + route.path]
        for method in route.methods or ():
            if method != "HEAD":
                assert method.lower() in documented, (route.path, method)
