"""Presence through a real gateway, on each broker: the snapshot at attach, joins and leaves,
occupancy over HTTP, the bounds, and the rights."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
from wsq_harness import Client, Gateway, StartGateway

from wsq.client import Client as WsqClient


def room() -> str:
    return f"room.{uuid.uuid4().hex[:12]}"


async def present(gw: Gateway, address: str, sub: str, handle: int = 0) -> Client:
    client = await gw.client(sub=sub)
    await client.begin(1)
    await client.subscribe(1, handle, address, presence=True)
    return client


def who(frame: dict[str, Any]) -> str:
    """The sub of the member a join or leave names."""
    return str((frame.get("join") or frame.get("leave"))["sub"])


async def test_members_see_the_room_then_its_joins_and_leaves(start_gateway: StartGateway) -> None:
    async with start_gateway() as gw:
        address = room()
        alice = await present(gw, address, "alice")
        first = await alice.expect("presence", ch=1, handle=0)
        client_id = f"{alice.opened['node']}-"
        assert first["count"] == 1
        [me] = first["members"]
        assert me["sub"] == "alice" and me["node"] == alice.opened["node"]
        assert me["client"].startswith(client_id) and me["id"] == f"{me['client']}.1.0"

        bob = await present(gw, address, "bob")
        snapshot = await bob.expect("presence", ch=1, handle=0)
        assert snapshot["count"] == 2
        assert sorted(m["sub"] for m in snapshot["members"]) == ["alice", "bob"]
        joined = await alice.expect("presence", ch=1, handle=0)
        assert who(joined) == "bob" and "join" in joined

        # A receiver without presence is no member and is told nothing.
        carol = await gw.subscriber(address, sub="carol")
        async with httpx.AsyncClient() as http:
            answer = await http.get(
                f"{gw.http}/v1/addresses/{address}/presence",
                headers={"authorization": f"Bearer {gw.token('dave', publish=())}"},
            )
        assert answer.status_code == 200
        body = answer.json()
        assert body["address"] == address and body["count"] == 2
        assert sorted(m["sub"] for m in body["members"]) == ["alice", "bob"]
        assert "next" not in body

        await bob.send({"op": "detach", "ch": 1, "handle": 0})
        await bob.expect("detach", ch=1, handle=0)
        left = await alice.expect("presence", ch=1, handle=0)
        assert "leave" in left and who(left) == "bob"
        await bob.close()
        await alice.close()
        await carol.nothing("presence", wait=0.2)
        await carol.close()


async def test_a_closed_socket_leaves_its_rooms(start_gateway: StartGateway) -> None:
    async with start_gateway() as gw:
        address = room()
        alice = await present(gw, address, "alice")
        await alice.expect("presence")
        bob = await present(gw, address, "bob")
        await bob.expect("presence")
        await alice.expect("presence")  # bob's join
        await bob.close()  # no detach, no close frame
        left = await alice.expect("presence")
        assert "leave" in left and who(left) == "bob"
        await alice.close()


async def test_a_full_room_refuses_the_attach_at_link_scope(start_gateway: StartGateway) -> None:
    async with start_gateway(max_members_per_address=2) as gw:
        address = room()
        alice = await present(gw, address, "alice")
        bob = await present(gw, address, "bob")
        carol = await gw.client(sub="carol")
        await carol.begin(1)
        await carol.send({"op": "attach", "ch": 1, "handle": 0, "role": "receiver",
                          "address": address, "presence": True})  # fmt: skip
        refused = await carol.expect("detach", ch=1, handle=0)
        assert refused["error"]["condition"] == "wsq:resource-limit-exceeded"
        # The session goes on: another address takes carol.
        await carol.send({"op": "detach", "ch": 1, "handle": 0})
        await carol.subscribe(1, 1, room(), presence=True)
        # Counted: the refusal by its kind, the members now, the joins so far.
        figures = await metrics(gw)
        assert figures['wsq_refusals_total{kind="members_per_address",tenant="acme"}'] == 1.0
        assert figures['wsq_presence_members{tenant="acme"}'] == 3.0
        assert figures['wsq_presence_joins_total{tenant="acme"}'] == 3.0
        await bob.close()
        while "leave" not in await alice.expect("presence"):  # bob's leave: he is gone
            pass
        figures = await metrics(gw)
        assert figures['wsq_presence_members{tenant="acme"}'] == 2.0
        assert figures['wsq_presence_leaves_total{reason="left",tenant="acme"}'] == 1.0
        for c in (alice, carol):
            await c.close()


async def metrics(gw: Gateway) -> dict[str, float]:
    """The gateway's /metrics samples by name and labels."""
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{gw.http}/metrics")).text
    lines = [line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#")]
    return {name: float(value) for name, value in lines}


async def test_the_tenant_bound_on_members_refuses_one_more(start_gateway: StartGateway) -> None:
    async with start_gateway(max_presence_members=1) as gw:
        alice = await present(gw, room(), "alice")
        bob = await gw.client(sub="bob")
        await bob.begin(1)
        await bob.send({"op": "attach", "ch": 1, "handle": 0, "role": "receiver",
                        "address": room(), "presence": True})  # fmt: skip
        refused = await bob.expect("detach", ch=1, handle=0)
        assert refused["error"]["condition"] == "wsq:resource-limit-exceeded"
        await alice.close()
        await bob.close()


async def test_occupancy_needs_the_subscribe_right_and_a_valid_page(
    start_gateway: StartGateway,
) -> None:
    async with start_gateway() as gw:
        address = room()
        url = f"{gw.http}/v1/addresses/{address}/presence"
        async with httpx.AsyncClient() as http:
            no_right = gw.token("dave", subscribe=("other.>",))
            answer = await http.get(url, headers={"authorization": f"Bearer {no_right}"})
            assert answer.status_code == 403
            assert answer.json()["error"]["condition"] == "wsq:forbidden"
            auth = {"authorization": f"Bearer {gw.token('dave')}"}
            for query in ("limit=0", "limit=101", "limit=x", "after=" + "a" * 257):
                answer = await http.get(f"{url}?{query}", headers=auth)
                assert answer.status_code == 400, query
                assert answer.json()["error"]["condition"] == "wsq:invalid-frame"
            answer = await http.get(url, headers=auth)
            assert answer.json() == {"address": address, "count": 0, "members": []}
            assert (await http.get(url)).status_code == 401


async def test_occupancy_pages_a_large_room(start_gateway: StartGateway) -> None:
    async with start_gateway() as gw:
        address = room()
        client = await gw.client(sub="alice")
        await client.begin(1)
        # 120 present links on one socket (two sessions): more than one page.
        for handle in range(120):
            ch = 1 if handle < 100 else 2
            if handle == 100:
                await client.begin(2)
            await client.send({"op": "attach", "ch": ch, "handle": handle,
                               "role": "receiver", "address": address, "presence": True})  # fmt: skip
            await client.expect("attach", ch=ch, handle=handle)
        last = await client.expect("presence", ch=2, handle=119, count=120)
        assert len(last["members"]) == 100
        async with httpx.AsyncClient() as http:
            auth = {"authorization": f"Bearer {gw.token('dave')}"}
            url = f"{gw.http}/v1/addresses/{address}/presence"
            first = (await http.get(f"{url}?limit=100", headers=auth)).json()
            rest = (await http.get(f"{url}?after={first['next']}", headers=auth)).json()
        assert (first["count"], len(first["members"])) == (120, 100)
        assert (rest["count"], len(rest["members"])) == (120, 20)
        ids = [m["id"] for m in first["members"] + rest["members"]]
        assert ids == sorted(set(ids)) and len(ids) == 120
        await client.close()


async def test_the_python_client_follows_the_room(gateway: Gateway) -> None:
    address = room()
    events: list[dict[str, Any]] = []
    got = asyncio.Event()

    def on_presence(event: dict[str, Any]) -> None:
        events.append(event)
        got.set()

    async def next_event() -> dict[str, Any]:
        async with asyncio.timeout(5):
            while not events:
                got.clear()
                await got.wait()
        return events.pop(0)

    async with WsqClient(gateway.url, token=gateway.token("alice")) as alice:
        sub = await alice.subscribe(address, presence=True, on_presence=on_presence)
        room_event = await next_event()
        assert room_event["type"] == "room" and room_event["count"] == 1
        assert [m["sub"] for m in room_event["members"]] == ["alice"]
        async with WsqClient(gateway.url, token=gateway.token("bob")) as bob:
            bobs = await bob.subscribe(address, presence=True)
            joined = await next_event()
            assert (joined["type"], joined["member"]["sub"], joined["count"]) == ("join", "bob", 2)
            assert sub.presence_count == 2 and len(sub.members) == 2
            await bobs.unsubscribe()
            left = await next_event()
            assert (left["type"], left["member"]["sub"], left["count"]) == ("leave", "bob", 1)
        assert list(sub.members.values()) == room_event["members"]
        plain = await alice.subscribe(room())
        assert plain.presence_count == 0 and plain.members == {}
