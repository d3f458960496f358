"""A copy link's batches without sockets (issue 14: mutants of ``deliver_copy`` and of the
topic's recent messages that the fan-out tests let live): a batch that starts at or before the
link's cursor sends only what comes after it, the transfer that crosses the high-water mark is
the last one sent wherever the mark and the outbox stand, a link stopped by room with credit
left resumes when the outbox drains, and the topic's recent messages are exactly the newest
ones within their bounds, named from the position just before them."""

from __future__ import annotations

import json
from typing import Any

from test_hub import Socket, hub_on, settle_loop, tenant_t

from wsq.broker.memory import MemoryBroker
from wsq.core.messages import Message, NewMessage
from wsq.core.policy import StoragePolicies
from wsq.core.positions import START, parse_position
from wsq.core.wire import copy_tail
from wsq.hub.copy import CopySub, deliver_copy


def numbered(numbers: range, subject: str | None = None, pad: int = 0) -> list[NewMessage]:
    return [
        NewMessage(
            body=json.dumps({"n": i, "pad": "x" * (pad * (i % 7))}),
            publisher="p",
            subject=subject if subject is None else f"{subject}.{i % 2}",
        )
        for i in numbers
    ]


def ints(frames: list[dict[str, Any]]) -> list[int]:
    return [t["body"]["n"] for t in frames]


async def stored(broker: MemoryBroker, address: str) -> list[Message]:
    return (await broker.read("t", address, START, 1000)).messages


def top_up(sock: Socket, link: Any, credit: int) -> None:
    """The client's flow (it adds) up to ``credit``, without the hub hearing of it (the test
    calls deliver_copy itself)."""
    sock.send({"op": "flow", "ch": 1, "handle": 0, "credit": credit - link.credit})
    assert link.credit == credit


def rewind_to(sub: CopySub, k: int, messages: list[Message]) -> None:
    """The link has seen ``messages`` up to the k-th (-1: none of them)."""
    if k < 0:
        sub.cursor, sub.cursor_id = parse_position(START), START
    else:
        sub.seen(messages[k])


async def test_a_batch_reaching_back_before_the_cursor_sends_only_what_follows_it() -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        await broker.publish("t", "feed", numbered(range(6)))
        sock = Socket(hub)
        sub = (await sock.attach(address="feed", credit=1000)).attachment
        msgs = await stored(broker, "feed")
        for k in range(-1, 6):  # the cursor before all of them, then at each one
            rewind_to(sub, k, msgs)
            assert deliver_copy(sub, msgs) is True
            assert ints(sock.drain()) == list(range(k + 1, 6)), k
            assert sub.cursor == msgs[-1].pos
        assert hub.deliveries() == {"t": 21}


async def test_a_filtered_batch_reaching_back_before_the_cursor_sends_only_later_matches() -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        await broker.publish("t", "feed", numbered(range(8), subject="s"))
        sock = Socket(hub)
        link = await sock.attach(address="feed", credit=1000, filter={"subject": "s.1"})
        msgs = await stored(broker, "feed")
        for k in range(-1, 8):
            rewind_to(link.attachment, k, msgs)
            assert deliver_copy(link.attachment, msgs) is True
            assert ints(sock.drain()) == [i for i in range(k + 1, 8) if i % 2], k


def expected_sends(sock: Socket, link: Any, tails: list[str], credit: int) -> int:
    """One transfer at a time, as the move pump sends: while the outbox is under the mark, send
    the next (counted as its tail and the most a transfer adds), within the credit."""
    queued = sock.conn.out_bytes
    extra = sock.conn.transfer_overhead(link)
    n = 0
    for tail in tails[:credit]:
        if queued >= sock.outlet.high_water:
            break
        queued += len(tail) + extra
        n += 1
    return n


async def test_the_transfer_that_crosses_the_mark_is_the_last_wherever_the_mark_stands() -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        await broker.publish("t", "feed", numbered(range(12), pad=40))
        sock = Socket(hub)
        link = await sock.attach(address="feed", credit=0)
        sub = link.attachment
        msgs = await stored(broker, "feed")
        tails = [copy_tail(m) for m in msgs]
        extra = sock.conn.transfer_overhead(link)
        whole = sum(map(len, tails)) + len(tails) * extra
        sent_total = 0
        # Every mark from "full at once" to "room for all", and around each transfer's end.
        marks = set(range(1, whole + 2, 5))
        for end in range(1, len(tails) + 1):
            edge = sum(map(len, tails[:end])) + end * extra
            marks |= {edge - 1, edge, edge + 1}
        for credit in (5, 1000):  # flow adds: the smaller first
            for mark in sorted(marks):
                sock.drain()
                sock.outlet.high_water = mark
                top_up(sock, link, credit)
                rewind_to(sub, -1, msgs)
                want = expected_sends(sock, link, tails, credit)
                done = deliver_copy(sub, msgs)
                got = ints(sock.drain())
                assert got == list(range(want)), (credit, mark)
                assert done is (want == len(msgs)), (credit, mark)
                assert sub.cursor == (msgs[want - 1].pos if want else parse_position(START))
                sent_total += want
        assert hub.deliveries() == {"t": sent_total}


