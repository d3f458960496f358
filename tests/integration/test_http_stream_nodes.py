"""wsq.v1 over HTTP across gateway nodes on one Redis: a POST taken by a node that does not
hold the stream reaches it through the broker's relay (no sticky sessions), in order; and the
same through a real HAProxy in front of two real ``wsq serve`` processes."""

from __future__ import annotations

import asyncio
import re
import secrets
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis
from http_stream import HttpStream, http_stream, open_frame
from wsq_harness import (
    SECRET_ACME,
    HAProxy,
    RedisCluster,
    RedisServer,
    attach_frame,
    make_settings,
    running_gateway,
    serve_config,
)

from wsq.auth import mint_token
from wsq.config import load_settings


def transfer(delivery: int, body: Any) -> dict[str, Any]:
    return {"op": "transfer", "ch": 1, "handle": 1, "delivery": delivery, "body": body}


async def linked(stream: HttpStream, address: str, base: str | None = None) -> None:
    await stream.until("open")
    frames = [
        {"op": "begin", "ch": 1},
        attach_frame(1, 0, "receiver", address, credit=100),
        attach_frame(1, 1, "sender", address),
    ]
    await stream.send(frames, base=base)
    await stream.until("flow")


async def test_a_post_to_another_node_reaches_the_stream(redis_server: RedisServer) -> None:
    settings = make_settings(broker_url=redis_server.url)
    async with running_gateway(settings) as a, running_gateway(settings) as b:
        async with http_stream(a.http, open_frame(a.token())) as stream:
            await linked(stream, "nodes.1", base=b.http)  # by way of b
            for i in range(5):
                await stream.send(transfer(i, i), base=(a.http, b.http)[i % 2])
            got = [(await stream.until("transfer"))["body"] for _ in range(5)]
            assert got == [0, 1, 2, 3, 4]
            wrong = await stream.post([], seq=stream.seq + 1, secret="z" * 43, base=b.http)
            assert wrong.status_code == 404
            assert wrong.json()["error"]["condition"] == "wsq:not-found"
            await stream.send({"op": "close"}, base=b.http)
            await stream.until("close")
            await stream.rest()
            # The stream ended: nobody listens any more (once its holder has let go).
            for _ in range(100):
                gone = await stream.post([], base=b.http)
                if gone.status_code == 404:
                    break
                await asyncio.sleep(0.02)
            assert gone.status_code == 404
        app_a: Any = a.server.config.app
        app_b: Any = b.server.config.app
        assert app_b.state.gateway.node.stream_posts["relayed"] >= 4
        assert app_a.state.gateway.node.stream_posts["taken"] >= 2
        assert app_b.state.gateway.node.stream_posts["unknown"] == 2


def _config(path: Path, redis_url: str, node_id: str) -> Path:
    path.write_text(
        f'[server]\nnode_id = "{node_id}"\n'
        f'[broker]\nurl = "{redis_url}"\n'
        f'[tenants.acme]\nissuer = "acme"\n'
        f'keys = [{{ alg = "HS256", secret = "{SECRET_ACME}" }}]\n'
    )
    return path


