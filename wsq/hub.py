"""In-process fan-out from the broker to the links of this process's sockets.

Copy (feed): one ``Topic`` per (tenant, address) holds the broker's one live reader (``tail``)
and the links that are caught up with it. A link that runs out of credit, or whose socket's
outbox is full, is not given a queue: it drops out of the live set keeping only its cursor (the
last position it has seen), and later catches up by reading the broker's history from there.
Memory per slow subscriber is therefore constant, and no slow subscriber is disconnected for
being slow.

Move (queue): one ``GroupPump`` per (tenant, address, group) claims messages from the broker for
the local consumer links that have credit, whenever the broker says something may be claimable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from itertools import accumulate
from typing import Any

from wsq.broker.base import Broker, Handle
from wsq.core.messages import Delivery, Message, Outcome
from wsq.core.policy import StoragePolicies
from wsq.core.positions import START, parse_position
from wsq.core.wire import copy_tail, message_tail
from wsq.protocol.connection import ServerConnection
from wsq.protocol.state import Link, LinkState

log = logging.getLogger("wsq.hub")

READ_BATCH = 512
MAX_UNSETTLED_PER_LINK = 1024
#: Recent messages a topic keeps while one of its links is behind (never more than the
#: tenant's retention keeps): a link that grants credit a few messages at a time drops out of
#: the live set on every message, and catches up from here instead of reading the broker.
RECENT = 1024


class Outlet:
    """Where one socket's deliveries go: its protocol object and how full its outbox may get."""

    __slots__ = ("conn", "high_water", "stalled", "wake")

    def __init__(
        self, conn: ServerConnection, high_water: int, wake: Callable[[], None] | None = None
    ) -> None:
        self.conn = conn
        self.high_water = high_water
        # Subscriptions that stopped because the outbox was full; resumed on ``Hub.drained``.
        self.stalled: set[CopySub | MoveSub] = set()
        self.wake = wake

    def has_room(self) -> bool:
        return self.conn.out_bytes < self.high_water


class CopySub:
    """A copy-mode receiver link: its cursor in the address, and whether it is live."""

    __slots__ = ("catching_up", "cursor", "cursor_id", "link", "live", "outlet", "topic")

    def __init__(self, link: Link, outlet: Outlet, topic: Topic, after: str) -> None:
        self.link = link
        self.outlet = outlet
        self.topic = topic
        self.cursor_id = after
        self.cursor = parse_position(after)
        self.live = False
        self.catching_up = False


class MoveSub:
    __slots__ = ("consumer", "link", "outlet", "pump")

    def __init__(self, link: Link, outlet: Outlet, pump: GroupPump, consumer: str) -> None:
        self.link = link
        self.outlet = outlet
        self.pump = pump
        self.consumer = consumer


