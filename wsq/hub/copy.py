"""Copy (feed) fan-out: every receiver of an address gets every message.

One ``Topic`` per (tenant, address) holds the broker's one live reader (``tail``) and the links
that are caught up with it. A link that runs out of credit, or whose socket's outbox is full, is
not given a queue: it drops out of the live set keeping only its cursor (the last position it
has seen), and later catches up from there: from the topic's recent messages when they reach
back that far, else by reading the broker's history. Memory per slow subscriber is therefore
constant, and no slow subscriber is disconnected for being slow.
"""

from __future__ import annotations

import asyncio
import logging
import time
from bisect import bisect_left, bisect_right
from itertools import accumulate
from typing import TYPE_CHECKING

from wsq.broker.base import Handle
from wsq.core.messages import Message, Outcome
from wsq.core.positions import START, Position, parse_position
from wsq.core.wire import SharedTails, copy_tail
from wsq.hub.conflate import Conflator
from wsq.hub.outlet import Outlet, Subscription
from wsq.protocol.state import Link, LinkState

if TYPE_CHECKING:
    from wsq.hub import Hub

log = logging.getLogger("wsq.hub")

#: Messages one catch-up step reads at most (from memory or the broker).
READ_BATCH = 512
#: Recent messages a topic keeps while one of its links is behind (never more than the
#: tenant's retention keeps): a link that grants credit a few messages at a time drops out of
#: the live set on every message, and catches up from here instead of reading the broker.
RECENT = 1024
#: ... and at most about this many bytes of them (their wire tails; never more than the tenant's
#: retention keeps): a link that stops granting credit must not pin megabytes per message.
RECENT_BYTES = 4 * 1024 * 1024


def _now_ms() -> int:
    return int(time.time() * 1000)


def _pos(message: Message) -> Position:
    return message.pos


def _unexpired(messages: list[Message], now_ms: int) -> list[Message]:
    return [m for m in messages if m.expires_at is None or m.expires_at > now_ms]