def _relayed(base: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=5).text
    found = re.search(r'^wsq_stream_posts_total\{outcome="relayed"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


async def test_streams_through_haproxy_in_front_of_two_gateways(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    one = _config(tmp_path / "one.toml", redis_server.url, "gw-one")
    two = _config(tmp_path / "two.toml", redis_server.url, "gw-two")
    tenant = load_settings(config_path=str(one)).tenants["acme"]
    token = mint_token(tenant, "alice", publish=(">",), subscribe=(">",), ttl_s=600)
    with serve_config(one) as g1, serve_config(two) as g2:
        proxy = HAProxy(tmp_path, {"one": g1.port, "two": g2.port})
        with proxy:
            for round_ in range(2):  # round robin: the openings land on both nodes
                async with http_stream(proxy.http, open_frame(token)) as stream:
                    await linked(stream, f"nodes.haproxy.{round_}")
                    n = 12
                    for i in range(n):
                        await stream.send(transfer(i, i))
                    got = [(await stream.until("transfer"))["body"] for _ in range(n)]
                    assert got == list(range(n))
                    await stream.send({"op": "close"})
                    await stream.until("close")
                    await stream.rest()
            # Round robin sent some POSTs to the node that did not hold their stream.
            assert _relayed(g1.url) + _relayed(g2.url) > 0


async def test_the_relay_listens_again_after_redis_restarts(tmp_path: Path) -> None:
    """Redis goes away under a stream and comes back: POSTs through the other node reach the
    stream again (its channel subscribed anew) and the connection goes on."""
    redis = RedisServer(tmp_path)
    redis.start()
    try:
        settings = make_settings(broker_url=redis.url, server={"idle_ms": 30_000})
        async with (
            running_gateway(settings) as a,
            running_gateway(settings) as b,
            http_stream(a.http, open_frame(a.token())) as stream,
        ):
            await stream.until("open")
            await stream.send({"op": "begin", "ch": 1}, base=b.http)
            await stream.until("begin")
            redis.kill()
            down = await stream.post([], seq=stream.seq + 1, base=b.http)
            assert down.status_code == 503  # the broker is unavailable: try again
            redis.start()
            for _ in range(200):  # until the relay has subscribed again
                answer = await stream.post(
                    {"op": "begin", "ch": 2}, seq=stream.seq + 1, base=b.http
                )
                if answer.status_code == 204:
                    break
                await asyncio.sleep(0.05)
            assert answer.status_code == 204, answer.text
            assert (await stream.until("begin"))["ch"] == 2
    finally:
        redis.stop()


async def test_a_post_to_another_node_reaches_the_stream_on_a_cluster(tmp_path: Path) -> None:
    with RedisCluster(tmp_path) as cluster:
        settings = make_settings(broker_url=cluster.url)
        async with (
            running_gateway(settings) as a,
            running_gateway(settings) as b,
            http_stream(a.http, open_frame(a.token())) as stream,
        ):
            await linked(stream, "nodes.cluster", base=b.http)
            for i in range(4):
                await stream.send(transfer(i, i), base=(a.http, b.http)[i % 2])
            assert [(await stream.until("transfer"))["body"] for _ in range(4)] == [0, 1, 2, 3]
            wrong = await stream.post([], seq=stream.seq + 1, secret="z" * 43, base=b.http)
            assert wrong.status_code == 404


async def test_forged_posts_cost_redis_a_few_bytes_and_large_posts_still_cross_nodes(
    redis_server: RedisServer,
) -> None:
    # Anyone may POST to a well-formed id and secret: the body goes to Redis only when a
    # stream listens there. Before: each forged POST PUBLISHed its whole body (200 of 1 MB:
    # 191 MiB into Redis in 1.1 s, every one answered 404).
    settings = make_settings(broker_url=redis_server.url)
    body = b"[" + b" " * 500_000 + b"]"
    client = aioredis.Redis(port=redis_server.port)
    async with running_gateway(settings) as a, running_gateway(settings) as b:
        before = (await client.info("stats"))["total_net_input_bytes"]
        async with httpx.AsyncClient(timeout=30) as http:
            for _ in range(20):
                forged = await http.post(
                    f"{b.http}/v1/stream/{secrets.token_urlsafe(16)}",
                    content=body,
                    headers={"wsq-stream-secret": secrets.token_urlsafe(32), "wsq-seq": "1"},
                )
                assert forged.status_code == 404
        grown = (await client.info("stats"))["total_net_input_bytes"] - before
        print(f"\n20 forged POSTs of 500 KB: Redis received {grown} bytes")
        assert grown < 1_000_000  # 10 MB before
        # A large POST for a stream of the other node still gets there.
        async with http_stream(a.http, open_frame(a.token())) as stream:
            await linked(stream, "nodes.large", base=b.http)
            await stream.send(transfer(0, "x" * 300_000), base=b.http)
            assert (await stream.until("transfer"))["body"] == "x" * 300_000
    await client.aclose()
