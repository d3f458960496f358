"""The server's outgoing frames of one connection: queued as text, packed into WebSocket messages.

``OutgoingFrames`` is the half of ``ServerConnection`` that queues frames (``_emit``) and hands
them to the writer in batches of at most a given size: as text (``next_message``) or as the
UTF-8 pieces to write one after the other (``next_output``, the gateway's writer: a compact
frame's shared body, ``wsq.core.wire.SharedFrame``, goes to every socket as the same bytes,
never copied into a text of its own). ``out_bytes`` counts what waits (in characters), which is
what backpressure looks at.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from wsq.core import codec
from wsq.core.wire import SharedFrame
from wsq.protocol.figures import Counting, Figures
from wsq.protocol.state import Link, LinkState

#: What the outbox holds: frames as text, or compact frames with a shared body.
Frame = str | SharedFrame


def _batch(frames: list[str]) -> str:
    """``[f1,f2,…]`` with one copy of the frames (the list is consumed): the brackets go onto
    the first and last frame instead of around the joined text, which would copy it twice."""
    frames[0] = "[" + frames[0]
    frames[-1] += "]"
    return ",".join(frames)


def _pieces(frames: list[Frame]) -> list[bytes]:
    """``[f1,f2,…]`` as UTF-8 pieces to write in order: the text around and between shared
    bodies encoded (with the heads of their frames), each shared body as it is."""
    pieces: list[bytes] = []
    texts: list[str] = []
    sep = "["
    for frame in frames:
        texts.append(sep)
        if type(frame) is str:
            texts.append(frame)
        else:
            assert isinstance(frame, SharedFrame)
            pieces.append("".join(texts).encode() + frame.head)
            pieces.append(frame.body)
            texts = []
        sep = ","
    texts.append("]")
    pieces.append("".join(texts).encode())
    return pieces


class OutgoingFrames(Counting):
    """Frames waiting to be written, and a heartbeat asked for. Every change of ``out_bytes``
    is the process's ``figures.outbox_bytes`` too (wsq.protocol.figures)."""

    #: How many of the queued frames are ``SharedFrame``s (an attribute of the instance only
    #: once it has queued one: a connection of the plain form carries none).
    _shared = 0

    def __init__(self, on_output: Callable[[], None] | None, figures: Figures | None) -> None:
        self._init_figures(figures)
        self._out: list[Frame] = []
        self.out_bytes = 0
        self._heartbeat_due = False
        # Called when output appears where there was none (the writer wakes up).
        self._on_output = on_output

    def _max_message_bytes(self) -> int:
        """The largest message to write when the writer names no size (``max_frame_bytes``)."""
        raise NotImplementedError

    def _emit(self, frame: dict[str, Any]) -> None:
        self._emit_raw(codec.dumps(frame))

    def _emit_raw(self, text: str) -> None:
        out = self._out
        out.append(text)
        n = len(text)
        self.out_bytes += n
        self.figures.outbox_bytes += n
        if len(out) == 1 and self._on_output is not None:
            self._on_output()

    @property
    def has_output(self) -> bool:
        return bool(self._out) or self._heartbeat_due

    def _ask_heartbeat(self) -> None:
        """Ask for an empty batch ``[]`` to be sent, unless a frame goes out anyway."""
        if not self._out and not self._heartbeat_due:
            self._heartbeat_due = True
            if self._on_output is not None:
                self._on_output()

    def _take(self, max_bytes: int | None) -> tuple[list[Frame], int] | None:
        """The queued frames of the next WebSocket message (at most ``max_bytes`` as a batch; a
        lone larger frame goes alone) and how many of them are shared; None when none waits.

        The writer takes one message at a time, so ``out_bytes`` keeps counting everything not
        yet handed to the transport: it is what backpressure looks at.
        """
        out = self._out
        if not out:
            return None
        self._heartbeat_due = False
        n = len(out)
        if n == 1 or self.out_bytes + n + 1 <= (max_bytes or self._max_message_bytes()):
            # A batch of k frames takes their bytes plus k + 1 characters ("[", "]", the
            # commas). out_bytes is exactly the bytes queued, so the common case (everything
            # fits) needs no walk over the frames.
            self._out = []
            self.figures.outbox_bytes -= self.out_bytes
            self.out_bytes = 0
            chunk = out
        else:
            limit = max_bytes or self._max_message_bytes()
            # The longest prefix that fits (at least one frame): start from the estimate by the
            # mean frame size, then step; frames of similar size need a step or two.
            k = max(1, min(n, limit * n // (self.out_bytes + n)))
            size = sum(map(len, out[:k])) + k + 1
            while k > 1 and size > limit:
                k -= 1
                size -= len(out[k]) + 1
            while k < n and size + len(out[k]) + 1 <= limit:
                size += len(out[k]) + 1
                k += 1
            chunk = out[:k]
            del out[:k]
            taken = size - k - 1
            self.out_bytes -= taken
            self.figures.outbox_bytes -= taken
        shared = 0
        if self._shared:
            shared = sum(1 for frame in chunk if type(frame) is not str)
            self._shared -= shared
        return chunk, shared

    def _heartbeat(self) -> bool:
        """Whether an empty batch is due (nothing else queued); it is taken."""
        due = self._heartbeat_due
        self._heartbeat_due = False
        return due

    def next_message(self, max_bytes: int | None = None) -> str | None:
        """The next WebSocket message to write, as text: queued frames packed into one batch of
        at most ``max_bytes`` (a lone larger frame goes alone); None when nothing is queued."""
        taken = self._take(max_bytes)
        if taken is None:
            return "[]" if self._heartbeat() else None
        chunk, shared = taken
        if shared:
            chunk = [f if type(f) is str else cast(SharedFrame, f).text() for f in chunk]
        texts = cast(list[str], chunk)
        return texts[0] if len(texts) == 1 else _batch(texts)

    def next_output(self, max_bytes: int | None = None) -> list[bytes] | None:
        """``next_message`` as the UTF-8 pieces to write one after the other (what the
        gateway's writer takes): a shared frame's body is one of them, as it is."""
        taken = self._take(max_bytes)
        if taken is None:
            return [b"[]"] if self._heartbeat() else None
        chunk, shared = taken
        if len(chunk) == 1:
            frame = chunk[0]
            if type(frame) is str:
                return [frame.encode()]
            assert isinstance(frame, SharedFrame)
            return [frame.head, frame.body]
        if shared:
            return _pieces(chunk)
        return [_batch(cast(list[str], chunk)).encode()]

    def data_to_send(self, max_bytes: int | None = None) -> list[str]:
        """Every WebSocket message queued now (see ``next_message``)."""
        messages: list[str] = []
        while (text := self.next_message(max_bytes)) is not None:
            messages.append(text)
        return messages

    def send_presence(self, link: Link, body: dict[str, Any]) -> None:
        """A ``presence`` frame on an attached link: its room's snapshot, a join or a leave."""
        if link.state is LinkState.ATTACHED:
            self._emit({"op": "presence", "ch": link.ch, "handle": link.handle, **body})
