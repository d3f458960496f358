"""What every Broker implementation must do, tested through the Broker interface only.

Runs once per broker of ``conftest.BROKER_FACTORIES``. Real time is involved (leases, ttl,
redelivery delay, retention age) but kept to a few hundred ms; waits poll for a condition
rather than sleeping a fixed time wherever the outcome is something that must happen.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from types import MappingProxyType
from typing import Any

import pytest

from wsq.broker.base import Broker
from wsq.config import Settings, TenantConfig
from wsq.core.addresses import Pattern
from wsq.core.errors import IdempotencyKeyReused
from wsq.core.limits import HANDOFF_MS
from wsq.core.messages import Delivery, Message, NewMessage, Outcome
from wsq.core.positions import START, parse_position

T = "acme"
LEASE = 30_000  # ms: long enough never to run out during a test that does not want it to
#: Redelivery delay of every tenant below (ms), kept short: tests sleep past it.
REDELIVERY_DELAY_MS = 150
#: Retention of the "short" tenant (messages) and of the "aging" tenant (ms).
SHORT_MAX_LEN = 5
AGING_MAX_AGE_MS = 300
#: What a message of a 998-character string body published by "alice" costs (``stored_size``):
#: its body's JSON text and its stored props.
COST = 1000 + len('{"publisher":"alice"}')
#: Retention of the "bytes" tenant (bytes: 4 messages of COST) and dedup window of "brief" (ms).
BYTES_MAX = 4096
BRIEF_DEDUP_MS = 300
#: Dead-letter address of the "dl" tenant.
DEAD_LETTER = "dead.letters"


def _tenant(name: str, **changes: Any) -> TenantConfig:
    base = TenantConfig(name=name, issuer=name, keys=(), redelivery_delay_ms=REDELIVERY_DELAY_MS)
    return dataclasses.replace(base, **changes)


@pytest.fixture
def broker_settings() -> Settings:
    return Settings(
        tenants=MappingProxyType(
            {
                "acme": _tenant("acme"),
                "globex": _tenant("globex"),
                "short": _tenant("short", retention_max_len=SHORT_MAX_LEN),
                "aging": _tenant("aging", retention_max_age_ms=AGING_MAX_AGE_MS),
                "dl": _tenant("dl", dead_letter=DEAD_LETTER),
                "limited": _tenant("limited", dead_letter=DEAD_LETTER, max_deliveries=2),
                "limitdrop": _tenant("limitdrop", max_deliveries=1),
                "nodedup": _tenant("nodedup", dedup_window_ms=0),
                "bytes": _tenant("bytes", retention_max_bytes=BYTES_MAX),
                "brief": _tenant("brief", dedup_window_ms=BRIEF_DEDUP_MS),
            }
        )
    )


def new(
    body: Any = None,
    *,
    subject: str | None = None,
    message_id: str | None = None,
    ttl_ms: int | None = None,
    headers: dict[str, Any] | None = None,
) -> NewMessage:
    return NewMessage(
        body=json.dumps(body),
        publisher="alice",
        subject=subject,
        message_id=message_id,
        headers=headers,
        ttl_ms=ttl_ms,
    )


async def publish(broker: Broker, address: str, *bodies: Any, tenant: str = T) -> list[str]:
    results = await broker.publish(tenant, address, [new(b) for b in bodies])
    assert not any(r.duplicate for r in results)
    return [r.id for r in results]


def bodies(messages: list[Message]) -> list[Any]:
    return [json.loads(m.body) for m in messages]


def dbodies(deliveries: list[Delivery]) -> list[Any]:
    return [json.loads(d.message.body) for d in deliveries]


async def eventually(cond: Callable[[], bool], within: float = 3.0) -> None:
    """Wait until ``cond()`` holds; fail after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not cond():
        if loop.time() > deadline:
            pytest.fail("condition not met in time")
        await asyncio.sleep(0.01)


async def dead_letters(broker: Broker, tenant: str, start: str, n: int) -> list[Message]:
    """The ``n`` dead letters stored after ``start`` (Redis copies them in the background)."""
    got: list[Message] = []

    async def read() -> None:
        got[:] = (await broker.read(tenant, DEAD_LETTER, start, 100)).messages

    for _ in range(300):
        await read()
        if len(got) >= n:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    await read()  # and no more than n
    assert len(got) == n, bodies(got)
    return got


class Collector:
    """An ``on_messages`` callback that keeps what it is given, batch by batch."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.batches = 0

    def __call__(self, messages: list[Message]) -> None:
        self.batches += 1
        self.messages.extend(messages)

    @property
    def ids(self) -> list[str]:
        return [m.id for m in self.messages]


@asynccontextmanager
async def tailing(
    broker: Broker, address: str, after: str | None = None
) -> AsyncIterator[Collector]:
    """A ``tail`` of ``address`` (tenant ``T``) from ``after`` (default: its last position),
    collecting what it is handed; closed on exit."""
    if after is None:
        after = await broker.last_position(T, address)
    got = Collector()
    handle = broker.tail(T, address, after, got)
    try:
        yield got
    finally:
        handle.close()


class Flag:
    """An ``on_available`` callback: counts the calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


# -- publish / read ----------------------------------------------------------------------------


async def test_publish_returns_increasing_positions(broker: Broker, address: str) -> None:
    first = await publish(broker, address, 1, 2, 3)
    second = await publish(broker, address, 4)
    third = await publish(broker, address, 5, 6)
    ids = first + second + third
    positions = [parse_position(i) for i in ids]
    assert positions == sorted(positions)
    assert len(set(positions)) == len(positions)
    assert all(p > (0, 0) for p in positions)


async def test_published_message_fields(broker: Broker, address: str) -> None:
    [res] = await broker.publish(
        T,
        address,
        [
            NewMessage(
                body='{"a":1}',
                publisher="bob",
                subject="orders.de",
                message_id="m-1",
                content_type="application/json",
                headers={"k": "v"},
            )
        ],
    )
    [m] = (await broker.read(T, address, START, 10)).messages
    assert m.id == res.id
    assert m.pos == parse_position(res.id)
    assert m.body == '{"a":1}'
    assert m.publisher == "bob"
    assert m.subject == "orders.de"
    assert m.message_id == "m-1"
    assert m.content_type == "application/json"
    assert dict(m.headers or {}) == {"k": "v"}
    assert m.expires_at is None
    assert abs(m.ts - parse_position(m.id)[0]) < 1000


