"""Encoding of deliveries: each message is encoded once, only the per-link head varies.

A transfer on the wire is ``link.prefix + str(delivery) + "," + tail`` where ``tail`` is
``"id":"…","body":…,"props":{…}}``. Tails are cached on the message and shared by every link of
the process; a move-mode tail adds ``redelivered`` to the cached one (a slice, not an encoding).

A broker that stores messages may keep their props pre-encoded (``stored_props``, without ``ts``
and ``expires``, which follow from the position and the ttl) and rebuild the tail by
concatenation when it reads them back (``stored_tail``): the same text as ``message_tail``.

The compact form (a wsq extension, negotiated in ``open``) carries consecutive deliveries of one
link in one ``transfers`` frame: ``{"op":"transfers","ch":…,"handle":…,"settled":…,
"delivery":first,"msgs":[{"id":…,"body":…,"props":{…}},…]}``, the messages numbered
``first``, ``first + 1``, …. Each element of ``msgs`` is ``"{" + tail``: the same cached tail,
so a message is still encoded once for every socket of either form.

The hub hands every live link of a topic the same tails (``SharedTails``). A link that takes
all of them in one compact frame gets a ``SharedFrame``: its own head (up to ``"msgs":[``) and
the batch's messages joined and encoded once (``SharedTails.compact_body``), the same bytes
object for every socket, written as it is after the WebSocket frame's head (wsq.ws_protocol).
On a connection with compact rows (docs/protocol.md) that body is the batch's rows instead
(``SharedTails.rows_body``: what a message shares with the one before left out); a link that
takes part of a batch, or a replay, gets rows of its own (``SharedTails.of`` the messages it
takes), and a batch too long for one frame goes split, each part's rows starting anew
(``rows_frames``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from wsq.core import codec
from wsq.core.messages import Message, stored_props

__all__ = [
    "COMPACT_OP",
    "SharedFrame",
    "SharedTails",
    "compact_frames",
    "compact_head",
    "compact_head_of",
    "copy_tail",
    "message_rows",
    "message_tail",
    "stored_message",
    "stored_props",
    "stored_tail",
    "transfer_head",
]

#: The op of a compact frame: several deliveries of one link.
COMPACT_OP = "transfers"
# What a compact frame adds around its messages after the delivery number: ``,"msgs":[`` and
# the closing ``]}``.
_MSGS_OPEN = ',"msgs":['
_MSGS_AROUND = len(_MSGS_OPEN) + 2


def transfer_head(ch: int, handle: int, pre_settled: bool, op: str = "transfer") -> str:
    """The constant start of every delivery frame of a link, up to its delivery number."""
    settled = "true" if pre_settled else "false"
    return f'{{"op":"{op}","ch":{ch},"handle":{handle},"settled":{settled},"delivery":'


def compact_head(ch: int, handle: int, pre_settled: bool) -> str:
    """``transfer_head`` of the link's compact frames."""
    return transfer_head(ch, handle, pre_settled, COMPACT_OP)


_PLAIN_OPEN = '{"op":"transfer"'
_COMPACT_OPEN = '{"op":"' + COMPACT_OP + '"'


def compact_head_of(prefix: str) -> str:
    """``compact_head`` of the link whose ``transfer_head`` is ``prefix`` (``Link.prefix``): a
    slice, not a formatting, on the fan-out path."""
    return _COMPACT_OPEN + prefix[len(_PLAIN_OPEN) :]


