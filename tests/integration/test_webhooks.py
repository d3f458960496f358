"""Webhooks on a real ``wsq serve`` process posting to a receiver in this test.

- A socket opened and closed reaches the receiver as ``connection.opened`` then
  ``connection.closed``, each verified by the reference library (``standardwebhooks``).
- A sink on Redis POSTs every message of its address in order, at least once, retried with the
  same ``webhook-id``; past ``max_attempts`` a message goes to the dead-letter address; what a
  SIGKILLed gateway held is delivered by the gateway started again.
- A failing receiver gets the same event again, with the same ``webhook-id``, until it answers
  2xx; ``/metrics`` counts the attempts; an entry that never succeeds is given up and counted.
"""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import websockets
from standardwebhooks import Webhook
from wsq_harness import (
    SECRET_ACME,
    Client,
    Receiver,
    RedisServer,
    eventually,
    receiver,
    serve_config,
    tenants,
)

from wsq.auth import mint_token

HOOK_SECRET = "whsec_" + base64.b64encode(b"webhook-test-key-0123456789abcdef").decode()


def write_config(tmp_path: Path, url: str, extra: str = "") -> Path:
    config = tmp_path / "wsq.toml"
    config.write_text(
        "[tenants.acme]\n"
        f'keys = [{{ kid = "k1", alg = "HS256", secret = "{SECRET_ACME}" }}]\n'
        f'webhooks = [{{ url = "{url}", events = ["connection.opened", "connection.closed"], '
        f'secret_env = "HOOK_SECRET", backoff_ms = 50, timeout_ms = 2000{extra} }}]\n'
    )
    return config


async def open_and_close(port: int) -> None:
    ws = await websockets.connect(f"ws://127.0.0.1:{port}/ws", subprotocols=["wsq.v1"])
    client = Client(ws)
    await client.open(mint_token(tenants()["acme"], "alice", publish=(), subscribe=(">",)))
    await client.close()