class Topic:
    """One address of one tenant, as seen by this process."""

    __slots__ = (
        "address",
        "delivered",
        "hub",
        "live",
        "live_id",
        "live_pos",
        "max_age_ms",
        "ready",
        "recent",
        "recent_bytes",
        "recent_cap",
        "recent_floor",
        "recent_max_bytes",
        "subs",
        "tail",
        "tenant",
    )

    def __init__(self, hub: Hub, tenant: str, address: str) -> None:
        self.hub = hub
        self.tenant = tenant
        self.address = address
        self.subs: set[CopySub] = set()
        # Deliveries made to its links (a plain int on the hot path; wsq.stats sums them).
        self.delivered = 0
        # The subs caught up with the live reader; a dict for O(1) removal, ordered iteration.
        self.live: dict[CopySub, None] = {}
        self.live_id = START
        self.live_pos: Position = (0, 0)
        self.tail: Handle | None = None
        self.ready = asyncio.Event()
        # While a link is behind: every message the live reader passed on after
        # ``recent_floor``, in order (those expired when passed on left out), at most about
        # ``recent_cap`` and ``recent_max_bytes`` (``recent_bytes``: their wire tails' length),
        # which retention would also keep.
        self.recent: list[Message] = []
        self.recent_bytes = 0
        self.recent_floor: Position = (0, 0)
        cfg = hub.policies.of(tenant)
        self.recent_cap = min(RECENT, cfg.retention_max_len)
        self.recent_max_bytes = min(RECENT_BYTES, cfg.retention_max_bytes)
        self.max_age_ms = cfg.retention_max_age_ms

    async def start(self) -> None:
        last = await self.hub.broker.last_position(self.tenant, self.address)
        self.live_id = last
        self.live_pos = parse_position(last)
        self.tail = self.hub.broker.tail(self.tenant, self.address, last, self.on_messages)
        self.ready.set()

    def on_messages(self, messages: list[Message]) -> None:
        if not messages:
            return
        last = messages[-1]
        before = self.live_pos
        self.live_id = last.id
        self.live_pos = last.pos
        live = self.live
        if not live:
            self._remember(messages, before)
            return
        batch = _unexpired(messages, _now_ms())
        # Encoded once for every link: the tails and their running byte counts (and, for the
        # links of compact sockets, the tails joined once: SharedTails.compact_body).
        tails = SharedTails.of(batch)
        ends = list(accumulate(map(len, tails)))
        dropped: list[CopySub] = []
        for sub in live:
            if not deliver_copy(sub, batch, tails, ends):
                dropped.append(sub)
            elif last.pos > sub.cursor:
                # Filtered-out and expired messages move the cursor too. Only forward: a sub
                # that caught up by reading the broker may be ahead of this (later) batch.
                sub.seen(last)
        for sub in dropped:
            sub.live = False
            del live[sub]
        self._remember(messages, before)
        for sub in dropped:
            sub.behind()

    def _remember(self, messages: list[Message], before: Position) -> None:
        """Keep ``messages`` (passed on after ``before``) while some link is behind."""
        recent = self.recent
        if len(self.subs) == len(self.live):
            if recent:
                self.recent = []
                self.recent_bytes = 0
            return
        if not recent:
            self.recent_floor = before
            self.recent = recent = list(messages)
            self.recent_bytes = 0
        else:
            recent += messages
        size = self.recent_bytes = self.recent_bytes + sum(len(copy_tail(m)) for m in messages)
        cap = self.recent_cap
        max_bytes = self.recent_max_bytes
        if len(recent) > 2 * cap or size > 2 * max_bytes:
            # Amortised: cut back to ``cap`` and ``max_bytes`` once it holds twice either.
            cut = max(len(recent) - cap, 0)
            size -= sum(len(copy_tail(m)) for m in recent[:cut])
            while size > max_bytes and cut < len(recent):
                size -= len(copy_tail(recent[cut]))
                cut += 1
            self.recent_bytes = size
            if cut:
                self.recent_floor = recent[cut - 1].pos
                del recent[:cut]

    def recent_after(self, cursor: Position, limit: int, now_ms: int) -> list[Message] | None:
        """Up to ``limit`` messages after ``cursor`` from memory, or None when memory does not
        hold all of them or holds some that age retention would have dropped (read the broker)."""
        recent = self.recent
        if not recent or cursor < self.recent_floor:
            return None
        i = bisect_right(recent, cursor, key=_pos)
        if i < len(recent) and self.max_age_ms and recent[i].ts <= now_ms - self.max_age_ms:
            return None
        return recent[i : i + limit]

    def close(self) -> None:
        if self.tail is not None:
            self.tail.close()
            self.tail = None
        self.hub.delivered[self.tenant] += self.delivered
        self.delivered = 0


