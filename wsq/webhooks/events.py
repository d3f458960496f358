"""What a webhook is told: the event types and the body of one event.

The body is the Standard Webhooks shape: ``{"type", "timestamp", "data"}``. ``data`` names the
tenant, the node and the connection; never a token nor a message body.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

CONNECTION_OPENED = "connection.opened"
CONNECTION_CLOSED = "connection.closed"
#: Every type a ``[tenants.X] webhooks`` entry may ask for in ``events``.
EVENT_TYPES: tuple[str, ...] = (CONNECTION_OPENED, CONNECTION_CLOSED)


def iso_time(now: float) -> str:
    """``now`` (Unix s) as RFC 3339 UTC with milliseconds: ``2026-12-03T05:20:00.123Z``."""
    return datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def event_body(event_type: str, data: dict[str, Any], now: float) -> bytes:
    """The JSON body of one event that happened at ``now`` (Unix s)."""
    return orjson.dumps({"type": event_type, "timestamp": iso_time(now), "data": data})
