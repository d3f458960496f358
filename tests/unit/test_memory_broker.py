"""MemoryBroker specifics, driven by a fake clock (the conformance suite covers the interface)."""

from __future__ import annotations

import asyncio
import gc
import json
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from types import MappingProxyType
from typing import Any

import pytest

from wsq.broker.base import Handle
from wsq.broker.memory import MemoryBroker
from wsq.config import Settings, TenantConfig
from wsq.core.errors import BrokerUnavailable
from wsq.core.messages import Message, NewMessage, Outcome
from wsq.core.policy import StoragePolicy
from wsq.core.positions import START

A = "orders.eu"


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, ms: float) -> None:
        self.now += ms / 1000


def tenant(name: str, **kw: Any) -> TenantConfig:
    return TenantConfig(name=name, issuer=name, keys=(), **kw)


SETTINGS = Settings(
    tenants=MappingProxyType(
        {
            "t": tenant("t", dedup_window_ms=1000, redelivery_delay_ms=1000),
            "short": tenant("short", retention_max_len=10),
            "aging": tenant("aging", retention_max_age_ms=1000),
            "idle": tenant("idle", idle_expiry_ms=1000),
            "bytes": tenant("bytes", retention_max_bytes=4096),
            "capped": tenant(
                "capped", dedup_window_ms=1000, max_dedup_ids=10, max_idempotency_keys=10
            ),
        }
    )
)


def new(body: Any = None, **kw: Any) -> NewMessage:
    return NewMessage(body=json.dumps(body), publisher="p", **kw)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def broker(clock: FakeClock) -> AsyncIterator[MemoryBroker]:
    b = MemoryBroker(SETTINGS.storage_policies(), clock=clock)
    await b.start()
    yield b
    await b.close()


async def test_positions_follow_the_clock_and_never_go_back(
    broker: MemoryBroker, clock: FakeClock
) -> None:
    clock.now = 1000.0
    r = await broker.publish("t", A, [new(0), new(1)])
    assert [p.id for p in r] == ["1000000-0", "1000000-1"]
    clock.now = 999.0  # backwards
    [p] = await broker.publish("t", A, [new(2)])
    assert p.id == "1000000-2"
    clock.now = 1000.0054
    [p] = await broker.publish("t", A, [new(3)])
    assert p.id == "1000005-0"
    msgs = (await broker.read("t", A, START, 10)).messages
    assert [m.ts for m in msgs] == [1000000, 1000000, 1000000, 1000005]
    assert await broker.last_position("t", A) == "1000005-0"


async def test_all_duplicates_leave_last_position(broker: MemoryBroker) -> None:
    [p] = await broker.publish("t", A, [new(0, message_id="x")])
    [d] = await broker.publish("t", A, [new(0, message_id="x")])
    assert d.duplicate
    assert await broker.last_position("t", A) == p.id


async def test_dedup_window_expires(broker: MemoryBroker, clock: FakeClock) -> None:
    [first] = await broker.publish("t", A, [new(0, message_id="x")])
    clock.advance(999)
    [dup] = await broker.publish("t", A, [new(1, message_id="x")])
    assert dup.duplicate
    assert dup.id == first.id
    clock.advance(1)
    [again] = await broker.publish("t", A, [new(2, message_id="x")])
    assert not again.duplicate
    assert again.id != first.id
    msgs = (await broker.read("t", A, START, 10)).messages
    assert [json.loads(m.body) for m in msgs] == [0, 2]


async def test_dedup_map_is_capped(broker: MemoryBroker, clock: FakeClock) -> None:
    for i in range(25):
        clock.advance(1)
        await broker.publish("capped", A, [new(i, message_id=f"m{i}")])
    lg = broker._logs[("capped", A)]
    assert len(lg.dedup) <= 10
    assert len(lg.dedup_order) <= 11
    [old] = await broker.publish("capped", A, [new(0, message_id="m0")])
    assert not old.duplicate
    [recent] = await broker.publish("capped", A, [new(0, message_id="m24")])
    assert recent.duplicate