def metric(port: int, line_start: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    found = [line for line in text.splitlines() if line.startswith(line_start)]
    return float(found[0].rsplit(" ", 1)[1]) if found else 0.0


async def test_connection_events_reach_the_receiver_signed(tmp_path: Path) -> None:
    with (
        receiver() as rec,
        serve_config(write_config(tmp_path, rec.url), env={"HOOK_SECRET": HOOK_SECRET}) as served,
    ):
        await open_and_close(served.port)
        await eventually(lambda: len(rec.requests) == 2, "two events", within=10)
        verified = [Webhook(HOOK_SECRET).verify(body, headers) for headers, body in rec.requests]
        assert [e["type"] for e in verified] == ["connection.opened", "connection.closed"]
        opened, closed = (e["data"] for e in verified)
        assert opened["tenant"] == closed["tenant"] == "acme"
        assert opened["sub"] == closed["sub"] == "alice"
        assert opened["connection"] == closed["connection"]
        assert closed["reason"] == "client"
        ids = [headers["webhook-id"] for headers, _ in rec.requests]
        assert len(set(ids)) == 2
        assert rec.requests[0][0]["content-type"] == "application/json"
        delivered = 'wsq_webhook_deliveries_total{outcome="delivered",tenant="acme"}'
        assert metric(served.port, delivered) == 2.0
        # Neither the secret nor a body reaches the log.
        assert HOOK_SECRET[6:] not in served.log()
        assert '"connection.opened"' not in served.log()


async def test_a_failing_receiver_gets_the_same_id_until_it_answers(tmp_path: Path) -> None:
    # connection.opened: 500, 503, then 204; connection.closed: 204 at once.
    with (
        receiver([500, 503]) as rec,
        serve_config(write_config(tmp_path, rec.url), env={"HOOK_SECRET": HOOK_SECRET}) as served,
    ):
        await open_and_close(served.port)
        await eventually(lambda: len(rec.requests) == 4, "four requests", within=10)
        types = [Webhook(HOOK_SECRET).verify(b, h)["type"] for h, b in rec.requests]
        assert types == ["connection.opened"] * 3 + ["connection.closed"]
        ids = [headers["webhook-id"] for headers, _ in rec.requests]
        assert ids[0] == ids[1] == ids[2] != ids[3]
        assert rec.requests[0][1] == rec.requests[1][1] == rec.requests[2][1]
        outcome = 'wsq_webhook_deliveries_total{{outcome="{}",tenant="acme"}}'
        assert metric(served.port, outcome.format("retried")) == 2.0
        assert metric(served.port, outcome.format("delivered")) == 2.0


async def test_a_dead_receiver_fills_the_queue_then_its_event_is_given_up(
    tmp_path: Path,
) -> None:
    # Nobody listens on port 1. connection.opened holds the queue of one while it is tried
    # three times; connection.closed finds the queue full and is dropped.
    config = write_config(tmp_path, "http://127.0.0.1:1/hook", ", max_attempts = 3, max_queue = 1")
    with serve_config(config, env={"HOOK_SECRET": HOOK_SECRET}) as served:
        await open_and_close(served.port)
        outcome = 'wsq_webhook_deliveries_total{{outcome="{}",tenant="acme"}}'
        failed = outcome.format("failed")
        await eventually(lambda: metric(served.port, failed) == 1.0, "given up", within=10)
        assert metric(served.port, outcome.format("dropped")) == 1.0
        assert metric(served.port, outcome.format("retried")) == 2.0
        assert metric(served.port, outcome.format("delivered")) == 0.0
        assert metric(served.port, 'wsq_webhook_queued{tenant="acme"}') == 0.0


def sink_config(tmp_path: Path, redis_port: int, url: str, max_attempts: int = 3) -> Path:
    config = tmp_path / "wsq.toml"
    config.write_text(
        f'[broker]\nurl = "redis://127.0.0.1:{redis_port}/0"\n'
        "[tenants.acme]\n"
        f'keys = [{{ kid = "k1", alg = "HS256", secret = "{SECRET_ACME}" }}]\n'
        'dead_letter = "dlq"\n'
        f'sinks = [{{ url = "{url}", addresses = ["orders"], secret_env = "HOOK_SECRET", '
        f"backoff_ms = 50, timeout_ms = 1000, max_attempts = {max_attempts} }}]\n"
    )
    return config


def publish(port: int, *bodies: object, address: str = "orders") -> list[str]:
    token = mint_token(tenants()["acme"], "pub", publish=(">",), subscribe=(">",))
    answer = httpx.post(
        f"http://127.0.0.1:{port}/v1/addresses/{address}/messages",
        json={"messages": [{"body": b} for b in bodies]},
        headers={"authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 201, answer.text
    ids: list[str] = answer.json()["ids"]
    return ids


def retained(port: int, address: str) -> list[object]:
    token = mint_token(tenants()["acme"], "ops", publish=(), subscribe=(">",))
    answer = httpx.get(
        f"http://127.0.0.1:{port}/v1/addresses/{address}/messages",
        headers={"authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 200, answer.text
    return [m["body"] for m in answer.json()["messages"]]


def delivered(rec: Receiver) -> list[dict[str, object]]:
    """The sink events the receiver answered 2xx, verified, in the order they came."""
    return [
        Webhook(HOOK_SECRET).verify(body, headers)
        for headers, body in rec.requests
        if headers["x-answered"] == "204"
    ]


async def test_a_sink_posts_every_message_in_order_and_retries_with_one_id(
    tmp_path: Path,
) -> None:
    with (
        RedisServer(tmp_path) as redis,
        receiver([500, 503]) as rec,
        serve_config(
            sink_config(tmp_path, redis.port, rec.url), env={"HOOK_SECRET": HOOK_SECRET}
        ) as served,
    ):
        ids = publish(served.port, *[{"n": n} for n in range(10)])
        await eventually(lambda: len(delivered(rec)) == 10, "ten delivered", within=15)
        events = delivered(rec)
        assert [e["data"]["body"] for e in events] == [{"n": n} for n in range(10)]  # type: ignore[index]
        assert [e["data"]["position"] for e in events] == ids  # type: ignore[index]
        assert {e["type"] for e in events} == {"message.published"}
        first_ids = [h["webhook-id"] for h, _ in rec.requests[:3]]
        assert first_ids[0] == first_ids[1] == first_ids[2]
        assert len({h["webhook-id"] for h, _ in rec.requests}) == 10


async def test_a_sink_dead_letters_past_max_attempts(tmp_path: Path) -> None:
    with (
        RedisServer(tmp_path) as redis,
        receiver([500, 500, 500]) as rec,
        serve_config(
            sink_config(tmp_path, redis.port, rec.url), env={"HOOK_SECRET": HOOK_SECRET}
        ) as served,
    ):
        publish(served.port, "poison", "fine")
        await eventually(lambda: len(delivered(rec)) == 1, "the second delivered", within=15)
        assert [e["data"]["body"] for e in delivered(rec)] == ["fine"]  # type: ignore[index]
        failed = 'wsq_webhook_deliveries_total{outcome="failed",tenant="acme"}'
        assert metric(served.port, failed) == 1.0
        assert retained(served.port, "dlq") == ["poison"]


async def test_a_sink_loses_nothing_across_a_gateway_sigkill(tmp_path: Path) -> None:
    with RedisServer(tmp_path, aof=True) as redis, receiver() as rec:
        rec.failing = True
        config = sink_config(tmp_path, redis.port, rec.url, max_attempts=20)
        with serve_config(config, env={"HOOK_SECRET": HOOK_SECRET}) as served:
            ids = publish(served.port, *range(5))
            await eventually(lambda: len(rec.requests) >= 2, "attempts under way", within=10)
            served.proc.kill()
            served.proc.wait()
        rec.failing = False
        with serve_config(config, env={"HOOK_SECRET": HOOK_SECRET}):
            await eventually(lambda: len(delivered(rec)) >= 5, "five delivered", within=20)
        events = delivered(rec)
        # Every one delivered, none lost, in order: the gateway started again waits for the
        # killed one's turn on the address, which outlasts the lease of the message it held.
        got: dict[str, object] = {}
        for e in events:
            got.setdefault(e["data"]["position"], e["data"]["body"])  # type: ignore[index]
        assert list(got) == ids
        assert list(got.values()) == list(range(5))
        # The first message was attempted before the kill and again after: one webhook-id.
        first = {h["webhook-id"] for h, b in rec.requests if b'"body":0}' in b}
        assert len(first) == 1
