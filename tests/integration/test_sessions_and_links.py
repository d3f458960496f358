"""Contract sections 4-6 over real sockets: sessions, links, credit, publish, addresses."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from wsq_harness import Client, Gateway, Publisher, StartGateway, attach_frame, transfers

from wsq.core.positions import parse_position
from wsq.protocol.connection import Limits


async def test_one_socket_holds_1000_sessions_each_receiving_only_its_own(
    gateway: Gateway,
) -> None:
    client = await gateway.client()
    n = 1000
    await client.send(*[{"op": "begin", "ch": ch} for ch in range(n)])
    await client.send(
        *[
            {
                "op": "attach",
                "ch": ch,
                "handle": 7,
                "role": "receiver",
                "address": f"room.{ch}",
                "credit": 5,
            }
            for ch in range(n)
        ]
    )
    for _ in range(n):
        await client.expect("attach", timeout=10)
    publisher = Publisher(await gateway.client(sub="pub"))
    for ch in range(0, n, 10):
        await publisher.publish(f"room.{ch}", {"for": ch})
    got = await transfers(client, n // 10, timeout=10)
    for t in got:
        assert t["body"] == {"for": t["ch"]}
        assert t["handle"] == 7 and t["delivery"] == 0
    await client.nothing("transfer", wait=0.3)
    await client.close()


@pytest.mark.gateway(server={"max_sessions": 3})
async def test_sessions_past_max_sessions_are_refused_and_the_socket_stays_up(
    gateway: Gateway,
) -> None:
    client = await gateway.client()
    for ch in range(3):
        await client.begin(ch)
    await client.send({"op": "begin", "ch": 10})
    end = await client.expect("end", ch=10)
    assert end["error"]["condition"] == "wsq:resource-limit-exceeded"
    await client.send({"op": "end", "ch": 10})  # the answering end is accepted
    await client.send({"op": "end", "ch": 0})
    await client.expect("end", ch=0)
    await client.begin(11)  # room again
    await client.close()


async def test_begin_on_a_channel_in_use_is_a_connection_error(gateway: Gateway) -> None:
    client = await gateway.client()
    await client.begin(1)
    await client.send({"op": "begin", "ch": 1})
    await client.closed_with("wsq:invalid-frame")


async def test_frame_on_a_channel_not_begun_is_a_connection_error(gateway: Gateway) -> None:
    client = await gateway.client()
    await client.send({"op": "attach", "ch": 5, "handle": 0, "role": "sender", "address": "a"})
    await client.closed_with("wsq:invalid-frame")


async def test_end_ends_every_link_of_the_session_only(gateway: Gateway) -> None:
    client = await gateway.client()
    await client.begin(1)
    await client.begin(2)
    await client.subscribe(1, 0, "x")
    await client.subscribe(2, 0, "x")
    await client.send({"op": "end", "ch": 1})
    assert await client.expect("end") == {"op": "end", "ch": 1}
    await Publisher(await gateway.client(sub="p")).publish("x", "hello")
    t = await client.expect("transfer")
    assert t["ch"] == 2
    await client.nothing("transfer")
    await client.close()


async def test_attach_on_a_handle_in_use_ends_the_session_not_the_connection(
    gateway: Gateway,
) -> None:
    client = await gateway.client()
    await client.begin(1)
    await client.begin(2)
    await client.subscribe(1, 0, "x")
    await client.send({"op": "attach", "ch": 1, "handle": 0, "role": "receiver", "address": "y"})
    end = await client.expect("end", ch=1)
    assert end["error"]["condition"] == "wsq:invalid-frame"
    await client.subscribe(2, 0, "y")  # the other session lives on
    await client.close()


@pytest.mark.parametrize(
    "frame",
    [
        {"op": "flow", "ch": 1, "handle": 42, "credit": 1},
        {"op": "transfer", "ch": 1, "handle": 42, "delivery": 0, "body": 1},
        {"op": "detach", "ch": 1, "handle": 42},
    ],
)
async def test_link_frames_naming_an_unattached_handle_end_the_session(
    gateway: Gateway, frame: dict[str, object]
) -> None:
    client = await gateway.client()
    await client.begin(1)
    await client.send(frame)
    end = await client.expect("end", ch=1)
    assert end["error"]["condition"] == "wsq:invalid-frame"
    await client.begin(2)
    await client.close()


@pytest.mark.parametrize(
    "fields",
    [
        {"address": "bad address"},
        {"address": "a..b"},
        {"address": "x" * 256},
        {"address": "news.*"},
        {"address": "ok", "filter": {"subject": "a.>.b"}},
        {"address": "ok", "filter": {"subject": ""}},
    ],
)
async def test_bad_address_or_filter_is_refused_at_link_scope(
    gateway: Gateway, fields: dict[str, object]
) -> None:
    client = await gateway.client()
    await client.begin(1)
    await client.send({"op": "attach", "ch": 1, "handle": 3, "role": "receiver", **fields})
    detach = await client.expect("detach", ch=1, handle=3)
    assert detach["error"]["condition"] == "wsq:invalid-frame"
    await client.nothing("attach")
    await client.send({"op": "detach", "ch": 1, "handle": 3})
    await client.subscribe(1, 3, "fine")  # handle free again, session alive
    await client.close()


async def test_attach_without_the_right_is_refused_with_forbidden(gateway: Gateway) -> None:
    client = await gateway.client(publish=("chat.>",), subscribe=("news.*",))
    await client.begin(1)
    await client.send(
        {"op": "attach", "ch": 1, "handle": 0, "role": "sender", "address": "news.eu"}
    )
    assert (await client.expect("detach", handle=0))["error"]["condition"] == "wsq:forbidden"
    await client.send(
        {"op": "attach", "ch": 1, "handle": 1, "role": "receiver", "address": "news.eu.de"}
    )
    assert (await client.expect("detach", handle=1))["error"]["condition"] == "wsq:forbidden"
    await client.subscribe(1, 2, "news.eu")
    await client.sender(1, 3, "chat.room.1")
    await client.nothing("detach")
    await client.close()


@pytest.mark.gateway(server={"max_links_per_session": 2})
async def test_links_past_the_limit_are_refused_with_resource_limit_exceeded(
    gateway: Gateway,
) -> None:
    client = await gateway.subscriber("a")
    await client.subscribe(1, 1, "b")
    await client.send({"op": "attach", "ch": 1, "handle": 2, "role": "receiver", "address": "c"})
    detach = await client.expect("detach", handle=2)
    assert detach["error"]["condition"] == "wsq:resource-limit-exceeded"
    await client.close()


async def test_detach_is_answered_and_delivery_stops(gateway: Gateway) -> None:
    client = await gateway.subscriber("x")
    await client.send({"op": "detach", "ch": 1, "handle": 0})
    assert await client.expect("detach") == {"op": "detach", "ch": 1, "handle": 0}
    await Publisher(await gateway.client(sub="p")).publish("x", 1)
    await client.nothing("transfer")
    await client.close()


async def test_receiver_gets_nothing_without_credit_and_exactly_its_credit(
    gateway: Gateway,
) -> None:
    client = await gateway.subscriber("q", credit=0)
    pub = Publisher(await gateway.client(sub="p"))
    await pub.publish("q", *range(5))
    await client.nothing("transfer")
    await client.send({"op": "flow", "ch": 1, "handle": 0, "credit": 2})
    got = await transfers(client, 2)
    assert [t["body"] for t in got] == [0, 1]
    await client.nothing("transfer")
    await client.send({"op": "flow", "ch": 1, "handle": 0, "credit": 1})
    await client.send({"op": "flow", "ch": 1, "handle": 0, "credit": 10})
    got = await transfers(client, 3)
    assert [t["body"] for t in got] == [2, 3, 4]
    assert [t["delivery"] for t in got] == [2, 3, 4]
    await client.close()


async def test_publish_is_answered_with_accepted_positions_and_delivered(
    gateway: Gateway,
) -> None:
    sub = await gateway.subscriber("chat.room1", sub="reader")
    pub = Publisher(await gateway.client(sub="writer"))
    ids = await pub.publish("chat.room1", {"text": "hi"}, "two", subject="chat.x", message_id=None)
    assert len(ids) == 2 and parse_position(ids[0]) < parse_position(ids[1])
    got = await transfers(sub, 2)
    assert [t["id"] for t in got] == ids
    assert got[0]["body"] == {"text": "hi"}
    assert got[0]["props"]["publisher"] == "writer"
    assert got[0]["props"]["subject"] == "chat.x"
    assert isinstance(got[0]["props"]["ts"], int)
    assert got[0]["settled"] is False
    await sub.close()


def publish_frames(first: int, n: int) -> list[dict[str, Any]]:
    return [
        {"op": "transfer", "ch": 1, "handle": 0, "delivery": d, "body": d}
        for d in range(first, first + n)
    ]


async def accepted_deliveries(client: Client, n: int) -> list[int]:
    """The delivery numbers the next dispositions accept, until there are ``n``."""
    got: list[int] = []
    while len(got) < n:
        d = await client.expect("disposition", ch=1)
        assert d["outcome"] == "accepted", d
        got += range(d["first"], d.get("last", d["first"]) + 1)
    return got


async def test_a_sender_may_spend_exactly_its_credit_and_only_the_transfer_past_it_is_refused(
    gateway: Gateway,
) -> None:
    client = await gateway.client()
    await client.begin(1)
    await client.send(attach_frame(1, 0, "sender", "x"))
    await client.expect("attach", ch=1, handle=0)
    credit = (await client.expect("flow", ch=1, handle=0))["credit"]
    assert credit == Limits().sender_credit  # several publishes of max_publish_batch each
    # Exactly the credit, in one batch: every one accepted, the credit given back, no error.
    await client.send(*publish_frames(0, credit))
    assert await accepted_deliveries(client, credit) == list(range(credit))
    refilled = 0
    while refilled < credit:
        refilled += (await client.expect("flow", ch=1, handle=0))["credit"]
    assert refilled == credit
    # One past it in one batch: the others are published and settled (in several publishes,
    # each refilling before the next), the one past the credit alone is refused.
    await client.send(*publish_frames(credit, credit + 1))
    assert await accepted_deliveries(client, credit) == list(range(credit, 2 * credit))
    detach = await client.expect("detach", handle=0)
    assert detach["error"]["condition"] == "wsq:transfer-limit-exceeded"
    await client.nothing("disposition", wait=0.2)
    await client.begin(2)  # the connection lives on
    await client.close()


@pytest.mark.gateway(server={"sender_credit": 5})
async def test_the_sender_credit_is_the_configured_one(gateway: Gateway) -> None:
    """``[server] sender_credit``: what a sender link is granted, and refilled, and all it may
    spend."""
    client = await gateway.client()
    await client.begin(1)
    await client.send(attach_frame(1, 0, "sender", "x"))
    await client.expect("attach", ch=1, handle=0)
    assert (await client.expect("flow", ch=1, handle=0))["credit"] == 5
    await client.send(*publish_frames(0, 5))
    assert await accepted_deliveries(client, 5) == list(range(5))
    assert (await client.expect("flow", ch=1, handle=0))["credit"] == 5
    await client.send(*publish_frames(5, 6))
    assert await accepted_deliveries(client, 5) == list(range(5, 10))
    detach = await client.expect("detach", handle=0)
    assert detach["error"]["condition"] == "wsq:transfer-limit-exceeded"
    await client.close()


async def test_transfers_sent_one_by_one_are_each_settled_and_refilled_before_the_next(
    gateway: Gateway,
) -> None:
    # The gateway takes a socket's next message only once the one before is published and its
    # credit given back, so a sender writing 300 single transfers at once never runs out.
    client = await gateway.sender("x")
    for frame in publish_frames(0, 300):
        await client.send(frame)
    assert await accepted_deliveries(client, 300) == list(range(300))
    await client.begin(2)
    await client.close()


async def test_delivery_number_out_of_sequence_is_a_session_error(gateway: Gateway) -> None:
    client = await gateway.sender("x")
    await client.send({"op": "transfer", "ch": 1, "handle": 0, "delivery": 1, "body": 1})
    end = await client.expect("end", ch=1)
    assert end["error"]["condition"] == "wsq:invalid-frame"
    await client.close()


async def test_invalid_props_reject_that_message_only(gateway: Gateway) -> None:
    client = await gateway.sender("x")
    await client.send(
        {
            "op": "transfer",
            "ch": 1,
            "handle": 0,
            "delivery": 0,
            "body": 1,
            "props": {"subject": "not a subject"},
        },
        {"op": "transfer", "ch": 1, "handle": 0, "delivery": 1, "body": 2},
    )
    rejected = await client.expect("disposition", first=0)
    assert rejected["outcome"] == "rejected"
    assert rejected["error"]["condition"] == "wsq:invalid-frame"
    accepted = await client.expect("disposition", first=1)
    assert accepted["outcome"] == "accepted" and len(accepted["ids"]) == 1
    await client.close()


async def test_duplicate_message_id_is_accepted_with_the_first_position_and_not_redelivered(
    gateway: Gateway,
) -> None:
    sub = await gateway.subscriber("orders", sub="r")
    pub = Publisher(await gateway.client(sub="w"))
    first = await pub.publish("orders", {"n": 1}, message_id="order-17")
    again = await pub.publish("orders", {"n": 1}, message_id="order-17")
    assert first == again
    await transfers(sub, 1)
    await sub.nothing("transfer")
    await sub.close()


async def test_addresses_of_two_tenants_never_meet(gateway: Gateway) -> None:
    acme = await gateway.client(sub="a")
    other = await gateway.client(sub="o", tenant="other")
    for c in (acme, other):
        await c.begin(1)
        await c.subscribe(1, 0, "chat.room1")
    await Publisher(await gateway.client(sub="p", tenant="other")).publish("chat.room1", "x")
    t = await other.expect("transfer")
    assert t["body"] == "x"
    await acme.nothing("transfer")


async def test_copy_receivers_each_get_every_message(gateway: Gateway) -> None:
    readers = [await gateway.client(sub=f"r{i}") for i in range(3)]
    for r in readers:
        await r.begin(1)
        await r.subscribe(1, 0, "feed")
    await Publisher(await gateway.client(sub="p")).publish("feed", *range(10))
    for r in readers:
        assert [t["body"] for t in await transfers(r, 10)] == list(range(10))


async def test_from_caret_replays_retained_and_from_a_position_resumes_after_it(
    gateway: Gateway,
) -> None:
    pub = Publisher(await gateway.client(sub="p"))
    ids = await pub.publish("hist", *range(5))
    client = await gateway.client()
    await client.begin(1)
    answer = await client.subscribe(1, 0, "hist", **{"from": "^"})
    assert answer["recovered"] is True
    assert [t["body"] for t in await transfers(client, 5)] == list(range(5))
    answer = await client.subscribe(1, 1, "hist", **{"from": ids[2]})
    assert answer["from"] == ids[2] and answer["recovered"] is True
    assert [t["body"] for t in await transfers(client, 2, handle=1)] == [3, 4]
    answer = await client.subscribe(1, 2, "hist")  # "$": new messages only
    assert answer["from"] == ids[-1]
    await client.nothing("transfer")
    await pub.publish("hist", "new")
    got = {t["handle"]: t["body"] for t in await transfers(client, 3)}
    assert got == {0: "new", 1: "new", 2: "new"}
    await client.close()


@pytest.mark.gateway(retention_max_len=3)
async def test_from_a_position_lost_to_retention_says_recovered_false(gateway: Gateway) -> None:
    pub = Publisher(await gateway.client(sub="p"))
    ids = await pub.publish("short", *range(6))
    client = await gateway.client()
    await client.begin(1)
    answer = await client.subscribe(1, 0, "short", **{"from": ids[0]})
    assert answer["recovered"] is False
    assert [t["body"] for t in await transfers(client, 3)] == [3, 4, 5]
    await client.close()


async def test_subject_filter_delivers_only_matching_messages(gateway: Gateway) -> None:
    client = await gateway.subscriber("orders", filter={"subject": "orders.*.eu"})
    pub = Publisher(await gateway.client(sub="p"))
    await pub.publish("orders", "de", subject="orders.de.eu")
    await pub.publish("orders", "us", subject="orders.us.na")
    await pub.publish("orders", "none")
    await pub.publish("orders", "fr", subject="orders.fr.eu")
    assert [t["body"] for t in await transfers(client, 2)] == ["de", "fr"]
    await client.nothing("transfer")
    await client.close()


async def test_ttl_drops_a_message_once_it_is_that_old(gateway: Gateway) -> None:
    pub = Publisher(await gateway.client(sub="p"))
    await pub.publish("ttl", "short-lived", ttl=100)
    await pub.publish("ttl", "lasting")
    await asyncio.sleep(0.25)
    client = await gateway.subscriber("ttl", **{"from": "^"})
    assert [t["body"] for t in await transfers(client, 1)] == ["lasting"]
    await client.nothing("transfer")
    await client.close()


async def test_settled_receiver_gets_pre_settled_transfers(gateway: Gateway) -> None:
    client = await gateway.subscriber("x", settled=True)
    await Publisher(await gateway.client(sub="p")).publish("x", 1)
    assert (await client.expect("transfer"))["settled"] is True
    await client.close()


#: More than one catch-up read (``wsq.hub.copy.READ_BATCH``, 512) and than the topic's recent
#: messages (1024): a resume must read the broker several times.
BACKLOG = 1300


async def test_a_resume_past_one_read_and_the_outbox_gets_every_message_once_in_order(
    start_gateway: StartGateway,
) -> None:
    # The outbox pauses deliveries at 32 KiB: the backlog (~390 KB) is many times that, so the
    # catch-up stops for room, and goes on, many times before it reaches the live stream.
    async with start_gateway(server={"outbox_max_bytes": 64 * 1024}) as gateway:
        pub = Publisher(await gateway.client(sub="p"))
        pad = "x" * 200
        ids: list[str] = []
        for start in range(0, BACKLOG, 100):
            ids += await pub.publish("hist", *[[i, pad] for i in range(start, start + 100)])
        client = await gateway.client()
        await client.begin(1)
        await client.subscribe(1, 0, "hist", credit=10_000, **{"from": "^"})
        await client.subscribe(1, 1, "hist", credit=10_000, **{"from": ids[99]})
        got: dict[int, list[tuple[str, int]]] = {0: [], 1: []}
        for _ in range(2 * BACKLOG - 100):
            t = await client.expect("transfer")
            got[t["handle"]].append((t["id"], t["body"][0]))
        assert got[0] == list(zip(ids, range(BACKLOG), strict=True))
        assert got[1] == list(zip(ids[100:], range(100, BACKLOG), strict=True))
        # Then live, with nothing skipped or repeated between the catch-up and the live stream.
        live = await pub.publish("hist", "a", "b")
        after = [(t["handle"], t["id"], t["body"]) for t in await transfers(client, 4)]
        assert sorted(after) == [(h, i, b) for h in (0, 1) for i, b in zip(live, "ab", strict=True)]
        await client.nothing("transfer", wait=0.2)
        await client.close()
