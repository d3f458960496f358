"""What a webhook is told: the event types and the body of one event.

The body is the Standard Webhooks shape: ``{"type", "timestamp", "data"}``. ``data`` names the
tenant, the node and what the event is about (a connection, an address, a member, a message's
position); never a token nor a message body (docs/webhooks.md lists each type's ``data``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

CONNECTION_OPENED = "connection.opened"
CONNECTION_CLOSED = "connection.closed"
#: The first receiver attached on an address (over every node) / the last one gone.
ADDRESS_OCCUPIED = "address.occupied"
ADDRESS_VACATED = "address.vacated"
#: A ``"presence": true`` link joined / left its address's members.
PRESENCE_JOIN = "presence.join"
PRESENCE_LEAVE = "presence.leave"
#: A queue message was copied to the tenant's dead-letter address.
MESSAGE_DEAD_LETTERED = "message.dead_lettered"
#: Every type a ``[tenants.X] webhooks`` entry may ask for in ``events``.
EVENT_TYPES: tuple[str, ...] = (
    CONNECTION_OPENED,
    CONNECTION_CLOSED,
    ADDRESS_OCCUPIED,
    ADDRESS_VACATED,
    PRESENCE_JOIN,
    PRESENCE_LEAVE,
    MESSAGE_DEAD_LETTERED,
)
#: The events that need the cluster-wide occupancy of addresses counted (``wsq.hub.occupancy``).
OCCUPANCY_EVENTS: tuple[str, ...] = (ADDRESS_OCCUPIED, ADDRESS_VACATED, PRESENCE_LEAVE)


def iso_time(now: float) -> str:
    """``now`` (Unix s) as RFC 3339 UTC with milliseconds: ``2026-12-03T05:20:00.123Z``."""
    return datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def event_body(event_type: str, data: dict[str, Any], now: float) -> bytes:
    """The JSON body of one event that happened at ``now`` (Unix s)."""
    return orjson.dumps({"type": event_type, "timestamp": iso_time(now), "data": data})
