"""Move (queue) fan-out: competing consumers of a group share an address's messages.

One ``GroupPump`` per (tenant, address, group) claims messages from the broker for the local
consumer links that have credit, whenever the broker says something may be claimable (a
publish, a release, a lease or delay that ran out) or a consumer can take more.

Fair share (contract section 5): the pump hands out work in rounds of at most ``QUEUE_ROUND``
messages per link, taking turns over its links, and yields between rounds so that the pumps of
the group on other hubs (other processes, over a shared broker) claim their turns too. Who gets
what a consumer released or let expire is the broker's to decide (it knows every process's
consumers): the pump tells it how much each link could take (``room``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from wsq.broker.base import Handle
from wsq.core.limits import QUEUE_ROUND
from wsq.core.messages import Delivery, Outcome
from wsq.core.wire import message_tail
from wsq.hub.outlet import Outlet, Subscription
from wsq.protocol.state import Link, LinkState

if TYPE_CHECKING:
    from wsq.hub import Hub

log = logging.getLogger("wsq.hub")

#: Deliveries a move link holds unsettled at most: more wait in the group.
MAX_UNSETTLED_PER_LINK = 1024


class MoveSub(Subscription):
    """A move-mode receiver link: one consumer of its group."""

    __slots__ = ("consumer", "link", "outlet", "pump")

    def __init__(self, link: Link, outlet: Outlet, pump: GroupPump, consumer: str) -> None:
        self.link = link
        self.outlet = outlet
        self.pump = pump
        self.consumer = consumer

    def credit_granted(self) -> None:
        self.pump.poke()

    def resume(self) -> None:
        self.pump.poke()

    async def settled(self, ids: list[str], outcome: Outcome) -> None:
        await self.pump.settle(self, ids, outcome)
        self.pump.poke()

    async def ended(self, unsettled: list[str]) -> None:
        pump = self.pump
        self.outlet.stalled.discard(self)
        if self in pump.subs:
            pump.subs.remove(self)
        try:
            # The link is gone: it wants no more work, and its unsettled deliveries ended
            # without an outcome (counted in ``redelivered``, to another consumer first).
            await pump.hub.broker.leave(
                pump.tenant, pump.address, pump.group, self.consumer, unsettled
            )
        finally:
            # Even when the broker failed: a pump without consumers must not linger.
            if pump.subs:
                pump.poke()
            else:
                pump.hub.forget_pump(pump)


class GroupPump:
    """Claims messages of one consumer group for the local consumers with credit."""

    __slots__ = (
        "address",
        "delivered",
        "dirty",
        "group",
        "hub",
        "running",
        "subs",
        "tenant",
        "watch",
    )

    def __init__(self, hub: Hub, tenant: str, address: str, group: str) -> None:
        self.hub = hub
        self.tenant = tenant
        self.address = address
        self.group = group
        self.subs: list[MoveSub] = []
        self.running = False
        self.dirty = False
        self.watch: Handle | None = None
        # Deliveries made to its links (wsq.stats sums them).
        self.delivered = 0

    def poke(self) -> None:
        """Something may be claimable, or a consumer has room again."""
        self.dirty = True
        if not self.running and self.subs:
            self.running = True
            self.hub.spawn(self._run())

    def close(self) -> None:
        if self.watch is not None:
            self.watch.close()
            self.watch = None
        self.hub.delivered[self.tenant] += self.delivered
        self.delivered = 0

    async def _run(self) -> None:
        broker = self.hub.broker
        try:
            while self.dirty and self.subs:
                self.dirty = False
                got_any = False
                # One round: each link with credit gets a turn, the first turn moving on by one
                # every round.
                if len(self.subs) > 1:
                    self.subs.append(self.subs.pop(0))
                for sub in list(self.subs):
                    link = sub.link
                    room = min(link.credit, MAX_UNSETTLED_PER_LINK - len(link.unsettled))
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
                        min(room, QUEUE_ROUND),
                        link.lease_ms,
                        link.filter,
                        room=room,
                    )
                    if not deliveries:
                        continue
                    got_any = True
                    sent, back = self._send(sub, deliveries)
                    self.delivered += len(sent)
                    if back:
                        await self.settle(sub, back, Outcome.RELEASED)
                    if sent and link.pre_settled:
                        # At-most-once: settled as it is sent.
                        await self.settle(sub, sent, Outcome.ACCEPTED)
                if got_any:
                    self.dirty = True
                    # Let the group's other pumps (and this process's sockets) have a turn.
                    await asyncio.sleep(0)
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
        # Sent as one run (one compact frame where the client chose that form); the outbox is
        # counted as if each went alone in the plain form, which is never less.
        queued = conn.out_bytes
        extra = conn.transfer_overhead(link)
        tails: list[str] = []
        for d in deliveries:
            if queued >= high_water:
                # Full socket: what does not fit goes back to the group at once.
                sub.outlet.stalled.add(sub)
                break
            tail = message_tail(d.message, d.redelivered)
            tails.append(tail)
            queued += len(tail) + extra
        sent = [d.message.id for d in deliveries[: len(tails)]]
        conn.send_transfers(link, tails, sent)
        return sent, [d.message.id for d in deliveries[len(tails) :]]

    async def settle(self, sub: MoveSub, ids: list[str], outcome: Outcome) -> None:
        await self.hub.broker.settle(
            self.tenant, self.address, self.group, sub.consumer, ids, outcome
        )
