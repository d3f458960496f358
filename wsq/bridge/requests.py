"""Reading a bridge request: the bearer token, path and query parameters, the JSON body.

Everything here treats the request as hostile: sizes are checked before anything is kept (the
body is streamed against a byte cap after ``Content-Length`` was checked), every value is checked
for type and range, and every refusal is a ``WsqError`` with the narrowest condition.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import ClientDisconnect, Request

from wsq.auth import Authenticator, Principal
from wsq.core import codec
from wsq.core.addresses import is_valid_address
from wsq.core.errors import FrameTooLarge, InvalidFrame, Unauthorized
from wsq.core.positions import is_valid_position
from wsq.core.props import as_int

#: Longest Idempotency-Key accepted (characters).
MAX_IDEMPOTENCY_KEY = 255


async def authenticate(request: Request, auth: Authenticator) -> Principal:
    """The principal of ``Authorization: Bearer <JWT>``; 401 otherwise."""
    header = request.headers.get("authorization")
    if header is None:
        raise Unauthorized("an Authorization: Bearer <token> header is required")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
    return await auth.verify(token)


def address_of(request: Request) -> str:
    address = request.path_params.get("address")
    if not is_valid_address(address):
        raise InvalidFrame(
            "the address must be dot-separated tokens of [A-Za-z0-9_-], at most 255 characters"
        )
    assert isinstance(address, str)
    return address


def query_int(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    text = request.query_params.get(name)
    if text is None:
        return default
    if not text.isascii() or not text.isdigit() or len(text) > 12 or not lo <= int(text) <= hi:
        raise InvalidFrame(f"'{name}' must be an integer in {lo}..{hi}")
    return int(text)


def query_position(request: Request, name: str, default: str) -> str:
    text = request.query_params.get(name)
    if text is None:
        return default
    if not is_valid_position(text):
        raise InvalidFrame(f"'{name}' must be a position '<ms>-<seq>'")
    return text


def idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    # Visible ASCII only: it becomes part of a broker key and is compared byte for byte.
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY or not all(33 <= ord(c) <= 126 for c in key):
        raise InvalidFrame(
            f"Idempotency-Key must be 1..{MAX_IDEMPOTENCY_KEY} visible ASCII characters"
        )
    return key


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isascii() or not length.isdigit():
            raise InvalidFrame("invalid Content-Length")
        if int(length) > limit:
            raise FrameTooLarge(f"the body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise FrameTooLarge(f"the body is larger than {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise InvalidFrame("the client went away before sending the whole body") from None
    return b"".join(chunks)


async def read_json(request: Request, limit: int, *, empty: Any = None) -> Any:
    """The body as JSON; an empty body is ``empty`` when that is given, else refused.

    Empty means no bytes at all: whitespace alone is not a JSON document (the OpenAPI document
    says so too, and the fuzz test holds the bridge to it).
    """
    body = await read_body(request, limit)
    if empty is not None and not body:
        return empty
    try:
        return codec.loads(body)
    except (codec.DecodeError, ValueError):
        raise InvalidFrame("the body is not valid JSON") from None


def json_object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidFrame(f"{what} must be a JSON object")
    return value


def int_field(obj: dict[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    """``obj[key]``, ``default`` when absent or null."""
    raw = obj.get(key)
    value = default if raw is None else as_int(raw)
    if value is None or not lo <= value <= hi:
        raise InvalidFrame(f"'{key}' must be an integer in {lo}..{hi}")
    return value


def positions_field(obj: dict[str, Any], key: str, most: int) -> list[str]:
    value = obj.get(key)
    if (
        not isinstance(value, list)
        or not 1 <= len(value) <= most
        or not all(is_valid_position(v) for v in value)
    ):
        raise InvalidFrame(f"'{key}' must be a list of 1..{most} positions '<ms>-<seq>'")
    return list(dict.fromkeys(value))


def group_field(obj: dict[str, Any]) -> str:
    group = obj.get("group")
    if group is None:
        return "default"
    if not is_valid_address(group):
        raise InvalidFrame("'group' must be dot-separated tokens of [A-Za-z0-9_-]")
    assert isinstance(group, str)
    return group
