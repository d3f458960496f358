"""Claims-based security (AMQP CBS, the way Azure's clients send tokens): a client that
authenticated with SASL ANONYMOUS sends its JWT in a ``put-token`` request to the node
``$cbs``, and may send a fresh one later to refresh it (docs/amqp.md, "Tokens over $cbs").

A request is a message on a sender link to ``$cbs``: application-properties ``operation``
``put-token`` (``type`` and ``name`` are read by other servers; wsq verifies the token itself,
whatever they say), the token as an ``amqp-value`` string, and a ``message-id``. The answer
goes on the client's receiver link from ``$cbs``: ``correlation-id`` the request's message-id,
application-properties ``status-code`` (202 accepted, 400 a malformed request, 401 a refused
token: the connection then closes; 410 the connection closed for another reason) and
``status-description``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from wsq.amqp.codec import AmqpDecodeError, Described, Ulong, decode_all, encode
from wsq.amqp.frames import AMQP_VALUE, APPLICATION_PROPERTIES, PROPERTIES, descriptor_code
from wsq.amqp.frames import field as field_of
from wsq.core.limits import MAX_TOKEN_CHARS

ADDRESS = "$cbs"
# Requests a client may have waiting for their answer (the replies it has no credit for yet).
MAX_PENDING = 16
# Credit we grant a $cbs sender link, refilled as requests are answered.
CREDIT = 4
ACCEPTED, BAD_REQUEST, UNAUTHORIZED, GONE = 202, 400, 401, 410


class CbsRequestError(ValueError):
    """A message on ``$cbs`` that is not a put-token request wsq can read."""


@dataclass(frozen=True, slots=True)
class PutToken:
    """A put-token request: the token (never in a log line) and what the answer correlates."""

    token: str = field(repr=False)
    correlation: Any = None


def put_token(payload: bytes) -> PutToken:
    """The put-token request of a ``$cbs`` message; ``CbsRequestError`` for anything else."""
    try:
        sections = decode_all(payload)
    except AmqpDecodeError as exc:
        raise CbsRequestError(f"the request does not decode: {exc}") from None
    operation = token = correlation = None
    for section in sections:
        code = descriptor_code(section)
        if not isinstance(section, Described):
            raise CbsRequestError("the request is not made of message sections")
        if code == APPLICATION_PROPERTIES and isinstance(section.value, dict):
            operation = section.value.get("operation")
        elif code == PROPERTIES and isinstance(section.value, list):
            correlation = field_of(section.value, 0)
        elif code == AMQP_VALUE:
            token = section.value
    if operation != "put-token":
        raise CbsRequestError("the only operation on $cbs is put-token")
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
        raise CbsRequestError("put-token needs the token as an amqp-value string")
    return PutToken(token, correlation)


def reply(correlation: Any, status: int, description: str, extra: dict[str, Any]) -> bytes:
    """The answer to a request: a message correlated to it, with its status (and ``extra``
    application-properties: the principal's tenant, sub and expiry once accepted)."""
    properties = Described(Ulong(PROPERTIES), [None, None, None, None, None, correlation])
    app = {"status-code": status, "status-description": description, **extra}
    return b"".join(
        (
            encode(properties),
            encode(Described(Ulong(APPLICATION_PROPERTIES), app)),
            encode(Described(Ulong(AMQP_VALUE), None)),
        )
    )
