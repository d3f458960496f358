"""The queue pump at its edges (issue 14: mutants of ``GroupPump`` and ``MoveSub`` that the
queue tests let live): consumers of other addresses and groups keep apart, a released message
goes to another consumer first, the turns move on with two consumers, consumers with no
credit or no matching message do not end a round for those after them, the unsettled bound,
one pump run at a time, what is handed back for a full outbox, and a failed claim tried again."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from test_hub import Socket, hub_on, settle_loop

from wsq.broker.memory import MemoryBroker
from wsq.core.errors import BrokerUnavailable
from wsq.core.messages import NewMessage
from wsq.core.policy import StoragePolicies
from wsq.core.wire import message_tail
from wsq.hub import move


async def jobs(broker: MemoryBroker, address: str, n: int, subject: str | None = None) -> None:
    await broker.publish(
        "t",
        address,
        [NewMessage(body=json.dumps(i), publisher="p", subject=subject) for i in range(n)],
    )
    await settle_loop()


def frames(sock: Socket) -> list[dict[str, Any]]:
    return sock.drain()


def bodies(sock: Socket) -> list[Any]:
    return [t["body"] for t in sock.drain()]


def flow(sock: Socket, credit: int, handle: int = 0) -> None:
    sock.hub.credit(sock.send({"op": "flow", "ch": 1, "handle": handle, "credit": credit}).link)


async def test_consumers_of_other_addresses_and_groups_get_only_their_own() -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        a, b, c = Socket(hub), Socket(hub), Socket(hub)
        await a.attach(address="q1", mode="move", credit=10)
        await b.attach(address="q2", mode="move", credit=10)
        await c.attach(address="q1", mode="move", credit=10, group="other")
        await settle_loop()
        await jobs(broker, "q2", 2)
        assert bodies(b) == [0, 1]
        assert bodies(a) == [] and bodies(c) == []
        await jobs(broker, "q1", 1)
        # Each group of q1 gets every message once.
        assert bodies(a) == [0] and bodies(c) == [0] and bodies(b) == []
        assert len(hub.pumps) == 3


async def test_a_released_message_goes_to_another_consumer_first() -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        socks = [Socket(hub), Socket(hub)]
        links = [await s.attach(address="rl", mode="move", credit=5) for s in socks]
        await settle_loop()
        for round_ in range(4):  # whoever got it releases it: the other one gets it
            await jobs(broker, "rl", 1)
            got = [frames(s) for s in socks]
            holder = 0 if got[0] else 1
            assert [len(g) for g in got] == ([1, 0] if holder == 0 else [0, 1]), round_
            first = got[holder][0]
            event = socks[holder].send(
                {
                    "op": "disposition",
                    "ch": 1,
                    "first": first["delivery"],
                    "outcome": "released",
                }
            )
            await hub.settle(links[holder], event.ids, event.outcome)
            await settle_loop()
            again = frames(socks[1 - holder])
            assert [t["body"] for t in again] == [first["body"]], round_
            assert frames(socks[holder]) == []
            event = socks[1 - holder].send(
                {"op": "disposition", "ch": 1, "first": again[0]["delivery"]}
            )
            await hub.settle(links[1 - holder], event.ids, event.outcome)
            await settle_loop()


async def test_two_consumers_take_the_first_turn_in_turn() -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        a, b = Socket(hub), Socket(hub)
        await a.attach(address="tt", mode="move", credit=0)
        await b.attach(address="tt", mode="move", credit=0)
        await settle_loop()
        seen = []
        for _ in range(2):
            await jobs(broker, "tt", 4)
            flow(a, 2)
            flow(b, 2)
            await settle_loop()
            seen.append((bodies(a), bodies(b)))
        # One round each time, the first turn moving on: b first, then a.
        assert seen == [([2, 3], [0, 1]), ([0, 1], [2, 3])]


async def test_a_consumer_without_credit_room_or_a_match_does_not_end_the_round() -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        idle, full, picky, busy = Socket(hub), Socket(hub), Socket(hub), Socket(hub)
        await idle.attach(address="r", mode="move", credit=0)
        await full.attach(address="r", mode="move", credit=100)
        await picky.attach(address="r", mode="move", credit=100, filter={"subject": "r.b"})
        await busy.attach(address="r", mode="move", credit=100)
        await settle_loop()
        # ``full``'s socket is never written again: a feed's message fills its outbox.
        await full.attach(1, address="pad", credit=10)
        full.outlet.high_water = 1
        await jobs(broker, "pad", 1)
        assert not full.outlet.has_room()
        for n in range(1, 9):  # whatever the order of turns, busy gets each at once
            await jobs(broker, "r", 1, subject="r.a")
            assert bodies(busy) == [0], n
        assert bodies(picky) == [] and bodies(idle) == []
        await jobs(broker, "r", 1, subject="r.b")
        assert len(bodies(picky)) + len(bodies(busy)) == 1


async def test_a_consumer_holds_no_more_than_the_unsettled_bound() -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        sock = Socket(hub)
        link = await sock.attach(address="ub", mode="move", credit=5000)
        await jobs(broker, "ub", move.MAX_UNSETTLED_PER_LINK + 100)
        got: list[Any] = []
        for _ in range(100):
            await settle_loop()
            got += bodies(sock)
        assert len(got) == move.MAX_UNSETTLED_PER_LINK
        assert len(link.unsettled) == move.MAX_UNSETTLED_PER_LINK


class SlowClaim(MemoryBroker):
    """Its claim takes a round trip (as with Redis), and counts the claims under way."""

    under_way = 0
    most = 0

    async def claim(self, *args: Any, **kwargs: Any) -> Any:
        self.under_way += 1
        self.most = max(self.most, self.under_way)
        try:
            await asyncio.sleep(0.01)
            return await super().claim(*args, **kwargs)
        finally:
            self.under_way -= 1


async def test_one_pump_run_at_a_time_however_often_it_is_poked() -> None:
    broker = SlowClaim(StoragePolicies())
    async with hub_on(broker) as hub:
        sock = Socket(hub)
        link = await sock.attach(address="one", mode="move", credit=3)
        await jobs(broker, "one", 10)
        for _ in range(5):
            flow(sock, 0)  # a flow of no credit still pokes the pump
        got: list[Any] = []
        for _ in range(50):  # the condition, bounded
            await asyncio.sleep(0.01)
            got += bodies(sock)
            if len(got) >= 3 and broker.under_way == 0:
                break
        assert got == [0, 1, 2] and link.credit == 0
        assert broker.most == 1


async def test_what_a_full_outbox_hands_back_was_never_delivered() -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        sock = Socket(hub)
        await jobs(broker, "fb", 50)
        sock.outlet.high_water = 1  # room for one transfer at a time
        await sock.attach(address="fb", mode="move", credit=100)
        got: list[dict[str, Any]] = []
        for _ in range(100):
            await settle_loop()
            got += frames(sock)
            if len(got) >= 50:
                break
        assert sorted(t["body"] for t in got) == list(range(50))
        # Handed back unsent: released, not counted as a delivery that failed.
        assert all(t["props"]["redelivered"] == 0 for t in got)


class FailingOnce(MemoryBroker):
    """Its next claim or read fails once when told."""

    fail_claim = False
    fail_read = False

    async def claim(self, *args: Any, **kwargs: Any) -> Any:
        if self.fail_claim:
            self.fail_claim = False
            raise BrokerUnavailable("down")
        return await super().claim(*args, **kwargs)

    async def read(self, *args: Any, **kwargs: Any) -> Any:
        if self.fail_read:
            self.fail_read = False
            raise BrokerUnavailable("down")
        return await super().read(*args, **kwargs)


class Later:
    """The hub's timers, called when the test says."""

    def __init__(self, hub: Any) -> None:
        self.calls: list[tuple[float, Any]] = []
        hub.loop_call_later = lambda delay, callback: self.calls.append((delay, callback))

    def run(self) -> None:
        calls, self.calls = self.calls, []
        for _, callback in calls:
            callback()


