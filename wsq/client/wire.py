"""The wsq.v1 wire as far as the client needs it (docs/protocol.md): the frames it sends, the
checks on what the server sends, and the options of a subscription. No state and no I/O: the
socket is ``connection.py``'s; the grammar (addresses, patterns, positions, limits) is the core's.

A server frame that breaks the contract raises ``Violation``; the connection then closes with
``wsq:invalid-frame`` and the client reconnects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeGuard

from wsq.core import codec
from wsq.core.addresses import is_sys_address, is_valid_address, is_valid_pattern
from wsq.core.limits import (
    MAX_CHANNEL,
    MAX_CONFLATE_MS,
    MAX_IDLE_MS,
    MAX_LEASE_MS,
    MAX_REWIND,
    MAX_STRING_PROP,
    MAX_TTL_MS,
    MAX_UINT32,
    MIN_CONFLATE_MS,
    MIN_IDLE_MS,
    MIN_LEASE_MS,
)
from wsq.core.positions import parse_position

from .errors import ClientError

SUBPROTOCOL = "wsq.v1"
DEFAULT_MAX_FRAME_BYTES = 1_048_576
#: Room for a transfer frame's fields around the body and props when sizing a publish.
TRANSFER_OVERHEAD = 128
#: Messages a client should never have to take from a gateway in one WebSocket message: bounds
#: what a broken or hostile server can make the client buffer (64 MiB).
MAX_MESSAGE_BYTES = 64 * 1_048_576
MAX_CREDIT = 1_000_000

Outcome = Literal["accepted", "released", "rejected", "modified"]
OUTCOMES: frozenset[str] = frozenset({"accepted", "released", "rejected", "modified"})
#: A link refused for one of these will be refused again: no retry, the user is told.
FINAL_LINK_CONDITIONS = frozenset({"wsq:forbidden", "wsq:invalid-frame", "wsq:not-found"})
AUTH_CONDITIONS = frozenset({"wsq:unauthorized", "wsq:token-expired"})
SERVER_OPS = frozenset(
    {
        "open",
        "begin",
        "end",
        "attach",
        "flow",
        "transfer",
        "transfers",
        "disposition",
        "detach",
        "refresh",
    }
    | {"close", "presence"}
)


class Violation(Exception):
    """The server broke the contract (the text says how)."""


def is_uint(value: object, maximum: int = 2**53 - 1) -> TypeGuard[int]:
    return type(value) is int and 0 <= value <= maximum


def is_subscribable(value: object) -> bool:
    """What a subscription may name: an address, or one of the gateway's own ($sys.…)."""
    return is_valid_address(value) or is_sys_address(value)


