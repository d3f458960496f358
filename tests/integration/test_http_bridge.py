"""The HTTP bridge over real HTTP (httpx against uvicorn), on both brokers: the memory broker
and a real ``redis-server`` on a free port. Every endpoint, every error code."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from wsq_harness import (
    Gateway,
    Publisher,
    RedisServer,
    StartGateway,
    make_settings,
    running_gateway,
)

from wsq.auth import mint_token
from wsq.config import KeyConfig, TenantConfig


@pytest.fixture
def gw(gateway_on_each_broker: Gateway) -> Gateway:
    """Every test here that takes ``gw`` (or ``start_gateway``) runs on both brokers."""
    return gateway_on_each_broker


@pytest.fixture
def address() -> str:
    return f"bridge.{uuid.uuid4().hex[:12]}"


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def http(gw: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=gw.http, headers=auth(gw.token("backend")), timeout=10
    ) as client:
        yield client


def assert_error(r: httpx.Response, status: int, condition: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    error = r.json()["error"]
    assert error["condition"] == condition, error
    assert isinstance(error["description"], str) and error["description"]
    assert "Traceback" not in r.text
    return dict(error)


def url(address: str, tail: str = "messages") -> str:
    return f"/v1/addresses/{address}/{tail}"


# -- publish ---------------------------------------------------------------------------------


async def test_published_message_reaches_a_websocket_subscriber(
    gw: Gateway, http: httpx.AsyncClient, address: str
) -> None:
    ws = await gw.subscriber(address, sub="browser")
    r = await http.post(
        url(address),
        json={
            "body": {"n": 12345678901234567890123},
            "subject": "orders.de",
            "message_id": "m-1",
            "content_type": "application/json",
            "headers": {"k": "v"},
            "ttl": 60_000,
        },
    )
    assert r.status_code == 201, r.text
    [position] = r.json()["ids"]
    t = await ws.expect("transfer")
    assert t["id"] == position
    assert t["body"] == {"n": 12345678901234567890123}
    props = t["props"]
    assert props["subject"] == "orders.de" and props["message_id"] == "m-1"
    assert props["headers"] == {"k": "v"} and props["publisher"] == "backend"
    assert props["content_type"] == "application/json"
    await ws.close()


async def test_batch_is_stored_in_order(http: httpx.AsyncClient, address: str) -> None:
    r = await http.post(url(address), json={"messages": [{"body": i} for i in range(5)]})
    assert r.status_code == 201
    ids = r.json()["ids"]
    assert len(ids) == 5 and len(set(ids)) == 5
    listed = (await http.get(url(address))).json()
    assert [m["id"] for m in listed["messages"]] == ids
    assert [m["body"] for m in listed["messages"]] == list(range(5))


async def test_all_duplicates_answer_200_with_the_first_positions(
    http: httpx.AsyncClient, address: str
) -> None:
    first = await http.post(url(address), json={"body": 1, "message_id": "a"})
    assert first.status_code == 201
    again = await http.post(url(address), json={"body": 2, "message_id": "a"})
    assert again.status_code == 200
    assert again.json()["ids"] == first.json()["ids"]
    mixed = await http.post(
        url(address), json={"messages": [{"body": 3, "message_id": "a"}, {"body": 4}]}
    )
    assert mixed.status_code == 201
    assert mixed.json()["ids"][0] == first.json()["ids"][0]
    listed = (await http.get(url(address))).json()["messages"]
    assert [m["body"] for m in listed] == [1, 4]


async def test_idempotency_key_answers_a_retry_with_the_first_answer(
    gw: Gateway, http: httpx.AsyncClient, address: str
) -> None:
    ws = await gw.subscriber(address, sub="browser")
    headers = {"Idempotency-Key": "order-42"}
    body = {"messages": [{"body": "a"}, {"body": "b"}]}
    first = await http.post(url(address), json=body, headers=headers)
    assert first.status_code == 201 and "idempotent-replayed" not in first.headers
    retry = await http.post(url(address), json=body, headers=headers)
    assert retry.status_code == 201
    assert retry.json() == first.json()
    assert retry.headers["idempotent-replayed"] == "true"
    got = [(await ws.expect("transfer"))["body"] for _ in range(2)]
    assert got == ["a", "b"]
    await ws.nothing("transfer", wait=0.3)  # the retry delivered nothing
    listed = (await http.get(url(address))).json()["messages"]
    assert [m["body"] for m in listed] == ["a", "b"]
    # The same key with another request is refused, and stores nothing.
    other = await http.post(url(address), json={"body": "c"}, headers=headers)
    assert_error(other, 400, "wsq:invalid-frame")
    assert len((await http.get(url(address))).json()["messages"]) == 2
    await ws.close()


async def test_idempotency_key_must_be_visible_ascii(http: httpx.AsyncClient, address: str) -> None:
    r = await http.post(url(address), json={"body": 1}, headers={"Idempotency-Key": "x" * 256})
    assert_error(r, 400, "wsq:invalid-frame")
    r = await http.post(url(address), json={"body": 1}, headers={"Idempotency-Key": "a b"})
    assert_error(r, 400, "wsq:invalid-frame")


async def test_idempotency_key_holds_across_gateway_processes_on_redis(
    redis_server: RedisServer, address: str
) -> None:
    settings = make_settings(broker_url=redis_server.url)
    async with running_gateway(settings) as one, running_gateway(settings) as two:
        headers = {**auth(one.token("backend")), "Idempotency-Key": "k-1"}
        async with httpx.AsyncClient(headers=headers) as client:
            first = await client.post(one.http + url(address), json={"body": 1})
            retry = await client.post(two.http + url(address), json={"body": 1})
            assert first.status_code == retry.status_code == 201
            assert retry.json() == first.json()
            assert retry.headers["idempotent-replayed"] == "true"
            listed = (await client.get(two.http + url(address))).json()["messages"]
            assert len(listed) == 1


# -- list ------------------------------------------------------------------------------------


async def test_list_pages_with_after_limit_and_next(http: httpx.AsyncClient, address: str) -> None:
    ids = (
        await http.post(url(address), json={"messages": [{"body": i} for i in range(5)]})
    ).json()["ids"]
    page = (await http.get(url(address), params={"limit": 2})).json()
    assert [m["id"] for m in page["messages"]] == ids[:2]
    assert page["next"] == ids[1] and page["recovered"] is True
    page = (await http.get(url(address), params={"after": page["next"], "limit": 10})).json()
    assert [m["body"] for m in page["messages"]] == [2, 3, 4]
    end = (await http.get(url(address), params={"after": page["next"]})).json()
    assert end["messages"] == [] and end["next"] == ids[-1]
    m = page["messages"][0]
    assert m["props"]["publisher"] == "backend" and isinstance(m["props"]["ts"], int)


async def test_list_last_n_gives_the_newest_n_in_order(
    http: httpx.AsyncClient, address: str
) -> None:
    ids = (
        await http.post(url(address), json={"messages": [{"body": i} for i in range(1, 11)]})
    ).json()["ids"]
    page = (await http.get(url(address), params={"last": 3})).json()
    assert [m["body"] for m in page["messages"]] == [8, 9, 10]
    assert [m["id"] for m in page["messages"]] == ids[7:]
    assert page["next"] == ids[-1]
    page = (await http.get(url(address), params={"last": 5, "limit": 2})).json()
    assert [m["body"] for m in page["messages"]] == [6, 7]  # read on with after=next
    page = (await http.get(url(address), params={"last": 1000})).json()
    assert [m["body"] for m in page["messages"]] == list(range(1, 11))
    empty = (await http.get(url(address + ".none"), params={"last": 3})).json()
    assert empty["messages"] == []


@pytest.mark.parametrize(
    "params", [{"last": "0"}, {"last": "1001"}, {"last": "x"}, {"last": "3", "after": "1-0"}]
)
async def test_list_last_out_of_range_or_with_after_is_400(
    http: httpx.AsyncClient, address: str, params: dict[str, str]
) -> None:
    assert_error(await http.get(url(address), params=params), 400, "wsq:invalid-frame")


async def test_list_pages_are_bounded_by_bytes(start_gateway: StartGateway, address: str) -> None:
    # max_frame_bytes bounds one response's messages as it bounds one WebSocket message: a
    # thousand messages of nearly max_frame_bytes each must not make one enormous answer.
    async with (
        start_gateway(server={"max_frame_bytes": 8192}) as gw,
        httpx.AsyncClient(base_url=gw.http, headers=auth(gw.token())) as client,
    ):
        ids = []
        for i in range(7):
            r = await client.post(url(address), json={"body": f"{i}" * 3000})
            ids += r.json()["ids"]
        page = await client.get(url(address), params={"limit": 1000})
        got = page.json()
        assert [m["id"] for m in got["messages"]] == ids[:2]  # a third would pass 8192
        assert got["next"] == ids[1]
        assert len(page.content) <= 8192
        seen = [m["id"] for m in got["messages"]]
        while got["messages"]:
            got = (await client.get(url(address), params={"after": got["next"]})).json()
            seen += [m["id"] for m in got["messages"]]
        assert seen == ids
        # A message larger than the budget alone (headers count too) still comes, alone.
        [big] = (
            await client.post(url(address), json={"body": "b" * 4000, "headers": {"h": "x" * 4000}})
        ).json()["ids"]
        got = (await client.get(url(address), params={"after": ids[-1]})).json()
        assert [m["id"] for m in got["messages"]] == [big]


async def test_list_of_an_unknown_address_is_empty(http: httpx.AsyncClient, address: str) -> None:
    r = await http.get(url(address))
    assert r.status_code == 200
    assert r.json() == {"messages": [], "next": "0-0", "recovered": True}


@pytest.mark.parametrize(
    "params",
    [
        {"after": "nope"},
        {"after": "1-2-3"},
        {"after": "99999999999999999999-0"},
        {"limit": "0"},
        {"limit": "1001"},
        {"limit": "ten"},
        {"limit": "-1"},
    ],
)
async def test_list_refuses_bad_parameters(
    http: httpx.AsyncClient, address: str, params: dict[str, str]
) -> None:
    assert_error(await http.get(url(address), params=params), 400, "wsq:invalid-frame")


# -- lookup ----------------------------------------------------------------------------------


async def test_lookup_finds_a_message_by_message_id(
    gw: Gateway, http: httpx.AsyncClient, address: str
) -> None:
    [pos] = (await http.post(url(address), json={"body": "x", "message_id": "inv-7"})).json()["ids"]
    r = await http.get(url(address, "lookup"), params={"message_id": "inv-7"})
    assert r.status_code == 200
    found = r.json()
    assert found["id"] == pos and found["body"] == "x" and found["props"]["message_id"] == "inv-7"
    # A publisher without the subscribe right learns where it is, not what it says.
    token = gw.token("php", publish=(address,), subscribe=())
    r = await http.get(url(address, "lookup"), params={"message_id": "inv-7"}, headers=auth(token))
    assert r.status_code == 200 and r.json()["id"] == pos and "body" not in r.json()


async def test_lookup_errors(gw: Gateway, http: httpx.AsyncClient, address: str) -> None:
    r = await http.get(url(address, "lookup"), params={"message_id": "never"})
    assert_error(r, 404, "wsq:not-found")
    assert_error(await http.get(url(address, "lookup")), 400, "wsq:invalid-frame")
    r = await http.get(url(address, "lookup"), params={"message_id": "x" * 1025})
    assert_error(r, 400, "wsq:invalid-frame")
    token = gw.token("nobody", publish=("elsewhere",), subscribe=("elsewhere",))
    r = await http.get(url(address, "lookup"), params={"message_id": "a"}, headers=auth(token))
    assert_error(r, 403, "wsq:forbidden")


# -- claims ----------------------------------------------------------------------------------


async def claim(http: httpx.AsyncClient, address: str, **body: Any) -> httpx.Response:
    return await http.post(url(address, "claims"), json=body)


async def settle(
    http: httpx.AsyncClient, address: str, claim_id: str, ids: list[str], outcome: str
) -> httpx.Response:
    return await http.post(
        url(address, f"claims/{claim_id}/settle"), json={"ids": ids, "outcome": outcome}
    )


async def test_claims_lease_messages_once_and_accept_removes_them(
    http: httpx.AsyncClient, address: str
) -> None:
    ids = (
        await http.post(url(address), json={"messages": [{"body": i} for i in range(5)]})
    ).json()["ids"]
    r = await claim(http, address, limit=3)
    assert r.status_code == 201
    first = r.json()
    assert first["group"] == "default" and first["lease"] == 30_000
    assert first["claim"].startswith("default~")
    assert r.headers["location"] == url(address, f"claims/{first['claim']}")
    assert [m["id"] for m in first["messages"]] == ids[:3]
    assert all(m["props"]["redelivered"] == 0 for m in first["messages"])
    second = (await claim(http, address, limit=10)).json()
    assert [m["body"] for m in second["messages"]] == [3, 4]
    assert second["claim"] != first["claim"]
    assert (await claim(http, address)).status_code == 204
    r = await settle(http, address, first["claim"], ids[:3], "accepted")
    assert r.status_code == 204
    r = await settle(http, address, second["claim"], ids[3:], "released")
    assert r.status_code == 204
    again = (await claim(http, address, limit=10)).json()
    assert [m["body"] for m in again["messages"]] == [3, 4]
    assert all(m["props"]["redelivered"] == 0 for m in again["messages"])


async def test_claim_with_an_empty_body_uses_the_defaults(
    http: httpx.AsyncClient, address: str
) -> None:
    await http.post(url(address), json={"body": 1})
    r = await http.post(url(address, "claims"))
    assert r.status_code == 201 and r.json()["group"] == "default"


@pytest.mark.parametrize("body", [b"\n", b"  ", b"null"])
async def test_claim_with_a_body_that_is_not_an_object_is_refused(
    http: httpx.AsyncClient, address: str, body: bytes
) -> None:
    await http.post(url(address), json={"body": 1})
    r = await http.post(
        url(address, "claims"), content=body, headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    assert r.json()["error"]["condition"] == "wsq:invalid-frame"


async def test_groups_are_independent_and_filters_leave_the_rest(
    http: httpx.AsyncClient, address: str
) -> None:
    await http.post(
        url(address),
        json={"messages": [{"body": 1, "subject": "a.x"}, {"body": 2, "subject": "b.x"}]},
    )
    r = (await claim(http, address, group="audit", limit=10)).json()
    assert [m["body"] for m in r["messages"]] == [1, 2] and r["claim"].startswith("audit~")
    only_b = (await claim(http, address, limit=10, filter={"subject": "b.*"})).json()
    assert [m["body"] for m in only_b["messages"]] == [2]
    rest = (await claim(http, address, limit=10)).json()
    assert [m["body"] for m in rest["messages"]] == [1]


async def test_modified_and_expired_leases_come_back_counted(
    http: httpx.AsyncClient, address: str
) -> None:
    [pos] = (await http.post(url(address), json={"body": "job"})).json()["ids"]
    c = (await claim(http, address, lease=300)).json()
    assert (await settle(http, address, c["claim"], [pos], "modified")).status_code == 204
    deadline = asyncio.get_running_loop().time() + 5
    while True:  # the test tenant's redelivery delay is 100 ms
        r = await claim(http, address, lease=300)
        if r.status_code == 201:
            break
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    assert r.json()["messages"][0]["props"]["redelivered"] == 1
    # Not settled: the 300 ms lease runs out and the message goes to the next claim.
    deadline = asyncio.get_running_loop().time() + 5
    while True:
        r = await claim(http, address)
        if r.status_code == 201:
            break
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    assert r.json()["messages"][0]["props"]["redelivered"] == 2


async def test_rejected_is_not_redelivered(http: httpx.AsyncClient, address: str) -> None:
    [pos] = (await http.post(url(address), json={"body": "bad"})).json()["ids"]
    c = (await claim(http, address)).json()
    assert (await settle(http, address, c["claim"], [pos], "rejected")).status_code == 204
    assert (await claim(http, address)).status_code == 204


async def test_renew_extends_the_leases_the_claim_still_holds(
    http: httpx.AsyncClient, address: str
) -> None:
    ids = (await http.post(url(address), json={"messages": [{"body": 1}, {"body": 2}]})).json()[
        "ids"
    ]
    c = (await claim(http, address, lease=1000)).json()
    other = "default~AAAAAAAAAAAAAAAA"
    r = await http.post(url(address, f"claims/{other}/renew"), json={"ids": ids})
    assert r.status_code == 200 and r.json()["ids"] == []
    for _ in range(4):  # past the first lease, renewed well before each runs out
        r = await http.post(
            url(address, f"claims/{c['claim']}/renew"), json={"ids": ids, "lease": 1000}
        )
        assert r.status_code == 200 and r.json() == {"ids": ids, "lease": 1000}
        await asyncio.sleep(0.35)
    assert (await claim(http, address)).status_code == 204
    # A settle by another claim is ignored: the leases stay with their holder.
    assert (await settle(http, address, other, ids, "accepted")).status_code == 204
    r = await http.post(url(address, f"claims/{c['claim']}/renew"), json={"ids": ids})
    assert r.json()["ids"] == ids


@pytest.mark.parametrize(
    ("tail", "body"),
    [
        ("claims", {"limit": 0}),
        ("claims", {"limit": 101}),
        ("claims", {"lease": 10}),
        ("claims", {"group": "a b"}),
        ("claims", {"filter": {"subject": "a.>.b"}}),
        ("claims", {"filter": "a"}),
        ("claims", [1]),
        ("claims/default~AAAAAAAAAAAAAAAA/settle", {"ids": ["1-0"], "outcome": "done"}),
        ("claims/default~AAAAAAAAAAAAAAAA/settle", {"ids": []}),
        ("claims/default~AAAAAAAAAAAAAAAA/settle", {"ids": ["x"]}),
        ("claims/default~AAAAAAAAAAAAAAAA/settle", {}),
        ("claims/default~AAAAAAAAAAAAAAAA/renew", {"ids": ["1-0"], "lease": 0}),
        ("claims/default~AAAAAAAAAAAAAAAA/renew", {"ids": "1-0"}),
    ],
)
async def test_claim_requests_are_checked(
    http: httpx.AsyncClient, address: str, tail: str, body: Any
) -> None:
    assert_error(await http.post(url(address, tail), json=body), 400, "wsq:invalid-frame")


@pytest.mark.parametrize("claim_id", ["nope", "default~short", "a..b~AAAAAAAAAAAAAAAA"])
async def test_unknown_claim_ids_are_not_found(
    http: httpx.AsyncClient, address: str, claim_id: str
) -> None:
    r = await http.post(url(address, f"claims/{claim_id}/settle"), json={"ids": ["1-0"]})
    assert_error(r, 404, "wsq:not-found")


async def test_http_claims_and_websocket_consumers_share_one_group(
    gw: Gateway, http: httpx.AsyncClient, address: str
) -> None:
    ws = await gw.client(sub="worker")
    await ws.begin(1)
    # Credit 1: the WebSocket consumer holds one message at a time.
    await ws.subscribe(1, 0, address, credit=1, mode="move", group="jobs")
    ids = (
        await http.post(url(address), json={"messages": [{"body": i} for i in range(4)]})
    ).json()["ids"]
    t = await ws.expect("transfer")
    assert t["id"] == ids[0]
    # HTTP gets the rest, never the message the WebSocket consumer holds.
    c = (await claim(http, address, group="jobs", limit=10)).json()
    assert [m["id"] for m in c["messages"]] == ids[1:]
    # The WebSocket consumer settles and asks for more: nothing, HTTP holds them.
    await ws.send({"op": "disposition", "ch": 1, "first": t["delivery"], "outcome": "accepted"})
    await ws.send({"op": "flow", "ch": 1, "handle": 0, "credit": 10})
    await ws.nothing("transfer", wait=0.5)
    # HTTP releases one: it goes to the WebSocket consumer, and not back to HTTP.
    r = await settle(http, address, c["claim"], [ids[2]], "released")
    assert r.status_code == 204
    t = await ws.expect("transfer")
    assert t["id"] == ids[2]
    assert (await claim(http, address, group="jobs")).status_code == 204
    await ws.close()


# -- errors ----------------------------------------------------------------------------------


async def test_tokens_are_required_and_checked(gw: Gateway, address: str) -> None:
    async with httpx.AsyncClient(base_url=gw.http) as client:
        r = await client.post(url(address), json={"body": 1})
        assert_error(r, 401, "wsq:unauthorized")
        assert r.headers["www-authenticate"].startswith("Bearer")
        r = await client.get(url(address), headers={"Authorization": "Basic abc"})
        assert_error(r, 401, "wsq:unauthorized")
        r = await client.get(url(address), headers=auth("not.a.token"))
        assert_error(r, 401, "wsq:unauthorized")
        r = await client.get(url(address), headers=auth(gw.token(ttl_s=-60)))
        assert_error(r, 401, "wsq:token-expired")
        forged = TenantConfig(
            name="acme", issuer="acme", keys=(KeyConfig(alg="HS256", secret="f" * 40),)
        )
        r = await client.post(url(address, "claims"), headers=auth(mint_token(forged, "eve")))
        assert_error(r, 401, "wsq:unauthorized")


async def test_rights_are_checked_per_address(gw: Gateway, address: str) -> None:
    token = gw.token("ro", publish=(), subscribe=(address,))
    async with httpx.AsyncClient(base_url=gw.http, headers=auth(token)) as client:
        assert_error(await client.post(url(address), json={"body": 1}), 403, "wsq:forbidden")
        assert (await client.get(url(address))).status_code == 200
        other = address + ".other"
        assert_error(await client.get(url(other)), 403, "wsq:forbidden")
        assert_error(await client.post(url(other, "claims")), 403, "wsq:forbidden")
        r = await client.post(url(other, "claims/default~AAAAAAAAAAAAAAAA/settle"), json={})
        assert_error(r, 403, "wsq:forbidden")
        r = await client.post(url(other, "claims/default~AAAAAAAAAAAAAAAA/renew"), json={})
        assert_error(r, 403, "wsq:forbidden")


async def test_tenants_do_not_meet(gw: Gateway, http: httpx.AsyncClient, address: str) -> None:
    await http.post(url(address), json={"body": "acme"})
    token = gw.token("o", tenant="other")
    r = await http.get(url(address), headers=auth(token))
    assert r.status_code == 200 and r.json()["messages"] == []


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        b'{"subject": "a"}',
        b'{"body": 1, "subject": "a b"}',
        b'{"body": 1, "ttl": 0}',
        b'{"body": 1, "ttl": "1"}',
        b'{"body": 1, "headers": []}',
        b'{"body": 1, "message_id": 5}',
        b'{"body": 1, "content_type": {}}',
        b'{"messages": []}',
        b'{"messages": "x"}',
        b'{"messages": [1]}',
        b'{"messages": [{"body": 1}, {"nobody": 1}]}',
        b'{"body": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b"\xff\xfe",
        b"",
    ],
)
async def test_bad_publish_bodies_are_400(
    http: httpx.AsyncClient, address: str, body: bytes
) -> None:
    r = await http.post(url(address), content=body)
    assert_error(r, 400, "wsq:invalid-frame")
    assert (await http.get(url(address))).json()["messages"] == []


async def test_invalid_address_is_400(http: httpx.AsyncClient) -> None:
    for bad in ("a..b", "a.b!", "x" * 256, "%20"):
        assert_error(await http.get(url(bad)), 400, "wsq:invalid-frame")
        assert_error(await http.post(url(bad), json={"body": 1}), 400, "wsq:invalid-frame")


async def test_batch_size_is_bounded(http: httpx.AsyncClient, address: str) -> None:
    r = await http.post(url(address), json={"messages": [{"body": 0}] * 1001})
    assert_error(r, 400, "wsq:invalid-frame")
    r = await http.post(url(address), json={"messages": [{"body": 0}] * 1000})
    assert r.status_code == 201 and len(r.json()["ids"]) == 1000


async def test_large_bodies_are_413_before_being_read(
    start_gateway: StartGateway, address: str
) -> None:
    async with (
        start_gateway(server={"max_frame_bytes": 4096}) as gw,
        httpx.AsyncClient(base_url=gw.http, headers=auth(gw.token())) as client,
    ):
        big = {"body": "x" * 5000}
        assert_error(await client.post(url(address), json=big), 413, "wsq:frame-too-large")

        async def chunks() -> AsyncIterator[bytes]:
            # No Content-Length: the bridge counts while it reads, and stops.
            yield b'{"body": "'
            for _ in range(100):
                yield b"x" * 1024
            yield b'"}'

        r = await client.post(url(address), content=chunks())
        assert_error(r, 413, "wsq:frame-too-large")
        r = await client.post(url(address, "claims"), content=b" " * 70_000)
        assert_error(r, 413, "wsq:frame-too-large")
        assert (await client.get(url(address))).json()["messages"] == []
        assert (await client.post(url(address), json={"body": "ok"})).status_code == 201


async def test_publish_rate_is_limited_per_tenant_with_retry_after(
    start_gateway: StartGateway, address: str
) -> None:
    # 0.5 messages/s: a bucket of one message, refilled in 2 s.
    async with (
        start_gateway(publish_rate=0.5) as gw,
        httpx.AsyncClient(base_url=gw.http, headers=auth(gw.token())) as client,
    ):
        assert (await client.post(url(address), json={"body": 0})).status_code == 201
        r = await client.post(url(address), json={"body": "over"})
        assert_error(r, 429, "wsq:resource-limit-exceeded")
        retry_after = int(r.headers["retry-after"])
        assert 1 <= retry_after <= 2
        # The other tenant has no limit and is not slowed by this one.
        other = auth(gw.token(tenant="other"))
        for i in range(5):
            r = await client.post(url(address), json={"body": i}, headers=other)
            assert r.status_code == 201
        await asyncio.sleep(retry_after)
        assert (await client.post(url(address), json={"body": "later"})).status_code == 201
        bodies = [m["body"] for m in (await client.get(url(address))).json()["messages"]]
        assert bodies == [0, "later"]


async def test_unknown_paths_and_methods_answer_json(http: httpx.AsyncClient) -> None:
    assert_error(await http.get("/v1/nothing/here"), 404, "wsq:not-found")
    r = await http.delete(url("a.b"))
    assert_error(r, 405, "wsq:invalid-frame")
    assert "POST" in r.headers["allow"]
    r = await http.get(url("a.b", "claims"))
    assert_error(r, 405, "wsq:invalid-frame")


async def test_broker_down_is_503_never_accepted(tmp_path: Any, address: str) -> None:
    with RedisServer(tmp_path, aof=True) as redis:  # what was accepted survives the kill
        settings = make_settings(broker_url=redis.url)
        async with (
            running_gateway(settings) as gw,
            httpx.AsyncClient(base_url=gw.http, headers=auth(gw.token()), timeout=30) as client,
        ):
            assert (await client.post(url(address), json={"body": 1})).status_code == 201
            redis.kill()
            for request in (
                client.post(url(address), json={"body": 2}),
                client.post(url(address), json={"body": 2}, headers={"Idempotency-Key": "k"}),
                client.get(url(address)),
                client.get(url(address, "lookup"), params={"message_id": "m"}),
                client.post(url(address, "claims")),
            ):
                r = await request
                assert_error(r, 503, "wsq:internal-error")
                assert r.headers["retry-after"] == "1"
            redis.start()
            r = await client.get(url(address))
            assert [m["body"] for m in r.json()["messages"]] == [1]


async def test_openapi_document_is_served(http: httpx.AsyncClient) -> None:
    async with httpx.AsyncClient(base_url=str(http.base_url)) as anonymous:
        r = await anonymous.get("/v1/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.1")
    assert "/v1/addresses/{address}/messages" in doc["paths"]


async def test_publisher_interop_websocket_publish_http_read(
    gw: Gateway, http: httpx.AsyncClient, address: str
) -> None:
    ids = await Publisher(await gw.client(sub="ws-pub")).publish(address, "a", "b")
    listed = (await http.get(url(address))).json()["messages"]
    assert [m["id"] for m in listed] == ids
    assert listed[0]["props"]["publisher"] == "ws-pub"