async def test_idempotency_keys_are_capped_and_pruned_by_age(
    broker: MemoryBroker, clock: FakeClock
) -> None:
    for i in range(25):
        await broker.publish_once("capped", A, [new(i)], f"k{i}", "fp")
    lg = broker._logs[("capped", A)]
    assert len(lg.idem) == 10 and "k24" in lg.idem and "k0" not in lg.idem
    # A forgotten key publishes again.
    again = await broker.publish_once("capped", A, [new(0)], "k0", "fp")
    assert not again.replayed
    clock.advance(1001)  # past the dedup window of tenant "capped"
    await broker.sweep()
    assert not lg.idem


async def test_dedup_map_pruned_by_age(broker: MemoryBroker, clock: FakeClock) -> None:
    for i in range(100):
        await broker.publish("t", A, [new(i, message_id=f"m{i}")])
    clock.advance(1000)
    await broker.publish("t", A, [new(0, message_id="late")])
    lg = broker._logs[("t", A)]
    assert list(lg.dedup) == ["late"]


async def test_ttl_with_fake_clock(broker: MemoryBroker, clock: FakeClock) -> None:
    await broker.publish("t", A, [new(0, ttl_ms=100), new(1)])
    clock.advance(99)
    assert len((await broker.read("t", A, START, 10)).messages) == 2
    clock.advance(1)
    msgs = (await broker.read("t", A, START, 10)).messages
    assert [json.loads(m.body) for m in msgs] == [1]


async def test_ttl_dropped_by_retention_is_not_a_loss(
    broker: MemoryBroker, clock: FakeClock
) -> None:
    first = await broker.publish("short", A, [new(0)])
    ttl = await broker.publish("short", A, [new(i, ttl_ms=10) for i in range(1, 4)])
    clock.advance(20)
    # Pushes out by length message 0 (a loss) and 1..3 (already gone by their ttl).
    await broker.publish("short", A, [new(i) for i in range(4, 14)])
    res = await broker.read("short", A, first[0].id, 100)
    assert [json.loads(m.body) for m in res.messages] == list(range(4, 14))
    assert res.recovered
    assert (await broker.read("short", A, ttl[0].id, 100)).recovered
    assert not (await broker.read("short", A, "1-0", 100)).recovered


async def test_retention_by_age_with_fake_clock(broker: MemoryBroker, clock: FakeClock) -> None:
    old = await broker.publish("aging", A, [new(0)])
    clock.advance(500)
    await broker.publish("aging", A, [new(1)])
    clock.advance(600)
    res = await broker.read("aging", A, START, 10)
    assert [json.loads(m.body) for m in res.messages] == [1]
    assert not (await broker.read("aging", A, "1-0", 10)).recovered
    assert (await broker.read("aging", A, old[0].id, 10)).recovered


async def test_log_memory_is_bounded(broker: MemoryBroker, clock: FakeClock) -> None:
    for i in range(5000):
        clock.advance(0.3)
        await broker.publish("short", A, [new(i)])
    lg = broker._logs[("short", A)]
    assert len(lg.msgs) - lg.head == 10
    assert len(lg.msgs) < 2 * 1024 + 20
    res = await broker.read("short", A, START, 100)
    assert [json.loads(m.body) for m in res.messages] == list(range(4990, 5000))


async def test_group_state_follows_retention(broker: MemoryBroker, clock: FakeClock) -> None:
    await broker.publish("short", A, [new(i) for i in range(10)])
    got = await broker.claim("short", A, "g", "c", 100, 60_000)
    assert len(got) == 10
    await broker.publish("short", A, [new(i) for i in range(10, 30)])
    got2 = await broker.claim("short", A, "g", "c", 100, 60_000)
    assert [json.loads(d.message.body) for d in got2] == list(range(20, 30))
    g = broker._logs[("short", A)].groups["g"]
    assert len(g.entries) == 10
    # Settling a trimmed message is ignored.
    await broker.settle("short", A, "g", "c", [got[0].message.id], Outcome.RELEASED)
    assert await broker.claim("short", A, "g", "c", 100, 60_000) == []


