"""The HTTP bridge endpoints (contract section 9, and claims and lookup in the same style).

Each handler checks, in order: the token (401), the address (400), the right (403), then the
body (413, 400), then the rate (429), and only then asks the broker (503 when it is down). The
claim design follows OpenStack Zaqar's claims; docs/http-api.md describes it.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from wsq.auth import Principal
from wsq.bridge import messages as msgs
from wsq.bridge.errors import JSON, error_response, json_response
from wsq.bridge.openapi import openapi_document
from wsq.bridge.requests import (
    address_of,
    authenticate,
    group_field,
    idempotency_key,
    int_field,
    json_object,
    positions_field,
    query_int,
    query_position,
    read_json,
)
from wsq.core import codec
from wsq.core.addresses import compile_pattern, is_valid_address, is_valid_pattern
from wsq.core.errors import (
    BrokerUnavailable,
    Forbidden,
    InternalError,
    InvalidFrame,
    NotFound,
    WsqError,
)
from wsq.core.limits import (
    DEFAULT_LEASE_MS,
    MAX_LEASE_MS,
    MAX_REWIND,
    MAX_STRING_PROP,
    MIN_LEASE_MS,
)
from wsq.core.messages import Outcome
from wsq.core.positions import START
from wsq.core.presence import MAX_MEMBER_ID, MAX_PRESENCE_PAGE
from wsq.hub.presence import occupancy
from wsq.node import Node

log = logging.getLogger("wsq.bridge")

#: Most messages one GET returns, and by default.
MAX_LIST = 1000
DEFAULT_LIST = 100
#: Bytes of a GET's answer kept for what is not a message (``next``, ``recovered``, brackets).
LIST_ENVELOPE = 128
#: Most messages one claim leases, and by default.
MAX_CLAIM = 100
DEFAULT_CLAIM = 10
#: Most positions one settle or renew names.
MAX_SETTLE = 1000
#: Largest body of a claim, settle or renew request (bytes): a thousand positions fit.
CONTROL_BODY_BYTES = 64 * 1024

#: ``<group>~<16 random url-safe characters>``: the group travels in the claim id.
_CLAIM_RE = re.compile(r"(?P<group>[A-Za-z0-9_.-]{1,255})~(?P<key>[A-Za-z0-9_-]{16})")
_OUTCOMES = {o.value: o for o in Outcome}

Handler = Callable[[Request], Awaitable[Response]]


def _endpoint(fn: Handler) -> Handler:
    """Every error of a handler as a bridge error answer; never a stack trace."""

    async def run(request: Request) -> Response:
        error: WsqError
        try:
            return await fn(request)
        except BrokerUnavailable as exc:
            log.warning("HTTP %s %s: broker unavailable: %s", request.method, fn.__name__, exc)
            error = BrokerUnavailable("the broker is unavailable; retry later")
        except WsqError as exc:
            error = exc
        except Exception:
            log.exception("HTTP %s %s failed", request.method, fn.__name__)
            error = InternalError("internal error")
        _node(request).errors[error.condition] += 1  # wsq_errors_total, as for sockets
        return error_response(error)

    run.__name__ = fn.__name__
    return run


def _node(request: Request) -> Node:
    node: Node = request.app.state.node
    return node


async def _open(request: Request) -> tuple[Node, Principal, str]:
    node = _node(request)
    principal = await authenticate(request, node.auth)
    return node, principal, address_of(request)


def _may_subscribe(principal: Principal, address: str) -> None:
    if not principal.rights.can_subscribe(address):
        raise Forbidden(f"the token may not subscribe to {address}")


# -- feed ------------------------------------------------------------------------------------


@_endpoint
async def publish(request: Request) -> Response:
    node, principal, address = await _open(request)
    # The right before the body is read: 403 comes before 413 and 400.
    node.publishing.check_right(principal, address)
    key = idempotency_key(request)
    doc = await read_json(request, node.settings.server.max_frame_bytes)
    messages = msgs.parse_publish(doc, principal.sub)
    idempotency = None if key is None else (key, msgs.fingerprint(messages))
    once = await node.publishing.publish(principal, address, messages, idempotency)
    results = once.results
    # 200 when nothing new was stored: every message was a duplicate by message_id.
    status = 200 if all(r.duplicate for r in results) else 201
    headers = {"Idempotent-Replayed": "true"} if once.replayed else None
    return json_response({"ids": [r.id for r in results]}, status, headers)


@_endpoint
async def list_messages(request: Request) -> Response:
    node, principal, address = await _open(request)
    _may_subscribe(principal, address)
    last = query_int(request, "last", 0, 1, MAX_REWIND)
    if last and "after" in request.query_params:
        raise InvalidFrame("'last' and 'after' are exclusive")
    after = query_position(request, "after", START)
    limit = query_int(request, "limit", last or DEFAULT_LIST, 1, MAX_LIST)
    if last:
        # The last ``last`` retained messages: read after where a rewind of as many starts
        # (contract section 5, ``rewind``); a page may hold fewer, ``next`` reads on.
        after = (await node.broker.rewind(principal.tenant, address, last)).after
    # A page is bounded by bytes as a WebSocket message is (max_frame_bytes), not only by
    # count: a thousand messages of a MiB each would be a GiB. The broker stops reading at
    # about the budget; the exact cut is made here on the encoded messages, and always lets
    # one through. ``next`` then names the last one sent, so the client reads on from there.
    budget = node.settings.server.max_frame_bytes
    result = await node.broker.read(principal.tenant, address, after, limit, budget)
    items: list[str] = []
    used = LIST_ENVELOPE
    found = result.messages
    for m in found:
        item = msgs.encode_message(m)
        size = len(item.encode()) + 1  # and its comma
        if items and used + size > budget:
            found = found[: len(items)]
            break
        items.append(item)
        used += size
    nxt = found[-1].id if found else after
    text = (
        '{"messages":'
        + msgs.encode_list(items)
        + ',"next":'
        + codec.dumps_str(nxt)
        + ',"recovered":'
        + ("true" if result.recovered else "false")
        + "}"
    )
    return Response(text, media_type=JSON)


@_endpoint
async def lookup(request: Request) -> Response:
    node, principal, address = await _open(request)
    rights = principal.rights
    may_subscribe = rights.can_subscribe(address)
    if not may_subscribe and not rights.can_publish(address):
        raise Forbidden(f"the token may neither publish nor subscribe to {address}")
    message_id = request.query_params.get("message_id")
    if message_id is None or len(message_id) > MAX_STRING_PROP:
        raise InvalidFrame(f"'message_id' must be given, at most {MAX_STRING_PROP} characters")
    found = await node.broker.lookup(principal.tenant, address, message_id)
    if found is None:
        raise NotFound(f"no retained message with this message_id on {address}")
    # A publisher learns that (and where) its message is stored; only a subscriber reads it.
    return Response(msgs.encode_message(found, body=may_subscribe), media_type=JSON)


# -- queue: claims ---------------------------------------------------------------------------


def _consumer(claim: str) -> str:
    return f"http-{claim}"


def _claim_of(request: Request) -> tuple[str, str]:
    """(claim id, its group) from the path; 404 for what no claim can be."""
    claim = request.path_params.get("claim")
    match = _CLAIM_RE.fullmatch(claim) if isinstance(claim, str) else None
    if match is None or not is_valid_address(match["group"]):
        raise NotFound("no such claim")
    assert isinstance(claim, str)
    return claim, match["group"]


@_endpoint
async def create_claim(request: Request) -> Response:
    node, principal, address = await _open(request)
    _may_subscribe(principal, address)
    body = json_object(await read_json(request, CONTROL_BODY_BYTES, empty={}), "the body")
    group = group_field(body)
    limit = int_field(body, "limit", DEFAULT_CLAIM, 1, MAX_CLAIM)
    lease = int_field(body, "lease", DEFAULT_LEASE_MS, MIN_LEASE_MS, MAX_LEASE_MS)
    subject_filter = None
    filter_doc = body.get("filter")
    if filter_doc is not None:
        subject = json_object(filter_doc, "'filter'").get("subject")
        if subject is not None:
            if not is_valid_pattern(subject):
                raise InvalidFrame("'filter.subject' is not a valid pattern")
            subject_filter = compile_pattern(subject)
    # Past max_addresses or max_groups: 429, nothing created.
    await node.quotas.group(principal.tenant, address, group)
    claim = f"{group}~{secrets.token_urlsafe(12)}"
    deliveries = await node.broker.claim(
        principal.tenant, address, group, _consumer(claim), limit, lease, subject_filter
    )
    if not deliveries:
        return Response(status_code=204)
    items = [msgs.encode_message(d.message, redelivered=d.redelivered) for d in deliveries]
    text = (
        '{"claim":'
        + codec.dumps_str(claim)
        + ',"group":'
        + codec.dumps_str(group)
        + f',"lease":{lease},"messages":'
        + msgs.encode_list(items)
        + "}"
    )
    return Response(
        text,
        status_code=201,
        media_type=JSON,
        headers={"Location": f"/v1/addresses/{address}/claims/{claim}"},
    )


async def _on_claim(
    request: Request,
) -> tuple[Node, Principal, str, str, str, dict[str, Any], list[str]]:
    """A request about a claim (settle, renew): node, principal, address, consumer, group,
    body and the ids it names, every check done in the bridge's order."""
    node, principal, address = await _open(request)
    _may_subscribe(principal, address)
    claim, group = _claim_of(request)
    body = json_object(await read_json(request, CONTROL_BODY_BYTES), "the body")
    ids = positions_field(body, "ids", MAX_SETTLE)
    return node, principal, address, _consumer(claim), group, body, ids


