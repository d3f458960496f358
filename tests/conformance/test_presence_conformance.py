"""Presence in every broker (``PresenceStore``, docs/protocol.md section 7.3): members added and
removed, a room's bound, its version and the wait on it; on Redis, rooms shared by the processes
and the members of a process that is gone dropped by whoever reads the room next."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from wsq.broker.base import Broker
from wsq.config import Settings
from wsq.core.presence import Member

T = "acme"


def member(n: int, node: str = "n1") -> Member:
    return Member(id=f"{node}-{n}.1.0", sub=f"u{n}", client=f"{node}-{n}", node=node)


async def test_members_join_and_leave_and_each_change_moves_the_version(
    broker: Broker, address: str
) -> None:
    store = broker.presence_store
    assert await store.members(T, address) == (0, {})
    assert await store.join(T, address, member(1), 10)
    v1, room = await store.members(T, address)
    assert room == {member(1).id: member(1)}
    assert await store.join(T, address, member(2), 10)
    v2, room = await store.members(T, address)
    assert v2 != v1 and sorted(room) == [member(1).id, member(2).id]
    await store.leave(T, address, member(1).id)
    v3, room = await store.members(T, address)
    assert v3 not in (v1, v2) and room == {member(2).id: member(2)}
    await store.leave(T, address, member(1).id)  # not there: nothing changes
    assert (await store.members(T, address))[1] == room
    # Rooms are per tenant.
    assert await store.members("other", address) == (0, {})


async def test_a_full_room_refuses_a_new_member_but_not_one_it_holds(
    broker: Broker, address: str
) -> None:
    store = broker.presence_store
    assert await store.join(T, address, member(1), 2)
    assert await store.join(T, address, member(2), 2)
    assert not await store.join(T, address, member(3), 2)
    assert await store.join(T, address, member(2), 2)  # the same id again: still two
    _, room = await store.members(T, address)
    assert sorted(room) == [member(1).id, member(2).id]
    await store.leave(T, address, member(1).id)
    assert await store.join(T, address, member(3), 2)


async def test_changed_returns_at_a_change_or_after_its_timeout(
    broker: Broker, address: str
) -> None:
    store = broker.presence_store
    version, _ = await store.members(T, address)
    await store.changed(T, address, version, 0.05)  # nothing changed: returns after the wait
    waiter = asyncio.create_task(store.changed(T, address, version, 30))
    await asyncio.sleep(0)
    assert await store.join(T, address, member(1), 10)
    async with asyncio.timeout(10):
        await waiter
    newer, _ = await store.members(T, address)
    async with asyncio.timeout(10):
        await store.changed(T, address, version, 30)  # differs already: at once
    assert newer != version


async def test_processes_share_rooms_and_a_gone_process_takes_its_members(
    broker_kind: str,
    broker: Broker,
    make_broker: Callable[[Settings], Awaitable[Broker]],
    broker_settings: Settings,
    address: str,
) -> None:
    if broker_kind == "memory":
        pytest.skip("the memory broker is one process")
    other = await make_broker(broker_settings)
    assert await broker.presence_store.join(T, address, member(1), 10)
    assert await other.presence_store.join(T, address, member(2, node="n2"), 10)
    _, room = await broker.presence_store.members(T, address)
    assert sorted(room) == [member(1).id, member(2, node="n2").id]
    # Closed without leaving (its lease given up, as a killed one's runs out).
    await other.close()
    _, room = await broker.presence_store.members(T, address)
    assert room == {member(1).id: member(1)}
    # The drop is stored: every reader sees it.
    third = await make_broker(broker_settings)
    assert (await third.presence_store.members(T, address))[1] == room


async def test_a_room_full_of_a_gone_process_s_members_takes_a_new_one(
    broker_kind: str,
    broker: Broker,
    make_broker: Callable[[Settings], Awaitable[Broker]],
    broker_settings: Settings,
    address: str,
) -> None:
    if broker_kind == "memory":
        pytest.skip("the memory broker is one process")
    other = await make_broker(broker_settings)
    for n in range(2):
        assert await other.presence_store.join(T, address, member(n, node="n2"), 2)
    await other.close()  # gone; no one has read the room since
    assert await broker.presence_store.join(T, address, member(9), 2)
    _, room = await broker.presence_store.members(T, address)
    assert room == {member(9).id: member(9)}