async def test_lease_expiry_seen_at_claim_without_timer(
    broker: MemoryBroker, clock: FakeClock
) -> None:
    await broker.publish("t", A, [new(0)])
    [d] = await broker.claim("t", A, "g", "c1", 1, 60_000)
    clock.advance(59_999)
    assert await broker.claim("t", A, "g", "c2", 1, 60_000) == []
    clock.advance(1)
    [d2] = await broker.claim("t", A, "g", "c2", 1, 60_000)
    assert d2.message.id == d.message.id
    assert d2.redelivered == 1


async def test_modified_delay_with_fake_clock(broker: MemoryBroker, clock: FakeClock) -> None:
    await broker.publish("t", A, [new(0), new(1)])
    [d, _] = await broker.claim("t", A, "g", "c1", 2, 60_000)
    await broker.settle("t", A, "g", "c1", [d.message.id], Outcome.MODIFIED)
    clock.advance(999)
    assert await broker.claim("t", A, "g", "c2", 5, 60_000) == []
    clock.advance(1)
    [d2] = await broker.claim("t", A, "g", "c2", 5, 60_000)
    assert d2.message.id == d.message.id
    assert d2.redelivered == 1


async def test_claim_takes_returned_messages_in_position_order(broker: MemoryBroker) -> None:
    await broker.publish("t", A, [new(i) for i in range(4)])
    got = await broker.claim("t", A, "g", "c1", 2, 60_000)
    await broker.publish("t", A, [new(4)])
    await broker.settle("t", A, "g", "c1", [got[1].message.id], Outcome.RELEASED)
    again = await broker.claim("t", A, "g", "c2", 10, 60_000)
    assert [json.loads(d.message.body) for d in again] == [1, 2, 3, 4]


async def test_renew_does_not_grow_timers_without_bound(broker: MemoryBroker) -> None:
    await broker.publish("t", A, [new(0)])
    [d] = await broker.claim("t", A, "g", "c1", 1, 60_000)
    for _ in range(1000):
        assert await broker.renew("t", A, "g", "c1", [d.message.id], 60_000) == [d.message.id]
    g = broker._logs[("t", A)].groups["g"]
    assert len(g.timers) <= 70


async def test_close_cancels_timers(broker: MemoryBroker) -> None:
    await broker.publish("t", A, [new(0)])
    await broker.claim("t", A, "g", "c1", 1, 60_000)
    g = broker._logs[("t", A)].groups["g"]
    assert g.timer is not None
    await broker.close()
    assert g.timer is None
    assert not await broker.ready()
    with pytest.raises(BrokerUnavailable):
        await broker.publish("t", A, [new(0)])


async def test_idle_address_expires(broker: MemoryBroker, clock: FakeClock) -> None:
    await broker.publish("idle", A, [new(0)])
    await broker.publish("idle", "kept", [new(0)])
    handle = broker.tail("idle", "kept", START, lambda ms: None)
    clock.advance(999)
    await broker.sweep()
    assert await broker.last_position("idle", A) != START
    clock.advance(1)
    await broker.sweep()
    assert await broker.last_position("idle", A) == START
    assert await broker.last_position("idle", "kept") != START
    handle.close()
    await broker.sweep()
    assert ("idle", "kept") not in broker._logs


async def test_sweep_trims_idle_addresses_by_age(broker: MemoryBroker, clock: FakeClock) -> None:
    await broker.publish("aging", A, [new(i) for i in range(5)])
    clock.advance(1001)
    await broker.sweep()
    lg = broker._logs[("aging", A)]
    assert lg.head == len(lg.msgs)


