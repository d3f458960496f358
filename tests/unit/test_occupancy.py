"""Occupancy of addresses in one process (``wsq.hub.occupancy`` on the memory store): one
``occupied`` for the first receiver, one ``vacated`` for the last, in order even when a link
comes and goes at once; tenants without occupancy webhooks are not counted at all."""

from __future__ import annotations

import asyncio

from wsq.broker.memory.presence import LocalPresenceStore
from wsq.hub.occupancy import Occupancy
from wsq.protocol.state import Link, Role, Session

Told = list[tuple[str, str, bool, int, str]]


def occupancy(told: Told, counted: str = "acme") -> Occupancy:
    def tell(tenant: str, address: str, occupied: bool, number: int, reason: str) -> None:
        told.append((tenant, address, occupied, number, reason))

    return Occupancy(LocalPresenceStore(), tell, lambda tenant: tenant == counted)


def receiver(handle: int, address: str) -> Link:
    return Link(Session(1), handle, Role.RECEIVER, address)


async def settled() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_first_and_last_receiver_of_an_address_are_told_once() -> None:
    told: Told = []
    occ = occupancy(told)
    one, two = receiver(0, "room"), receiver(1, "room")
    occ.attached("acme", one)
    occ.attached("acme", two)
    occ.attached("acme", two)  # told twice: counted once
    await settled()
    occ.detached(one)
    await settled()
    assert told == [("acme", "room", True, 1, "")]
    occ.detached(two)
    occ.detached(two)  # ended twice: no-op
    await settled()
    assert told == [("acme", "room", True, 1, ""), ("acme", "room", False, 2, "detached")]
    assert occ.counts == {} and occ.links == {} and occ.held == set()


async def test_a_link_that_comes_and_goes_at_once_is_told_in_order() -> None:
    told: Told = []
    occ = occupancy(told)
    link = receiver(0, "room")
    occ.attached("acme", link)
    occ.detached(link)
    occ.attached("acme", receiver(1, "room"))
    await settled()
    # The store was told each change in turn; it ends occupied, as the counts say.
    assert [t[2] for t in told] in ([True], [True, False, True])
    assert occ.held == {("acme", "room")}


async def test_a_tenant_without_occupancy_webhooks_is_not_counted() -> None:
    told: Told = []
    occ = occupancy(told, counted="other")
    occ.attached("acme", receiver(0, "room"))
    await settled()
    assert told == [] and occ.links == {} and occ.counts == {}


async def test_a_close_gives_back_what_it_holds() -> None:
    told: Told = []
    occ = occupancy(told)
    occ.attached("acme", receiver(0, "room"))
    await settled()
    await occ.close()
    assert told[-1] == ("acme", "room", False, 2, "detached")