class Topic:
    """One address of one tenant, as seen by this process."""

    __slots__ = (
        "address",
        "hub",
        "live",
        "live_id",
        "live_pos",
        "max_age_ms",
        "ready",
        "recent",
        "recent_cap",
        "recent_floor",
        "subs",
        "tail",
        "tenant",
    )

    def __init__(self, hub: Hub, tenant: str, address: str) -> None:
        self.hub = hub
        self.tenant = tenant
        self.address = address
        self.subs: set[CopySub] = set()
        # The subs caught up with the live reader; a dict for O(1) removal, ordered iteration.
        self.live: dict[CopySub, None] = {}
        self.live_id = START
        self.live_pos = (0, 0)
        self.tail: Handle | None = None
        self.ready = asyncio.Event()
        # While a link is behind: every message the live reader passed on after
        # ``recent_floor``, in order (those expired when passed on left out), at most about
        # ``recent_cap``, which retention by length would also keep.
        self.recent: list[Message] = []
        self.recent_floor = (0, 0)
        cfg = hub.policies.of(tenant)
        self.recent_cap = min(RECENT, cfg.retention_max_len)
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
        now_ms = int(time.time() * 1000)
        batch = [m for m in messages if m.expires_at is None or m.expires_at > now_ms]
        # Encoded once for every link: the tails and their running byte counts.
        tails = [copy_tail(m) for m in batch]
        ends = list(accumulate(map(len, tails)))
        dropped: list[CopySub] = []
        for sub in live:
            if not deliver_copy(sub, batch, tails, ends):
                dropped.append(sub)
            elif last.pos > sub.cursor:
                # Filtered-out and expired messages move the cursor too. Only forward: a sub
                # that caught up by reading the broker may be ahead of this (later) batch.
                sub.cursor = last.pos
                sub.cursor_id = last.id
        for sub in dropped:
            sub.live = False
            del live[sub]
        self._remember(messages, before)
        for sub in dropped:
            self.hub.behind(sub)

    def _remember(self, messages: list[Message], before: tuple[int, int]) -> None:
        """Keep ``messages`` (passed on after ``before``) while some link is behind."""
        recent = self.recent
        if len(self.subs) == len(self.live):
            if recent:
                self.recent = []
            return
        if not recent:
            self.recent_floor = before
            self.recent = recent = list(messages)
        else:
            recent += messages
        cap = self.recent_cap
        if len(recent) > 2 * cap:
            # Amortised: cut back to ``cap`` once it holds twice that.
            cut = len(recent) - cap
            self.recent_floor = recent[cut - 1].pos
            del recent[:cut]

    def recent_after(
        self, cursor: tuple[int, int], limit: int, now_ms: int
    ) -> list[Message] | None:
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


def _pos(message: Message) -> tuple[int, int]:
    return message.pos


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
    total = len(messages)
    start = 0
    if messages[0].pos <= sub.cursor:
        # A catch-up read ran ahead of this (later) live batch: skip what the link has seen.
        start = bisect_right(messages, sub.cursor, key=_pos)
        if start == total:
            return True
    if tails is None:
        tails = [copy_tail(m) for m in messages]
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
            # Each transfer adds the link's prefix and a delivery number to its tail.
            extra = len(link.prefix) + 12
            if ends[take - 1] + take * extra >= room:
                # Sent one at a time, the first transfer that reaches the mark is the last.
                sent = bisect_left(range(take), room, key=lambda i: ends[i] + (i + 1) * extra) + 1
                picked = picked[:sent]
            else:
                sent = take
            conn.send_transfers(link, picked)
        else:
            sent = 0
        if sent < count:
            # Stopped before the (sent + 1)th chosen message: the cursor names the one before it.
            stop = start + sent if chosen is None else chosen[sent]
            if stop > start:
                seen = messages[stop - 1]
                sub.cursor = seen.pos
                sub.cursor_id = seen.id
            if credit - sent > 0:
                outlet.stalled.add(sub)
            return False
    last = messages[-1]
    sub.cursor = last.pos
    sub.cursor_id = last.id
    return True