async def test_unknown_tenant_uses_defaults(broker: MemoryBroker) -> None:
    await broker.publish("nobody", A, [new(0, message_id="x")])
    [d] = await broker.publish("nobody", A, [new(0, message_id="x")])
    assert d.duplicate
    cfg = broker._logs[("nobody", A)].cfg
    assert cfg == StoragePolicy()
    assert cfg.retention_max_len == TenantConfig("n", "n", ()).retention_max_len


async def test_tail_after_a_future_position(broker: MemoryBroker, clock: FakeClock) -> None:
    got: list[Message] = []
    ahead = f"{int(clock.now * 1000) + 5}-0"
    handle = broker.tail("t", A, ahead, got.extend)
    await broker.publish("t", A, [new(0)])
    clock.advance(5)
    await broker.publish("t", A, [new(1)])
    clock.advance(1)
    await broker.publish("t", A, [new(2)])
    assert [json.loads(m.body) for m in got] == [2]
    handle.close()


async def test_tail_is_live_synchronously(broker: MemoryBroker) -> None:
    got: list[list[Message]] = []
    handle = broker.tail("t", A, START, got.append)
    await broker.publish("t", A, [new(0), new(1)])
    assert [len(b) for b in got] == [2]
    handle.close()


async def test_tail_opened_inside_a_callback(broker: MemoryBroker) -> None:
    inner: list[Message] = []
    handles: list[Handle] = []

    def outer(msgs: list[Message]) -> None:
        if not handles:
            handles.append(broker.tail("t", A, START, inner.extend))

    h = broker.tail("t", A, START, outer)
    await broker.publish("t", A, [new(0)])
    await asyncio.sleep(0)
    await broker.publish("t", A, [new(1)])
    await asyncio.sleep(0)
    assert [json.loads(m.body) for m in inner] == [0, 1]
    h.close()
    handles[0].close()


def test_tail_without_running_loop_delivers_backlog_at_once(clock: FakeClock) -> None:
    b = MemoryBroker(SETTINGS.storage_policies(), clock=clock)
    asyncio.run(b.publish("t", A, [new(0), new(1)]))
    got: list[Message] = []
    handle = b.tail("t", A, START, got.extend)
    assert [json.loads(m.body) for m in got] == [0, 1]
    handle.close()


async def test_lookup_answers_from_the_dedup_window_only(
    broker: MemoryBroker, clock: FakeClock
) -> None:
    [p] = await broker.publish("t", A, [new(0, message_id="x")])
    clock.advance(999)
    m = await broker.lookup("t", A, "x")
    assert m is not None and m.id == p.id
    clock.advance(1)  # the window (1000 ms) is over: still retained, no longer looked up
    await broker.publish("t", A, [new(1, message_id="y")])
    assert len((await broker.read("t", A, START, 10)).messages) == 2
    assert await broker.lookup("t", A, "x") is None


# -- memory bounded by bytes (docs/security.md, "Memory bounded by bytes") --------------------

#: A message of a 998-character string body published by "p" costs its body's JSON text (1000)
#: and its stored props, {"publisher":"p"} (17).
COST = 1000 + 17


async def test_retention_by_bytes_is_exact(broker: MemoryBroker) -> None:
    ids = [(await broker.publish("bytes", A, [new("x" * 998)]))[0].id for _ in range(10)]
    lg = broker._logs[("bytes", A)]
    # 4 x 1017 = 4068 fit in 4096; a fifth would not.
    res = await broker.read("bytes", A, START, 100)
    assert [m.id for m in res.messages] == ids[6:]
    assert lg.bytes == 4 * COST
    assert (await broker.read("bytes", A, ids[5], 100)).recovered
    assert not (await broker.read("bytes", A, ids[4], 100)).recovered
    # The newest message stays whatever its size, alone.
    [big] = await broker.publish("bytes", A, [new("y" * 10_000)])
    res = await broker.read("bytes", A, ids[-2], 100)
    assert [m.id for m in res.messages] == [big.id] and not res.recovered
    assert (await broker.read("bytes", A, ids[-1], 100)).recovered  # nothing after it lost
    assert lg.bytes == 10_002 + 17
    # Non-ASCII text counts in UTF-8 bytes.
    [u] = await broker.publish("bytes", A, [NewMessage(body='"' + "é" * 1000 + '"', publisher="p")])
    assert lg.bytes == 2002 + 17
    assert [m.id for m in (await broker.read("bytes", A, START, 9)).messages] == [u.id]


