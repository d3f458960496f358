"""Lifecycle webhooks across two real ``wsq serve`` processes on one real ``redis-server``.

- ``address.occupied`` once for the first receiver over both nodes, ``address.vacated`` once
  for the last; ``presence.join`` / ``presence.leave`` for ``"presence": true`` links.
- A node SIGKILLed: the other node drops its members (``presence.leave``, reason
  ``node-lost``) and vacates the addresses only it held (``address.vacated``, ``node-lost``),
  within the lease, even an address nobody else watches; an address the other node still
  holds stays occupied.
- ``message.dead_lettered`` for a rejected queue message: its position, never its body.
Every request is verified with the reference library (``standardwebhooks``).
"""

from __future__ import annotations

import base64
import signal
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from standardwebhooks import Webhook
from wsq_harness import (
    SECRET_ACME,
    Client,
    Receiver,
    RedisServer,
    Served,
    eventually,
    receiver,
    serve_config,
    tenants,
)

from wsq.auth import mint_token

HOOK_SECRET = "whsec_" + base64.b64encode(b"webhook-nodes-key-0123456789abcd").decode()
LEASE_MS = 1000
HOOK = 'secret_env = "HOOK_SECRET", backoff_ms = 50'
#: A node's lease, a sweep (a third of it), the webhook's own round trip; with a wide margin
#: for a loaded machine. A bound on convergence, not a timing.
WITHIN_S = 15.0
EVENTS = (
    '"address.occupied", "address.vacated", "presence.join", "presence.leave", '
    '"message.dead_lettered"'
)


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[tuple[Served, Served, Receiver]]:
    with RedisServer(tmp_path) as redis, receiver() as rec:
        config = tmp_path / "wsq.toml"
        config.write_text(
            textwrap.dedent(
                f"""
                [broker]
                url = "{redis.url}"
                quota_lease_ms = {LEASE_MS}
                [tenants.acme]
                keys = [ {{ kid = "k1", alg = "HS256", secret = "{SECRET_ACME}" }} ]
                dead_letter = "dlq"
                webhooks = [ {{ url = "{rec.url}", events = [{EVENTS}], {HOOK} }} ]
                """
            )
        )
        env = {"HOOK_SECRET": HOOK_SECRET}
        with serve_config(config, env=env) as a, serve_config(config, env=env) as b:
            yield a, b, rec


def events(rec: Receiver, *types: str) -> list[dict[str, Any]]:
    """The events received so far (verified), of ``types`` if given, in arrival order."""
    verified = [Webhook(HOOK_SECRET).verify(body, headers) for headers, body in rec.requests]
    return [e for e in verified if not types or e["type"] in types]