class CopySub(Subscription):
    """A copy-mode receiver link: its cursor in the address, and whether it is live."""

    __slots__ = (
        "catching_up",
        "conflator",
        "cursor",
        "cursor_id",
        "keep",
        "keep_upto",
        "link",
        "live",
        "outlet",
        "topic",
    )

    def __init__(self, link: Link, outlet: Outlet, topic: Topic, after: str) -> None:
        self.link = link
        self.outlet = outlet
        self.topic = topic
        self.cursor_id = after
        self.cursor = parse_position(after)
        self.live = False
        self.catching_up = False
        # A conflating link (``conflate``) holds the latest message per subject here.
        self.conflator: Conflator | None = None
        # A rewind to the last message of each subject: up to ``keep_upto``, only the messages
        # named in ``keep`` are delivered (the others were superseded).
        self.keep: frozenset[str] | None = None
        self.keep_upto: Position = (0, 0)

    def seen(self, message: Message) -> None:
        """The link has seen everything up to ``message`` (sent, filtered out or expired)."""
        self.cursor = message.pos
        self.cursor_id = message.id

    def go_live(self) -> None:
        """Caught up: what the live reader has not yet passed on comes that way."""
        topic = self.topic
        if self.cursor < topic.live_pos:
            self.cursor = topic.live_pos
            self.cursor_id = topic.live_id
        self.live = True
        topic.live[self] = None

    # -- the link's events -----------------------------------------------------------------

    def credit_granted(self) -> None:
        if self.conflator is not None:
            self.conflator.flush()
        if not self.live:
            self.behind()

    def resume(self) -> None:
        if self.conflator is not None:
            self.conflator.flush()
        if not self.live:
            self.behind()

    async def settled(self, ids: list[str], outcome: Outcome) -> None:
        pass  # copy mode: an acknowledgement changes nothing

    async def ended(self, unsettled: list[str]) -> None:
        topic = self.topic
        topic.subs.discard(self)
        self.outlet.stalled.discard(self)
        if self.conflator is not None:
            self.conflator.close()
        if self.live:
            self.live = False
            del topic.live[self]
        topic.hub.forget_topic_if_unused(topic)

    # -- catching up -----------------------------------------------------------------------

    def behind(self) -> None:
        """The link fell behind the live stream; catch it up when it can take more.

        Without credit it waits for a flow (``credit_granted``); without room in its socket's
        outbox it waits in ``outlet.stalled`` for ``resume``.
        """
        if self.catching_up or self.link.credit <= 0:
            return
        if not self.outlet.has_room():
            self.outlet.stalled.add(self)
            return
        hub = self.topic.hub
        hub.catch_ups += 1
        if self._catch_up_from_memory():
            return
        hub.broker_catch_ups += 1
        self.catching_up = True
        hub.spawn(self._catch_up_from_broker())

    def _step(self, batch: list[Message], now_ms: int) -> bool:
        """Take one catch-up batch (the messages after the cursor, in order, from memory or the
        broker): send what the link may take, move the cursor, go live once it reaches the live
        reader. True when this catch-up is over: gone live, or stopped for credit or room."""
        if batch:
            if not deliver_copy(self, _unexpired(batch, now_ms)):
                return True  # it waits for credit or for room
            last = batch[-1]
            if last.pos > self.cursor:
                self.seen(last)
        if not batch or self.cursor >= self.topic.live_pos:
            self.go_live()
            return True
        return False

    def _read_limit(self) -> int:
        # A conflating link takes whole batches (it holds the latest of each subject); any
        # other takes no more than its credit.
        return READ_BATCH if self.conflator is not None else min(self.link.credit, READ_BATCH)

    def _can_take_more(self) -> bool:
        if self.link.credit <= 0:
            return False
        if not self.outlet.has_room():
            self.outlet.stalled.add(self)
            return False
        return True

    def _catch_up_from_memory(self) -> bool:
        """Catch up from the topic's recent messages, at once; False when they do not reach
        back to the cursor (read the broker). Stops, as a read would, for credit or room."""
        link = self.link
        while link.state is LinkState.ATTACHED and not self.live:
            now_ms = _now_ms()
            batch = self.topic.recent_after(self.cursor, self._read_limit(), now_ms)
            if batch is None:
                return False
            if self._step(batch, now_ms) or not self._can_take_more():
                return True
        return True

    async def _catch_up_from_broker(self) -> None:
        topic = self.topic
        link = self.link
        hub = topic.hub
        try:
            while link.state is LinkState.ATTACHED and not self.live and self._can_take_more():
                # No more than the outbox has room for (at least one message): a batch of 512
                # messages of a MiB each would otherwise be read, and encoded, at once.
                outlet = self.outlet
                room = max(outlet.high_water - outlet.conn.out_bytes, 1)
                result = await hub.broker.read(
                    topic.tenant, topic.address, self.cursor_id, self._read_limit(), room
                )
                if link.state is not LinkState.ATTACHED or self.live:
                    return
                if self._step(result.messages, _now_ms()):
                    return
        except Exception:
            log.exception("catch-up failed on %s", topic.address)
            hub.loop_call_later(1.0, self.behind)
        finally:
            self.catching_up = False