async def test_ttl_sets_expiry(broker: Broker, address: str) -> None:
    await broker.publish(T, address, [new(1, ttl_ms=60_000)])
    [m] = (await broker.read(T, address, START, 10)).messages
    assert m.expires_at == m.ts + 60_000


async def test_read_from_start_after_position_and_limit(broker: Broker, address: str) -> None:
    ids = await publish(broker, address, *range(10))
    res = await broker.read(T, address, START, 100)
    assert res.recovered
    assert bodies(res.messages) == list(range(10))
    assert [m.id for m in res.messages] == ids

    res = await broker.read(T, address, START, 3)
    assert bodies(res.messages) == [0, 1, 2]

    res = await broker.read(T, address, ids[4], 3)
    assert bodies(res.messages) == [5, 6, 7]
    assert res.recovered

    res = await broker.read(T, address, ids[-1], 10)
    assert res.messages == []
    assert res.recovered


async def test_read_stops_at_a_byte_budget_but_returns_at_least_one(
    broker: Broker, address: str
) -> None:
    # Each body's JSON text is 1000 characters: "x…x" (998 x and two quotes); each message
    # costs that and its stored props, {"publisher":"alice"}: COST.
    big = ["x" * 998 for _ in range(5)]
    ids = await publish(broker, address, *big)
    assert len((await broker.read(T, address, START, 100)).messages[0].body) == 1000
    res = await broker.read(T, address, START, 100, max_bytes=COST * 3 - 1)
    assert [m.id for m in res.messages] == ids[:2]  # a third would pass the budget
    res = await broker.read(T, address, START, 100, max_bytes=COST * 3)
    assert [m.id for m in res.messages] == ids[:3]  # up to the budget, included
    res = await broker.read(T, address, ids[0], 100, max_bytes=1)
    assert [m.id for m in res.messages] == [ids[1]]  # one even when larger than the budget
    res = await broker.read(T, address, ids[1], 2, max_bytes=10**6)
    assert [m.id for m in res.messages] == ids[2:4]  # the limit still holds
    # Reading on from the last one returned gets the rest, page by page.
    seen: list[str] = []
    after = START
    while page := (await broker.read(T, address, after, 100, max_bytes=1500)).messages:
        seen += [m.id for m in page]
        after = page[-1].id
    assert seen == ids


async def test_a_byte_budget_counts_headers_too(broker: Broker, address: str) -> None:
    # Body '"b"' (3 characters) and props {"publisher":"p","headers":{"k":"v…v"}} of 1000
    # characters: 1003 each.
    headers = {"k": "v" * 964}
    assert len(json.dumps({"publisher": "p", "headers": headers}, separators=(",", ":"))) == 1000
    ids = [
        p.id
        for p in await broker.publish(
            T, address, [NewMessage(body='"b"', publisher="p", headers=headers) for _ in range(3)]
        )
    ]
    res = await broker.read(T, address, START, 100, max_bytes=2005)
    assert [m.id for m in res.messages] == ids[:1]  # a second would pass: 2006
    res = await broker.read(T, address, START, 100, max_bytes=2006)
    assert [m.id for m in res.messages] == ids[:2]


async def test_a_byte_budget_does_not_count_expired_messages(broker: Broker, address: str) -> None:
    await broker.publish(T, address, [new("x" * 998, ttl_ms=50) for _ in range(3)])
    await asyncio.sleep(0.12)
    ids = await publish(broker, address, "y" * 998, "z" * 998)
    res = await broker.read(T, address, START, 100, max_bytes=1)
    assert [m.id for m in res.messages] == ids[:1]
    res = await broker.read(T, address, START, 100, max_bytes=COST * 2)
    assert [m.id for m in res.messages] == ids


async def test_read_after_positions_no_message_has(broker: Broker, address: str) -> None:
    ids = await publish(broker, address, 0)
    await asyncio.sleep(0.005)  # the next one gets a later ms
    ids += await publish(broker, address, 1)
    ms, seq = parse_position(ids[0])
    assert parse_position(ids[1])[0] > ms
    assert bodies((await broker.read(T, address, f"{ms}-{seq + 1}", 10)).messages) == [1]
    assert bodies((await broker.read(T, address, f"{ms - 1}-0", 10)).messages) == [0, 1]
    assert (await broker.read(T, address, f"{ms + 10**9}-0", 10)).messages == []


async def test_read_unknown_address(broker: Broker, address: str) -> None:
    res = await broker.read(T, address, START, 10)
    assert res.messages == []
    assert res.recovered
    assert await broker.last_position(T, address) == START


async def test_last_position(broker: Broker, address: str) -> None:
    assert await broker.last_position(T, address) == START
    ids = await publish(broker, address, 1, 2)
    assert await broker.last_position(T, address) == ids[-1]
    more = await publish(broker, address, 3)
    assert await broker.last_position(T, address) == more[-1]


# -- dedup ------------------------------------------------------------------------------------


async def test_dedup_answers_first_position(broker: Broker, address: str) -> None:
    [first] = await broker.publish(T, address, [new(1, message_id="x")])
    assert not first.duplicate
    [again] = await broker.publish(T, address, [new(2, message_id="x")])
    assert again.duplicate
    assert again.id == first.id
    res = await broker.read(T, address, START, 10)
    assert bodies(res.messages) == [1]
    assert await broker.last_position(T, address) == first.id


async def test_dedup_and_lookup_take_any_json_string_as_message_id(
    broker: Broker, address: str
) -> None:
    # JSON can carry a lone surrogate; UTF-8 cannot encode it strictly.
    odd = ["\ud800", "\ud800x", "%", "a/b c"]
    first = await broker.publish(T, address, [new(i, message_id=m) for i, m in enumerate(odd)])
    again = await broker.publish(T, address, [new(9, message_id=m) for m in odd])
    assert [r.duplicate for r in first] == [False] * 4 and all(r.duplicate for r in again)
    assert [r.id for r in again] == [r.id for r in first]
    for i, m in enumerate(odd):
        found = await broker.lookup(T, address, m)
        assert found is not None and found.id == first[i].id and found.message_id == m


async def test_dedup_within_one_batch(broker: Broker, address: str) -> None:
    results = await broker.publish(
        T,
        address,
        [new(1, message_id="a"), new(2, message_id="b"), new(3, message_id="a"), new(4)],
    )
    assert [r.duplicate for r in results] == [False, False, True, False]
    assert results[2].id == results[0].id
    assert bodies((await broker.read(T, address, START, 10)).messages) == [1, 2, 4]


