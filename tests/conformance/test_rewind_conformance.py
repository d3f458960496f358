"""``Broker.read_back`` and ``Broker.rewind`` (contract section 5, ``rewind``) on every broker:
memory, Redis and Redis Cluster, through the Broker interface only."""

from __future__ import annotations

import json
from types import MappingProxyType
from typing import Any

import pytest

from wsq.broker import base
from wsq.broker.base import Broker, position_before
from wsq.config import Settings, TenantConfig
from wsq.core.addresses import compile_pattern
from wsq.core.messages import NewMessage, message_size
from wsq.core.positions import START, parse_position

T = "acme"
SHORT = "short"  # keeps 5 messages


@pytest.fixture
def broker_settings() -> Settings:
    return Settings(
        tenants=MappingProxyType(
            {
                T: TenantConfig(name=T, issuer=T, keys=()),
                SHORT: TenantConfig(name=SHORT, issuer=SHORT, keys=(), retention_max_len=5),
            }
        )
    )


async def publish(
    broker: Broker, address: str, *items: tuple[Any, str | None], tenant: str = T
) -> list[str]:
    """Publish (body, subject) pairs in order; their positions."""
    news = [NewMessage(body=json.dumps(b), publisher="alice", subject=s) for b, s in items]
    return [r.id for r in await broker.publish(tenant, address, news)]


async def rewound(broker: Broker, address: str, n: int, **kw: Any) -> list[Any]:
    """The bodies a link that rewinds ``n`` gets before live messages (the hub's reading)."""
    r = await broker.rewind(T, address, n, **kw)
    got = (await broker.read(T, address, r.after, 10_000)).messages
    flt = kw.get("subject_filter")
    if flt is not None:
        got = [m for m in got if m.subject is not None and flt.matches(m.subject)]
    if r.keep is not None:
        got = [m for m in got if m.pos > r.upto or m.id in r.keep]
    return [json.loads(m.body) for m in got]


async def test_read_back_newest_first_before_a_position(broker: Broker, address: str) -> None:
    ids = await publish(broker, address, *[(i, None) for i in range(10)])
    got = await broker.read_back(T, address, None, 3, 1 << 20)
    assert [m.id for m in got] == ids[:-4:-1]
    got = await broker.read_back(T, address, ids[5], 100, 1 << 20)
    assert [json.loads(m.body) for m in got] == [4, 3, 2, 1, 0]
    assert await broker.read_back(T, address, ids[0], 10, 1 << 20) == []
    assert await broker.read_back(T, address + ".none", None, 10, 1 << 20) == []


async def test_read_back_sees_only_what_retention_keeps(broker: Broker, address: str) -> None:
    await publish(broker, address, *[(i, None) for i in range(20)], tenant=SHORT)
    got = await broker.read_back(SHORT, address, None, 100, 1 << 20)
    assert [json.loads(m.body) for m in got] == [19, 18, 17, 16, 15]


async def test_rewind_3_of_10_starts_before_the_8th(broker: Broker, address: str) -> None:
    ids = await publish(broker, address, *[(i, None) for i in range(1, 11)])
    r = await broker.rewind(T, address, 3)
    assert r.keep is None
    assert r.after == position_before(parse_position(ids[7]))
    assert await rewound(broker, address, 3) == [8, 9, 10]
    # More than is retained: everything; none retained: nothing, from the start.
    assert await rewound(broker, address, 1000) == list(range(1, 11))
    assert (await broker.rewind(T, address + ".none", 5)).after == START


async def test_rewind_counts_only_messages_the_filter_matches(broker: Broker, address: str) -> None:
    items = [(i, "p.eu" if i % 3 == 0 else "p.us") for i in range(1, 31)]
    ids = await publish(broker, address, *items)
    eu = compile_pattern("p.eu")
    assert await rewound(broker, address, 2, subject_filter=eu) == [27, 30]
    # Nothing matches: the link starts after the newest, as "$" would.
    r = await broker.rewind(T, address, 2, subject_filter=compile_pattern("p.asia"))
    assert r.after == ids[-1]


