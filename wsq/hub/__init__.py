"""In-process fan-out from the broker to the links of this process's sockets.

One ``Hub`` per gateway process, shared by every socket. It reads each address once per process
however many links it serves: copy (feed) links share a ``Topic`` (``hub.copy``), move (queue)
links of one group share a ``GroupPump`` (``hub.move``). It writes to sockets through an
``Outlet`` (``hub.outlet``), never to a socket or the protocol connection's internals, and hangs a
``Subscription`` on each link it serves, which answers that link's events.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from wsq.broker.base import Broker, Rewind
from wsq.core.messages import Outcome
from wsq.core.policy import StoragePolicies
from wsq.core.positions import START
from wsq.hub.conflate import Conflator
from wsq.hub.copy import CopySub, Topic
from wsq.hub.move import GroupPump, MoveSub
from wsq.hub.outlet import Outlet, Subscription, Transfers
from wsq.protocol.state import Link

__all__ = ["Hub", "Outlet", "Subscription", "Transfers"]


class Hub:
    """Per-process fan-out. One per gateway process, shared by all sockets."""

    def __init__(self, broker: Broker, policies: StoragePolicies | None = None) -> None:
        self.broker = broker
        self.policies = policies if policies is not None else StoragePolicies()
        self.topics: dict[tuple[str, str], Topic] = {}
        self.pumps: dict[tuple[str, str, str], GroupPump] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        # Times a copy link caught up (it had fallen behind the live stream), and how many of
        # those read the broker (the topic's recent messages did not reach back far enough).
        self.catch_ups = 0
        self.broker_catch_ups = 0
        # Deliveries by tenant of the topics and pumps closed since the process started (live
        # ones count their own: ``deliveries``).
        self.delivered: Counter[str] = Counter()
        # Conflating links: messages superseded before their turn (never sent), and messages
        # dropped because a link held all the subjects or bytes it may.
        self.conflated = 0
        self.conflate_dropped = 0
        # Seconds, for conflation's turns; a test may put a fake clock here.
        self.clock: Callable[[], float] = time.monotonic

    def deliveries(self) -> Counter[str]:
        """Deliveries made by this process since it started, by tenant."""
        total = self.delivered.copy()
        for topic in self.topics.values():
            total[topic.tenant] += topic.delivered
        for pump in self.pumps.values():
            total[pump.tenant] += pump.delivered
        return total

    def stats(self) -> dict[str, int]:
        """The hub's counters, named as the metrics name them."""
        return {
            "hub.catch_ups": self.catch_ups,
            "hub.broker_catch_ups": self.broker_catch_ups,
            "hub.conflated": self.conflated,
            "hub.conflate_dropped": self.conflate_dropped,
        }

    def _count_conflated(self, n: int) -> None:
        self.conflated += n

    def _count_conflate_dropped(self, n: int) -> None:
        self.conflate_dropped += n

    def spawn(self, coro: Any) -> None:
        # A fresh context: a task started from a socket's task serves every socket, and must not
        # carry that socket's log context (wsq.logs.bind_connection) into its lines.
        task = asyncio.get_running_loop().create_task(coro, context=contextvars.Context())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def loop_call_later(self, delay: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        return asyncio.get_running_loop().call_later(delay, callback)

    async def close(self) -> None:
        for topic in self.topics.values():
            topic.close()
        for pump in self.pumps.values():
            pump.close()
        for task in list(self._tasks):
            task.cancel()
        self.topics.clear()
        self.pumps.clear()

    # -- attaching -------------------------------------------------------------------------

    async def attach_copy(self, tenant: str, link: Link, outlet: Outlet) -> tuple[str, bool]:
        """Attach a copy receiver; answers (position it starts after, recovered).

        Deliveries start with ``activate`` once the attach is answered.
        """
        key = (tenant, link.address)
        recovered = True
        rewind: Rewind | None = None
        if link.rewind is not None:
            rewind = await self.broker.rewind(
                tenant, link.address, link.rewind, link.filter, link.conflate_ms is not None
            )
        elif link.from_ not in ("$", "^"):
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
        if rewind is not None:
            after = rewind.after
        elif link.from_ == "$":
            after = topic.live_id
        else:
            after = START if link.from_ == "^" else link.from_
        sub = CopySub(link, outlet, topic, after)
        if rewind is not None and rewind.keep is not None:
            sub.keep = rewind.keep
            sub.keep_upto = rewind.upto
        if link.conflate_ms is not None:
            sub.conflator = Conflator(
                sub,
                link.conflate_ms,
                self.clock,
                self.loop_call_later,
                self._count_conflated,
                self._count_conflate_dropped,
            )
        link.attachment = sub
        topic.subs.add(sub)
        if sub.cursor >= topic.live_pos:
            sub.live = True
            topic.live[sub] = None
        return after, recovered

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

    def forget_topic_if_unused(self, topic: Topic) -> None:
        key = (topic.tenant, topic.address)
        if not topic.subs and self.topics.get(key) is topic:
            del self.topics[key]
            topic.close()

    def forget_pump(self, pump: GroupPump) -> None:
        key = (pump.tenant, pump.address, pump.group)
        if self.pumps.get(key) is pump:
            del self.pumps[key]
            pump.close()

    # -- a link's events, handed to its subscription ----------------------------------------

    def credit(self, link: Link) -> None:
        if link.attachment is not None:
            link.attachment.credit_granted()

    async def settle(self, link: Link, ids: list[str], outcome: Outcome) -> None:
        if link.attachment is not None:
            await link.attachment.settled(ids, outcome)

    async def detach(self, link: Link, unsettled: list[str]) -> None:
        sub = link.attachment
        link.attachment = None
        if sub is not None:
            await sub.ended(unsettled)

    def drained(self, outlet: Outlet) -> None:
        """The socket's outbox has room again: resume what stopped for lack of it."""
        outlet.drained()
