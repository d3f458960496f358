"""Consumer groups of the memory broker: the state a group keeps per message it has handed out.

A group pulls messages from its address's log through a cursor and only keeps state for messages
it has delivered at least once (or skipped through a subject filter). Messages made available
again (released, modified, lease expired, skipped) wait in a heap ordered by position; lease
deadlines and redelivery delays wait in one heap of deadlines, served by a single timer per
group (the broker arms it).
"""

from __future__ import annotations

import asyncio
import enum
import heapq
import itertools
from collections import OrderedDict

from wsq.broker.base import Watchers
from wsq.core.messages import Message
from wsq.core.positions import Position


class EntryState(enum.Enum):
    READY = 1  # available to claim (sits in the group's ready heap)
    LEASED = 2  # held by ``consumer`` until ``deadline``
    DELAYED = 3  # modified: available again at ``deadline``
    REMOVED = 4  # settled for good, expired, or trimmed by retention


class Entry:
    """A message the group has delivered at least once (or skipped through a filter)."""

    __slots__ = ("consumer", "count", "deadline", "gen", "msg", "state")

    def __init__(self, msg: Message) -> None:
        self.msg = msg
        self.count = 0  # failed deliveries counted so far (Delivery.redelivered)
        self.consumer: str | None = None
        self.deadline = 0
        self.gen = 0  # bumped on each state change: invalidates older heap items
        self.state = EntryState.READY


class Group:
    __slots__ = (
        "cursor",
        "entries",
        "ready",
        "seq",
        "timer",
        "timer_at",
        "timers",
        "watchers",
    )

    def __init__(self) -> None:
        # Every log message up to the cursor has been pulled into the group.
        self.cursor: Position = (0, 0)
        # Pulled messages still owned by the group, in position order (pulled in log order).
        self.entries: OrderedDict[str, Entry] = OrderedDict()
        # Available entries: (pos, seq, entry); an entry has at most one live item here.
        self.ready: list[tuple[Position, int, Entry]] = []
        # Lease deadlines and redelivery delays: (when_ms, seq, entry, gen).
        self.timers: list[tuple[int, int, Entry, int]] = []
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0
        self.watchers = Watchers()
        # Tie-breakers of the heaps: items with equal keys never compare their entries.
        self.seq = itertools.count()

    def remove(self, e: Entry) -> None:
        """``e`` is settled for good, expired or trimmed: the group forgets it."""
        e.state = EntryState.REMOVED
        e.gen += 1
        self.entries.pop(e.msg.id, None)

    def make_ready(self, e: Entry) -> None:
        e.state = EntryState.READY
        heapq.heappush(self.ready, (e.msg.pos, next(self.seq), e))

    def add_timer(self, e: Entry, when: int) -> None:
        heapq.heappush(self.timers, (when, next(self.seq), e, e.gen))

    def expire(self, now: int) -> bool:
        """Serve due deadlines: expired leases and delays past become READY. True if any did."""
        timers = self.timers
        any_ready = False
        while timers and timers[0][0] <= now:
            _, _, e, gen = heapq.heappop(timers)
            if e.gen != gen:
                continue
            if e.state is EntryState.LEASED:
                e.count += 1  # the lease ran out: a failed delivery
                e.consumer = None
            elif e.state is not EntryState.DELAYED:
                continue
            e.gen += 1
            self.make_ready(e)
            any_ready = True
        return any_ready

    def compact_timers(self) -> None:
        """Drop outdated deadlines (renewed or settled leases) once they are most of the heap."""
        timers = self.timers
        if len(timers) > 64 and len(timers) > 2 * len(self.entries):
            self.timers = [t for t in timers if t[2].gen == t[3]]
            heapq.heapify(self.timers)

    def next_deadline(self) -> int | None:
        """The earliest deadline still in force (outdated ones at the top are dropped)."""
        timers = self.timers
        while timers and timers[0][2].gen != timers[0][3]:
            heapq.heappop(timers)
        return timers[0][0] if timers else None