async def test_dedup_is_per_address(broker: Broker, address: str) -> None:
    other = address + ".other"
    [a] = await broker.publish(T, address, [new(1, message_id="x")])
    [b] = await broker.publish(T, other, [new(2, message_id="x")])
    assert not a.duplicate
    assert not b.duplicate


async def test_a_message_id_is_forgotten_after_the_dedup_window(
    broker: Broker, address: str
) -> None:
    """Within the window a message_id is a duplicate; once it has passed, it is new again (and
    not kept as long as the address's much longer idle expiry)."""
    [first] = await broker.publish("brief", address, [new(1, message_id="x")])
    [again] = await broker.publish("brief", address, [new(2, message_id="x")])
    assert again.duplicate and again.id == first.id
    await asyncio.sleep(BRIEF_DEDUP_MS / 1000 + 0.1)
    [later] = await broker.publish("brief", address, [new(3, message_id="x")])
    assert not later.duplicate and later.id != first.id
    assert bodies((await broker.read("brief", address, START, 10)).messages) == [1, 3]


async def test_an_idempotency_key_is_forgotten_after_the_dedup_window(
    broker: Broker, address: str
) -> None:
    first = await broker.publish_once("brief", address, [new(1)], "k", "fp-1")
    with pytest.raises(IdempotencyKeyReused):
        await broker.publish_once("brief", address, [new(2)], "k", "fp-2")
    await asyncio.sleep(BRIEF_DEDUP_MS / 1000 + 0.1)
    later = await broker.publish_once("brief", address, [new(2)], "k", "fp-2")
    assert not later.replayed and later.results[0].id != first.results[0].id
    assert bodies((await broker.read("brief", address, START, 10)).messages) == [1, 2]


async def test_publish_once_replays_the_first_results(broker: Broker, address: str) -> None:
    async with tailing(broker, address) as got:
        first = await broker.publish_once(T, address, [new(1), new(2)], "key-1", "fp")
        assert not first.replayed
        assert [r.duplicate for r in first.results] == [False, False]
        again = await broker.publish_once(T, address, [new(1), new(2)], "key-1", "fp")
        assert again.replayed
        assert again.results == first.results
        await eventually(lambda: len(got.messages) == 2)
        await asyncio.sleep(0.1)
        assert bodies(got.messages) == [1, 2]  # the replay delivered nothing
    assert bodies((await broker.read(T, address, START, 10)).messages) == [1, 2]


async def test_publish_once_replays_duplicates_as_duplicates(broker: Broker, address: str) -> None:
    [x] = await broker.publish(T, address, [new(0, message_id="x")])
    first = await broker.publish_once(T, address, [new(1, message_id="x")], "k", "fp")
    assert first.results[0].duplicate and first.results[0].id == x.id
    again = await broker.publish_once(T, address, [new(1, message_id="x")], "k", "fp")
    assert again.replayed and again.results == first.results


async def test_publish_once_refuses_a_key_reused_for_another_request(
    broker: Broker, address: str
) -> None:
    await broker.publish_once(T, address, [new(1)], "k", "fp-1")
    with pytest.raises(IdempotencyKeyReused):
        await broker.publish_once(T, address, [new(2)], "k", "fp-2")
    assert bodies((await broker.read(T, address, START, 10)).messages) == [1]


async def test_publish_once_keys_are_per_address_and_tenant(broker: Broker, address: str) -> None:
    a = await broker.publish_once(T, address, [new(1)], "k", "fp")
    b = await broker.publish_once(T, address + ".b", [new(2)], "k", "fp")
    c = await broker.publish_once("globex", address, [new(3)], "k", "fp")
    assert not (a.replayed or b.replayed or c.replayed)


async def test_publish_once_without_dedup_window_stores_no_key(
    broker: Broker, address: str
) -> None:
    first = await broker.publish_once("nodedup", address, [new(1)], "k", "fp")
    again = await broker.publish_once("nodedup", address, [new(1)], "k", "fp")
    assert not first.replayed and not again.replayed
    assert again.results[0].id != first.results[0].id


async def test_publish_once_is_shared_by_instances_of_a_shared_broker(
    broker_kind: str,
    make_broker: Callable[[Settings], Awaitable[Broker]],
    broker_settings: Settings,
    address: str,
) -> None:
    if broker_kind == "memory":
        pytest.skip("the memory broker is one process's memory")
    one = await make_broker(broker_settings)
    two = await make_broker(broker_settings)
    first = await one.publish_once(T, address, [new(1)], "k", "fp")
    again = await two.publish_once(T, address, [new(1)], "k", "fp")
    assert again.replayed and again.results == first.results


async def test_duplicate_not_delivered_to_tail(broker: Broker, address: str) -> None:
    async with tailing(broker, address) as got:
        await broker.publish(T, address, [new(1, message_id="x")])
        await broker.publish(T, address, [new(2, message_id="x"), new(3)])
        await eventually(lambda: len(got.messages) >= 2)
        await asyncio.sleep(0.1)
        assert bodies(got.messages) == [1, 3]


# -- ttl and retention ------------------------------------------------------------------------


async def test_ttl_expiry_hides_messages(broker: Broker, address: str) -> None:
    ids = await publish(broker, address, 0)
    await broker.publish(T, address, [new(1, ttl_ms=100), new(2), new(3, ttl_ms=60_000)])
    assert bodies((await broker.read(T, address, START, 10)).messages) == [0, 1, 2, 3]
    await asyncio.sleep(0.25)
    res = await broker.read(T, address, START, 10)
    assert bodies(res.messages) == [0, 2, 3]
    # Dropped by their own ttl, not by retention: nothing counts as lost.
    res = await broker.read(T, address, ids[0], 10)
    assert bodies(res.messages) == [2, 3]
    assert res.recovered


async def test_ttl_expired_head_does_not_lose_recovery(broker: Broker, address: str) -> None:
    [first] = await broker.publish(T, address, [new(0, ttl_ms=50)])
    await asyncio.sleep(0.15)
    await publish(broker, address, 1)
    res = await broker.read(T, address, START, 10)
    assert bodies(res.messages) == [1]
    res = await broker.read(T, address, first.id, 10)
    assert bodies(res.messages) == [1]
    assert res.recovered