def is_position(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        parse_position(value)
    except ValueError:
        return False
    return True


def position_key(value: str) -> tuple[int, int]:
    """A position as a sortable key (positions compare as numbers, not as text)."""
    return parse_position(value)


def check_idle(idle_ms: int) -> int:
    if not is_uint(idle_ms) or (idle_ms != 0 and not MIN_IDLE_MS <= idle_ms <= MAX_IDLE_MS):
        raise ValueError(f"idle: 0 or {MIN_IDLE_MS}..{MAX_IDLE_MS} ms")
    return idle_ms


# -- subscription options ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinkOptions:
    """A receiver link's options, checked (``subscribe_options``)."""

    mode: Literal["copy", "move"] = "copy"
    from_: str = "$"
    rewind: int | None = None
    conflate_ms: int | None = None
    filter: str | None = None
    group: str | None = None
    lease_ms: int | None = None
    credit: int | None = None
    settled: bool = False
    presence: bool = False


def subscribe_options(
    *,
    mode: str = "copy",
    from_: str | None = None,
    rewind: int | None = None,
    conflate: int | None = None,
    filter: str | None = None,
    group: str | None = None,
    lease: float | None = None,
    credit: int | None = None,
    settled: bool = False,
    presence: bool = False,
) -> LinkOptions:
    """The options of ``Client.subscribe`` / ``consume`` checked; ``ValueError`` names the
    first bad one (before anything reaches the wire). ``lease`` in seconds, ``conflate`` in ms."""
    if mode not in ("copy", "move"):
        raise ValueError('mode: "copy" or "move"')
    if from_ is not None and from_ not in ("$", "^") and not is_position(from_):
        raise ValueError('from_: "$", "^" or a position "<ms>-<seq>"')
    if rewind is not None:
        if not (is_uint(rewind, MAX_REWIND) and rewind >= 1):
            raise ValueError(f"rewind: 1..{MAX_REWIND} messages")
        if from_ is not None:
            raise ValueError("rewind and from_ are exclusive")
    if conflate is not None and not (
        is_uint(conflate, MAX_CONFLATE_MS) and conflate >= MIN_CONFLATE_MS
    ):
        raise ValueError(f"conflate: {MIN_CONFLATE_MS}..{MAX_CONFLATE_MS} ms")
    if (rewind is not None or conflate is not None) and mode == "move":
        raise ValueError("rewind and conflate: copy mode only")
    if filter is not None and not is_valid_pattern(filter):
        raise ValueError("filter: a subject pattern")
    if group is not None and not is_valid_address(group):
        raise ValueError("group: an address-like name")
    lease_ms = None
    if lease is not None:
        lease_ms = round(lease * 1000)
        if not MIN_LEASE_MS <= lease_ms <= MAX_LEASE_MS:
            raise ValueError(f"lease: {MIN_LEASE_MS / 1000}..{MAX_LEASE_MS / 1000} s")
    if credit is not None and not (is_uint(credit, MAX_CREDIT) and credit >= 1):
        raise ValueError(f"credit: 1..{MAX_CREDIT}")
    return LinkOptions(
        mode="move" if mode == "move" else "copy",
        from_=from_ or "$",
        rewind=rewind,
        conflate_ms=conflate,
        filter=filter,
        group=group,
        lease_ms=lease_ms,
        credit=credit,
        settled=settled,
        presence=presence is True,
    )


# -- what the client sends -----------------------------------------------------------------


def open_frame(token: str, idle_ms: int, client: str, compact: bool = True) -> dict[str, Any]:
    """``compact``: ask for the compact delivery form and its rows (a gateway without either
    ignores it)."""
    return {
        "op": "open",
        "token": token,
        "idle": idle_ms,
        "client": client,
        "compact": compact,
        "rows": compact,
    }


def receiver_frame(
    ch: int, handle: int, address: str, opts: LinkOptions, *, credit: int, resume: str | None
) -> dict[str, Any]:
    """A receiver attach. ``resume``: the last position received; a re-attach goes on after it
    (and does not rewind again)."""
    f: dict[str, Any] = {"op": "attach", "ch": ch, "handle": handle, "role": "receiver"}
    f["address"] = address
    f["mode"] = opts.mode
    if opts.mode == "copy":
        if resume is None and opts.rewind is not None:
            f["rewind"] = opts.rewind  # exclusive with from
        else:
            f["from"] = resume or opts.from_
        if opts.conflate_ms is not None:
            f["conflate"] = {"ms": opts.conflate_ms, "by": "subject"}
    else:
        if opts.group is not None:
            f["group"] = opts.group
        if opts.lease_ms is not None:
            f["lease"] = opts.lease_ms
    if opts.filter is not None:
        f["filter"] = {"subject": opts.filter}
    if opts.settled:
        f["settled"] = True
    if opts.presence:
        f["presence"] = True
    f["credit"] = credit
    return f


def sender_frame(ch: int, handle: int, address: str) -> dict[str, Any]:
    return {"op": "attach", "ch": ch, "handle": handle, "role": "sender", "address": address}


def publish_tail(
    address: str,
    body: Any,
    *,
    message_id: str,
    subject: str | None = None,
    ttl_ms: int | None = None,
    content_type: str | None = None,
    headers: Mapping[str, Any] | None = None,
) -> str:
    """A publish's body and props, checked and encoded once: a transfer frame's JSON without
    its ``{`` (so a retry on another socket or session costs no second encoding)."""
    if not is_valid_address(address):
        raise ClientError(
            "wsq:invalid-frame", f"not an address: {address!r}", scope="message", address=address
        )
    props: dict[str, Any] = {}
    if subject is not None:
        if not is_valid_address(subject):
            raise ClientError(
                "wsq:invalid-frame",
                "subject: an address-like name",
                scope="message",
                address=address,
            )
        props["subject"] = subject
    if not isinstance(message_id, str) or not 0 < len(message_id) <= MAX_STRING_PROP:
        raise ValueError(f"message_id: a string of 1..{MAX_STRING_PROP} characters")
    props["message_id"] = message_id
    if ttl_ms is not None:
        if not (is_uint(ttl_ms, MAX_TTL_MS) and ttl_ms >= 1):
            raise ValueError(f"ttl: 0.001..{MAX_TTL_MS // 1000} s")
        props["ttl"] = ttl_ms
    if content_type is not None:
        props["content_type"] = str(content_type)[:MAX_STRING_PROP]
    if headers is not None:
        if not isinstance(headers, Mapping):
            raise ValueError("headers: a mapping")
        props["headers"] = dict(headers)
    try:
        text = codec.dumps({"body": body, "props": props})
    except (TypeError, ValueError) as exc:
        raise ClientError(
            "wsq:invalid-frame", f"the body is not JSON: {exc}", scope="message", address=address
        ) from None
    return text[1:]


def transfer_text(ch: int, handle: int, delivery: int, tail: str) -> str:
    """A client transfer around a publish's encoded tail."""
    return (
        f'{{"op":"transfer","ch":{ch},"handle":{handle},"delivery":{delivery},'
        f'"settled":false,{tail}'
    )


# -- what the server sends -----------------------------------------------------------------


def parse_message(data: str | bytes) -> list[Any]:
    """The frames of one WebSocket message: a frame, or a batch (``[]`` is a heartbeat)."""
    if not isinstance(data, str):
        raise Violation("a binary message")
    try:
        value = codec.loads(data)
    except codec.DecodeError:
        raise Violation("a message that is not JSON") from None
    return value if isinstance(value, list) else [value]


def check_frame(f: Any, opened: bool) -> dict[str, Any]:
    """A frame with a known op; before the server's open, only ``open`` or ``close``."""
    if not isinstance(f, dict) or not isinstance(f.get("op"), str):
        raise Violation("a frame without an op")
    op = f["op"]
    if op not in SERVER_OPS:
        raise Violation(f"an unknown op {op[:64]!r}")
    if not opened and op not in ("open", "close"):
        raise Violation(f"{op!r} before open")
    return f


@dataclass(frozen=True, slots=True)
class OpenInfo:
    """The server's ``open`` answer: what the client tells the user and obeys."""

    node: str | None
    tenant: str | None
    sub: str | None
    exp: int | None
    idle_ms: int
    max_sessions: int
    max_frame_bytes: int
    #: The gateway sends the compact delivery form (it answered ``"compact": true``).
    compact: bool = False
    #: ... and may send its rows (it answered ``"rows": true``).
    rows: bool = False


def read_open(f: Mapping[str, Any]) -> OpenInfo:
    def num(key: str, fallback: int, minimum: int) -> int:
        v = f.get(key)
        return v if is_uint(v) and v >= minimum else fallback

    def text(key: str) -> str | None:
        v = f.get(key)
        return v[:256] if isinstance(v, str) else None

    exp = f.get("exp")
    return OpenInfo(
        node=text("node"),
        tenant=text("tenant"),
        sub=text("sub"),
        exp=exp if is_uint(exp) else None,
        idle_ms=num("idle", 0, 0),
        max_sessions=num("max_sessions", 1024, 1),
        max_frame_bytes=min(
            num("max_frame_bytes", DEFAULT_MAX_FRAME_BYTES, 1024), MAX_MESSAGE_BYTES
        ),
        compact=f.get("compact") is True,
        rows=f.get("rows") is True,
    )


def channel(f: Mapping[str, Any]) -> int:
    ch = f.get("ch")
    if not is_uint(ch, MAX_CHANNEL):
        raise Violation(f"{f['op']!r} without a valid ch")
    return ch


def handle(f: Mapping[str, Any]) -> int:
    h = f.get("handle")
    if not is_uint(h, MAX_UINT32):
        raise Violation(f"{f['op']!r} without a valid handle")
    return h


def flow_credit(f: Mapping[str, Any]) -> int:
    credit = f.get("credit")
    if not is_uint(credit, MAX_UINT32):
        raise Violation("a flow without a valid credit")
    return credit


def check_transfer(f: Mapping[str, Any]) -> None:
    if not is_position(f.get("id")):
        raise Violation("a transfer without a valid id")
    if not is_uint(f.get("delivery")):
        raise Violation("a transfer without a valid delivery number")


def expand_transfers(f: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A compact frame (``transfers``) as the per-message transfers it stands for, numbered from
    its ``delivery``; each is checked as a transfer when it is taken."""
    first = f.get("delivery")
    msgs = f.get("msgs")
    if not is_uint(first):
        raise Violation("transfers without a valid delivery number")
    if not isinstance(msgs, list) or not msgs:
        raise Violation("transfers without msgs")
    if not is_uint(first + len(msgs) - 1):
        raise Violation("transfers numbered too far")
    out: list[dict[str, Any]] = []
    settled = f.get("settled")
    # Compact rows (docs/protocol.md 6.4) leave out what an element shares with the one before.
    last_id: Any = None
    last_props: Any = None
    for i, m in enumerate(msgs):
        if isinstance(m, dict):
            t = {**m, "delivery": first + i, "settled": settled}
        elif isinstance(m, list):
            n = len(m)
            if n == 3:
                id_, body, props = m
            elif n in (1, 2) and isinstance(last_props, dict):
                props = dict(last_props)  # a copy of its own for each message's handler
                if n == 2:
                    id_, body = m
                else:
                    (body,) = m
                    id_ = next_position(last_id)
            else:
                raise Violation("transfers with a row of no message")
            if not isinstance(props, dict):
                raise Violation("transfers with a row whose props are not an object")
            t = {"id": id_, "body": body, "props": props, "delivery": first + i, "settled": settled}
        else:
            raise Violation("transfers with a message that is neither an object nor a row")
        last_id = t.get("id")
        last_props = t.get("props")
        out.append(t)
    return out


def next_position(position: object) -> str:
    """The position a ``[body]`` row stands for: ``position``'s sequence one higher."""
    if not is_position(position):
        raise Violation("transfers with a row after a message without a valid id")
    assert isinstance(position, str)
    _, seq = parse_position(position)
    return f"{position.partition('-')[0]}-{seq + 1}"


def disposition_range(f: Mapping[str, Any]) -> tuple[int, int]:
    """``first`` and ``last`` of a disposition (``last`` defaults to ``first``)."""
    first = f.get("first")
    if not is_uint(first):
        raise Violation("a disposition without first")
    last = f.get("last", first)
    if not is_uint(last) or last < first:
        raise Violation("a disposition with a bad last")
    return first, last


def from_wire(error: object, scope: Any, address: str | None = None) -> ClientError:
    """A ``ClientError`` from an error the server sent, bounded in size."""
    condition = error.get("condition") if isinstance(error, dict) else None
    description = error.get("description") if isinstance(error, dict) else None
    return ClientError(
        condition[:256] if isinstance(condition, str) else "wsq:internal-error",
        description[:4096] if isinstance(description, str) else "",
        scope=scope,
        address=address,
    )
