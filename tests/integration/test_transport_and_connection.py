"""Contract sections 1-3 over real sockets: transport, errors, open, heartbeats, refresh, close."""

from __future__ import annotations

import asyncio
import json
import time

import jwt
import pytest
import websockets
from wsq_harness import SECRET_ACME, Gateway


async def test_handshake_selects_the_wsq_v1_subprotocol(gateway: Gateway) -> None:
    async with websockets.connect(gateway.url, subprotocols=["other", "wsq.v1"]) as ws:
        assert ws.subprotocol == "wsq.v1"


async def test_handshake_without_wsq_v1_is_refused(gateway: Gateway) -> None:
    with pytest.raises(websockets.InvalidStatus):
        async with websockets.connect(gateway.url):
            pass
    with pytest.raises(websockets.InvalidStatus):
        async with websockets.connect(gateway.url, subprotocols=["mqtt"]):
            pass


async def test_open_answer_names_node_limits_tenant_sub_and_expiry(gateway: Gateway) -> None:
    client = await gateway.client(open=False)
    token = gateway.token("bob", ttl_s=600)
    answer = await client.open(token, idle=20_000, client="tests/1.0")
    assert answer["tenant"] == "acme" and answer["sub"] == "bob"
    assert answer["idle"] == gateway.settings.server.idle_ms
    assert answer["max_sessions"] == gateway.settings.server.max_sessions
    assert answer["max_frame_bytes"] == gateway.settings.server.max_frame_bytes
    assert answer["node"] == gateway.server.config.app.state.node.node_id  # type: ignore[attr-defined]
    assert answer["exp"] == jwt.decode(token, options={"verify_signature": False})["exp"]
    await client.close()


async def test_pipelined_frames_apply_after_the_token_is_verified(gateway: Gateway) -> None:
    client = await gateway.client(open=False)
    await client.send(
        {"op": "open", "token": gateway.token()},
        {"op": "begin", "ch": 3},
        {"op": "attach", "ch": 3, "handle": 9, "role": "sender", "address": "a.b"},
    )
    assert (await client.recv())["op"] == "open"
    assert await client.recv() == {"op": "begin", "ch": 3}
    assert (await client.recv())["op"] == "attach"
    assert await client.recv() == {"op": "flow", "ch": 3, "handle": 9, "credit": 1024}
    await client.close()


async def test_bad_token_closes_with_unauthorized_and_drops_pipelined_frames(
    gateway: Gateway,
) -> None:
    client = await gateway.client(open=False)
    await client.send(
        {"op": "open", "token": "not-a-jwt"},
        {"op": "begin", "ch": 1},
    )
    frame = await client.recv()
    assert frame["op"] == "close"
    assert frame["error"]["condition"] == "wsq:unauthorized"
    await client.wait_closed()
    assert client.inbox == []


@pytest.mark.parametrize(
    "claims_or_token",
    [
        "none-alg",
        "wrong-secret",
        "expired",
        "unknown-issuer",
        "no-sub",
        "",
        None,
    ],
)
async def test_every_kind_of_bad_token_is_refused_at_open(
    gateway: Gateway, claims_or_token: str | None
) -> None:
    now = int(time.time())
    base = {"iss": "acme", "sub": "x", "exp": now + 60, "wsq": {"subscribe": [">"]}}
    token: object
    if claims_or_token == "none-alg":
        token = jwt.encode(base, key=None, algorithm="none")
    elif claims_or_token == "wrong-secret":
        token = jwt.encode(base, "x" * 40, algorithm="HS256", headers={"kid": "k1"})
    elif claims_or_token == "expired":
        token = jwt.encode({**base, "exp": now - 3600}, SECRET_ACME, algorithm="HS256")
    elif claims_or_token == "unknown-issuer":
        token = jwt.encode({**base, "iss": "nobody"}, SECRET_ACME, algorithm="HS256")
    elif claims_or_token == "no-sub":
        token = jwt.encode({"iss": "acme", "exp": now + 60}, SECRET_ACME, algorithm="HS256")
    else:
        token = claims_or_token
    client = await gateway.client(open=False)
    await client.send({"op": "open", "token": token})
    await client.closed_with("wsq:unauthorized")


async def test_empty_batch_is_a_heartbeat_and_gets_no_answer(gateway: Gateway) -> None:
    client = await gateway.client()
    await client.send_raw("[]")
    await client.nothing(wait=0.3)
    await client.begin(1)  # still alive
    await client.close()


async def test_server_heartbeats_at_half_the_clients_idle(gateway: Gateway) -> None:
    client = await gateway.client(open=False)
    await client.open(gateway.token(), idle=1000)
    started = time.monotonic()
    # Stay talkative so the server's own idle never fires; count what it sends us.
    while time.monotonic() - started < 2.2:
        await client.send_raw("[]")
        await client.nothing(wait=0.2)
    # At most 500 ms of silence each: 2.2 s of quiet traffic holds at least 4 heartbeats.
    assert client.heartbeats >= 4
    await client.close()


@pytest.mark.gateway(server={"idle_ms": 1000})
async def test_silent_client_is_closed_with_idle_timeout(gateway: Gateway) -> None:
    client = await gateway.client()
    started = time.monotonic()
    await client.closed_with("wsq:idle-timeout", timeout=5)
    # The socket's tick comes when its silence reaches the idle: closed 1.0 s after the last
    # frame it received (the open), plus scheduling noise; twice the idle would be 2 s.
    assert 0.95 <= time.monotonic() - started <= 1.7


@pytest.mark.gateway(server={"idle_ms": 1000})
async def test_a_client_that_heartbeats_stays_connected(gateway: Gateway) -> None:
    client = await gateway.client()
    for _ in range(6):
        await asyncio.sleep(0.3)
        await client.send_raw("[]")
    await client.begin(1)
    await client.close()