@_endpoint
async def settle_claim(request: Request) -> Response:
    node, principal, address, consumer, group, body, ids = await _on_claim(request)
    name = body.get("outcome")
    name = "accepted" if name is None else name
    outcome = _OUTCOMES.get(name) if isinstance(name, str) else None
    if outcome is None:
        raise InvalidFrame("'outcome' must be accepted, released, rejected or modified")
    await node.broker.settle(principal.tenant, address, group, consumer, ids, outcome)
    return Response(status_code=204)


@_endpoint
async def renew_claim(request: Request) -> Response:
    node, principal, address, consumer, group, body, ids = await _on_claim(request)
    lease = int_field(body, "lease", DEFAULT_LEASE_MS, MIN_LEASE_MS, MAX_LEASE_MS)
    renewed = await node.broker.renew(principal.tenant, address, group, consumer, ids, lease)
    return json_response({"ids": renewed, "lease": lease})


async def messages(request: Request) -> Response:
    """One path, two methods: a POST publishes, a GET lists."""
    if request.method == "POST":
        return await publish(request)
    return await list_messages(request)


# -- presence ------------------------------------------------------------------------------


@_endpoint
async def presence(request: Request) -> Response:
    """The address's count and one page of its members, by id (``after``: the last id seen)."""
    node, principal, address = await _open(request)
    _may_subscribe(principal, address)
    limit = query_int(request, "limit", MAX_PRESENCE_PAGE, 1, MAX_PRESENCE_PAGE)
    after = request.query_params.get("after", "")
    if len(after) > MAX_MEMBER_ID:
        raise InvalidFrame(f"'after' must be a member id of at most {MAX_MEMBER_ID} characters")
    store = node.broker.presence_store
    return json_response(await occupancy(store, principal.tenant, address, limit, after))


# -- the document ----------------------------------------------------------------------------


async def openapi(request: Request) -> Response:
    return json_response(openapi_document())


def routes() -> list[Route]:
    """The bridge's routes, relative to ``/v1`` (the app mounts them there)."""
    return [
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/addresses/{address}/messages", messages, methods=["GET", "POST"]),
        Route("/addresses/{address}/lookup", lookup, methods=["GET"]),
        Route("/addresses/{address}/presence", presence, methods=["GET"]),
        Route("/addresses/{address}/claims", create_claim, methods=["POST"]),
        Route("/addresses/{address}/claims/{claim}/settle", settle_claim, methods=["POST"]),
        Route("/addresses/{address}/claims/{claim}/renew", renew_claim, methods=["POST"]),
    ]