def deliver_copy(
    sub: CopySub,
    messages: list[Message],
    tails: list[str] | None = None,
    ends: list[int] | None = None,
) -> bool:
    """Send what ``sub`` may take of ``messages`` (in order) as one batch of transfers. False
    when it had to stop early (no credit or no room); its cursor then names the last message
    it has seen.

    ``tails`` are the messages' encoded tails and ``ends`` their running byte counts, when the
    caller shares them between links. The outbox room is checked as one transfer at a time
    would: the transfer that crosses the high-water mark is the last one sent.
    """
    link = sub.link
    if link.state is not LinkState.ATTACHED or not messages:
        # Detached by the protocol; the hub hears of it when the gateway reaches LinkEnded.
        return True
    if sub.conflator is not None:
        return deliver_conflated(sub, sub.conflator, messages)
    total = len(messages)
    start = 0
    if messages[0].pos <= sub.cursor:
        # A catch-up read ran ahead of this (later) live batch: skip what the link has seen.
        start = bisect_right(messages, sub.cursor, key=_pos)
        if start == total:
            return True
    if tails is None:
        tails = SharedTails.of(messages)
        ends = None
    flt = link.filter
    chosen: list[int] | None = None  # indexes of the messages that pass the filter
    if flt is None:
        count = total - start
    else:
        chosen = [
            i
            for i in range(start, total)
            if (subject := messages[i].subject) is not None and flt.matches(subject)
        ]
        count = len(chosen)
    if count:
        outlet = sub.outlet
        conn = outlet.conn
        credit = link.credit
        room = outlet.high_water - conn.out_bytes
        take = min(count, credit)
        if take > 0 and room > 0:
            if chosen is None:
                picked = tails[start : start + take] if start or take < total else tails
                if ends is None or start:
                    ends = list(accumulate(map(len, picked)))
            else:
                picked = [tails[i] for i in chosen[:take]]
                ends = list(accumulate(map(len, picked)))
            extra = conn.transfer_overhead(link)
            if ends[take - 1] + take * extra >= room:
                # Sent one at a time, the first transfer that reaches the mark is the last.
                sent = bisect_left(range(take), room, key=lambda i: ends[i] + (i + 1) * extra) + 1
                picked = picked[:sent]
            else:
                sent = take
            if type(picked) is not SharedTails:
                # A part of the batch (credit, room, a filter): this link's own batch, which
                # keeps its messages so that a client of compact rows gets rows of it too.
                picked = SharedTails.of(
                    messages[start : start + sent]
                    if chosen is None
                    else [messages[i] for i in chosen[:sent]]
                )
            conn.send_transfers(link, picked)
            sub.topic.delivered += sent
        else:
            sent = 0
        if sent < count:
            # Stopped before the (sent + 1)th chosen message: the cursor names the one before it.
            stop = start + sent if chosen is None else chosen[sent]
            if stop > start:
                sub.seen(messages[stop - 1])
            if credit - sent > 0:
                outlet.stalled.add(sub)
            return False
    sub.seen(messages[-1])
    return True


def deliver_conflated(sub: CopySub, conflator: Conflator, messages: list[Message]) -> bool:
    """``deliver_copy`` for a conflating link: every message after the cursor that the link
    wants is offered to its conflator, which sends or holds it. Never stops early: a
    conflating link is never behind for want of credit or room, it holds the latest instead."""
    start = 0
    if messages[0].pos <= sub.cursor:
        start = bisect_right(messages, sub.cursor, key=_pos)
        if start == len(messages):
            return True
    flt = sub.link.filter
    keep = sub.keep
    wanted: list[Message] = []
    for m in messages[start:] if start else messages:
        if flt is not None and (m.subject is None or not flt.matches(m.subject)):
            continue
        if keep is not None and m.pos <= sub.keep_upto and m.id not in keep:
            continue  # a rewind to the last of each subject: superseded
        wanted.append(m)
    if keep is not None and messages[-1].pos >= sub.keep_upto:
        sub.keep = None  # past the rewind: only conflation from here
    sub.seen(messages[-1])
    if wanted:
        conflator.offer(wanted)
    return True