def expiring_token(seconds: int = 2) -> tuple[str, int]:
    """A token of sub "a" that expires ``seconds`` from now (whole seconds), and its ``exp``."""
    exp = int(time.time()) + seconds
    claims = {"iss": "acme", "sub": "a", "exp": exp, "wsq": {"subscribe": [">"]}}
    return jwt.encode(claims, SECRET_ACME, algorithm="HS256"), exp


async def test_expiring_token_closes_with_token_expired(gateway: Gateway) -> None:
    client = await gateway.client(open=False)
    token, _ = expiring_token()
    await client.open(token)
    await client.closed_with("wsq:token-expired", timeout=6)


async def test_refresh_extends_the_connection_and_answers_the_new_expiry(gateway: Gateway) -> None:
    client = await gateway.client(ttl_s=60)
    token = gateway.token(ttl_s=7200)
    await client.send({"op": "refresh", "token": token})
    answer = await client.expect("refresh")
    assert answer["exp"] == jwt.decode(token, options={"verify_signature": False})["exp"]
    await client.close()


async def test_a_refreshed_connection_outlives_its_first_token(gateway: Gateway) -> None:
    client = await gateway.client(open=False)
    first, exp = expiring_token()
    await client.open(first)
    await client.send({"op": "refresh", "token": gateway.token("a", ttl_s=7200)})
    await client.expect("refresh")
    # Past the first token's expiry (exp has one-second resolution): still open and served.
    while time.time() < exp + 1.5:
        await client.send_raw("[]")
        await client.nothing("close", wait=0.3)
    await client.begin(1)
    await client.close()


async def test_a_refresh_to_a_token_that_expires_sooner_closes_at_the_new_expiry(
    gateway: Gateway,
) -> None:
    client = await gateway.client(ttl_s=3600)
    await client.send({"op": "refresh", "token": gateway.token(ttl_s=2)})
    await client.expect("refresh")
    await client.closed_with("wsq:token-expired", timeout=6)


async def test_refresh_with_another_sub_closes_with_unauthorized(gateway: Gateway) -> None:
    client = await gateway.client(sub="alice")
    await client.send({"op": "refresh", "token": gateway.token("mallory")})
    await client.closed_with("wsq:unauthorized")


async def test_refresh_detaches_links_the_new_rights_no_longer_allow(gateway: Gateway) -> None:
    client = await gateway.client(subscribe=("news.>", "chat.>"))
    await client.begin(1)
    await client.subscribe(1, 0, "news.eu")
    await client.subscribe(1, 1, "chat.room")
    await client.send({"op": "refresh", "token": gateway.token(subscribe=("chat.>",))})
    detach = await client.expect("detach", ch=1, handle=0)
    assert detach["error"]["condition"] == "wsq:forbidden"
    await client.expect("refresh")
    await client.send({"op": "detach", "ch": 1, "handle": 0})
    await client.nothing("detach")
    await client.close()


async def test_client_close_is_answered_with_close_and_the_socket_ends(gateway: Gateway) -> None:
    client = await gateway.client()
    await client.send({"op": "close"})
    assert await client.recv() == {"op": "close"}
    await client.wait_closed()


@pytest.mark.parametrize(
    "message",
    [
        "{not json",
        "42",
        '"text"',
        "[1,2]",
        '{"op":"dance"}',
        '{"no":"op"}',
        '{"op":7}',
        '[{"op":"begin","ch":1},"x"]',
    ],
)
async def test_invalid_messages_close_the_connection_with_invalid_frame(
    gateway: Gateway, message: str
) -> None:
    client = await gateway.client()
    await client.send_raw(message)
    await client.closed_with("wsq:invalid-frame")


async def test_binary_messages_are_invalid_frames(gateway: Gateway) -> None:
    client = await gateway.client()
    await client.send_raw(b'{"op":"begin","ch":1}')
    await client.closed_with("wsq:invalid-frame")


@pytest.mark.gateway(server={"max_frame_bytes": 4096, "outbox_max_bytes": 65536})
async def test_message_over_max_frame_bytes_closes_with_frame_too_large(gateway: Gateway) -> None:
    client = await gateway.client()
    await client.send_raw(json.dumps({"op": "begin", "ch": 1, "pad": "x" * 5000}))
    await client.closed_with("wsq:frame-too-large")
    assert client.ws.close_code == 1009


@pytest.mark.gateway(server={"max_frame_bytes": 4096, "outbox_max_bytes": 65536})
async def test_message_just_under_max_frame_bytes_is_accepted(gateway: Gateway) -> None:
    client = await gateway.client()
    frame = json.dumps({"op": "begin", "ch": 1, "pad": ""})
    await client.send_raw(json.dumps({"op": "begin", "ch": 1, "pad": "x" * (4096 - len(frame))}))
    assert await client.recv() == {"op": "begin", "ch": 1}
    await client.close()


async def test_first_frame_other_than_open_is_an_invalid_frame(gateway: Gateway) -> None:
    client = await gateway.client(open=False)
    await client.send({"op": "begin", "ch": 1})
    await client.closed_with("wsq:invalid-frame")


@pytest.mark.gateway(server={"open_timeout_ms": 500})
async def test_a_socket_that_never_opens_is_dropped(gateway: Gateway) -> None:
    client = await gateway.client(open=False)
    await client.closed_with("wsq:idle-timeout", timeout=5)


async def test_healthz_and_readyz_answer_200(gateway: Gateway) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=gateway.http) as http:
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/readyz")).json()["status"] == "ready"