async def growth(action: Callable[[], Awaitable[object]]) -> int:
    """Bytes still allocated after ``action`` (tracemalloc) that were not before it."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        await action()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


async def test_trimmed_messages_are_released_when_trimmed(
    broker: MemoryBroker, clock: FakeClock
) -> None:
    async def publish() -> None:
        for i in range(200):
            clock.advance(1)
            await broker.publish("short", A, [new(f"{i:06}" + "x" * 100_000)])

    # 200 x 100 kB published, 10 retained (1 MB). Before: held until 1,024 slots were trimmed.
    held = await growth(publish)
    assert held < 2_000_000, held


async def test_headers_are_kept_encoded(broker: MemoryBroker) -> None:
    headers = {f"k{i}": i for i in range(20_000)}
    text = len(json.dumps(headers, separators=(",", ":")))

    async def publish() -> None:
        # Decoded from the request, as the gateway and the bridge do, and dropped after.
        await broker.publish("t", A, [new(0, headers=json.loads(json.dumps(headers)))])

    held = await growth(publish)
    # Its JSON text once, and a little. Before: the dict, ~10x the text.
    assert held < 1.3 * text, (held, text)
    [m] = (await broker.read("t", A, START, 1)).messages
    assert m.headers == headers  # decoded when asked for


async def test_an_idempotency_key_keeps_its_results_as_text(broker: MemoryBroker) -> None:
    batch = [new(i) for i in range(1000)]

    async def plain() -> None:
        await broker.publish("t", "plain", batch)

    async def keyed() -> None:
        await broker.publish_once("t", "keyed", batch, "key-1", "f" * 64)

    extra = await growth(keyed) - await growth(plain)
    # One run of 1,000 new positions: a few dozen bytes. Before: 1,000 Published, ~116 kB.
    assert extra < 2048, extra
    again = await broker.publish_once("t", "keyed", batch, "key-1", "f" * 64)
    assert again.replayed
    stored = (await broker.read("t", "keyed", START, 1000)).messages
    assert [r.id for r in again.results] == [m.id for m in stored]


async def test_a_fresh_address_is_forgotten_with_its_last_tail(broker: MemoryBroker) -> None:
    """A receiver attached to an address nobody published to leaves nothing behind (issue 13:
    262,144 such links held +996 MiB after their socket closed)."""
    tails = [broker.tail("t", f"fresh.{i}", START, lambda batch: None) for i in range(3)]
    again = broker.tail("t", "fresh.0", START, lambda batch: None)
    assert len(broker._logs) == 3
    for t in tails:
        t.close()
    assert list(broker._logs) == [("t", "fresh.0")]  # still tailed
    again.close()
    assert not broker._logs
    # An address that holds something stays (retention and idle expiry say for how long).
    await broker.publish("t", A, [new(1)])
    broker.tail("t", A, START, lambda batch: None).close()
    assert list(broker._logs) == [("t", A)]


async def test_settling_in_a_group_that_does_not_exist_creates_nothing(
    broker: MemoryBroker,
) -> None:
    await broker.settle("t", "nowhere", "g", "c", ["1-0"], Outcome.ACCEPTED)
    await broker.leave("t", "nowhere", "g", "c", ["1-0"])
    assert await broker.renew("t", "nowhere", "g", "c", ["1-0"], 1000) == []
    assert not broker._logs
