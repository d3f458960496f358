"""Reading client frames: field checks, and the frames that configure a link or carry a message.

Pure functions of a frame (no connection state): a field that breaks the contract raises
``Refused`` with the error, and the connection decides its scope (link, session, connection).
"""

from __future__ import annotations

from typing import Any

from wsq.core import codec
from wsq.core.addresses import (
    compile_pattern,
    is_sys_address,
    is_valid_address,
    is_valid_pattern,
)
from wsq.core.errors import InvalidFrame, WsqError
from wsq.core.limits import (
    DEFAULT_LEASE_MS,
    MAX_CONFLATE_MS,
    MAX_LEASE_MS,
    MAX_REWIND,
    MAX_STRING_PROP,
    MAX_UINT32,
    MIN_CONFLATE_MS,
    MIN_LEASE_MS,
)
from wsq.core.positions import is_valid_position
from wsq.core.props import PropsError, parse_props
from wsq.protocol.events import PublishItem
from wsq.protocol.state import Link


class Refused(Exception):
    """A frame broke the contract; carries the error for the scope that handles it."""

    def __init__(self, error: WsqError) -> None:
        self.error = error


class BrokenMessage:
    """Stands in the queue for a message that broke the contract as a whole (too
    large, not JSON, not an object or array), so that it is judged after the frames before it."""

    __slots__ = ("error",)

    def __init__(self, error: WsqError) -> None:
        self.error = error


def invalid(description: str) -> Refused:
    return Refused(InvalidFrame(description))


def int_field(frame: dict[str, Any], key: str, lo: int, hi: int, default: int | None = None) -> int:
    value = frame.get(key, default)
    if type(value) is not int or not lo <= value <= hi:
        if key not in frame and default is None:
            raise invalid(f"{frame.get('op')}: '{key}' is required")
        raise invalid(f"{frame.get('op')}: '{key}' must be an integer in {lo}..{hi}")
    return value


def opt_str(value: Any, name: str, limit: int = MAX_STRING_PROP) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise invalid(f"'{name}' must be a string of at most {limit} characters")
    return value


def _prop_name(key: str) -> str:
    return f"'props.{key}'"


def configure_link(link: Link, frame: dict[str, Any]) -> None:
    """Set ``link`` up as its ``attach`` frame asks; ``Refused`` (a link error) for a field
    that breaks the contract."""
    role = frame.get("role")
    if role not in ("receiver", "sender"):
        raise invalid("attach: 'role' must be 'receiver' or 'sender'")
    address = frame.get("address")
    # A $sys. address parses here; whether the token may use it is the gateway's question.
    if not is_valid_address(address) and not is_sys_address(address):
        raise invalid("attach: 'address' must be dot-separated tokens of [A-Za-z0-9_-]")
    assert isinstance(address, str)
    link.address = address
    presence = frame.get("presence", False)
    if not isinstance(presence, bool):
        raise invalid("attach: 'presence' must be a boolean")
    if presence and (role == "sender" or is_sys_address(address)):
        raise invalid("attach: 'presence' is for receivers of a tenant's address")
    link.presence = presence
    if role == "sender":
        return
    mode = frame.get("mode", "copy")
    if mode not in ("copy", "move"):
        raise invalid("attach: 'mode' must be 'copy' or 'move'")
    link.mode = mode
    if mode == "copy":
        from_ = frame.get("from", "$")
        if from_ not in ("$", "^") and not is_valid_position(from_):
            raise invalid("attach: 'from' must be '$', '^' or a position '<ms>-<seq>'")
        link.from_ = from_
        _configure_live_view(link, frame)
    elif "rewind" in frame or "conflate" in frame:
        raise invalid("attach: 'rewind' and 'conflate' are for copy receivers only")
    else:
        group = frame.get("group", "default")
        if not is_valid_address(group):
            raise invalid("attach: 'group' must be tokens of [A-Za-z0-9_-]")
        link.group = group
        link.lease_ms = int_field(frame, "lease", MIN_LEASE_MS, MAX_LEASE_MS, DEFAULT_LEASE_MS)
    subject_filter = frame.get("filter")
    if subject_filter is not None:
        if not isinstance(subject_filter, dict):
            raise invalid("attach: 'filter' must be an object")
        subject = subject_filter.get("subject")
        if subject is not None:
            if not is_valid_pattern(subject):
                raise invalid("attach: 'filter.subject' is not a valid pattern")
            link.filter = compile_pattern(subject)
    settled = frame.get("settled", False)
    if not isinstance(settled, bool):
        raise invalid("attach: 'settled' must be a boolean")
    if settled:
        link.pre_settled = True
        link.prefix = link.prefix.replace('"settled":false', '"settled":true')
    link.credit = int_field(frame, "credit", 0, MAX_UINT32, 0)


def _configure_live_view(link: Link, frame: dict[str, Any]) -> None:
    """A copy receiver's ``rewind`` and ``conflate`` (contract section 5, live views)."""
    if "rewind" in frame:
        if "from" in frame:
            raise invalid("attach: 'rewind' and 'from' are exclusive")
        link.rewind = int_field(frame, "rewind", 1, MAX_REWIND)
    if "conflate" in frame:
        conflate = frame["conflate"]
        if not isinstance(conflate, dict) or conflate.get("by", "subject") != "subject":
            raise invalid('attach: \'conflate\' must be {"ms": M, "by": "subject"}')
        ms = conflate.get("ms")
        if type(ms) is not int or not MIN_CONFLATE_MS <= ms <= MAX_CONFLATE_MS:
            raise invalid(
                f"attach: 'conflate.ms' must be an integer in {MIN_CONFLATE_MS}..{MAX_CONFLATE_MS}"
            )
        link.conflate_ms = ms


def publish_item(frame: dict[str, Any]) -> PublishItem:
    """One client transfer as a message to publish; a prop that breaks the contract makes it
    an item with ``error`` (answered ``rejected``), never a link or session error."""
    delivery: int = frame["delivery"]
    settled = frame.get("settled", False)
    try:
        body = codec.dumps(frame.get("body"))
    except (TypeError, ValueError):
        # Decoding admits a little more nesting than encoding does.
        return PublishItem(delivery, settled is True, "null", error="'body' is nested too deeply")
    if not isinstance(settled, bool):
        return PublishItem(delivery, False, body, error="'settled' must be a boolean")
    props = frame.get("props")
    if props is None:
        return PublishItem(delivery, settled, body)
    if not isinstance(props, dict):
        return PublishItem(delivery, settled, body, error="'props' must be an object")
    try:
        checked = parse_props(props, _prop_name)
    except PropsError as exc:
        return PublishItem(delivery, settled, body, error=exc.description)
    return PublishItem(delivery, settled, body, checked)