async def test_retention_by_length(broker: Broker, address: str) -> None:
    n = SHORT_MAX_LEN + 3
    ids = await publish(broker, address, *range(n), tenant="short")
    res = await broker.read("short", address, START, 100)
    assert bodies(res.messages) == list(range(3, n))
    assert res.recovered  # START asks for whatever is retained
    # After a position whose successors were dropped: they are lost.
    res = await broker.read("short", address, ids[0], 100)
    assert bodies(res.messages) == list(range(3, n))
    assert not res.recovered
    res = await broker.read("short", address, ids[1], 100)
    assert not res.recovered
    # After the newest dropped one: nothing after it is lost.
    res = await broker.read("short", address, ids[2], 100)
    assert bodies(res.messages) == list(range(3, n))
    assert res.recovered
    res = await broker.read("short", address, ids[5], 100)
    assert bodies(res.messages) == list(range(6, n))
    assert res.recovered
    assert await broker.last_position("short", address) == ids[-1]


async def test_retention_by_length_one_at_a_time(broker: Broker, address: str) -> None:
    ids: list[str] = []
    for i in range(SHORT_MAX_LEN * 3):
        ids += await publish(broker, address, i, tenant="short")
    res = await broker.read("short", address, START, 100)
    assert [m.id for m in res.messages] == ids[-SHORT_MAX_LEN:]


async def test_retention_by_age(broker: Broker, address: str) -> None:
    old = await publish(broker, address, 0, 1, tenant="aging")
    await asyncio.sleep(AGING_MAX_AGE_MS / 1000 + 0.15)
    await publish(broker, address, 2, tenant="aging")
    res = await broker.read("aging", address, START, 10)
    assert bodies(res.messages) == [2]
    res = await broker.read("aging", address, old[0], 10)
    assert bodies(res.messages) == [2]
    assert not res.recovered
    res = await broker.read("aging", address, old[1], 10)
    assert res.recovered


async def test_retention_by_age_without_new_publish(broker: Broker, address: str) -> None:
    old = await publish(broker, address, 0, 1, tenant="aging")
    await asyncio.sleep(AGING_MAX_AGE_MS / 1000 + 0.15)
    res = await broker.read("aging", address, START, 10)
    assert res.messages == []
    res = await broker.read("aging", address, old[0], 10)
    assert not res.recovered
    assert await broker.last_position("aging", address) == old[-1]


# -- tail -------------------------------------------------------------------------------------


async def test_tail_delivers_new_messages_in_order_once(broker: Broker, address: str) -> None:
    async with tailing(broker, address) as got:
        ids: list[str] = []
        for i in range(0, 30, 3):
            ids += await publish(broker, address, i, i + 1, i + 2)
        await eventually(lambda: len(got.messages) >= 30)
        await asyncio.sleep(0.05)
        assert got.ids == ids
        assert bodies(got.messages) == list(range(30))


async def test_tail_from_start_on_empty_address(broker: Broker, address: str) -> None:
    async with tailing(broker, address, START) as got:
        ids = await publish(broker, address, 1, 2)
        await eventually(lambda: len(got.messages) >= 2)
        await asyncio.sleep(0.05)
        assert got.ids == ids


async def test_tail_backlog_then_live_without_gap_or_duplicate(
    broker: Broker, address: str
) -> None:
    ids = await publish(broker, address, *range(6))
    async with tailing(broker, address, ids[1]) as got:
        # Published before the backlog could have been handed over: must come after it, once.
        ids += await publish(broker, address, 6, 7)
        await asyncio.sleep(0)
        ids += await publish(broker, address, 8)
        await eventually(lambda: len(got.messages) >= 7)
        ids += await publish(broker, address, 9, 10)
        await eventually(lambda: len(got.messages) >= 9)
        await asyncio.sleep(0.05)
        assert got.ids == ids[2:]
        assert bodies(got.messages) == list(range(2, 11))


async def test_tail_from_start_delivers_whole_backlog(broker: Broker, address: str) -> None:
    ids = await publish(broker, address, 0, 1, 2)
    async with tailing(broker, address, START) as got:
        ids += await publish(broker, address, 3)
        await eventually(lambda: len(got.messages) >= 4)
        await asyncio.sleep(0.05)
        assert got.ids == ids


async def test_tail_backlog_skips_expired(broker: Broker, address: str) -> None:
    await broker.publish(T, address, [new(0), new(1, ttl_ms=50), new(2)])
    await asyncio.sleep(0.15)
    async with tailing(broker, address, START) as got:
        await eventually(lambda: len(got.messages) >= 2)
        await asyncio.sleep(0.05)
        assert bodies(got.messages) == [0, 2]


async def test_tail_close_stops_callbacks(broker: Broker, address: str) -> None:
    got = Collector()
    handle = broker.tail(T, address, await broker.last_position(T, address), got)
    await publish(broker, address, 1)
    await eventually(lambda: len(got.messages) >= 1)
    handle.close()
    handle.close()  # closing twice is harmless
    await publish(broker, address, 2)
    await asyncio.sleep(0.1)
    assert bodies(got.messages) == [1]


async def test_tail_closed_before_backlog_gets_nothing(broker: Broker, address: str) -> None:
    await publish(broker, address, 1, 2)
    got = Collector()
    handle = broker.tail(T, address, START, got)
    handle.close()
    await asyncio.sleep(0.1)
    assert got.messages == []


