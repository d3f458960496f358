"""The one exception hierarchy of wsq.

Every error knows its wire condition (``wsq:NAME``, contract section 2) and the HTTP status the
bridge answers with, so that any layer can raise and the layer that talks to the peer maps it.
"""

from __future__ import annotations

from typing import Any, ClassVar


class WsqError(Exception):
    """Base of every error that reaches a peer as a ``wsq:`` condition."""

    condition: ClassVar[str] = "wsq:internal-error"
    http_status: ClassVar[int] = 500

    def __init__(self, description: str = "") -> None:
        super().__init__(description)
        self.description = description

    def to_error(self) -> dict[str, Any]:
        """The error object of the wire: ``{"condition": ..., "description": ...}``."""
        return {"condition": self.condition, "description": self.description}


class Unauthorized(WsqError):
    condition = "wsq:unauthorized"
    http_status = 401


class TokenExpired(WsqError):
    condition = "wsq:token-expired"
    http_status = 401


class Forbidden(WsqError):
    condition = "wsq:forbidden"
    http_status = 403


class InvalidFrame(WsqError):
    condition = "wsq:invalid-frame"
    http_status = 400


class FrameTooLarge(WsqError):
    condition = "wsq:frame-too-large"
    http_status = 413


class IdempotencyKeyReused(InvalidFrame):
    """An ``Idempotency-Key`` came back with a different request: refused, nothing stored."""


class ResourceLimitExceeded(WsqError):
    condition = "wsq:resource-limit-exceeded"
    http_status = 429


class PublishRateExceeded(ResourceLimitExceeded):
    """The tenant's ``publish_rate`` is spent for now; ``retry_after_s``: when to try again."""

    def __init__(self, description: str = "", retry_after_s: float = 1.0) -> None:
        super().__init__(description)
        self.retry_after_s = retry_after_s


#: What a tenant's quotas count (docs/security.md, "Per-tenant quotas"): its authenticated
#: sockets, its attached links, its live addresses, and the consumer groups of one address.
CONNECTIONS = "connections"
LINKS = "links"
ADDRESSES = "addresses"
GROUPS = "groups"
PRESENCE_MEMBERS = "presence members"
#: Refusals counted (``wsq_refusals_total``) past bounds that are not a ``QuotaExceeded``:
#: a full room, a tenant's webhook queue, its concurrent webhook requests (a request that had
#: to wait), a sink's followed addresses.
MEMBERS_PER_ADDRESS = "members_per_address"
WEBHOOK_QUEUE = "webhook_queue"
WEBHOOK_REQUESTS = "webhook_requests"
SINK_ADDRESSES = "sink_addresses"


class QuotaExceeded(ResourceLimitExceeded):
    """One more of ``kind`` would take ``tenant`` past its quota ``limit``; nothing was done.
    ``retry_after_s``: when a slot frees for sure (None when nothing says)."""

    def __init__(
        self, tenant: str, kind: str, limit: int, retry_after_s: float | None = None
    ) -> None:
        per = " per address" if kind == GROUPS else ""
        super().__init__(f"the tenant's quota of {limit} {kind}{per} is reached")
        self.tenant = tenant
        self.kind = kind
        self.limit = limit
        self.retry_after_s = retry_after_s


class TransferLimitExceeded(WsqError):
    condition = "wsq:transfer-limit-exceeded"
    http_status = 429


class IdleTimeout(WsqError):
    condition = "wsq:idle-timeout"
    http_status = 408


class NotFound(WsqError):
    condition = "wsq:not-found"
    http_status = 404


class InternalError(WsqError):
    condition = "wsq:internal-error"
    http_status = 500


class GoingAway(WsqError):
    condition = "wsq:going-away"
    http_status = 503


class AmqpFramingError(InvalidFrame):
    """An AMQP stream whose framing is broken (wsq.amqp): AMQP names it more exactly."""

    amqp_condition: ClassVar[str] = "amqp:connection:framing-error"


class AmqpDecodeFailed(InvalidFrame):
    """An AMQP frame body that does not decode, or a field of the wrong type."""

    amqp_condition: ClassVar[str] = "amqp:decode-error"


class AmqpInvalidField(InvalidFrame):
    amqp_condition: ClassVar[str] = "amqp:invalid-field"


class AmqpUnattachedHandle(InvalidFrame):
    """A link frame naming a handle no link holds (a session error)."""

    amqp_condition: ClassVar[str] = "amqp:session:unattached-handle"


class AmqpChannelNotFound(InvalidFrame):
    """A frame on a channel that has no session (a connection error)."""

    amqp_condition: ClassVar[str] = "amqp:not-found"


class AmqpMessageSizeExceeded(FrameTooLarge):
    """A message (all the frames of one transfer) larger than max_frame_bytes: a link error."""

    amqp_condition: ClassVar[str] = "amqp:link:message-size-exceeded"


class BrokerUnavailable(InternalError):
    """The broker cannot be reached: nothing was stored, the client may retry."""

    http_status = 503


class StateError(Exception):
    """A state machine was asked for a transition its table does not have: a bug of the caller
    (the peer's protocol errors are ``WsqError`` s), never sent on the wire."""


class ConfigError(Exception):
    """The configuration (file, environment or flags) is invalid; not a wire error."""
