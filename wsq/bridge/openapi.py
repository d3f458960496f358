"""The OpenAPI 3.1 document of the HTTP bridge, served at ``/v1/openapi.json``.

Written by hand, next to the code it describes: the limits are the ones the handlers enforce
(imported, not copied), and tests validate the document and fuzz the running bridge with it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from wsq import __version__
from wsq.bridge.messages import MAX_BATCH
from wsq.bridge.requests import MAX_IDEMPOTENCY_KEY
from wsq.core.limits import MAX_LEASE_MS, MAX_STRING_PROP, MAX_TTL_MS, MIN_LEASE_MS
from wsq.core.positions import POSITION_PATTERN

# Grammar of contract section 6, as JSON Schema patterns.
_ADDRESS = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$"
_PATTERN = r"^((\*|[A-Za-z0-9_-]+)\.)*(\*|>|[A-Za-z0-9_-]+)$"
_CLAIM = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*~[A-Za-z0-9_-]{16}$"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERROR_TEXT = {
    "400": "Invalid request (wsq:invalid-frame): address, parameters or body",
    "401": "No valid token (wsq:unauthorized, wsq:token-expired)",
    "403": "The token lacks the right for this address (wsq:forbidden)",
    "404": "Not found (wsq:not-found): no such message or claim, or a path no endpoint has",
    "413": "Body too large (wsq:frame-too-large)",
    "429": "Publish rate of the tenant exceeded (wsq:resource-limit-exceeded); see Retry-After",
    "503": "The broker is unavailable (wsq:internal-error): nothing was done, retry",
}


def _errors(*codes: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # 404 everywhere: a path that no endpoint can take (an address no route matches).
    for code in ("400", "401", "403", "404", *codes, "503"):
        response = _json(_ref("Error"), _ERROR_TEXT[code])
        if code in ("429", "503"):
            response["headers"] = {
                "Retry-After": {"description": "Seconds to wait", "schema": {"type": "string"}}
            }
        out[code] = response
    return out


_ADDRESS_PARAM = {
    "name": "address",
    "in": "path",
    "required": True,
    "description": "Dot-separated tokens of [A-Za-z0-9_-], at most 255 characters",
    "schema": {"type": "string", "pattern": _ADDRESS, "maxLength": 255},
}
_CLAIM_PARAM = {
    "name": "claim",
    "in": "path",
    "required": True,
    "description": "The claim id answered by POST .../claims: `<group>~<16 characters>`",
    "schema": {"type": "string", "pattern": _CLAIM, "maxLength": 272},
}


def _schemas() -> dict[str, Any]:
    position = {"type": "string", "pattern": POSITION_PATTERN, "description": "`<ms>-<seq>`"}
    positions = {"type": "array", "items": _ref("Position"), "minItems": 1, "maxItems": 1000}
    short = {"type": ["string", "null"], "maxLength": MAX_STRING_PROP}
    return {
        "Position": position,
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["condition", "description"],
                    "properties": {
                        "condition": {"type": "string", "pattern": "^wsq:[a-z-]+$"},
                        "description": {"type": "string"},
                    },
                }
            },
        },
        "NewMessage": {
            "type": "object",
            "required": ["body"],
            "properties": {
                "body": {"description": "Any JSON value"},
                "subject": {"type": ["string", "null"], "pattern": _ADDRESS, "maxLength": 255},
                "message_id": {
                    **short,
                    "description": "Dedup key: a message_id accepted on the address within "
                    "the tenant's dedup window is not stored again",
                },
                "content_type": short,
                "ttl": {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_TTL_MS},
                "headers": {"type": ["object", "null"]},
            },
        },
        "PublishRequest": {
            "oneOf": [
                _ref("NewMessage"),
                {
                    "type": "object",
                    "required": ["messages"],
                    "not": {"required": ["body"]},
                    "properties": {
                        "messages": {
                            "type": "array",
                            "items": _ref("NewMessage"),
                            "minItems": 1,
                            "maxItems": MAX_BATCH,
                        }
                    },
                },
            ]
        },
        "Published": {
            "type": "object",
            "required": ["ids"],
            "properties": {"ids": {"type": "array", "items": _ref("Position")}},
        },
        "Props": {
            "type": "object",
            "required": ["ts", "publisher"],
            "properties": {
                "ts": {"type": "integer", "description": "ms when the server accepted it"},
                "publisher": {"type": "string", "description": "sub of the publishing token"},
                "subject": {"type": "string"},
                "message_id": {"type": "string"},
                "content_type": {"type": "string"},
                "headers": {"type": "object"},
                "expires": {"type": "integer", "description": "ms when its ttl ends"},
                "redelivered": {"type": "integer", "description": "claims only"},
            },
        },
        "Message": {
            "type": "object",
            "required": ["id", "body", "props"],
            "properties": {"id": _ref("Position"), "body": {}, "props": _ref("Props")},
        },
        "MessageList": {
            "type": "object",
            "required": ["messages", "next", "recovered"],
            "properties": {
                "messages": {"type": "array", "items": _ref("Message")},
                "next": {
                    **position,
                    "description": "Pass as `after` to read on (the last id, or `after`)",
                },
                "recovered": {
                    "type": "boolean",
                    "description": "false when retention dropped messages after `after`",
                },
            },
        },
        "Member": {
            "type": "object",
            "required": ["id", "sub", "client", "node"],
            "properties": {
                "id": {"type": "string", "description": "`<client>.<ch>.<handle>`"},
                "sub": {"type": "string"},
                "client": {"type": "string", "description": "The connection's id"},
                "node": {"type": "string"},
            },
        },
        "Presence": {
            "type": "object",
            "required": ["address", "count", "members"],
            "properties": {
                "address": {"type": "string"},
                "count": {"type": "integer", "minimum": 0},
                "members": {"type": "array", "items": _ref("Member"), "maxItems": 100},
                "next": {"type": "string", "description": "More members follow: `after`"},
            },
        },
        "Found": {
            "type": "object",
            "required": ["id", "props"],
            "properties": {
                "id": _ref("Position"),
                "body": {"description": "Only when the token may subscribe to the address"},
                "props": _ref("Props"),
            },
        },
        "ClaimRequest": {
            "type": "object",
            "properties": {
                "group": {"type": ["string", "null"], "pattern": _ADDRESS, "maxLength": 255},
                "limit": {"type": ["integer", "null"], "minimum": 1, "maximum": 100},
                "lease": {
                    "type": ["integer", "null"],
                    "minimum": MIN_LEASE_MS,
                    "maximum": MAX_LEASE_MS,
                },
                "filter": {
                    "type": ["object", "null"],
                    "properties": {
                        "subject": {
                            "type": ["string", "null"],
                            "pattern": _PATTERN,
                            "maxLength": 255,
                        }
                    },
                },
            },
        },
        "Claim": {
            "type": "object",
            "required": ["claim", "group", "lease", "messages"],
            "properties": {
                "claim": {"type": "string", "pattern": _CLAIM},
                "group": {"type": "string"},
                "lease": {"type": "integer"},
                "messages": {"type": "array", "items": _ref("Message"), "minItems": 1},
            },
        },
        "SettleRequest": {
            "type": "object",
            "required": ["ids"],
            "properties": {
                "ids": positions,
                "outcome": {
                    "type": ["string", "null"],
                    "enum": ["accepted", "released", "rejected", "modified"],
                    "default": "accepted",
                },
            },
        },
        "RenewRequest": {
            "type": "object",
            "required": ["ids"],
            "properties": {
                "ids": positions,
                "lease": {
                    "type": ["integer", "null"],
                    "minimum": MIN_LEASE_MS,
                    "maximum": MAX_LEASE_MS,
                },
            },
        },
        "Renewed": {
            "type": "object",
            "required": ["ids", "lease"],
            "properties": {
                "ids": {"type": "array", "items": _ref("Position")},
                "lease": {"type": "integer"},
            },
        },
    }


@lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "wsq HTTP bridge",
            "version": __version__,
            "description": "Publish to, read, claim from and reconcile wsq addresses over "
            "HTTP, with the same tenants, tokens and rights as the wsq.v1 WebSocket. "
            "See docs/http-api.md.",
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/addresses/{address}/messages": {
                "parameters": [_ADDRESS_PARAM],
                "post": {
                    "operationId": "publish",
                    "summary": "Publish one message or a batch (publish right)",
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "required": False,
                            "description": "A retried request with the same key (and body) "
                            "answers what the first one answered",
                            "schema": {
                                "type": "string",
                                "pattern": "^[!-~]+$",
                                "minLength": 1,
                                "maxLength": MAX_IDEMPOTENCY_KEY,
                            },
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("PublishRequest")}},
                    },
                    "responses": {
                        "201": _json(_ref("Published"), "Stored: the positions, in order"),
                        "200": _json(
                            _ref("Published"),
                            "Every message was a duplicate by message_id: the first positions",
                        ),
                        **_errors("413", "429"),
                    },
                },
                "get": {
                    "operationId": "list",
                    "summary": "Read retained messages after a position (subscribe right)",
                    "description": "Up to `limit` messages, and no more than the server's "
                    "`max_frame_bytes` (default 1 MiB) of answer, but always at least one "
                    "message when there is one: a page may hold fewer than `limit` while more "
                    "follow. Read on with `after` = `next` until a page is empty.",
                    "parameters": [
                        {
                            "name": "after",
                            "in": "query",
                            "required": False,
                            "description": "A position; default: from the oldest retained",
                            "schema": _ref("Position"),
                        },
                        {
                            "name": "last",
                            "in": "query",
                            "required": False,
                            "description": "The last N retained messages (exclusive with "
                            "`after`; `limit` defaults to N)",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                        },
                    ],
                    "responses": {
                        "200": _json(_ref("MessageList"), "Messages in order"),
                        **_errors(),
                    },
                },
            },
            "/v1/addresses/{address}/lookup": {
                "parameters": [_ADDRESS_PARAM],
                "get": {
                    "operationId": "lookup",
                    "summary": "Find the retained message with a message_id (publish or "
                    "subscribe right)",
                    "parameters": [
                        {
                            "name": "message_id",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "string", "maxLength": MAX_STRING_PROP},
                        }
                    ],
                    "responses": {
                        "200": _json(_ref("Found"), "The message"),
                        **_errors(),
                    },
                },
            },
            "/v1/addresses/{address}/presence": {
                "parameters": [_ADDRESS_PARAM],
                "get": {
                    "operationId": "presence",
                    "summary": "The address's present members: a count and a page, by id "
                    "(subscribe right)",
                    "parameters": [
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 100},
                        },
                        {
                            "name": "after",
                            "in": "query",
                            "required": False,
                            "description": "The last member id of the page before (`next`)",
                            "schema": {"type": "string", "maxLength": 256},
                        },
                    ],
                    "responses": {
                        "200": _json(_ref("Presence"), "The count and a page of members"),
                        **_errors(),
                    },
                },
            },
            "/v1/addresses/{address}/claims": {
                "parameters": [_ADDRESS_PARAM],
                "post": {
                    "operationId": "claim",
                    "summary": "Lease up to `limit` messages of a consumer group (subscribe right)",
                    "requestBody": {
                        "required": False,
                        "content": {"application/json": {"schema": _ref("ClaimRequest")}},
                    },
                    "responses": {
                        "201": _json(_ref("Claim"), "Messages leased under a new claim"),
                        "204": {"description": "Nothing available"},
                        **_errors("413"),
                    },
                },
            },
            "/v1/addresses/{address}/claims/{claim}/settle": {
                "parameters": [_ADDRESS_PARAM, _CLAIM_PARAM],
                "post": {
                    "operationId": "settle",
                    "summary": "End leases of a claim with an outcome (subscribe right)",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("SettleRequest")}},
                    },
                    "responses": {
                        "204": {
                            "description": "Settled (ids the claim no longer holds are ignored)"
                        },
                        **_errors("413"),
                    },
                },
            },
            "/v1/addresses/{address}/claims/{claim}/renew": {
                "parameters": [_ADDRESS_PARAM, _CLAIM_PARAM],
                "post": {
                    "operationId": "renew",
                    "summary": "Extend leases the claim still holds (subscribe right)",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("RenewRequest")}},
                    },
                    "responses": {
                        "200": _json(_ref("Renewed"), "The ids renewed"),
                        **_errors("413"),
                    },
                },
            },
            "/v1/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": {"description": "OpenAPI 3.1 document"}},
                }
            },
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
            "schemas": _schemas(),
        },
    }
