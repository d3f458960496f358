"""The server's outgoing frames of one connection: queued as text, packed into WebSocket messages.

``OutgoingFrames`` is the half of ``ServerConnection`` that queues frames (``_emit``) and hands
them to the writer in batches of at most a given size (``next_message``); ``out_bytes`` counts
what waits, which is what backpressure looks at.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from wsq.core import codec
from wsq.protocol.figures import Counting, Figures
from wsq.protocol.state import Link, LinkState


def _batch(frames: list[str]) -> str:
    """``[f1,f2,…]`` with one copy of the frames (the list is consumed): the brackets go onto
    the first and last frame instead of around the joined text, which would copy it twice."""
    frames[0] = "[" + frames[0]
    frames[-1] += "]"
    return ",".join(frames)


class OutgoingFrames(Counting):
    """Frames waiting to be written, and a heartbeat asked for. Every change of ``out_bytes``
    is the process's ``figures.outbox_bytes`` too (wsq.protocol.figures)."""

    def __init__(self, on_output: Callable[[], None] | None, figures: Figures | None) -> None:
        self._init_figures(figures)
        self._out: list[str] = []
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

    def next_message(self, max_bytes: int | None = None) -> str | None:
        """The next WebSocket message to write: queued frames packed into one batch of at most
        ``max_bytes`` (a lone larger frame goes alone); None when nothing is queued.

        The writer takes one message at a time, so ``out_bytes`` keeps counting everything not
        yet handed to the transport: it is what backpressure looks at.
        """
        out = self._out
        if not out:
            if self._heartbeat_due:
                self._heartbeat_due = False
                return "[]"
            return None
        self._heartbeat_due = False
        if len(out) == 1:
            self._out = []
            self.figures.outbox_bytes -= self.out_bytes
            self.out_bytes = 0
            return out[0]
        limit = max_bytes or self._max_message_bytes()
        n = len(out)
        # A batch of k frames takes their bytes plus k + 1 characters ("[", "]", the commas).
        # out_bytes is exactly the bytes queued, so the common case (everything fits) needs no
        # walk over the frames.
        if self.out_bytes + n + 1 <= limit:
            self._out = []
            self.figures.outbox_bytes -= self.out_bytes
            self.out_bytes = 0
            return _batch(out)
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
        return chunk[0] if k == 1 else _batch(chunk)

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
