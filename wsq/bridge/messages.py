"""Messages in and out of the HTTP bridge.

In: a publish body, one message ``{"body":…,"subject":…,"message_id":…,"ttl":…,
"content_type":…,"headers":{…}}`` or a batch ``{"messages":[…]}``, checked by the same rules as a
WebSocket transfer's ``props`` (contract section 5). Out: stored messages as
``{"id":…,"body":…,"props":{…}}``, the body spliced in as stored (encoded once, never re-parsed,
so large integers stay exact).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from wsq.core import codec
from wsq.core.errors import InvalidFrame
from wsq.core.messages import Message, NewMessage
from wsq.core.props import PropsError, parse_props
from wsq.core.wire import copy_tail

#: Most messages in one publish request.
MAX_BATCH = 1000


def parse_publish(doc: Any, publisher: str) -> list[NewMessage]:
    """The messages of a publish body; ``InvalidFrame`` naming the first problem."""
    if not isinstance(doc, dict):
        raise InvalidFrame('the body must be a JSON object: a message or {"messages": [...]}')
    if "messages" in doc and "body" not in doc:
        items = doc["messages"]
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
            raise InvalidFrame(f"'messages' must be a list of 1..{MAX_BATCH} messages")
        return [_message(item, publisher, f"messages[{i}]") for i, item in enumerate(items)]
    return [_message(doc, publisher, "the message")]


def _message(item: Any, publisher: str, where: str) -> NewMessage:
    if not isinstance(item, dict):
        raise InvalidFrame(f"{where} must be a JSON object")
    if "body" not in item:
        raise InvalidFrame(f"{where} has no 'body'")
    try:
        body = codec.dumps(item["body"])
    except (TypeError, ValueError):
        raise InvalidFrame(f"{where}: 'body' is nested too deeply") from None
    try:
        props = parse_props(item, lambda key: f"{where}: '{key}'")
    except PropsError as exc:
        raise InvalidFrame(exc.description) from None
    return props.message(body, publisher)


def fingerprint(messages: Sequence[NewMessage]) -> str:
    """What a publish request was, for telling a retry from another request under one key."""
    canonical = codec.dumps(
        [
            [m.publisher, m.body, m.subject, m.message_id, m.content_type, m.headers, m.ttl_ms]
            for m in messages
        ]
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def encode_message(m: Message, *, body: bool = True, redelivered: int | None = None) -> str:
    """``{"id":…,"body":…,"props":{…}}`` as JSON text."""
    if body and redelivered is None:
        return "{" + copy_tail(m)  # the delivery's tail is that object, less its "{"
    props = m.props()
    if redelivered is not None:
        props["redelivered"] = redelivered
    text = '{"id":' + codec.dumps_str(m.id)
    if body:
        text += ',"body":' + m.body
    return text + ',"props":' + codec.dumps(props) + "}"


def encode_list(items: Sequence[str]) -> str:
    return "[" + ",".join(items) + "]"