class SharedTails(list[str]):
    """The tails of one broker batch, shared by every live link of its topic: a list, and, built
    on first use, the batch's compact body, ``{tail,{tail,…]}``: what follows ``"msgs":[`` in a
    compact frame of all of them, encoded once for every socket (``compact_body``), and its
    rows body (``rows_body``) where the batch's messages were given (``of``)."""

    __slots__ = ("_body", "_messages", "_rows")

    def __init__(self, tails: Iterable[str] = ()) -> None:
        super().__init__(tails)
        self._body: tuple[bytes, int] | None = None
        self._rows: tuple[bytes, int] | None = None
        self._messages: Sequence[Message] = ()

    @classmethod
    def of(cls, messages: Sequence[Message]) -> SharedTails:
        """The copy-mode tails of ``messages``, which it keeps for the rows body."""
        tails = cls(map(copy_tail, messages))
        tails._messages = messages
        return tails

    @property
    def messages(self) -> Sequence[Message]:
        """The messages given (``of``), else none."""
        return self._messages

    def rows_body(self) -> tuple[bytes, int] | None:
        """The rows body (docs/protocol.md, compact rows) and its length in characters, or None
        when the messages were not given. Encoded once for every socket."""
        rows = self._rows
        if rows is None:
            if not self._messages:
                return None
            text = ",".join(message_rows(self._messages)) + "]}"
            rows = self._rows = (text.encode(), len(text))
        return rows

    def compact_body(self) -> tuple[bytes, int]:
        """The compact body (UTF-8) and its length in characters (what the outbox counts).
        The tails are not to change once it is built."""
        body = self._body
        if body is None:
            text = "{" + ",{".join(self) + "]}"
            body = self._body = (text.encode(), len(text))
        return body


class SharedFrame:
    """A compact frame of a whole ``SharedTails`` batch on one link: ``head`` (this link's,
    encoded, up to ``"msgs":[``) and ``body`` (the batch's ``compact_body``, the same object for
    every link). ``len()`` is its length in characters, as the outbox counts frames."""

    __slots__ = ("body", "chars", "head")

    def __init__(self, head: str, body: bytes, body_chars: int) -> None:
        self.head = head.encode()  # ASCII: the op, numbers and the settled flag
        self.body = body
        self.chars = len(head) + body_chars

    def __len__(self) -> int:
        return self.chars

    def text(self) -> str:
        """The frame as text (where it is not written as bytes: tests, the writer task)."""
        return (self.head + self.body).decode()


def shared_frame(
    head: str, first: int, tails: SharedTails, max_chars: int, rows: bool = False
) -> SharedFrame | None:
    """The compact frame of all of ``tails`` numbered from ``first`` on the link whose
    ``compact_head`` is ``head``, its messages shared with every other link (as rows where
    ``rows`` and the batch has them); None when it is longer than ``max_chars``
    (``compact_frames`` splits it then)."""
    shared = tails.rows_body() if rows else None
    body, body_chars = tails.compact_body() if shared is None else shared
    start = head + str(first) + _MSGS_OPEN
    if len(start) + body_chars > max_chars:
        return None
    return SharedFrame(start, body, body_chars)


def compact_frames(head: str, first: int, tails: Sequence[str], max_chars: int) -> list[str]:
    """Deliveries ``first``, ``first + 1``, … of the cached ``tails`` (in order) as compact
    frames of at most ``max_chars`` each (a lone message that is larger goes alone): as few
    frames as the limit allows, each message's text copied once into its frame."""
    n = len(tails)
    if not n:
        return []
    # The common case (everything fits) needs no walk over the messages.
    if len(head) + len(str(first)) + _MSGS_AROUND - 1 + sum(map(len, tails)) + 2 * n <= max_chars:
        return [_compact_frame(head, first, tails)]
    return [
        _compact_frame(head, first + start, tails[start:end])
        for start, end in _frame_ranges(head, first, tails, max_chars)
    ]


def rows_frames(head: str, first: int, tails: SharedTails, max_chars: int) -> list[str]:
    """``compact_frames`` of the messages of ``tails`` (``SharedTails.of``) as rows: cut where
    the object form is (a row is never longer than its object, nor a frame of rows than the
    frame of their objects), each frame's rows starting anew with an id and props."""
    messages = tails.messages
    return [
        head + str(first + start) + _MSGS_OPEN + ",".join(message_rows(messages[start:end])) + "]}"
        for start, end in _frame_ranges(head, first, tails, max_chars)
    ]


