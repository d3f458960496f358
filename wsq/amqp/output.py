"""What the AMQP connection (``wsq.amqp.connection``) keeps beside wsq.v1's state: its output
queue of encoded frames, and the links and sessions with what AMQP adds to wsq's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from wsq.amqp import frames as F
from wsq.protocol.figures import Counting, Counts, Figures
from wsq.protocol.state import Link, Role, Session


class AmqpLink(Link):
    """A wsq link with what AMQP adds: its name, delivery count and the client's terminus."""

    __slots__ = ("applied", "attach_fields", "cbs", "delivery_count", "drain", "incoming", "name")

    def __init__(self, session: Session, handle: int, role: Role, name: str) -> None:
        super().__init__(session, handle, role, "")
        self.name = name
        self.delivery_count = 0
        self.attach_fields: list[Any] = []
        self.applied: dict[Any, Any] = {}
        # A client transfer that spans frames: delivery id, settled, its payload so far.
        self.incoming: tuple[int, bool, list[bytes], int] | None = None
        # A link to or from the node $cbs (wsq.amqp.cbs): the connection's own, not the hub's.
        self.cbs = False
        # The client's latest flow asked to drain: the gateway answers with ``drain_done``.
        self.drain = False

    @property
    def of_tenant(self) -> bool:
        return not self.cbs


class AmqpSession(Session):
    """A wsq session with the client's incoming window: transfers it has no room for wait."""

    __slots__ = ("held", "remote_limit")

    def __init__(self, ch: int, counts: Counts | None = None) -> None:
        super().__init__(ch, counts)
        self.remote_limit = 0  # the first delivery id the client has no room for
        self.held: list[tuple[int, bytes]] = []  # (delivery id, frames) beyond the window


class OutgoingBytes(Counting):
    """Frames waiting to be written (bytes), and a heartbeat asked for: the writer takes them
    a WebSocket message at a time (``next_message``); ``out_bytes`` is what backpressure sees
    (and every change of it is the process's ``figures.outbox_bytes`` too)."""

    def __init__(self, on_output: Callable[[], None] | None, figures: Figures | None) -> None:
        self._init_figures(figures)
        self._out: list[bytes] = []
        self.out_bytes = 0
        self._heartbeat_due = False
        # Called when output appears where there was none (the writer wakes up).
        self._on_output = on_output

    def _max_message_bytes(self) -> int:
        raise NotImplementedError

    def _heartbeat_allowed(self) -> bool:
        raise NotImplementedError

    def _emit(self, data: bytes) -> None:
        out = self._out
        out.append(data)
        n = len(data)
        self.out_bytes += n
        self.figures.outbox_bytes += n
        if len(out) == 1 and self._on_output is not None:
            self._on_output()

    def _frame(self, ch: int, code: int, fields: list[Any]) -> None:
        self._emit(F.frame(ch, code, fields))

    @property
    def has_output(self) -> bool:
        return bool(self._out) or self._heartbeat_due

    def next_message(self, max_bytes: int | None = None) -> bytes | None:
        """The next WebSocket message: queued frames, whole, up to ``max_bytes`` together."""
        out = self._out
        if not out:
            if self._heartbeat_due:
                self._heartbeat_due = False
                return F.EMPTY_FRAME
            return None
        self._heartbeat_due = False
        limit = max_bytes or self._max_message_bytes()
        k, size = 1, len(out[0])
        while k < len(out) and size + len(out[k]) <= limit:
            size += len(out[k])
            k += 1
        chunk = out[:k]
        del out[:k]
        self.out_bytes -= size
        self.figures.outbox_bytes -= size
        return chunk[0] if k == 1 else b"".join(chunk)

    def heartbeat(self) -> None:
        if self._heartbeat_allowed() and not self._out and not self._heartbeat_due:
            self._heartbeat_due = True
            if self._on_output is not None:
                self._on_output()