class GroupPump:
    """Claims messages of one consumer group for the local consumers with credit."""

    __slots__ = ("address", "dirty", "group", "hub", "running", "subs", "tenant", "watch")

    def __init__(self, hub: Hub, tenant: str, address: str, group: str) -> None:
        self.hub = hub
        self.tenant = tenant
        self.address = address
        self.group = group
        self.subs: list[MoveSub] = []
        self.running = False
        self.dirty = False
        self.watch: Handle | None = None

    def poke(self) -> None:
        """Something may be claimable, or a consumer has room again."""
        self.dirty = True
        if not self.running and self.subs:
            self.running = True
            self.hub.spawn(self._run())

    async def _run(self) -> None:
        broker = self.hub.broker
        try:
            while self.dirty and self.subs:
                self.dirty = False
                got_any = False
                # Rotate so that consumers take turns at the head of the line.
                if len(self.subs) > 1:
                    self.subs.append(self.subs.pop(0))
                for sub in list(self.subs):
                    link = sub.link
                    room = min(
                        link.credit, MAX_UNSETTLED_PER_LINK - len(link.unsettled), READ_BATCH
                    )
                    if room <= 0 or link.state is not LinkState.ATTACHED:
                        continue
                    if not sub.outlet.has_room():
                        sub.outlet.stalled.add(sub)
                        continue
                    deliveries = await broker.claim(
                        self.tenant,
                        self.address,
                        self.group,
                        sub.consumer,
                        room,
                        link.lease_ms,
                        link.filter,
                    )
                    if not deliveries:
                        continue
                    got_any = True
                    if len(self.subs) > 1 and any(d.redelivered for d in deliveries):
                        deliveries = await self._prefer_others(sub, deliveries)
                    sent, back = self._send(sub, deliveries)
                    if back:
                        await self._settle(sub, back, Outcome.RELEASED)
                    if sent and link.pre_settled:
                        # At-most-once: settled as it is sent.
                        await self._settle(sub, sent, Outcome.ACCEPTED)
                if got_any:
                    self.dirty = True
        except Exception:
            log.exception("group pump failed for %s/%s", self.address, self.group)
            # Try again soon rather than going deaf.
            self.hub.loop_call_later(1.0, self.poke)
        finally:
            self.running = False

    def _send(self, sub: MoveSub, deliveries: list[Delivery]) -> tuple[list[str], list[str]]:
        """Send what the link can take now; answers (ids sent, ids to hand back).

        No await in here: the link's state checked first holds for every send (the client may
        detach, or the socket close, during any await of the pump).
        """
        link = sub.link
        if link.state is not LinkState.ATTACHED:
            return [], [d.message.id for d in deliveries]
        conn = sub.outlet.conn
        high_water = sub.outlet.high_water
        for i, d in enumerate(deliveries):
            if conn.out_bytes >= high_water:
                # Full socket: what does not fit goes back to the group at once.
                sub.outlet.stalled.add(sub)
                return (
                    [x.message.id for x in deliveries[:i]],
                    [x.message.id for x in deliveries[i:]],
                )
            conn.send_transfer(link, message_tail(d.message, d.redelivered), d.message.id)
        return [d.message.id for d in deliveries], []

    async def _settle(self, sub: MoveSub, ids: list[str], outcome: Outcome) -> None:
        await self.hub.broker.settle(
            self.tenant, self.address, self.group, sub.consumer, ids, outcome
        )

    async def _prefer_others(self, sub: MoveSub, deliveries: list[Delivery]) -> list[Delivery]:
        """A message whose lease ran out on this very link goes to another consumer when one
        has room: the link that let it expire is likely stuck on it."""
        held = set(sub.link.unsettled.values()) if sub.link.unsettled else ()
        back = [d for d in deliveries if d.redelivered and d.message.id in held]
        if not back or not any(
            other is not sub and other.link.credit > 0 and other.outlet.has_room()
            for other in self.subs
        ):
            return deliveries
        await self._settle(sub, [d.message.id for d in back], Outcome.RELEASED)
        self.dirty = True
        return [d for d in deliveries if d not in back]