async def test_a_failed_claim_is_logged_and_tried_again_a_second_later(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = FailingOnce(StoragePolicies())
    async with hub_on(broker, errors_logged=True) as hub:
        later = Later(hub)
        sock = Socket(hub)
        await sock.attach(address="fc", mode="move", credit=10)
        await settle_loop()
        broker.fail_claim = True
        with caplog.at_level(logging.ERROR, logger="wsq.hub"):
            await jobs(broker, "fc", 2)
        assert bodies(sock) == []
        assert [r.getMessage() for r in caplog.records] == ["group pump failed for fc/default"]
        assert [delay for delay, _ in later.calls] == [1.0]
        later.run()
        await settle_loop()
        assert bodies(sock) == [0, 1]


async def test_a_failed_catch_up_read_is_logged_and_tried_again_a_second_later(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = FailingOnce(StoragePolicies())
    async with hub_on(broker, errors_logged=True) as hub:
        later = Later(hub)
        await jobs(broker, "fr", 3)
        broker.fail_read = True
        sock = Socket(hub)
        with caplog.at_level(logging.ERROR, logger="wsq.hub"):
            await sock.attach(address="fr", credit=10, **{"from": "^"})
            await settle_loop()
        assert bodies(sock) == []
        assert [r.getMessage() for r in caplog.records] == ["catch-up failed on fr"]
        assert [delay for delay, _ in later.calls] == [1.0]
        later.run()
        await settle_loop()
        assert bodies(sock) == [0, 1, 2]
        assert (hub.catch_ups, hub.broker_catch_ups) == (2, 2)  # the failed one, then again


async def test_the_transfer_that_reaches_the_mark_is_the_last_of_a_round() -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        for k in (1, 2, 3):
            address = f"hw{k}"
            await jobs(broker, address, 5)
            stored = (await broker.read("t", address, "0-0", 10)).messages
            sock = Socket(hub)
            link = await sock.attach(address=address, mode="move", credit=0)
            extra = sock.conn.transfer_overhead(link)
            sock.drain()  # the attach answer
            # Exactly k transfers' worth: the k-th fills the outbox to the mark.
            sock.outlet.high_water = sum(len(message_tail(m, 0)) + extra for m in stored[:k])
            runs: list[int] = []
            send = sock.conn.send_transfers

            def counted(
                link: Any, tails: Any, ids: Any = None, send: Any = send, runs: Any = runs
            ) -> None:
                runs.append(len(tails))
                send(link, tails, ids)

            sock.conn.send_transfers = counted  # type: ignore[method-assign]
            flow(sock, 100)
            await settle_loop()
            # The first round sent k (later rounds go on: the outbox holds less than counted).
            assert runs[0] == k, runs


async def test_a_lease_that_runs_out_wakes_the_pump_for_another_consumer() -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        slow, other = Socket(hub), Socket(hub)
        await slow.attach(address="le", mode="move", credit=1, lease=100)
        await settle_loop()
        await jobs(broker, "le", 1)
        assert bodies(slow) == [0]  # and never settled
        await other.attach(address="le", mode="move", credit=1)
        await settle_loop()
        got: list[Any] = []
        for _ in range(300):  # the condition, bounded: the lease runs out after 100 ms
            await asyncio.sleep(0.01)
            got += frames(other)
            if got:
                break
        assert [(t["body"], t["props"]["redelivered"]) for t in got] == [(0, 1)]


async def test_the_last_consumer_gone_the_pump_stops_watching_its_group() -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        sock = Socket(hub)
        link = await sock.attach(address="gw", mode="move", credit=1)
        watchers = broker._logs[("t", "gw")].groups["default"].watchers
        assert len(watchers) == 1
        await hub.detach(link, [])
        assert hub.pumps == {} and len(watchers) == 0


async def test_an_outbox_at_its_mark_has_no_room() -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        sock = Socket(hub)
        await sock.attach(address="mk", mode="move", credit=1)  # the answer waits unsent
        queued = sock.conn.out_bytes
        sock.outlet.high_water = queued + 1
        assert sock.outlet.has_room()
        sock.outlet.high_water = queued
        assert not sock.outlet.has_room()
