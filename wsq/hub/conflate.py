"""Conflation of one copy receiver link (contract section 5, ``conflate``): at most one transfer
per subject per ``ms``, always the latest message of that subject.

A conflating link never falls behind the live stream and never queues a backlog: every message
it is offered either goes at once (its subject is quiet and the link has credit and room) or
takes its subject's place among the held ones, replacing what was held there (that one is
simply not sent: counted in ``hub.conflated``). Held messages go when their subject's turn comes
(``ms`` after its last transfer) and the link has credit and room. One timer per link, set for
the earliest turn among the held subjects, however many subjects there are.

Bounded: at most ``CONFLATE_MAX_SUBJECTS`` held subjects and ``CONFLATE_MAX_BYTES`` of their wire
tails; past either, a message of a subject not held is dropped and counted
(``hub.conflate_dropped``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from wsq.core.limits import CONFLATE_MAX_BYTES, CONFLATE_MAX_SUBJECTS
from wsq.core.messages import Message
from wsq.core.wire import copy_tail
from wsq.protocol.state import LinkState

if TYPE_CHECKING:
    from wsq.hub.copy import CopySub

#: Subjects whose last turn is remembered at most, beyond the held ones: a subject forgotten
#: early only gets its next message at once instead of after its turn.
_MAX_TURNS = 4 * CONFLATE_MAX_SUBJECTS


class Conflator:
    """The held messages of one conflating link, their subjects' turns, and its one timer."""

    __slots__ = (
        "_call_later",
        "_clock",
        "held",
        "held_bytes",
        "ms",
        "on_conflated",
        "on_dropped",
        "sub",
        "timer",
        "timer_at",
        "turns",
    )

    def __init__(
        self,
        sub: CopySub,
        ms: int,
        clock: Callable[[], float],
        call_later: Callable[[float, Callable[[], None]], asyncio.TimerHandle],
        on_conflated: Callable[[int], None],
        on_dropped: Callable[[int], None],
    ) -> None:
        self.sub = sub
        self.ms = ms
        self._clock = clock
        self._call_later = call_later
        self.on_conflated = on_conflated
        self.on_dropped = on_dropped
        # Subject -> the latest message of it not yet sent, in the order subjects came.
        self.held: dict[str, Message] = {}
        self.held_bytes = 0
        # Subject -> when (clock seconds) its next transfer may go; oldest first.
        self.turns: dict[str, float] = {}
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0

    def offer(self, messages: list[Message]) -> None:
        """Messages for the link (in order, already filtered): hold each as its subject's latest,
        then send whatever may go now."""
        held = self.held
        conflated = dropped = 0
        for m in messages:
            key = m.subject or ""
            size = len(copy_tail(m))
            old = held.get(key)
            if old is not None:
                conflated += 1
                self.held_bytes += size - len(copy_tail(old))
                held[key] = m
            elif len(held) >= CONFLATE_MAX_SUBJECTS or self.held_bytes + size > CONFLATE_MAX_BYTES:
                dropped += 1
            else:
                held[key] = m
                self.held_bytes += size
        if conflated:
            self.on_conflated(conflated)
        if dropped:
            self.on_dropped(dropped)
        self.flush()

    def flush(self) -> None:
        """Send the held messages whose turn has come, as credit and room allow; set the timer
        for the next turn."""
        sub = self.sub
        link = sub.link
        if link.state is not LinkState.ATTACHED or not self.held:
            return
        now = self._clock()
        outlet = sub.outlet
        turns = self.turns
        next_turn = 0.0
        tails: list[str] = []
        sent: list[str] = []
        credit = link.credit
        for key, m in self.held.items():
            turn = turns.get(key, 0.0)
            if turn > now:
                next_turn = turn if not next_turn else min(next_turn, turn)
                continue
            if len(tails) >= credit:
                break  # a flow sends the rest (``credit_granted``)
            if not outlet.has_room():
                outlet.stalled.add(sub)  # ``resume`` sends the rest
                break
            tails.append(copy_tail(m))
            sent.append(key)
        if tails:
            for key in sent:
                self.held_bytes -= len(copy_tail(self.held.pop(key)))
                turns.pop(key, None)  # re-inserted last: ``turns`` stays oldest first
                turns[key] = now + self.ms / 1000
            outlet.conn.send_transfers(link, tails)
            self._forget_old_turns(now)
        if next_turn:
            self._wake_at(next_turn, now)

    def _wake_at(self, when: float, now: float) -> None:
        if self.timer is not None:
            if self.timer_at <= when:
                return
            self.timer.cancel()
        self.timer_at = when
        self.timer = self._call_later(max(when - now, 0.0), self._fire)

    def _fire(self) -> None:
        self.timer = None
        self.flush()

    def _forget_old_turns(self, now: float) -> None:
        turns = self.turns
        if len(turns) <= _MAX_TURNS:
            return
        for key in list(turns):
            if len(turns) <= _MAX_TURNS // 2:
                break
            if turns[key] <= now or key not in self.held:
                del turns[key]

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.held.clear()
        self.held_bytes = 0
        self.turns.clear()