def metric(node: Served, name: str) -> float:
    """One sample of the node's /metrics (0 when absent)."""
    for line in httpx.get(f"{node.url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def token(sub: str) -> str:
    return mint_token(tenants()["acme"], sub, publish=[">"], subscribe=[">"])


async def connect(node: Served, sub: str) -> Client:
    ws = await websockets.connect(f"ws://127.0.0.1:{node.port}/ws", subprotocols=["wsq.v1"])
    client = Client(ws)
    await client.open(token(sub))
    await client.begin(1)
    return client


def occupancy_of(rec: Receiver, address: str) -> list[tuple[str, int, str]]:
    """(type, occupancy number, reason) of an address's occupancy events, by their number."""
    found = [
        (e["type"], e["data"]["occupancy"], e["data"].get("reason", ""))
        for e in events(rec, "address.occupied", "address.vacated")
        if e["data"]["address"] == address
    ]
    return sorted(found, key=lambda t: t[1])


async def test_occupancy_and_presence_converge_when_a_node_is_killed(
    nodes: tuple[Served, Served, Receiver],
) -> None:
    a, b, rec = nodes
    on_a = await connect(a, "alice")
    await on_a.subscribe(1, 0, "room", presence=True)
    await on_a.subscribe(1, 1, "solo", presence=True)  # only on the node that dies
    on_b = await connect(b, "bob")
    await on_b.subscribe(1, 0, "room", presence=True)
    await eventually(lambda: len(events(rec, "presence.join")) == 3, "3 joins", within=10)
    await eventually(lambda: len(occupancy_of(rec, "solo")) == 1, "solo occupied", within=10)
    # One occupied for "room" over both nodes, whichever node came first.
    assert [t for t, _, _ in occupancy_of(rec, "room")] == ["address.occupied"]
    joins = {
        (e["data"]["address"], e["data"]["member"]["sub"]) for e in events(rec, "presence.join")
    }
    assert joins == {("room", "alice"), ("solo", "alice"), ("room", "bob")}

    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(10)
    killed = time.monotonic()
    await eventually(
        lambda: len(events(rec, "presence.leave")) == 2, "alice's two leaves", within=WITHIN_S
    )
    await eventually(lambda: len(occupancy_of(rec, "solo")) == 2, "solo vacated", within=WITHIN_S)
    # The figure the report quotes (not asserted: WITHIN_S is the bound).
    print(f"converged {time.monotonic() - killed:.2f} s after the SIGKILL (lease {LEASE_MS} ms)")
    leaves = events(rec, "presence.leave")
    assert {(e["data"]["address"], e["data"]["reason"]) for e in leaves} == {
        ("room", "node-lost"),
        ("solo", "node-lost"),
    }
    assert {e["data"]["member"]["sub"] for e in leaves} == {"alice"}
    assert [(t, r) for t, _, r in occupancy_of(rec, "solo")] == [
        ("address.occupied", ""),
        ("address.vacated", "node-lost"),
    ]
    # bob still holds "room": it stays occupied.
    assert [t for t, _, _ in occupancy_of(rec, "room")] == ["address.occupied"]
    # The survivor counted what it dropped and what it holds.
    assert metric(b, 'wsq_presence_leaves_total{reason="node-lost",tenant="acme"}') == 2.0
    assert metric(b, 'wsq_presence_members{tenant="acme"}') == 1.0
    assert metric(b, 'wsq_occupied_addresses{tenant="acme"}') == 1.0

    await on_b.close()
    await eventually(lambda: len(occupancy_of(rec, "room")) == 2, "room vacated", within=10)
    assert occupancy_of(rec, "room")[1][0::2] == ("address.vacated", "detached")
    await eventually(lambda: len(events(rec, "presence.leave")) == 3, "bob left", within=10)
    last = events(rec, "presence.leave")[-1]["data"]
    assert (last["member"]["sub"], last["reason"]) == ("bob", "left")
    # Nothing twice: one webhook-id per event, no event repeated by the other node's sweep.
    ids = [h["webhook-id"] for h, _ in rec.requests]
    assert len(ids) == len(set(ids)) == 3 + 3 + 4  # joins, leaves, occupied and vacated
    await on_a.close()


async def test_a_rejected_queue_message_is_told_without_its_body(
    nodes: tuple[Served, Served, Receiver],
) -> None:
    a, b, rec = nodes
    auth = {"authorization": f"Bearer {token('worker')}"}
    async with httpx.AsyncClient() as http:
        answer = await http.post(
            f"{a.url}/v1/addresses/jobs/messages",
            json={"body": {"secret": "do-not-leak"}, "message_id": "job-1"},
            headers=auth,
        )
        assert answer.status_code == 201
        claim = await http.post(f"{b.url}/v1/addresses/jobs/claims", json={}, headers=auth)
        assert claim.status_code == 201
        position = claim.json()["messages"][0]["id"]
        settled = await http.post(
            f"{b.url}/v1/addresses/jobs/claims/{claim.json()['claim']}/settle",
            json={"ids": [position], "outcome": "rejected"},
            headers=auth,
        )
        assert settled.status_code in (200, 204)
    await eventually(lambda: bool(events(rec, "message.dead_lettered")), "dead-lettered", within=10)
    (event,) = events(rec, "message.dead_lettered")
    data = event["data"]
    assert (data["address"], data["position"], data["message_id"]) == ("jobs", position, "job-1")
    assert (data["reason"], data["dead_letter"], data["tenant"]) == ("rejected", "dlq", "acme")
    assert all(b"do-not-leak" not in body for _, body in rec.requests)
    assert metric(b, 'wsq_dead_lettered_total{tenant="acme"}') == 1.0
    assert metric(b, 'wsq_webhook_requests_total{result="ok",tenant="acme"}') >= 1.0