async def test_an_outbox_already_part_full_leaves_only_the_rest_of_the_room() -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        await broker.publish("t", "feed", numbered(range(12), pad=40))
        sock = Socket(hub)
        link = await sock.attach(address="feed", credit=0)
        sub = link.attachment
        msgs = await stored(broker, "feed")
        tails = [copy_tail(m) for m in msgs]
        for first in (1, 2, 3):
            for over in (-1, 0, 1, 2, 50, 400):
                sock.drain()
                sock.outlet.high_water = 10**6
                top_up(sock, link, 1000)
                rewind_to(sub, -1, msgs)
                assert deliver_copy(sub, msgs[:first]) is True  # queued, not yet written
                queued = sock.conn.out_bytes
                sock.outlet.high_water = max(queued + over, 1)
                want = expected_sends(sock, link, tails[first:], 1000)
                done = deliver_copy(sub, msgs)
                assert ints(sock.drain()) == list(range(first + want)), (first, over)
                assert done is (first + want == len(msgs))


async def test_no_credit_sends_nothing_and_the_batch_waits() -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        await broker.publish("t", "feed", numbered(range(3)))
        sock = Socket(hub)
        sub = (await sock.attach(address="feed", credit=0)).attachment
        msgs = await stored(broker, "feed")
        rewind_to(sub, -1, msgs)
        assert deliver_copy(sub, msgs) is False
        assert sock.drain() == []
        assert sub.cursor == parse_position(START)
        assert deliver_copy(sub, []) is True  # nothing to send is not a stop


async def test_a_catch_up_stopped_by_room_with_one_credit_left_resumes_when_it_drains() -> None:
    broker = MemoryBroker(StoragePolicies())
    async with hub_on(broker) as hub:
        late = Socket(hub)
        link = await late.attach(address="feed", credit=0)
        fast = Socket(hub)
        await fast.attach(address="feed", credit=1000)  # the topic remembers for ``late``
        await broker.publish("t", "feed", numbered(range(4)))
        await settle_loop()
        assert late.drain() == [] and ints(fast.drain()) == [0, 1, 2, 3]
        one = len(copy_tail((await stored(broker, "feed"))[0])) + late.conn.transfer_overhead(link)
        # Room for three of the four (the third crosses the mark): one credit is left over.
        late.outlet.high_water = 2 * one + one // 2
        hub.credit(late.send({"op": "flow", "ch": 1, "handle": 0, "credit": 4}).link)
        await settle_loop()
        assert ints(late.drain()) == [0, 1, 2]  # drained: the hub hears there is room
        await settle_loop()
        assert ints(late.drain()) == [3]
        assert link.credit == 0 and hub.broker_catch_ups == 0


class RecordingTail(MemoryBroker):
    """Its live reader also keeps every batch it passes on."""

    passed: list[list[Message]]

    def tail(self, tenant: str, address: str, after: str, on_messages: Any) -> Any:
        self.passed = []

        def record(messages: list[Message]) -> None:
            self.passed.append(messages)
            on_messages(messages)

        return super().tail(tenant, address, after, record)


def window(
    batches: list[list[Message]], start: Any, cap: int, max_bytes: int
) -> tuple[list[str], Any]:
    """What the topic's recent messages should be: every batch passed on after ``start``, cut
    back to the newest ``cap`` and ``max_bytes`` whenever it held twice either after a batch;
    and the position just before the first of them."""
    kept: list[Message] = []
    floor = start
    for batch in batches:
        kept += batch
        size = sum(len(copy_tail(x)) for x in kept)
        if len(kept) > 2 * cap or size > 2 * max_bytes:
            cut = max(len(kept) - cap, 0)
            while sum(len(copy_tail(x)) for x in kept[cut:]) > max_bytes and cut < len(kept):
                cut += 1
            if cut:
                floor = kept[cut - 1].pos
                kept = kept[cut:]
    return [m.id for m in kept], floor


async def test_the_recent_messages_are_the_newest_within_their_bounds_named_from_before() -> None:
    cap, max_bytes = 4, 600
    policies = tenant_t(retention_max_len=cap, retention_max_bytes=max_bytes)
    broker = RecordingTail(policies)
    async with hub_on(broker, policies) as hub:
        stuck = Socket(hub)
        await stuck.attach(address="feed", credit=0)  # behind from the first message on
        live = Socket(hub)
        await live.attach(address="feed", credit=10_000)
        topic = hub.topics[("t", "feed")]
        start = topic.live_pos
        for i in range(60):
            # Small ones first, one to three at a time: cut by count. Then now and then big
            # ones: cut by bytes alone while fewer than ``cap`` are held.
            pad = 10 if i < 30 else 900 if i % 4 == 1 else 500 if i % 7 == 3 else 10
            n = i * 3
            batch = [
                NewMessage(body=json.dumps({"n": j, "pad": "x" * pad}), publisher="p")
                for j in range(n, n + 1 + i % 3)
            ]
            await broker.publish("t", "feed", batch)
            live.drain()
            ids, floor = window(broker.passed, start, cap, max_bytes)
            assert [m.id for m in topic.recent] == ids, i
            assert topic.recent_floor == floor, i
            assert topic.recent_bytes == sum(len(copy_tail(m)) for m in topic.recent), i