async def test_failing_tail_does_not_break_others(
    broker: Broker, address: str, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(messages: list[Message]) -> None:
        raise RuntimeError("boom")

    got = Collector()
    last = await broker.last_position(T, address)
    bad = broker.tail(T, address, last, boom)
    good = broker.tail(T, address, last, got)
    try:
        ids = await publish(broker, address, 1)
        ids += await publish(broker, address, 2)
        await eventually(lambda: len(got.messages) >= 2)
        assert got.ids == ids
    finally:
        bad.close()
        good.close()


async def test_two_tails_each_get_everything(broker: Broker, address: str) -> None:
    a, b = Collector(), Collector()
    ha = broker.tail(T, address, START, a)
    hb = broker.tail(T, address, START, b)
    try:
        ids = await publish(broker, address, 1, 2, 3)
        await eventually(lambda: len(a.messages) >= 3 and len(b.messages) >= 3)
        assert a.ids == ids
        assert b.ids == ids
    finally:
        ha.close()
        hb.close()


# -- tenants ----------------------------------------------------------------------------------


async def test_tenants_are_isolated(broker: Broker, address: str) -> None:
    got = Collector()
    handle = broker.tail("globex", address, START, got)
    try:
        await publish(broker, address, "acme-1", tenant="acme")
        assert (await broker.read("globex", address, START, 10)).messages == []
        assert await broker.last_position("globex", address) == START
        assert await broker.claim("globex", address, "g", "c", 10, LEASE) == []
        [d] = await broker.publish("acme", address, [new("x", message_id="same")])
        [e] = await broker.publish("globex", address, [new("y", message_id="same")])
        assert not d.duplicate
        assert not e.duplicate
        assert await broker.lookup("globex", address, "same") is not None
        assert bodies((await broker.read("globex", address, START, 10)).messages) == ["y"]
        await eventually(lambda: len(got.messages) >= 1)
        await asyncio.sleep(0.05)
        assert bodies(got.messages) == ["y"]
        assert bodies((await broker.read("acme", address, START, 10)).messages) == [
            "acme-1",
            "x",
        ]
    finally:
        handle.close()


# -- move: claim and settle -------------------------------------------------------------------


async def test_group_starts_at_oldest_retained(broker: Broker, address: str) -> None:
    await publish(broker, address, 0, 1, 2)
    got = await broker.claim(T, address, "g", "c1", 10, LEASE)
    assert dbodies(got) == [0, 1, 2]
    assert [d.redelivered for d in got] == [0, 0, 0]


async def test_claim_leases_in_order_to_one_consumer(broker: Broker, address: str) -> None:
    ids = await publish(broker, address, 0, 1, 2)
    a = await broker.claim(T, address, "g", "c1", 2, LEASE)
    assert [d.message.id for d in a] == ids[:2]
    b = await broker.claim(T, address, "g", "c2", 2, LEASE)
    assert [d.message.id for d in b] == ids[2:]
    assert await broker.claim(T, address, "g", "c3", 2, LEASE) == []
    more = await publish(broker, address, 3)
    c = await broker.claim(T, address, "g", "c3", 2, LEASE)
    assert [d.message.id for d in c] == more


async def test_groups_are_independent(broker: Broker, address: str) -> None:
    await publish(broker, address, 0, 1)
    a = await broker.claim(T, address, "g1", "c", 10, LEASE)
    b = await broker.claim(T, address, "g2", "c", 10, LEASE)
    assert dbodies(a) == [0, 1]
    assert dbodies(b) == [0, 1]
    await broker.settle(T, address, "g1", "c", [d.message.id for d in a], Outcome.RELEASED)
    assert dbodies(await broker.claim(T, address, "g1", "c", 10, LEASE)) == [0, 1]
    assert await broker.claim(T, address, "g2", "c", 10, LEASE) == []


async def test_accepted_is_removed(broker: Broker, address: str) -> None:
    await publish(broker, address, 0, 1)
    got = await broker.claim(T, address, "g", "c1", 10, 100)
    await broker.settle(T, address, "g", "c1", [got[0].message.id], Outcome.ACCEPTED)
    await asyncio.sleep(0.25)  # past the lease: only the unsettled one comes back
    again = await broker.claim(T, address, "g", "c2", 10, LEASE)
    assert dbodies(again) == [1]
    assert again[0].redelivered == 1


async def test_released_is_available_at_once_and_not_counted(broker: Broker, address: str) -> None:
    await publish(broker, address, 0, 1)
    got = await broker.claim(T, address, "g", "c1", 1, LEASE)
    await broker.settle(T, address, "g", "c1", [got[0].message.id], Outcome.RELEASED)
    again = await broker.claim(T, address, "g", "c2", 10, LEASE)
    assert dbodies(again) == [0, 1]
    assert [d.redelivered for d in again] == [0, 0]
    # Released again, many times: still not counted.
    for _ in range(3):
        await broker.settle(T, address, "g", "c2", [again[0].message.id], Outcome.RELEASED)
        [d] = await broker.claim(T, address, "g", "c2", 1, LEASE)
        assert d.message.id == again[0].message.id
        assert d.redelivered == 0


async def test_modified_is_delayed_and_counted(broker: Broker, address: str) -> None:
    await publish(broker, address, 0)
    [d] = await broker.claim(T, address, "g", "c1", 1, LEASE)
    await broker.settle(T, address, "g", "c1", [d.message.id], Outcome.MODIFIED)
    assert await broker.claim(T, address, "g", "c2", 1, LEASE) == []
    await asyncio.sleep(REDELIVERY_DELAY_MS / 1000 + 0.1)
    [d2] = await broker.claim(T, address, "g", "c2", 1, LEASE)
    assert d2.message.id == d.message.id
    assert d2.redelivered == 1
    await broker.settle(T, address, "g", "c2", [d.message.id], Outcome.MODIFIED)
    await asyncio.sleep(REDELIVERY_DELAY_MS / 1000 + 0.1)
    [d3] = await broker.claim(T, address, "g", "c1", 1, LEASE)
    assert d3.redelivered == 2


async def test_modified_does_not_block_later_messages(broker: Broker, address: str) -> None:
    await publish(broker, address, 0, 1)
    [d] = await broker.claim(T, address, "g", "c1", 1, LEASE)
    await broker.settle(T, address, "g", "c1", [d.message.id], Outcome.MODIFIED)
    assert dbodies(await broker.claim(T, address, "g", "c1", 10, LEASE)) == [1]


async def test_rejected_without_dead_letter_is_dropped(broker: Broker, address: str) -> None:
    await publish(broker, address, 0)
    [d] = await broker.claim(T, address, "g", "c1", 1, 100)
    await broker.settle(T, address, "g", "c1", [d.message.id], Outcome.REJECTED)
    await asyncio.sleep(0.25)
    assert await broker.claim(T, address, "g", "c2", 10, LEASE) == []
    assert (await broker.read(T, DEAD_LETTER, START, 10)).messages == []


async def test_rejected_is_dead_lettered(broker: Broker, address: str) -> None:
    start = await broker.last_position("dl", DEAD_LETTER)
    await broker.publish(
        "dl",
        address,
        [NewMessage(body='"x"', publisher="bob", subject="s.1", headers={"h": 1})],
    )
    [d] = await broker.claim("dl", address, "g", "c1", 1, LEASE)
    await broker.settle("dl", address, "g", "c1", [d.message.id], Outcome.REJECTED)
    assert await broker.claim("dl", address, "g", "c2", 10, LEASE) == []
    [m] = await dead_letters(broker, "dl", start, 1)
    assert m.body == '"x"'
    assert m.subject == "s.1"
    assert m.publisher == "bob"
    headers = dict(m.headers or {})
    assert headers["dead_letter_from"] == address
    assert headers["dead_letter_id"] == d.message.id
    assert headers["dead_letter_reason"] == "rejected"
    assert headers["h"] == 1
    # The dead letter is in the same tenant only.
    assert (await broker.read(T, DEAD_LETTER, start, 10)).messages == []


async def test_lease_expiry_goes_to_another_consumer(broker: Broker, address: str) -> None:
    await publish(broker, address, 0)
    [d] = await broker.claim(T, address, "g", "c1", 1, 100)
    assert await broker.claim(T, address, "g", "c2", 1, LEASE) == []
    await asyncio.sleep(0.25)
    [d2] = await broker.claim(T, address, "g", "c2", 1, LEASE)
    assert d2.message.id == d.message.id
    assert d2.redelivered == 1
    # c1 no longer holds it: its settle is ignored, its renew renews nothing.
    assert await broker.renew(T, address, "g", "c1", [d.message.id], LEASE) == []
    await broker.settle(T, address, "g", "c1", [d.message.id], Outcome.ACCEPTED)
    await broker.settle(T, address, "g", "c2", [d.message.id], Outcome.RELEASED)
    [d3] = await broker.claim(T, address, "g", "c3", 1, LEASE)
    assert d3.message.id == d.message.id
    assert d3.redelivered == 1


async def test_renew_extends_lease(broker: Broker, address: str) -> None:
    await publish(broker, address, 0, 1)
    got = await broker.claim(T, address, "g", "c1", 2, 200)
    ids = [d.message.id for d in got]
    await asyncio.sleep(0.1)
    assert await broker.renew(T, address, "g", "c1", ids[:1], 1000) == ids[:1]
    assert await broker.renew(T, address, "g", "c2", ids, 1000) == []
    assert await broker.renew(T, address, "g", "c1", ["1-0"], 1000) == []
    await asyncio.sleep(0.3)  # the unrenewed one expired, the renewed one holds
    again = await broker.claim(T, address, "g", "c2", 10, LEASE)
    assert [d.message.id for d in again] == ids[1:]
    assert again[0].redelivered == 1
    await broker.settle(T, address, "g", "c1", ids[:1], Outcome.ACCEPTED)
    await asyncio.sleep(0.8)
    assert await broker.claim(T, address, "g", "c2", 10, LEASE) == []


async def test_settle_by_other_consumer_is_ignored(broker: Broker, address: str) -> None:
    await publish(broker, address, 0)
    [d] = await broker.claim(T, address, "g", "c1", 1, LEASE)
    await broker.settle(T, address, "g", "c2", [d.message.id], Outcome.ACCEPTED)
    await broker.settle(T, address, "g", "c2", [d.message.id], Outcome.RELEASED)
    assert await broker.claim(T, address, "g", "c2", 1, LEASE) == []
    await broker.settle(T, address, "g", "c1", [d.message.id], Outcome.RELEASED)
    [d2] = await broker.claim(T, address, "g", "c2", 1, LEASE)
    assert d2.message.id == d.message.id


async def test_settle_unknown_ids_is_ignored(broker: Broker, address: str) -> None:
    await broker.settle(T, address, "g", "c1", ["1-0", "99999999999999-5"], Outcome.ACCEPTED)
    await publish(broker, address, 0)
    assert dbodies(await broker.claim(T, address, "g", "c1", 1, LEASE)) == [0]


async def test_claim_skips_expired(broker: Broker, address: str) -> None:
    await broker.publish(T, address, [new(0, ttl_ms=50), new(1)])
    await asyncio.sleep(0.15)
    assert dbodies(await broker.claim(T, address, "g", "c1", 10, LEASE)) == [1]


async def test_filter_leaves_others_for_other_consumers(broker: Broker, address: str) -> None:
    await broker.publish(
        T,
        address,
        [
            new(0, subject="a.x"),
            new(1, subject="b.x"),
            new(2),
            new(3, subject="a.y"),
            new(4, subject="b.y"),
        ],
    )
    got = await broker.claim(T, address, "g", "ca", 10, LEASE, Pattern("a.*"))
    assert dbodies(got) == [0, 3]
    assert await broker.claim(T, address, "g", "ca", 10, LEASE, Pattern("a.*")) == []
    first = await broker.claim(T, address, "g", "cb", 1, LEASE, Pattern("b.>"))
    assert dbodies(first) == [1]
    rest = await broker.claim(T, address, "g", "cx", 10, LEASE)
    assert dbodies(rest) == [2, 4]
    assert [d.redelivered for d in rest] == [0, 0]


async def test_competing_consumers_never_share_a_message(broker: Broker, address: str) -> None:
    n = 60
    await publish(broker, address, *range(n))
    held: set[str] = set()
    released: set[str] = set()
    done: list[int] = []

    async def consumer(name: str) -> None:
        for _ in range(200):
            got = await broker.claim(T, address, "g", name, 3, LEASE)
            if not got:
                if len(done) >= n:
                    return
                await asyncio.sleep(0.005)
                continue
            for d in got:
                assert d.message.id not in held
                held.add(d.message.id)
            await asyncio.sleep(0.001)
            # Every fourth goes back once: it must still reach one consumer at a time.
            back = [
                d.message.id
                for d in got
                if json.loads(d.message.body) % 4 == 0 and d.message.id not in released
            ]
            released.update(back)
            for d in got:
                held.discard(d.message.id)
                if d.message.id not in back:
                    done.append(json.loads(d.message.body))
            await broker.settle(T, address, "g", name, back, Outcome.RELEASED)
            keep = [d.message.id for d in got if d.message.id not in back]
            await broker.settle(T, address, "g", name, keep, Outcome.ACCEPTED)

    await asyncio.gather(*(consumer(f"c{i}") for i in range(5)))
    assert sorted(done) == list(range(n))
    assert len(released) == n // 4


# -- move: the queue rules of contract section 5 -------------------------------------------------


async def c1_holds_while_c2_wants_work(broker: Broker, address: str) -> Delivery:
    """One job, held by c1; c2 then asked for work and got none, so it wants work."""
    await publish(broker, address, 0)
    [d] = await broker.claim(T, address, "g", "c1", 1, LEASE, room=10)
    assert await broker.claim(T, address, "g", "c2", 1, LEASE, room=10) == []
    return d


async def test_released_goes_to_another_consumer_that_wants_work(
    broker: Broker, address: str
) -> None:
    d = await c1_holds_while_c2_wants_work(broker, address)
    await broker.settle(T, address, "g", "c1", [d.message.id], Outcome.RELEASED)
    # c1 still has room, but the message waits for c2.
    assert await broker.claim(T, address, "g", "c1", 10, LEASE, room=10) == []
    [d2] = await broker.claim(T, address, "g", "c2", 10, LEASE, room=10)
    assert (d2.message.id, d2.redelivered) == (d.message.id, 0)


async def test_released_comes_back_at_once_when_no_other_consumer_wants_work(
    broker: Broker, address: str
) -> None:
    await publish(broker, address, 0, 1)
    # c2 took all it asked for: it does not want more.
    await broker.claim(T, address, "g", "c2", 1, LEASE, room=1)
    [d] = await broker.claim(T, address, "g", "c1", 1, LEASE, room=10)
    await broker.settle(T, address, "g", "c1", [d.message.id], Outcome.RELEASED)
    [d2] = await broker.claim(T, address, "g", "c1", 10, LEASE, room=10)
    assert d2.message.id == d.message.id


async def test_a_consumer_that_left_no_longer_holds_released_work_back(
    broker: Broker, address: str
) -> None:
    d = await c1_holds_while_c2_wants_work(broker, address)
    await broker.leave(T, address, "g", "c2", [])
    await broker.settle(T, address, "g", "c1", [d.message.id], Outcome.RELEASED)
    assert dbodies(await broker.claim(T, address, "g", "c1", 10, LEASE, room=10)) == [0]


async def test_released_returns_to_its_consumer_after_the_hand_over_wait(
    broker: Broker, address: str
) -> None:
    d = await c1_holds_while_c2_wants_work(broker, address)
    await broker.settle(T, address, "g", "c1", [d.message.id], Outcome.RELEASED)
    assert await broker.claim(T, address, "g", "c1", 10, LEASE, room=10) == []
    # c2 never claims (its socket is full, or its process died): c1 may take it back.
    await asyncio.sleep(HANDOFF_MS / 1000 + 0.1)
    assert dbodies(await broker.claim(T, address, "g", "c1", 10, LEASE, room=10)) == [0]


async def test_an_expired_lease_goes_to_another_consumer_that_wants_work(
    broker: Broker, address: str
) -> None:
    await publish(broker, address, 0)
    [d] = await broker.claim(T, address, "g", "c1", 1, 100, room=10)
    assert await broker.claim(T, address, "g", "c2", 1, LEASE, room=10) == []
    await asyncio.sleep(0.25)
    assert await broker.claim(T, address, "g", "c1", 10, LEASE, room=10) == []
    [d2] = await broker.claim(T, address, "g", "c2", 10, LEASE, room=10)
    assert (d2.message.id, d2.redelivered) == (d.message.id, 1)


async def test_the_deliveries_of_a_consumer_that_left_are_counted(
    broker: Broker, address: str
) -> None:
    await publish(broker, address, 0, 1, 2)
    got = await broker.claim(T, address, "g", "c1", 2, LEASE, room=2)
    await broker.leave(T, address, "g", "c1", [d.message.id for d in got])
    again = await broker.claim(T, address, "g", "c2", 10, LEASE, room=10)
    assert [(b, d.redelivered) for b, d in zip(dbodies(again), again, strict=True)] == [
        (0, 1),
        (1, 1),
        (2, 0),
    ]


async def test_past_max_deliveries_a_message_is_dead_lettered(broker: Broker, address: str) -> None:
    start = await broker.last_position("limited", DEAD_LETTER)
    await publish(broker, address, "poison", tenant="limited")
    [d] = await broker.claim("limited", address, "g", "c1", 1, LEASE)
    assert d.redelivered == 0
    await broker.leave("limited", address, "g", "c1", [d.message.id])
    [d] = await broker.claim("limited", address, "g", "c2", 1, LEASE)
    assert d.redelivered == 1
    # The second failed delivery reaches max_deliveries = 2: never delivered again.
    await broker.settle("limited", address, "g", "c2", [d.message.id], Outcome.MODIFIED)
    [m] = await dead_letters(broker, "limited", start, 1)
    assert bodies([m]) == ["poison"]
    headers = dict(m.headers or {})
    assert headers["dead_letter_from"] == address
    assert headers["dead_letter_id"] == d.message.id
    assert headers["dead_letter_reason"] == "delivery-limit"
    await asyncio.sleep(REDELIVERY_DELAY_MS / 1000 + 0.1)
    assert await broker.claim("limited", address, "g", "c3", 10, LEASE) == []


async def test_an_expired_lease_past_max_deliveries_is_dead_lettered(
    broker: Broker, address: str
) -> None:
    start = await broker.last_position("limited", DEAD_LETTER)
    await publish(broker, address, "slow", tenant="limited")
    for _ in range(2):
        assert len(await broker.claim("limited", address, "g", "c1", 1, 100)) == 1
        await asyncio.sleep(0.2)
    # Claim serves the due lease: the message goes to the dead letters, not to c1.
    assert await broker.claim("limited", address, "g", "c1", 1, LEASE) == []
    [m] = await dead_letters(broker, "limited", start, 1)
    assert dict(m.headers or {})["dead_letter_reason"] == "delivery-limit"


async def test_past_max_deliveries_without_a_dead_letter_address_is_dropped_and_counted(
    broker: Broker, address: str
) -> None:
    await publish(broker, address, 0, tenant="limitdrop")
    before = broker.dead_letters_dropped
    [d] = await broker.claim("limitdrop", address, "g", "c1", 1, LEASE)
    await broker.settle("limitdrop", address, "g", "c1", [d.message.id], Outcome.MODIFIED)
    await eventually(lambda: broker.dead_letters_dropped == before + 1)
    await asyncio.sleep(REDELIVERY_DELAY_MS / 1000 + 0.1)
    assert await broker.claim("limitdrop", address, "g", "c2", 10, LEASE) == []


async def test_dead_letters_with_one_message_id_all_land(broker: Broker, address: str) -> None:
    start = await broker.last_position("dl", DEAD_LETTER)
    other = address + ".b"
    for a in (address, other):
        await broker.publish("dl", a, [new("order", message_id="order-17")])
    await broker.publish("dl", address, [new("no id")])
    for a in (address, other):
        got = await broker.claim("dl", a, "g", "c1", 10, LEASE)
        await broker.settle("dl", a, "g", "c1", [d.message.id for d in got], Outcome.REJECTED)
    letters = await dead_letters(broker, "dl", start, 3)
    assert sorted(bodies(letters)) == ["no id", "order", "order"]
    assert sorted(str(m.headers["dead_letter_from"]) for m in letters if m.headers) == sorted(
        [address, address, other]
    )


async def test_claim_count_zero(broker: Broker, address: str) -> None:
    await publish(broker, address, 0)
    assert await broker.claim(T, address, "g", "c1", 0, LEASE) == []
    assert dbodies(await broker.claim(T, address, "g", "c1", 1, LEASE)) == [0]


# -- move: watch_group ------------------------------------------------------------------------


@asynccontextmanager
async def watching(broker: Broker, address: str) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """A ``watch_group`` on group ``g`` of ``address``, past its first look; yields ``woken()``,
    which waits until the watch is called again. Closed on exit."""
    flag = Flag()
    handle = broker.watch_group(T, address, "g", flag)
    try:
        await asyncio.sleep(0.05)
        before = flag.calls
        yield lambda: eventually(lambda: flag.calls > before)
    finally:
        handle.close()


async def test_watch_group_on_publish(broker: Broker, address: str) -> None:
    async with watching(broker, address) as woken:
        await publish(broker, address, 0)
        await woken()
        assert dbodies(await broker.claim(T, address, "g", "c1", 1, LEASE)) == [0]


async def test_watch_group_on_release(broker: Broker, address: str) -> None:
    await publish(broker, address, 0)
    [d] = await broker.claim(T, address, "g", "c1", 1, LEASE)
    async with watching(broker, address) as woken:
        await broker.settle(T, address, "g", "c1", [d.message.id], Outcome.RELEASED)
        await woken()


async def test_watch_group_on_modified_delay(broker: Broker, address: str) -> None:
    await publish(broker, address, 0)
    [d] = await broker.claim(T, address, "g", "c1", 1, LEASE)
    async with watching(broker, address) as woken:
        await broker.settle(T, address, "g", "c1", [d.message.id], Outcome.MODIFIED)
        await woken()
        [d2] = await broker.claim(T, address, "g", "c2", 1, LEASE)
        assert d2.redelivered == 1


async def test_watch_group_on_lease_expiry(broker: Broker, address: str) -> None:
    await publish(broker, address, 0)
    [d] = await broker.claim(T, address, "g", "c1", 1, 100)
    async with watching(broker, address) as woken:
        await woken()
        [d2] = await broker.claim(T, address, "g", "c2", 1, LEASE)
        assert d2.message.id == d.message.id
        assert d2.redelivered == 1


async def test_watch_group_close(broker: Broker, address: str) -> None:
    flag = Flag()
    handle = broker.watch_group(T, address, "g", flag)
    await asyncio.sleep(0.05)
    handle.close()
    before = flag.calls
    await publish(broker, address, 0)
    await asyncio.sleep(0.1)
    assert flag.calls == before


async def test_watch_group_failing_callback(broker: Broker, address: str) -> None:
    def boom() -> None:
        raise RuntimeError("boom")

    bad = broker.watch_group(T, address, "g", boom)
    try:
        async with watching(broker, address) as woken:  # a good watch beside the failing one
            await publish(broker, address, 0)
            await woken()
    finally:
        bad.close()


# -- lookup -----------------------------------------------------------------------------------


async def test_lookup(broker: Broker, address: str) -> None:
    [a, b] = await broker.publish(T, address, [new(0, message_id="m0"), new(1, message_id="m1")])
    m = await broker.lookup(T, address, "m1")
    assert m is not None
    assert m.id == b.id
    assert json.loads(m.body) == 1
    m0 = await broker.lookup(T, address, "m0")
    assert m0 is not None
    assert m0.id == a.id
    assert await broker.lookup(T, address, "nope") is None
    assert await broker.lookup(T, address + ".x", "m1") is None


async def test_lookup_after_retention(broker: Broker, address: str) -> None:
    await broker.publish("short", address, [new(0, message_id="gone")])
    await publish(broker, address, *range(1, SHORT_MAX_LEN + 1), tenant="short")
    assert await broker.lookup("short", address, "gone") is None


async def test_lookup_answers_from_the_dedup_window_only(broker: Broker, address: str) -> None:
    # Never by scanning the stream: past the window a retained message is not found.
    [p] = await broker.publish("brief", address, [new(0, message_id="w")])
    found = await broker.lookup("brief", address, "w")
    assert found is not None and found.id == p.id
    await asyncio.sleep(BRIEF_DEDUP_MS / 1000 + 0.1)
    assert [m.id for m in (await broker.read("brief", address, START, 10)).messages] == [p.id]
    assert await broker.lookup("brief", address, "w") is None
    assert await broker.lookup("nodedup", address, "w") is None


# -- retention by bytes -----------------------------------------------------------------------


async def test_retention_by_bytes_keeps_the_newest_that_fit(broker: Broker, address: str) -> None:
    ids: list[str] = []
    for _ in range(10):
        ids += await publish(broker, address, "x" * 998, tenant="bytes")
    # 4 x COST (1021) = 4084 fit in 4096, a fifth would not: 0..5 are lost to retention.
    res = await broker.read("bytes", address, START, 100)
    assert [m.id for m in res.messages] == ids[6:] and res.recovered
    res = await broker.read("bytes", address, ids[4], 100)
    assert [m.id for m in res.messages] == ids[6:] and not res.recovered
    assert (await broker.read("bytes", address, ids[5], 100)).recovered
    # A batch trims as much as it adds.
    batch = await publish(broker, address, *["y" * 998] * 3, tenant="bytes")
    res = await broker.read("bytes", address, START, 100)
    assert [m.id for m in res.messages] == ids[9:] + batch
    assert not (await broker.read("bytes", address, ids[7], 100)).recovered
    assert (await broker.read("bytes", address, ids[8], 100)).recovered
    # Headers count (the stored props): this one costs 3 + 2048, two of COST go.
    [h] = await broker.publish(
        "bytes", address, [new("z", headers={"k": "h" * 1990}, message_id="hm")]
    )
    res = await broker.read("bytes", address, START, 100)
    assert [m.id for m in res.messages] == [batch[1], batch[2], h.id]
    # The newest message stays whatever its size, alone.
    [big] = await publish(broker, address, "b" * 8000, tenant="bytes")
    res = await broker.read("bytes", address, h.id, 100)
    assert [m.id for m in res.messages] == [big] and res.recovered
    res = await broker.read("bytes", address, batch[2], 100)
    assert [m.id for m in res.messages] == [big] and not res.recovered
    # And a tail from before what was lost gets what is left.
    got: list[Message] = []
    handle = broker.tail("bytes", address, ids[0], got.extend)
    try:
        await eventually(lambda: len(got) == 1)
        assert got[0].id == big
    finally:
        handle.close()


# -- lifecycle --------------------------------------------------------------------------------


async def test_ready(broker: Broker) -> None:
    assert await broker.ready()