class Hub:
    """Per-process fan-out. One per gateway process, shared by all sockets."""

    def __init__(
        self, broker: Broker, node_id: str = "node", policies: StoragePolicies | None = None
    ) -> None:
        self.broker = broker
        self.node_id = node_id
        self.policies = policies if policies is not None else StoragePolicies()
        self.topics: dict[tuple[str, str], Topic] = {}
        self.pumps: dict[tuple[str, str, str], GroupPump] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        # Times a copy link caught up (it had fallen behind the live stream), and how many of
        # those read the broker (the topic's recent messages did not reach back far enough).
        self.catch_ups = 0
        self.broker_catch_ups = 0

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def loop_call_later(self, delay: float, callback: Callable[[], None]) -> None:
        asyncio.get_running_loop().call_later(delay, callback)

    async def close(self) -> None:
        for topic in self.topics.values():
            topic.close()
        for pump in self.pumps.values():
            if pump.watch is not None:
                pump.watch.close()
        for task in list(self._tasks):
            task.cancel()
        self.topics.clear()
        self.pumps.clear()

    # -- copy ------------------------------------------------------------------------------

    async def attach_copy(self, tenant: str, link: Link, outlet: Outlet) -> tuple[str, bool]:
        """Attach a copy receiver; answers (position it starts after, recovered).

        Deliveries start with ``activate`` once the attach is answered.
        """
        key = (tenant, link.address)
        recovered = True
        if link.from_ not in ("$", "^"):
            probe = await self.broker.read(tenant, link.address, link.from_, 1)
            recovered = probe.recovered
        while True:
            topic = self.topics.get(key)
            if topic is None:
                topic = self.topics[key] = Topic(self, tenant, link.address)
                try:
                    await topic.start()
                except BaseException:
                    if self.topics.get(key) is topic:
                        del self.topics[key]
                    topic.ready.set()  # waiters see it gone and try again
                    raise
            else:
                await topic.ready.wait()
            # The last other subscriber may have left (and closed the topic) while we waited.
            if self.topics.get(key) is topic:
                break
        after = topic.live_id if link.from_ == "$" else START if link.from_ == "^" else link.from_
        sub = CopySub(link, outlet, topic, after)
        link.attachment = sub
        topic.subs.add(sub)
        if sub.cursor >= topic.live_pos:
            sub.live = True
            topic.live[sub] = None
        return after, recovered

    def behind(self, sub: CopySub) -> None:
        """``sub`` fell behind the live stream; catch it up when it can take more.

        Without credit it waits for a flow (``credit``); without room in its socket's outbox it
        waits in ``outlet.stalled`` for ``drained``.
        """
        if sub.catching_up or sub.link.credit <= 0:
            return
        if not sub.outlet.has_room():
            sub.outlet.stalled.add(sub)
            return
        self.catch_ups += 1
        if self._catch_up_from_memory(sub):
            return
        self.broker_catch_ups += 1
        sub.catching_up = True
        self.spawn(self._catch_up(sub))

    def _catch_up_from_memory(self, sub: CopySub) -> bool:
        """Catch ``sub`` up from its topic's recent messages, at once; False when they do not
        reach back to its cursor (read the broker). Stops, as a read would, for credit or room."""
        topic = sub.topic
        link = sub.link
        while link.state is LinkState.ATTACHED and not sub.live:
            now_ms = int(time.time() * 1000)
            batch = topic.recent_after(sub.cursor, min(link.credit, READ_BATCH), now_ms)
            if batch is None:
                return False
            if batch:
                messages = [m for m in batch if m.expires_at is None or m.expires_at > now_ms]
                if not deliver_copy(sub, messages):
                    return True  # it waits for credit or for room, as after a read
                last = batch[-1]
                if last.pos > sub.cursor:
                    sub.cursor = last.pos
                    sub.cursor_id = last.id
            if not batch or sub.cursor >= topic.live_pos:
                if sub.cursor < topic.live_pos:
                    sub.cursor = topic.live_pos
                    sub.cursor_id = topic.live_id
                sub.live = True
                topic.live[sub] = None
                return True
            if link.credit <= 0 or not sub.outlet.has_room():
                if link.credit > 0:
                    sub.outlet.stalled.add(sub)
                return True
        return True

    async def _catch_up(self, sub: CopySub) -> None:
        topic = sub.topic
        link = sub.link
        try:
            while link.state is LinkState.ATTACHED and not sub.live:
                if link.credit <= 0:
                    return
                if not sub.outlet.has_room():
                    sub.outlet.stalled.add(sub)
                    return
                # No more than the outbox has room for (at least one message): a batch of 512
                # messages of a MiB each would otherwise be read, and encoded, at once.
                outlet = sub.outlet
                room = max(outlet.high_water - outlet.conn.out_bytes, 1)
                result = await self.broker.read(
                    topic.tenant, topic.address, sub.cursor_id, min(link.credit, READ_BATCH), room
                )
                if link.state is not LinkState.ATTACHED or sub.live:
                    return
                now_ms = int(time.time() * 1000)
                messages = [
                    m for m in result.messages if m.expires_at is None or m.expires_at > now_ms
                ]
                if result.messages:
                    if not deliver_copy(sub, messages):
                        return
                    last = result.messages[-1]
                    if last.pos > sub.cursor:
                        sub.cursor = last.pos
                        sub.cursor_id = last.id
                if not result.messages or sub.cursor >= topic.live_pos:
                    # Caught up: what the live reader has not yet passed on comes that way.
                    if sub.cursor < topic.live_pos:
                        sub.cursor = topic.live_pos
                        sub.cursor_id = topic.live_id
                    sub.live = True
                    topic.live[sub] = None
                    return
        except Exception:
            log.exception("catch-up failed on %s", topic.address)
            self.loop_call_later(1.0, lambda: self.behind(sub))
        finally:
            sub.catching_up = False

    # -- move ------------------------------------------------------------------------------

    async def attach_move(self, tenant: str, link: Link, outlet: Outlet, consumer: str) -> None:
        key = (tenant, link.address, link.group)
        pump = self.pumps.get(key)
        if pump is None:
            pump = self.pumps[key] = GroupPump(self, tenant, link.address, link.group)
            pump.watch = self.broker.watch_group(tenant, link.address, link.group, pump.poke)
        sub = MoveSub(link, outlet, pump, consumer)
        link.attachment = sub
        pump.subs.append(sub)

    def activate(self, link: Link) -> None:
        """The attach is answered: start deliveries (same as a grant of credit)."""
        self.credit(link)

    async def settle(self, tenant: str, link: Link, ids: list[str], outcome: Outcome) -> None:
        sub = link.attachment
        if not isinstance(sub, MoveSub):
            return
        await self.broker.settle(tenant, link.address, link.group, sub.consumer, ids, outcome)
        sub.pump.poke()

    # -- credit, backpressure, detach ------------------------------------------------------

    def credit(self, link: Link) -> None:
        sub = link.attachment
        if isinstance(sub, CopySub):
            if not sub.live:
                self.behind(sub)
        elif isinstance(sub, MoveSub):
            sub.pump.poke()

    def drained(self, outlet: Outlet) -> None:
        """The socket's outbox has room again: resume what stopped for lack of it."""
        stalled = outlet.stalled
        outlet.stalled = set()
        for sub in stalled:
            if isinstance(sub, CopySub):
                if not sub.live:
                    self.behind(sub)
            else:
                sub.pump.poke()

    async def detach(self, tenant: str, link: Link, unsettled: list[str]) -> None:
        sub = link.attachment
        link.attachment = None
        if isinstance(sub, CopySub):
            topic = sub.topic
            topic.subs.discard(sub)
            sub.outlet.stalled.discard(sub)
            if sub.live:
                sub.live = False
                del topic.live[sub]
            if not topic.subs and self.topics.get((topic.tenant, topic.address)) is topic:
                del self.topics[(topic.tenant, topic.address)]
                topic.close()
        elif isinstance(sub, MoveSub):
            pump = sub.pump
            sub.outlet.stalled.discard(sub)
            if sub in pump.subs:
                pump.subs.remove(sub)
            try:
                if unsettled:
                    # The link is gone: its unsettled deliveries go to another consumer at once.
                    await self.broker.settle(
                        tenant, link.address, link.group, sub.consumer, unsettled, Outcome.RELEASED
                    )
            finally:
                # Even when the broker failed: a pump without consumers must not linger.
                if pump.subs:
                    pump.poke()
                elif self.pumps.get((tenant, link.address, link.group)) is pump:
                    del self.pumps[(tenant, link.address, link.group)]
                    if pump.watch is not None:
                        pump.watch.close()