def _frame_ranges(
    head: str, first: int, tails: Sequence[str], max_chars: int
) -> Iterator[tuple[int, int]]:
    """(start, end) of each of the fewest compact frames of at most ``max_chars`` that hold
    ``tails`` in order (a lone message that is larger goes alone)."""
    n = len(tails)
    start = 0
    while start < n:
        # A frame of k messages: the head, the number, the brackets, and each "{" + tail with
        # a comma between (k - 1 commas and k braces: 2 characters per message, less one).
        size = len(head) + len(str(first + start)) + _MSGS_AROUND - 1
        end = start
        while end < n:
            grown = size + len(tails[end]) + 2
            if grown > max_chars and end > start:
                break
            size = grown
            end += 1
        yield start, end
        start = end


def _compact_frame(head: str, first: int, tails: Sequence[str]) -> str:
    """One compact frame, the messages' text copied once: the frame's start goes onto the first
    tail and its end onto the last (small copies) instead of around the joined text, which
    would copy all of it twice more."""
    parts = list(tails)
    parts[0] = head + str(first) + _MSGS_OPEN + "{" + parts[0]
    parts[-1] += "]}"
    return ",{".join(parts)


#: A ``[body]`` row says the previous id's sequence plus one; the JS client reads it exactly
#: only below 2^53.
_MAX_NEXT_SEQ = 2**53 - 1


def message_rows(messages: Sequence[Message]) -> list[str]:
    """The compact rows of copy-mode deliveries of ``messages`` in one frame, in order: the
    first ``[id,body,props]``, each next one leaving out the props (``[id,body]``) when they
    are the previous one's, and the id too (``[body]``) when it is also the previous one's
    sequence plus one. Sliced out of the cached tails, not encoded."""
    rows: list[str] = []
    last_props = ""
    last_ms = ""
    last_seq = -1
    for m in messages:
        body, props = m.wire_parts(copy_tail(m))
        ms, _, seq_text = m.id.partition("-")
        seq = int(seq_text)
        if props != last_props:
            rows.append('["' + m.id + '",' + body + "," + props + "]")
            last_props = props
        elif ms == last_ms and seq == last_seq + 1 and seq <= _MAX_NEXT_SEQ:
            rows.append("[" + body + "]")
        else:
            rows.append('["' + m.id + '",' + body + "]")
        last_ms = ms
        last_seq = seq
    return rows


def message_tail(message: Message, redelivered: int | None = None) -> str:
    """The tail of a delivery of ``message``; ``redelivered`` for a move-mode delivery."""
    tail = copy_tail(message)
    if redelivered is None:
        return tail
    # The cached tail ends with the props' and the transfer's closing braces.
    return tail[:-2] + ',"redelivered":' + str(redelivered) + "}}"


def copy_tail(message: Message) -> str:
    """The cached tail of a delivery (computed on first use, then the message's only copy of its
    body and props: ``Message.hold_in_wire``)."""
    tail = message.wire
    if tail is None:
        tail = (
            '"id":"'
            + message.id
            + '","body":'
            + message.body
            + ',"props":'
            + codec.dumps(message.props())
            + "}"
        )
        message.hold_in_wire(tail)
    return tail


def stored_tail(id_: str, ms: str, body: str, props: str, expires_at: int | None) -> str:
    """``message_tail`` of a stored message, from its id, the id's ms part, its body's JSON
    text and its ``stored_props``: concatenated, not encoded."""
    head = '"id":"' + id_ + '","body":' + body + ',"props":{"ts":' + ms
    rest = props[1:-1]
    if rest:
        head += "," + rest
    if expires_at is not None:
        head += ',"expires":' + str(expires_at)
    return head + "}}"


def stored_message(
    id_: str,
    body: str,
    props: str,
    subject: str | None,
    ttl_ms: int | None,
    size: int | None = None,
) -> Message:
    """A stored message from its id, its body's JSON text and its ``stored_props``: its wire
    tail concatenated (never encoded), which holds body and props from then on. ``size``: its
    ``stored_size`` where the broker counted it."""
    ms_text, _, seq = id_.partition("-")
    ms = int(ms_text)
    expires_at = None if ttl_ms is None else ms + ttl_ms
    return Message(
        id_,
        body,
        ts=ms,
        publisher="",
        subject=subject,
        expires_at=expires_at,
        pos=(ms, int(seq)),
        wire=stored_tail(id_, ms_text, body, props, expires_at),
        size=size,
    )
