"""What a debug log may say of a wsq.v1 WebSocket message: its size and, per frame, the op, the
channel, the handle and the delivery numbers. Never a body, a token, props, an address or an
error's description, nor anything a client wrote that is not one of those numbers or a known op:
logs are read by more people than sockets are, and kept longer.
"""

from __future__ import annotations

from typing import Any

from wsq.core import codec

#: Ops a log names; any other is shown as ``?`` (an op is the client's text).
KNOWN_OPS = frozenset(
    {
        "open",
        "close",
        "refresh",
        "begin",
        "end",
        "attach",
        "detach",
        "flow",
        "transfer",
        "disposition",
        "presence",
    }
)
#: Frames of one batch described; the rest are counted.
MAX_FRAMES = 8
_FIELDS = ("ch", "handle", "delivery", "first", "last")


def _number(value: Any) -> bool:
    return type(value) is int


def describe_frame(frame: Any) -> str:
    if not isinstance(frame, dict):
        return "?"
    op = frame.get("op")
    parts = [op if isinstance(op, str) and op in KNOWN_OPS else "?"]
    parts.extend(f"{name}={frame[name]}" for name in _FIELDS if _number(frame.get(name)))
    return " ".join(parts)


def describe_message(text: str) -> str:
    """``text`` (one WebSocket message) for a debug log, without its content."""
    size = f"{len(text)} chars"
    try:
        value = codec.loads(text)
    except Exception:
        return f"{size}, not JSON"
    if value == []:
        return f"{size}: heartbeat"
    frames = value if isinstance(value, list) else [value]
    shown = ", ".join(describe_frame(frame) for frame in frames[:MAX_FRAMES])
    more = f", +{len(frames) - MAX_FRAMES} more" if len(frames) > MAX_FRAMES else ""
    return f"{size}, {len(frames)} frame(s): {shown}{more}"
