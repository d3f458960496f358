"""What the connections of one process hold now, counted where it changes (``wsq.stats`` reads
it): per tenant its connections, begun sessions and attached links by role; by subprotocol the
open sockets; and the bytes queued for every socket.

A snapshot used to walk every socket and its links (twice a second under ``--workers``: a third
of an idle worker's CPU at 10,000 sockets, docs/performance.md "Scale"); these running figures
make it a read of a few ints per tenant. Plain ints, no I/O (the protocol core is sans-I/O).

Where each is counted, once for wsq.v1, AMQP and the HTTP stream carrier alike:

- *sessions*: a session counts while it is ``BEGUN`` (``Session.__init__`` and
  ``Session.advance``, wsq.protocol.state): not once we ended it, nor a refused ``begin``;
- *links*: a link counts while it is ``ATTACHED`` and the tenant's (``Link.of_tenant``: AMQP's
  ``$cbs`` links are the connection's own), which is what ``links()`` of both connections
  answers (``Link.advance``);
- *outbox bytes*: every change of a connection's ``out_bytes`` is added here too (its output
  queue: ``wsq.protocol.output``, ``wsq.amqp.output``, and AMQP's frames held for the client's
  session window);
- *connections* and *subprotocols*: the gateway's, as sockets open, authenticate and go
  (``wsq.gateway.Gateway``).

A connection counts its sessions and links under the tenant ``""`` until the gateway knows its
tenant (``Counting.count_as``: AMQP may begin sessions before its token); once its socket is
gone the gateway takes it out of the figures (``Counting.stop_counting``), so that what it
still queued, never to be written, is not counted for ever.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from wsq.protocol.state import LinkState, Role, Session, SessionState


class Counts:
    """What one tenant holds now in this process."""

    __slots__ = ("connections", "receivers", "senders", "sessions")

    def __init__(self) -> None:
        self.connections = 0
        self.sessions = 0
        self.senders = 0  # attached links the client publishes on
        self.receivers = 0  # attached links it subscribes on

    def link(self, role: Role, n: int) -> None:
        if role is Role.SENDER:
            self.senders += n
        else:
            self.receivers += n

    def __repr__(self) -> str:
        return (
            f"Counts(connections={self.connections}, sessions={self.sessions}, "
            f"senders={self.senders}, receivers={self.receivers})"
        )


class Figures:
    """The running figures of one process (the gateway's; a connection without one keeps its
    own, which nobody reads)."""

    __slots__ = ("outbox_bytes", "subprotocols", "tenants")

    def __init__(self) -> None:
        # Bounded by the configured tenants (a tenant is known from a verified token) and "".
        self.tenants: dict[str, Counts] = {}
        self.subprotocols: Counter[str] = Counter()
        self.outbox_bytes = 0

    def of(self, tenant: str) -> Counts:
        counts = self.tenants.get(tenant)
        if counts is None:
            counts = self.tenants[tenant] = Counts()
        return counts


def recount(sessions: Iterable[Session], counts: Counts) -> None:
    """Move what ``sessions`` count (begun sessions, attached links of the tenant) to
    ``counts``, which they count in from now on."""
    for session in sessions:
        old = session.counts
        if old is counts:
            continue
        if old is not None:
            if session.state is SessionState.BEGUN:
                old.sessions -= 1
                counts.sessions += 1
            for link in session.links.values():
                if link.state is LinkState.ATTACHED and link.of_tenant:
                    old.link(link.role, -1)
                    counts.link(link.role, 1)
        session.counts = counts


class Counting:
    """What a connection (wsq.v1's or AMQP's) does about the figures: it has ``sessions``, an
    ``out_bytes``, and counts in ``figures`` under its tenant's ``counts``."""

    sessions: Mapping[int, Session]
    out_bytes: int
    figures: Figures
    counts: Counts

    def _init_figures(self, figures: Figures | None) -> None:
        self.figures = figures if figures is not None else Figures()
        self.counts = self.figures.of("")

    def count_as(self, tenant: str) -> None:
        """The connection is ``tenant``'s (its token is good): count it there."""
        counts = self.figures.of(tenant)
        recount(self.sessions.values(), counts)
        self.counts = counts

    def stop_counting(self) -> None:
        """The socket is gone: out of the process's figures (what it still holds, or may yet
        queue, counts in figures of its own that nobody reads)."""
        mine = Figures()
        counts = mine.of("")
        recount(self.sessions.values(), counts)
        self.figures.outbox_bytes -= self.out_bytes
        mine.outbox_bytes = self.out_bytes
        self.figures = mine
        self.counts = counts
