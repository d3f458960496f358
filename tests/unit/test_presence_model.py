"""Presence: the member model, the attach field, the ``presence`` frame and the rooms of one
process on the memory store (no sockets)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from protocol_helpers import Harness, detach

from wsq.broker.memory.presence import LocalPresenceStore
from wsq.core.errors import ResourceLimitExceeded
from wsq.core.presence import MAX_PRESENCE_PAGE, Member, diff, page
from wsq.hub.presence import PresenceHub, occupancy
from wsq.protocol.events import AttachRequested, LinkEnded
from wsq.protocol.state import Link, LinkState


def member(n: int, node: str = "n1") -> Member:
    return Member(id=f"{node}-{n}.1.0", sub=f"user{n}", client=f"{node}-{n}", node=node)


# -- the model ------------------------------------------------------------------------------


def test_a_page_lists_members_by_id_after_the_cursor() -> None:
    room = {m.id: m for m in (member(n) for n in (3, 1, 2, 5, 4))}
    assert [m.id for m in page(room, 2)] == ["n1-1.1.0", "n1-2.1.0"]
    assert [m.id for m in page(room, 2, after="n1-2.1.0")] == ["n1-3.1.0", "n1-4.1.0"]
    assert page(room, 10, after="n1-5.1.0") == []


def test_diff_names_joins_and_leaves_by_id() -> None:
    old = {m.id: m for m in (member(1), member(2))}
    new = {m.id: m for m in (member(2), member(4), member(3))}
    assert diff(old, new) == ([member(3), member(4)], [member(1)])
    assert diff(new, new) == ([], [])


@pytest.mark.parametrize(
    "doc",
    [
        None,
        [],
        {"id": "a", "sub": "b", "client": "c"},
        {"id": "a", "sub": 1, "client": "c", "node": "d"},
        {"id": "a" * 257, "sub": "b", "client": "c", "node": "d"},
    ],
)
def test_a_stored_member_that_is_not_one_is_skipped(doc: Any) -> None:
    assert Member.from_json(doc) is None


def test_a_member_round_trips_through_json() -> None:
    assert Member.from_json(member(7).to_json()) == member(7)


# -- the attach field and the frame -----------------------------------------------------------


def opened() -> Harness:
    h = Harness()
    h.open()
    h.begin(1)
    return h


def test_a_receiver_may_attach_with_presence() -> None:
    h = opened()
    h.send({"op": "attach", "ch": 1, "handle": 0, "role": "receiver", "address": "room.1",
            "presence": True})  # fmt: skip
    [event] = h.events()
    assert isinstance(event, AttachRequested) and event.link.presence is True


def test_presence_is_false_unless_asked() -> None:
    h = opened()
    link = h.attach(1, 0, "receiver", "room.1")
    assert link.presence is False


@pytest.mark.parametrize(
    ("role", "address", "value"),
    [
        ("receiver", "room.1", "yes"),
        ("receiver", "room.1", 1),
        ("sender", "room.1", True),
        ("receiver", "$sys.stats", True),
    ],
)
def test_a_wrong_presence_field_refuses_the_attach_at_link_scope(
    role: str, address: str, value: Any
) -> None:
    h = opened()
    h.send({"op": "attach", "ch": 1, "handle": 3, "role": role, "address": address,
            "presence": value})  # fmt: skip
    events = h.events()
    assert [type(e) for e in events] == [LinkEnded]
    assert h.out() == [detach(1, 3, "wsq:invalid-frame")]


def test_presence_frames_go_on_attached_links_only() -> None:
    h = opened()
    link = h.attach(1, 0, "receiver", "room.1", presence=True)
    h.conn.send_presence(link, {"join": member(1).to_json()})
    assert h.out() == []  # not answered yet: nothing may precede the attach
    h.conn.accept_attach(link, from_="0-0", recovered=False)
    h.out()
    h.conn.send_presence(link, {"count": 1, "members": [member(1).to_json()]})
    assert h.out() == [
        {"op": "presence", "ch": 1, "handle": 0, "count": 1,
         "members": [member(1).to_json()]}
    ]  # fmt: skip


# -- the rooms of one process -----------------------------------------------------------------


class Seen:
    """What a fake connection was sent, by link."""

    def __init__(self) -> None:
        self.frames: dict[int, list[dict[str, Any]]] = {}

    def send(self, link: Link, body: dict[str, Any]) -> None:
        self.frames.setdefault(link.handle, []).append(body)

    def take(self, handle: int) -> list[dict[str, Any]]:
        return self.frames.pop(handle, [])


def attached(h: Harness, handle: int) -> Link:
    link = h.attach(1, handle, "receiver", "room.1", presence=True)
    link.state = LinkState.ATTACHED
    return link


async def settle(hub: PresenceHub) -> None:
    """Let every watcher read its room once more (the memory store wakes them at once)."""
    for room in list(hub.rooms.values()):
        async with room.lock:
            await hub._refresh(room)


async def test_members_are_greeted_then_told_of_joins_and_leaves() -> None:
    hub = PresenceHub(LocalPresenceStore())
    seen = Seen()
    h = opened()
    a, b = attached(h, 0), attached(h, 1)
    await hub.join("acme", a, member(1), 10, seen.send)
    hub.greet(a)
    assert seen.take(0) == [{"count": 1, "members": [member(1).to_json()]}]
    await hub.join("acme", b, member(2), 10, seen.send)
    hub.greet(b)
    assert seen.take(0) == [{"join": member(2).to_json()}]
    assert seen.take(1) == [{"count": 2, "members": [member(1).to_json(), member(2).to_json()]}]
    assert await hub.leave(b) is True
    await settle(hub)
    assert seen.take(0) == [{"leave": member(2).to_json()}]
    assert seen.take(1) == []  # a link that left is told nothing more
    assert await hub.leave(b) is False
    assert await hub.leave(a) is True
    assert hub.rooms == {}
    assert await occupancy(hub.store, "acme", "room.1", 100, "") == {
        "address": "room.1",
        "count": 0,
        "members": [],
    }
    await hub.close()


async def test_a_watcher_tells_of_changes_made_elsewhere() -> None:
    store = LocalPresenceStore()
    hub = PresenceHub(store)
    seen = Seen()
    a = attached(opened(), 0)
    await hub.join("acme", a, member(1), 10, seen.send)
    hub.greet(a)
    seen.take(0)
    # Another process's member on the shared store: the watcher reads it by itself.
    await store.join("acme", "room.1", member(9, node="n2"), 10)
    async with asyncio.timeout(5):
        while not seen.frames.get(0):
            await store.changed("acme", "room.1", -1, 0.05)
            await asyncio.sleep(0)
    assert seen.take(0) == [{"join": member(9, node="n2").to_json()}]
    await hub.leave(a)
    await hub.close()


async def test_a_full_room_refuses_one_more_member() -> None:
    hub = PresenceHub(LocalPresenceStore())
    seen = Seen()
    h = opened()
    links = [attached(h, n) for n in range(3)]
    for n in range(2):
        await hub.join("acme", links[n], member(n), 2, seen.send)
    with pytest.raises(ResourceLimitExceeded):
        await hub.join("acme", links[2], member(2), 2, seen.send)
    assert hub.holds(links[2]) is False
    assert await hub.leave(links[2]) is False
    assert (await occupancy(hub.store, "acme", "room.1", 100, ""))["count"] == 2
    await hub.close()


async def test_an_occupancy_answer_is_a_count_and_a_bounded_page() -> None:
    store = LocalPresenceStore()
    for n in range(MAX_PRESENCE_PAGE + 50):
        assert await store.join("acme", "big", member(n + 1000), 1000)
    first = await occupancy(store, "acme", "big", MAX_PRESENCE_PAGE, "")
    assert first["count"] == 150
    assert len(first["members"]) == MAX_PRESENCE_PAGE
    rest = await occupancy(store, "acme", "big", MAX_PRESENCE_PAGE, first["next"])
    assert len(rest["members"]) == 50 and "next" not in rest
    ids = [m["id"] for m in first["members"] + rest["members"]]
    assert ids == sorted({member(n + 1000).id for n in range(150)})
