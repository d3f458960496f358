"""The props of a message offered for publishing (contract section 5), checked once for every
way a message comes in: a WebSocket transfer's ``props`` and an HTTP bridge message alike.

The caller says how a field is named in its error texts (``'props.ttl'`` on the WebSocket,
``messages[3]: 'ttl'`` over HTTP); the rules and the words are the same.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from wsq.core import codec
from wsq.core.addresses import is_valid_address
from wsq.core.limits import MAX_STRING_PROP, MAX_TTL_MS
from wsq.core.messages import NewMessage


class PropsError(ValueError):
    """A prop breaks the contract; ``description`` names it for the publisher."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


@dataclass(frozen=True, slots=True)
class Props:
    """Checked props of one message (absent ones are None)."""

    subject: str | None = None
    message_id: str | None = None
    content_type: str | None = None
    headers: dict[str, Any] | None = None
    ttl_ms: int | None = None

    def message(self, body: str, publisher: str) -> NewMessage:
        """The message to publish with these props: ``body`` its JSON text, ``publisher`` the
        ``sub`` of the publishing token (never the client's word)."""
        return NewMessage(
            body=body,
            publisher=publisher,
            subject=self.subject,
            message_id=self.message_id,
            content_type=self.content_type,
            headers=self.headers,
            ttl_ms=self.ttl_ms,
        )


NO_PROPS = Props()


def as_int(value: Any) -> int | None:
    """An integer as JSON Schema counts them (``5`` and ``5.0``, never ``true``), else None."""
    if type(value) is int:
        return value
    if type(value) is float and value.is_integer():
        return int(value)
    return None


def parse_props(fields: Mapping[str, Any], name: Callable[[str], str]) -> Props:
    """The props among ``fields`` (other keys are ignored); ``PropsError`` for the first one
    that breaks a rule, its field named by ``name(key)``."""
    subject = fields.get("subject")
    if subject is not None and not is_valid_address(subject):
        raise PropsError(f"{name('subject')} must be dot-separated tokens of [A-Za-z0-9_-]")
    headers = fields.get("headers")
    if headers is not None:
        if not isinstance(headers, dict):
            raise PropsError(f"{name('headers')} must be an object")
        try:
            codec.dumps(headers)  # they go out in every delivery's props
        except (TypeError, ValueError):
            raise PropsError(f"{name('headers')} is nested too deeply") from None
    raw_ttl = fields.get("ttl")
    ttl = None if raw_ttl is None else as_int(raw_ttl)
    if raw_ttl is not None and (ttl is None or not 1 <= ttl <= MAX_TTL_MS):
        raise PropsError(f"{name('ttl')} must be an integer in 1..{MAX_TTL_MS}")
    return Props(
        subject=subject,
        message_id=_short_string(fields, "message_id", name),
        content_type=_short_string(fields, "content_type", name),
        headers=headers,
        ttl_ms=ttl,
    )


def _short_string(fields: Mapping[str, Any], key: str, name: Callable[[str], str]) -> str | None:
    value = fields.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_STRING_PROP:
        raise PropsError(f"{name(key)} must be a string of at most {MAX_STRING_PROP} characters")
    return value