async def test_rewind_by_subject_keeps_the_last_of_the_last_n_subjects(
    broker: Broker, address: str
) -> None:
    items = [({"s": s, "v": v}, f"h.{s}") for v in range(3) for s in ("a", "b", "c", "d")]
    items.append(({"s": "b", "v": 9}, "h.b"))
    await publish(broker, address, *items)
    got = await rewound(broker, address, 3, by_subject=True)
    # The last 3 subjects updated are b (v9), d and c; each comes once, its last, in order.
    assert got == [{"s": "c", "v": 2}, {"s": "d", "v": 2}, {"s": "b", "v": 9}]
    everything = await rewound(broker, address, 1000, by_subject=True)
    assert [b["s"] for b in everything] == ["a", "c", "d", "b"]


async def test_rewind_reads_back_no_more_than_the_scan_bound(
    broker: Broker, address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(base, "REWIND_SCAN", 20)
    monkeypatch.setattr(base, "REWIND_PAGE", 7)
    await publish(broker, address, ("old", "x.rare"), *[(i, "x.often") for i in range(40)])
    rare = compile_pattern("x.rare")
    # 41 entries back is past the bound of 20: the rare one is not found, nothing rewinds.
    assert await rewound(broker, address, 1, subject_filter=rare) == []
    calls: list[int] = []
    real = broker.read_back

    async def counted(tenant: str, addr: str, before: str | None, limit: int, most: int) -> Any:
        calls.append(limit)
        return await real(tenant, addr, before, limit, most)

    monkeypatch.setattr(broker, "read_back", counted)
    await broker.rewind(T, address, 1, subject_filter=rare)
    assert calls == [7, 7, 6]  # 20 entries in all


async def test_read_back_stops_at_its_byte_budget_but_gives_one(
    broker: Broker, address: str
) -> None:
    await publish(broker, address, *[("x" * 1000, None) for _ in range(10)])
    [one] = await broker.read_back(T, address, None, 1, 1 << 20)
    size = message_size(one)
    assert len(await broker.read_back(T, address, None, 10, 3 * size)) == 3
    assert len(await broker.read_back(T, address, None, 10, 3 * size - 1)) == 2
    assert len(await broker.read_back(T, address, None, 10, 1)) == 1


async def test_rewind_reads_back_no_more_than_the_scan_bytes(
    broker: Broker, address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await publish(broker, address, ("old", "y.rare"), *[("x" * 1000, "y.big") for _ in range(30)])
    [one] = await broker.read_back(T, address, None, 1, 1 << 20)
    monkeypatch.setattr(base, "REWIND_SCAN_BYTES", 10 * message_size(one))
    monkeypatch.setattr(base, "REWIND_PAGE_BYTES", 4 * message_size(one))
    calls: list[int] = []
    real = broker.read_back

    async def counted(tenant: str, addr: str, before: str | None, limit: int, most: int) -> Any:
        got = await real(tenant, addr, before, limit, most)
        calls.append(len(got))
        return got

    monkeypatch.setattr(broker, "read_back", counted)
    r = await broker.rewind(T, address, 1, subject_filter=compile_pattern("y.rare"))
    assert calls == [4, 4, 4]  # past 10 messages' bytes: stopped, the rare one not reached
    assert r.after == (await broker.last_position(T, address))


def test_position_before_is_the_greatest_position_before() -> None:
    assert position_before((1732200000000, 5)) == "1732200000000-4"
    assert position_before((1732200000000, 0)) == "1732199999999-9999999999999999999"
    assert position_before((0, 0)) == START
    assert position_before((0, 1)) == START


async def test_a_rewind_to_a_first_message_of_its_ms_reads_from_it(
    broker: Broker, address: str
) -> None:
    ids = await publish(broker, address, *[(i, None) for i in range(3)])
    first = parse_position(ids[0])
    after = position_before((first[0], 0))
    got = (await broker.read(T, address, after, 10)).messages
    assert [m.id for m in got] == [i for i in ids if parse_position(i) >= (first[0], 0)]
