"""wsq.client against real ``wsq serve`` processes on a real ``redis-server``: the round trip,
100 subscriptions on one socket, move-mode outcomes, token refresh on a live socket, a feed that
resumes after its gateway is SIGKILLed or drained (nothing lost, nothing doubled), and publishes
made while the gateway is down (sent after the reconnect, stored once). The module's gateway
doubles as the second node on the same Redis where a test kills or drains its own."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from wsq_harness import (
    SECRET_ACME,
    SECRET_OTHER,
    RedisServer,
    Served,
    eventually,
    free_port,
    serve_config,
    tenants,
)

from wsq.auth import mint_token
from wsq.client import Client, ClientError, HttpPublisher, Message, Subscription

DEAD = "dead.letters"


def write_config(path: Path, redis_url: str) -> Path:
    # A short idle both ways: every test here also proves the heartbeats keep the socket.
    path.write_text(
        textwrap.dedent(
            f"""
            [server]
            idle_ms = 1000
            [broker]
            url = "{redis_url}"
            [tenants.acme]
            keys = [ {{ kid = "k1", alg = "HS256", secret = "{SECRET_ACME}" }} ]
            dead_letter = "{DEAD}"
            redelivery_delay_ms = 100
            dedup_window_ms = 60000
            [tenants.slow]
            keys = [ {{ alg = "HS256", secret = "{SECRET_OTHER}" }} ]
            publish_rate = 1
            """
        )
    )
    return path


def token(sub: str = "py", ttl_s: int = 3600) -> str:
    return mint_token(tenants()["acme"], sub, publish=(">",), subscribe=(">",), ttl_s=ttl_s)


def ws_url(served: Served) -> str:
    return f"ws://127.0.0.1:{served.port}/ws"


@pytest.fixture(scope="module")
def config(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_config(tmp_path_factory.mktemp("pyclient") / "wsq.toml", redis_server.url)


@pytest.fixture(scope="module")
def served(config: Path) -> Iterator[Served]:
    """One gateway for the tests that do not kill it."""
    with serve_config(config) as server:
        yield server


@contextlib.asynccontextmanager
async def client(url: str, **kw: Any) -> AsyncIterator[Client]:
    kw.setdefault("token", token())
    c = Client(url, idle=1.0, reconnect_delay=0.05, max_reconnect_delay=0.5, **kw)
    async with c:
        yield c


def unique(prefix: str) -> str:
    return f"{prefix}.{uuid.uuid4().hex[:10]}"


async def take(sub: Subscription, n: int, within: float = 10) -> list[Message]:
    async with asyncio.timeout(within):
        return [await sub.get() for _ in range(n)]


# -- round trip ------------------------------------------------------------------------------


async def test_round_trip_publish_and_subscribe(served: Served) -> None:
    address = unique("chat")
    async with client(ws_url(served)) as c:
        assert c.info is not None and c.info.tenant == "acme" and c.info.sub == "py"
        sub = await c.subscribe(address)
        positions = [
            await c.publish(address, {"n": i}, subject=f"s.{i}", headers={"k": str(i)})
            for i in range(3)
        ]
        got = await take(sub, 3)
    assert [m.id for m in got] == positions
    assert [m.body for m in got] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert [m.subject for m in got] == ["s.0", "s.1", "s.2"]
    assert [m.headers for m in got] == [{"k": "0"}, {"k": "1"}, {"k": "2"}]
    assert {m.props["publisher"] for m in got} == {"py"}
    assert len({m.message_id for m in got}) == 3  # generated, one per publish


async def test_rewind_starts_with_the_last_retained_and_conflate_keeps_each_subjects_last(
    served: Served,
) -> None:
    address = unique("prices")
    async with client(ws_url(served)) as c:
        for subject, body in (("px.a", 1), ("px.b", 2), ("px.a", 3), ("px.b", 4), ("px.c", 5)):
            await c.publish(address, body, subject=subject)
        last3 = await c.subscribe(address, rewind=3)
        latest = await c.subscribe(address, rewind=10, conflate=0.05)
        got = await take(last3, 3)
        conflated = await take(latest, 3)
        live = await c.publish(address, 6, subject="px.a")
        (then,) = await take(last3, 1)
    assert [m.body for m in got] == [3, 4, 5] and then.id == live
    assert sorted((m.subject, m.body) for m in conflated) == [
        ("px.a", 3),
        ("px.b", 4),
        ("px.c", 5),
    ]


async def test_a_refused_subscription_raises_its_condition(served: Served) -> None:
    narrow = mint_token(tenants()["acme"], "py", subscribe=("mine.>",))
    async with client(ws_url(served), token=narrow) as c:
        with pytest.raises(ClientError) as refused:
            await c.subscribe("theirs.x")
        assert refused.value.condition == "wsq:forbidden" and refused.value.scope == "link"
        with pytest.raises(ClientError) as denied:
            await c.publish("mine.x", 1)
        assert denied.value.condition == "wsq:forbidden"
        assert c.connections == 1  # link errors: the socket goes on


async def test_http_publisher_reaches_a_subscriber_once_per_idempotency_key(
    served: Served,
) -> None:
    address = unique("http")
    async with client(ws_url(served)) as c:
        sub = await c.subscribe(address)
        with HttpPublisher(served.url, token()) as http:
            first = await asyncio.to_thread(
                http.publish, address, {"n": 1}, subject="a", idempotency_key="key-1"
            )
            again = await asyncio.to_thread(
                http.publish, address, {"n": 1}, subject="a", idempotency_key="key-1"
            )
            batch = await asyncio.to_thread(http.publish_many, address, [{"body": 2}, {"body": 3}])
            with pytest.raises(ClientError) as bad:
                await asyncio.to_thread(http.publish, address, object())
        got = await take(sub, 3)
    assert again == first
    assert [m.id for m in got] == [first, *batch]
    assert [m.body for m in got] == [{"n": 1}, 2, 3]
    assert bad.value.condition == "wsq:invalid-frame" and bad.value.status is None


def test_http_publisher_retries_a_429_after_its_retry_after(served: Served) -> None:
    slow = dataclasses.replace(tenants()["other"], name="slow", issuer="slow")
    tok = mint_token(slow, "py", publish=(">",), subscribe=(">",))
    address = unique("rated")
    server = served
    with HttpPublisher(server.url, tok, retry_delay=0.05) as http:
        first = http.publish(address, 1)
        second = http.publish(address, 2)  # over the rate of 1/s: 429, retried, stored once
        history = httpx.get(
            f"{server.url}/v1/addresses/{address}/messages?after=0-0",
            headers={"Authorization": f"Bearer {tok}"},
        ).json()
    assert [(m["id"], m["body"]) for m in history["messages"]] == [(first, 1), (second, 2)]


# -- many subscriptions on one socket ---------------------------------------------------------


async def test_100_subscriptions_share_one_socket(served: Served) -> None:
    base = unique("many")
    received: dict[str, list[Any]] = {}

    def handler_for(address: str) -> Any:
        def handle(msg: Message) -> None:
            received.setdefault(address, []).append(msg.body)

        return handle

    addresses = [f"{base}.{i}" for i in range(100)]
    async with client(ws_url(served), links_per_session=64) as c:
        subs = await asyncio.gather(*(c.subscribe(a, handler_for(a)) for a in addresses))
        assert all(s.attached for s in subs)
        await asyncio.gather(*(c.publish(a, a) for a in addresses))
        await eventually(lambda: sum(map(len, received.values())) >= 100, "100", within=10)
        assert c.connections == 1
    assert received == {a: [a] for a in addresses}


# -- move mode ---------------------------------------------------------------------------------


async def test_accepted_is_gone_for_good(served: Served) -> None:
    queue = unique("jobs")
    async with client(ws_url(served)) as a, client(ws_url(served)) as b:
        qa = await a.consume(queue, group="g")
        await a.publish(queue, "first")
        (m,) = await take(qa, 1)
        assert await m.accept() is True
        assert await m.accept() is False  # settled once
        # A's link ends; an unsettled delivery would now go to B, ahead of "second".
        await qa.unsubscribe()
        qb = await b.consume(queue, group="g")
        await b.publish(queue, "second")
        (n,) = await take(qb, 1)
    assert (m.body, n.body, n.redelivered) == ("first", "second", 0)


async def test_released_goes_to_the_other_consumer(served: Served) -> None:
    queue = unique("jobs")
    async with client(ws_url(served)) as a, client(ws_url(served)) as b:
        qa = await a.consume(queue, group="g", credit=1)
        qb = await b.consume(queue, group="g", credit=1)
        await a.publish(queue, {"job": 1})
        ga, gb = asyncio.ensure_future(qa.get()), asyncio.ensure_future(qb.get())
        done, _ = await asyncio.wait({ga, gb}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        assert len(done) == 1
        winner = done.pop()
        other = gb if winner is ga else ga
        first = winner.result()
        assert await first.release() is True
        async with asyncio.timeout(10):
            again = await other
        for task in (ga, gb):
            task.cancel()
    assert again.id == first.id and again.body == {"job": 1}
    assert again.redelivered == 0  # an explicit release is not counted


async def test_rejected_is_dead_lettered(served: Served) -> None:
    queue = unique("jobs")
    async with client(ws_url(served)) as c:
        dead = await c.subscribe(DEAD, filter=None)
        q = await c.consume(queue, group="g")
        position = await c.publish(queue, {"bad": True})
        (m,) = await take(q, 1)
        assert await m.reject() is True
        async with asyncio.timeout(10):
            while True:
                d = await dead.get()
                if d.headers.get("dead_letter_from") == queue:
                    break
    assert d.body == {"bad": True}
    assert d.headers["dead_letter_reason"] == "rejected"
    assert d.headers["dead_letter_id"] == position


async def test_modified_comes_back_counted(served: Served) -> None:
    queue = unique("jobs")
    async with client(ws_url(served)) as c:
        q = await c.consume(queue, group="g")
        await c.publish(queue, "later")
        (m,) = await take(q, 1)
        assert await m.modify() is True
        (again,) = await take(q, 1)
        await again.accept()
    assert (again.id, again.body, m.redelivered, again.redelivered) == (m.id, "later", 0, 1)


async def test_a_handler_accepts_on_return_and_releases_on_raise(served: Served) -> None:
    queue = unique("jobs")
    seen: list[tuple[Any, int]] = []
    errors: list[ClientError] = []

    async def handler(msg: Message) -> None:
        seen.append((msg.body, msg.redelivered))
        if msg.body == "boom" and msg.redelivered == 0 and len(seen) == 1:
            raise RuntimeError("boom")

    async with client(ws_url(served)) as c:
        c.on("error", errors.append)
        await c.consume(queue, handler, group="g")
        await c.publish(queue, "boom")
        await c.publish(queue, "ok")
        await eventually(lambda: len(seen) >= 3, "three deliveries", within=10)
    # Released (not counted) back to the only consumer; then both accepted, nothing more.
    assert sorted(seen) == [("boom", 0), ("boom", 0), ("ok", 0)]
    assert [e.condition for e in errors] == ["wsq-client:handler"]


# -- token refresh -----------------------------------------------------------------------------


async def test_a_token_about_to_expire_is_refreshed_on_the_same_socket(served: Served) -> None:
    address = unique("refresh")
    asked: list[int] = []

    def fresh_token() -> str:
        asked.append(1)
        # The first token lives 3 s; the ones after it an hour.
        return token(ttl_s=3 if len(asked) == 1 else 3600)

    refreshed: list[int] = []
    async with client(ws_url(served), token=fresh_token) as c:
        c.on("refresh", refreshed.append)
        assert c.info is not None and c.info.exp is not None
        first_exp = c.info.exp
        sub = await c.subscribe(address)
        await eventually(lambda: bool(refreshed), "a refresh", within=10)
        # Past the first token's expiry: the gateway would have closed with token-expired.
        await eventually(lambda: time.time() >= first_exp + 1, "the first exp", within=10)
        position = await c.publish(address, "still here")
        (m,) = await take(sub, 1)
        assert c.connections == 1
        assert c.info.exp == refreshed[0] and refreshed[0] > first_exp + 3000
    assert m.id == position and len(asked) == 2


async def test_a_refused_token_ends_the_client_with_its_condition(served: Served) -> None:
    bad = mint_token(tenants(keys=tenants()["other"].keys)["acme"], "py", ttl_s=60)
    c = Client(ws_url(served), token=bad, reconnect_delay=0.05)
    with pytest.raises(ClientError) as refused:
        await c.connect()
    assert refused.value.condition == "wsq:unauthorized" and refused.value.fatal
    assert c.state == "closed"


async def test_no_gateway_at_all_fails_connect_with_a_socket_condition() -> None:
    errors: list[ClientError] = []
    c = Client(f"ws://127.0.0.1:{free_port()}/ws", token=token(), connect_timeout=0.5)
    c.on("error", errors.append)
    with pytest.raises(ClientError) as failed:
        await c.connect()
    assert failed.value.condition == "wsq-client:socket" and c.state == "closed"
    assert errors and {e.condition for e in errors} == {"wsq-client:socket"}  # refused, retried
    with pytest.raises(ClientError) as closed:
        await c.publish("a", 1)
    assert closed.value.condition == "wsq-client:closed"


# -- a gateway killed and started again ------------------------------------------------------


async def start_served(config: Path, port: int) -> tuple[contextlib.ExitStack, Served]:
    """``wsq serve`` on ``port`` (started off the event loop, so clients keep running)."""
    stack = contextlib.ExitStack()
    server = await asyncio.to_thread(stack.enter_context, serve_config(config, port=port))
    return stack, server


async def test_a_feed_resumes_after_its_gateway_is_killed(config: Path, served: Served) -> None:
    """A subscriber's gateway is SIGKILLed while another on the same Redis takes publishes;
    started again on the same port, the subscriber resumes after the last position it received:
    every message once, in order."""
    address = unique("feed")
    port = free_port()
    stack_a, a = await start_served(config, port)
    bodies: list[int] = []
    try:
        async with client(ws_url(a)) as c, client(ws_url(served)) as publisher:
            sub = await c.subscribe(address)
            for i in range(50):
                await publisher.publish(address, i)
            got = await take(sub, 20)  # 30 more wait in the gateway or the socket
            a.proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(a.proc.wait, 10)
            stack_a.close()
            for i in range(50, 100):
                await publisher.publish(address, i)
            stack_a, a = await start_served(config, port)
            for i in range(100, 150):
                await publisher.publish(address, i)
            got += await take(sub, 130, within=20)
            bodies = [m.body for m in got]
            assert c.connections == 2
            # Nothing more: the next message after a sentinel is the sentinel.
            await publisher.publish(address, "end")
            (last,) = await take(sub, 1)
    finally:
        stack_a.close()
    assert bodies == list(range(150))
    assert last.body == "end"


async def test_publishes_made_while_the_gateway_is_down_go_after_the_reconnect_once(
    config: Path, served: Served
) -> None:
    address = unique("outbox")
    port = free_port()
    stack_a, a = await start_served(config, port)
    states: list[str] = []
    try:
        async with client(ws_url(a)) as c, client(ws_url(served)) as watcher:
            c.on("state", states.append)
            sub = await watcher.subscribe(address)
            before = [await c.publish(address, i) for i in range(10)]
            # In flight when the gateway dies: some answered, some not; all must land once.
            flying = [asyncio.ensure_future(c.publish(address, i)) for i in range(10, 60)]
            a.proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(a.proc.wait, 10)
            stack_a.close()
            await eventually(lambda: not c.connected, "disconnected", within=10)
            down = [asyncio.ensure_future(c.publish(address, i)) for i in range(60, 80)]
            await asyncio.sleep(0)
            assert c.pending_publishes >= 20  # waiting in the outbox
            stack_a, a = await start_served(config, port)
            async with asyncio.timeout(20):
                positions = before + list(await asyncio.gather(*flying, *down))
            got = await take(sub, 80)
            await c.publish(address, "end")
            (last,) = await take(sub, 1)
            assert c.pending_publishes == 0 and c.state == "connected"
    finally:
        stack_a.close()
    assert sorted(m.body for m in got) == list(range(80))
    assert [m.id for m in got] == sorted(positions, key=lambda p: tuple(map(int, p.split("-"))))
    assert len(set(positions)) == 80
    assert last.body == "end"
    assert states[:2] == ["disconnected", "connecting"] and states[-1] == "closed"


async def test_a_draining_gateway_says_going_away_and_the_feed_resumes_once_it_is_back(
    config: Path, served: Served
) -> None:
    address = unique("drain")
    port = free_port()
    stack_a, a = await start_served(config, port)
    errors: list[ClientError] = []
    try:
        async with client(ws_url(a)) as c, client(ws_url(served)) as publisher:
            c.on("error", errors.append)
            sub = await c.subscribe(address)
            for i in range(10):
                await publisher.publish(address, i)
            got = await take(sub, 10)
            a.proc.send_signal(signal.SIGTERM)  # drain: every client is told going-away
            await asyncio.to_thread(a.proc.wait, 10)
            stack_a.close()
            for i in range(10, 20):
                await publisher.publish(address, i)
            stack_a, a = await start_served(config, port)
            got += await take(sub, 10)
            assert c.connections == 2
    finally:
        stack_a.close()
    assert [m.body for m in got] == list(range(20))
    assert errors[0].condition == "wsq:going-away" and errors[0].scope == "connection"
