"""The rooms of one process at their edges (issue 14: mutants of ``wsq.hub.presence`` that the
presence tests let live): a join the store failed leaves nothing behind, what ``holds`` and
``greet`` answer for members and others, a greeting's page, the watcher's pace, its task
ended with the room, and a store that fails: logged, looked at again, still telling."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest
from test_presence_model import Seen, attached, member, opened

from wsq.broker.memory.presence import LocalPresenceStore
from wsq.core.errors import BrokerUnavailable, ResourceLimitExceeded
from wsq.core.presence import MAX_PRESENCE_PAGE
from wsq.hub import presence
from wsq.hub.presence import PresenceHub


class FlakyStore(LocalPresenceStore):
    """Fails the calls it is told to, once each."""

    def __init__(self, lease_ms: int = 0) -> None:
        super().__init__()
        self.lease_ms = lease_ms
        self.failing: dict[str, BaseException] = {}
        self.waits: list[float | None] = []  # how long each ``changed`` may wait

    def _fail(self, name: str) -> None:
        exc = self.failing.pop(name, None)
        if exc is not None:
            raise exc

    async def join(self, *args: Any) -> bool:
        self._fail("join")
        return await super().join(*args)

    async def leave(self, *args: Any) -> None:
        self._fail("leave")
        await super().leave(*args)

    async def changed(self, *args: Any) -> None:
        self.waits.append(args[3])
        self._fail("changed")
        await super().changed(*args)


async def until(condition: Callable[[], bool]) -> None:
    """Wait for ``condition``, bounded (a watcher that died fails the test, never hangs it)."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)


async def test_a_join_the_store_failed_leaves_no_member_behind() -> None:
    store = FlakyStore()
    hub = PresenceHub(store)
    link = attached(opened(), 0)
    store.failing["join"] = BrokerUnavailable("down")
    with pytest.raises(BrokerUnavailable):
        await hub.join("acme", link, member(1), 10, Seen().send)
    assert hub.holds(link) is False
    hub.greet(link)  # no member: nothing to greet, and no error
    assert await hub.leave(link) is False
    await hub.close()


async def test_holds_and_greet_answer_for_members_only() -> None:
    hub = PresenceHub(LocalPresenceStore())
    seen = Seen()
    h = opened()
    a, full = attached(h, 0), attached(h, 1)
    await hub.join("acme", a, member(1), 1, seen.send)
    assert hub.holds(a) is True
    with pytest.raises(ResourceLimitExceeded, match="at most 1 present members per address"):
        await hub.join("acme", full, member(2), 1, seen.send)
    assert hub.holds(full) is False
    hub.greet(full)  # its room is known, it is no member of it
    assert seen.take(1) == []
    await hub.close()


async def test_a_greeting_lists_the_first_page_and_counts_them_all() -> None:
    store = LocalPresenceStore()
    for n in range(MAX_PRESENCE_PAGE + 20):
        assert await store.join("acme", "room.1", member(n + 1000), 1000)
    hub = PresenceHub(store)
    seen = Seen()
    link = attached(opened(), 0)
    await hub.join("acme", link, member(1), 1000, seen.send)
    hub.greet(link)
    [greeting] = seen.take(0)
    assert greeting["count"] == MAX_PRESENCE_PAGE + 21
    assert len(greeting["members"]) == MAX_PRESENCE_PAGE
    await hub.close()


async def test_the_watcher_looks_again_every_third_of_a_lease_or_every_sweep_spread_early() -> None:
    assert PresenceHub(FlakyStore(lease_ms=30_000)).sweep_s == 10.0
    store = FlakyStore(lease_ms=0)
    hub = PresenceHub(store)
    h = opened()
    for n in range(20):  # twenty rooms watched from the same moment
        link = attached(h, n)
        link.address = f"room.{n}"
        await hub.join("acme", link, member(n), 10, Seen().send)
    await until(lambda: len(store.waits) == 20)
    # Each at most the sweep and at most a quarter early, and spread: not read in one instant.
    low = presence.SWEEP_S * (1 - presence.SWEEP_JITTER)
    assert all(low <= w <= presence.SWEEP_S for w in store.waits if w is not None), store.waits
    assert len(set(store.waits)) > 10
    await hub.close()


async def test_the_watcher_ends_with_the_last_member_of_its_room() -> None:
    hub = PresenceHub(LocalPresenceStore())
    link = attached(opened(), 0)
    await hub.join("acme", link, member(1), 10, Seen().send)
    task = hub.rooms[("acme", "room.1")].task
    assert task is not None and not task.done()
    await hub.leave(link)
    await asyncio.sleep(0)
    assert task.cancelled()
    await hub.close()


async def test_a_leave_the_store_failed_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    store = FlakyStore()
    hub = PresenceHub(store)
    link = attached(opened(), 0)
    await hub.join("acme", link, member(1), 10, Seen().send)
    store.failing["leave"] = BrokerUnavailable("down")
    with caplog.at_level(logging.WARNING, logger="wsq.presence"):
        assert await hub.leave(link) is True
    assert [r.getMessage() for r in caplog.records] == ["presence leave not stored: down"]
    await hub.close()


@pytest.mark.parametrize(
    ("failure", "logged"),
    [
        (BrokerUnavailable("down"), "presence of a room unreadable: down"),
        (RuntimeError("bug"), "presence watcher failed"),
    ],
)
async def test_a_watcher_whose_store_failed_logs_it_and_tells_again(
    failure: BaseException,
    logged: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(presence, "RETRY_S", 0.01)
    store = FlakyStore()
    hub = PresenceHub(store)
    seen = Seen()
    link = attached(opened(), 0)
    with caplog.at_level(logging.WARNING, logger="wsq.presence"):
        store.failing["changed"] = failure
        await hub.join("acme", link, member(1), 10, seen.send)
        hub.greet(link)
        seen.take(0)
        await until(lambda: "changed" not in store.failing)
        await store.join("acme", "room.1", member(9, node="n2"), 10)
        await until(lambda: bool(seen.frames.get(0)))
    assert seen.take(0) == [{"join": member(9, node="n2").to_json()}]
    assert [r.getMessage() for r in caplog.records] == [logged]
    await hub.leave(link)
    await hub.close()
