"""Consumer groups of the memory broker: the state a group keeps per message it has handed out.

A group pulls messages from its address's log through a cursor and only keeps state for messages
it has delivered at least once (or skipped through a subject filter). Messages made available
again (released, modified, lease expired, skipped) wait in a heap ordered by position; lease
deadlines, redelivery delays and hand-over waits sit in one heap of deadlines, served by a single
timer per group (the broker arms it).

The queue rules of contract section 5 live here: an entry remembers who last held it, so a
claim by that consumer leaves it to another that wants work (``wanting``) for ``HANDOFF_MS``;
deliveries that end without an outcome are counted, and past the tenant's ``max_deliveries``
the entry leaves the group for the dead-letter address.
"""

from __future__ import annotations

import asyncio
import enum
import heapq
import itertools
from collections import OrderedDict

from wsq.broker.base import Watchers
from wsq.core.limits import HANDOFF_MS, MAX_WANTING
from wsq.core.messages import Message
from wsq.core.positions import Position


class EntryState(enum.Enum):
    READY = 1  # available to claim (sits in the group's ready heap)
    LEASED = 2  # held by ``consumer`` until ``deadline``
    DELAYED = 3  # modified: available again at ``deadline``
    REMOVED = 4  # settled for good, expired, or trimmed by retention


class Entry:
    """A message the group has delivered at least once (or skipped through a filter)."""

    __slots__ = ("consumer", "count", "deadline", "gen", "last", "msg", "state", "until")

    def __init__(self, msg: Message) -> None:
        self.msg = msg
        self.count = 0  # failed deliveries counted so far (Delivery.redelivered)
        self.consumer: str | None = None
        self.deadline = 0
        # Who held it last, and until when (ms) it waits for another consumer: see ``avoids``.
        self.last: str | None = None
        self.until = 0
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
        "wanting",
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
        # Standing consumers (links) whose last claim left them wanting more: the ones a
        # released or expired message waits for (an ordered set).
        self.wanting: dict[str, None] = {}
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

    def expire(self, now: int, max_deliveries: int) -> tuple[bool, list[Entry]]:
        """Serve due deadlines: expired leases and delays past become READY, hand-over waits
        end. Answers (any became claimable, entries past the delivery limit, now out of the
        group for the dead-letter address)."""
        timers = self.timers
        any_ready = False
        dead: list[Entry] = []
        while timers and timers[0][0] <= now:
            _, _, e, gen = heapq.heappop(timers)
            if e.gen != gen:
                continue
            if e.state is EntryState.LEASED:
                # The lease ran out: a delivery that ended without an outcome.
                fate = self.give_back(e, now, failed=True, delay=0, max_deliveries=max_deliveries)
                if fate is EntryState.REMOVED:
                    dead.append(e)
                    continue
            elif e.state is EntryState.DELAYED:
                e.gen += 1
                e.until = now + HANDOFF_MS
                self.make_ready(e)
            elif e.state is not EntryState.READY:
                continue
            # READY: a hand-over wait ended; its last holder may take it now.
            any_ready = True
        return any_ready, dead

    def give_back(
        self, e: Entry, now: int, *, failed: bool, delay: int, max_deliveries: int
    ) -> EntryState:
        """A delivery of ``e`` ended without ``accepted``: released (not ``failed``), or
        modified, abandoned or expired (``failed``: counted in ``redelivered``). Answers its
        new state: REMOVED when that put it past ``max_deliveries`` (out of the group, for the
        dead letters)."""
        e.last = e.consumer
        e.consumer = None
        e.gen += 1
        if failed:
            e.count += 1
            if 0 < max_deliveries <= e.count:
                self.remove(e)
                return EntryState.REMOVED
        if delay > 0:
            e.state = EntryState.DELAYED
            e.deadline = now + delay
            self.add_timer(e, e.deadline)
            return EntryState.DELAYED
        e.until = now + HANDOFF_MS
        self.make_ready(e)
        return EntryState.READY

    def avoids(self, e: Entry, consumer: str, now: int, others_wanting: bool) -> bool:
        """Whether ``consumer`` leaves ``e`` to another: it held it last, lately, and another
        consumer wants work. A timer wakes the group when the wait ends (once per wait)."""
        if e.last != consumer or now >= e.until or not others_wanting:
            return False
        if e.deadline != e.until:
            e.deadline = e.until
            self.add_timer(e, e.until)
        return True

    def others_want(self, consumer: str) -> bool:
        wanting = self.wanting
        return len(wanting) > 1 or (len(wanting) == 1 and consumer not in wanting)

    def record_want(self, consumer: str, wants: bool) -> None:
        if wants:
            if len(self.wanting) >= MAX_WANTING and consumer not in self.wanting:
                self.wanting.clear()
            self.wanting[consumer] = None
        else:
            self.wanting.pop(consumer, None)

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
