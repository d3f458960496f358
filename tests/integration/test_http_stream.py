"""wsq.v1 over HTTP on a real gateway (memory broker): the stream's round trip, its sequence
numbers, and what a hostile client gets (wrong secrets, huge bodies, gaps, floods, origins)."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import httpx
import pytest
from http_stream import HttpStream, http_stream, open_frame
from wsq_harness import Gateway, attach_frame, eventually


def transfer(delivery: int, body: Any, ch: int = 1, handle: int = 1) -> dict[str, Any]:
    return {"op": "transfer", "ch": ch, "handle": handle, "delivery": delivery, "body": body}


async def linked(stream: HttpStream, address: str) -> None:
    """Session 1 with a receiver (handle 0) and a sender (handle 1) on ``address``."""
    await stream.until("open")
    await stream.send(
        [
            {"op": "begin", "ch": 1},
            attach_frame(1, 0, "receiver", address, credit=10),
            attach_frame(1, 1, "sender", address),
        ]
    )
    await stream.until("flow")  # the sender's credit: both links are attached


async def test_a_round_trip_over_http(gateway: Gateway) -> None:
    async with http_stream(gateway.http, open_frame(gateway.token())) as stream:
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        opened = await stream.until("open")
        assert opened["tenant"] == "acme" and opened["sub"] == "alice"
        await stream.send(
            [{"op": "begin", "ch": 1}, attach_frame(1, 0, "receiver", "r.1", credit=5)]
        )
        await stream.send(attach_frame(1, 1, "sender", "r.1"))
        await stream.until("flow")
        await stream.send(transfer(0, {"n": 1}))
        settled = await stream.until("disposition")
        assert settled["outcome"] == "accepted"
        delivery = await stream.until("transfer")
        assert delivery["body"] == {"n": 1} and delivery["id"] == settled["ids"][0]
        # ... and a WebSocket client on the same address sees it too: one gateway, two carriers.
        ws = await gateway.subscriber("r.1", rewind=1)
        assert (await ws.expect("transfer"))["body"] == {"n": 1}
        await ws.close()
        await stream.send({"op": "close"})
        assert (await stream.until("close")).get("error") is None
        await stream.rest()  # the response ends


async def test_frames_pipelined_behind_open_in_the_opening_body(gateway: Gateway) -> None:
    first = [open_frame(gateway.token()), {"op": "begin", "ch": 1}]
    async with http_stream(gateway.http, first) as stream:
        await stream.until("open")
        assert (await stream.until("begin"))["ch"] == 1


async def test_a_refused_token_closes_the_stream(gateway: Gateway) -> None:
    async with http_stream(gateway.http, open_frame("not-a-jwt")) as stream:
        closed = await stream.until("close")
        assert closed["error"]["condition"] == "wsq:unauthorized"
        await stream.rest()


async def test_a_replayed_post_is_applied_once(gateway: Gateway) -> None:
    async with http_stream(gateway.http, open_frame(gateway.token())) as stream:
        await linked(stream, "r.2")
        await stream.send(transfer(0, "once"))
        again = await stream.post(transfer(0, "once"), seq=stream.seq)  # its answer was lost
        assert again.status_code == 204
        await stream.send(transfer(1, "twice"))
        bodies = []
        while len(bodies) < 2:
            bodies.append((await stream.until("transfer"))["body"])
        assert bodies == ["once", "twice"]
        ws = await gateway.subscriber("r.2", rewind=10)
        assert await ws.bodies_until_quiet() == ["once", "twice"]  # stored once each
        await ws.close()
        # A frame that may not come twice: a replayed begin would end the session.
        await stream.send({"op": "begin", "ch": 5})
        assert (await stream.post({"op": "begin", "ch": 5}, seq=stream.seq)).status_code == 204
        await stream.send({"op": "begin", "ch": 6})
        begun = [(await stream.until("begin"))["ch"] for _ in range(3)]
        assert begun == [1, 5, 6]  # session 1 from linked()
        await stream.send({"op": "close"})
        rest = await stream.rest()
        assert [f for f in rest if f.get("error")] == [] and rest[-1]["op"] == "close"


async def test_posts_out_of_order_are_applied_in_order(gateway: Gateway) -> None:
    async with http_stream(gateway.http, open_frame(gateway.token())) as stream:
        await linked(stream, "r.3")
        base = stream.seq
        assert (await stream.post(transfer(1, "b"), seq=base + 2)).status_code == 204
        assert (await stream.post(transfer(0, "a"), seq=base + 1)).status_code == 204
        got = [(await stream.until("transfer"))["body"] for _ in range(2)]
        assert got == ["a", "b"]


async def test_a_gap_past_the_window_ends_the_connection(gateway: Gateway) -> None:
    async with http_stream(gateway.http, open_frame(gateway.token())) as stream:
        await stream.until("open")
        answer = await stream.post([], seq=1000)
        assert answer.status_code == 400
        assert answer.json()["error"]["condition"] == "wsq:invalid-frame"
        closed = await stream.until("close")
        assert closed["error"]["condition"] == "wsq:invalid-frame"


async def test_a_wrong_secret_or_id_is_not_found(gateway: Gateway) -> None:
    async with http_stream(gateway.http, open_frame(gateway.token())) as stream:
        await stream.until("open")
        for kwargs in (
            {"secret": "x" * 43},
            {"stream_id": "y" * 22},
            {"secret": "short"},
            {"stream_id": "not.an.id.of.ours.at.all"},
        ):
            answer = await stream.post([], seq=1, **kwargs)
            assert answer.status_code == 404, kwargs
            assert answer.json()["error"]["condition"] == "wsq:not-found"
        # The stream itself goes on: the right secret is still taken.
        await stream.send({"op": "begin", "ch": 7})
        assert (await stream.until("begin"))["ch"] == 7


async def test_posts_for_an_ended_stream_are_not_found(gateway: Gateway) -> None:
    async with http_stream(gateway.http, open_frame(gateway.token())) as stream:
        await stream.until("open")
        await stream.send({"op": "close"})
        await stream.until("close")
        await stream.rest()
        await asyncio.sleep(0)  # let the holder forget the stream
        answer = await stream.post([])
        assert answer.status_code == 404


@pytest.mark.parametrize("bad", ["seq", "big", "utf8"])
async def test_bad_posts_are_refused(gateway: Gateway, bad: str) -> None:
    limit = gateway.settings.server.max_frame_bytes
    async with http_stream(gateway.http, open_frame(gateway.token())) as stream:
        await stream.until("open")
        if bad == "seq":
            answer = await stream.post([], seq=0)
            expected = (400, "wsq:invalid-frame")
        elif bad == "big":
            answer = await stream.post(b"[" + b" " * limit + b"]")
            expected = (413, "wsq:frame-too-large")
        else:
            answer = await stream.post(b'"\xff"')
            expected = (400, "wsq:invalid-frame")
        assert (answer.status_code, answer.json()["error"]["condition"]) == expected


async def test_a_huge_opening_body_is_refused(gateway: Gateway) -> None:
    limit = gateway.settings.server.max_frame_bytes
    async with http_stream(gateway.http, b"[" + b" " * limit + b"]") as stream:
        assert stream.response.status_code == 413
        await stream.response.aread()
        assert b"wsq:frame-too-large" in stream.response.content


async def test_posts_flooding_a_stream_end_it(gateway: Gateway) -> None:
    limit = gateway.settings.server.max_frame_bytes
    body = [{"op": "begin", "ch": 1, "pad": "x" * (limit // 2)}]
    async with http_stream(gateway.http, open_frame(gateway.token())) as stream:
        await stream.until("open")
        base = stream.seq
        # Numbers ahead of a missing one wait; past what a stream may hold, it ends.
        answers = [(await stream.post(body, seq=base + 2 + i)).status_code for i in range(12)]
        assert 429 in answers
        closed = await stream.until("close")
        assert closed["error"]["condition"] == "wsq:resource-limit-exceeded"


@pytest.mark.gateway(server={"allowed_origins": ("https://app.example.com",)})
async def test_the_origin_is_checked_as_for_a_websocket(gateway: Gateway) -> None:
    first = open_frame(gateway.token())
    evil = {"Origin": "https://evil.example"}
    async with http_stream(gateway.http, first, headers=evil) as stream:
        assert stream.response.status_code == 403
    good = {"Origin": "https://app.example.com"}
    async with http_stream(gateway.http, first, headers=good) as stream:
        assert (await stream.until("open"))["tenant"] == "acme"


@pytest.mark.gateway(server={"idle_ms": 1000})
async def test_a_silent_client_is_closed_by_the_idle_timeout(gateway: Gateway) -> None:
    async with http_stream(gateway.http, open_frame(gateway.token(), idle=1000)) as stream:
        await stream.until("open")
        closed = await stream.until("close", timeout=10)
        assert closed["error"]["condition"] == "wsq:idle-timeout"


async def test_the_stream_counts_as_a_connection_while_it_lasts(gateway: Gateway) -> None:
    app: Any = gateway.server.config.app
    async with http_stream(gateway.http, open_frame(gateway.token())) as stream:
        await stream.until("open")
        assert len(app.state.gateway.peers) == 1
        posts = app.state.gateway.node.stream_posts
        await stream.send([])
        assert posts["taken"] >= 1
    async with httpx.AsyncClient() as http:  # gone with the response
        for _ in range(100):
            if not app.state.gateway.peers:
                break
            await http.get(f"{gateway.http}/healthz")
    assert not app.state.gateway.peers


@pytest.mark.gateway(server={"idle_ms": 1000})
async def test_a_stream_nobody_reads_is_dropped_as_a_stalled_socket(gateway: Gateway) -> None:
    """Its client POSTs heartbeats but never reads the response: the slow-reader rule drops it."""
    app: Any = gateway.server.config.app
    first = json.dumps(
        [
            open_frame(gateway.token(), idle=0),
            {"op": "begin", "ch": 1},
            attach_frame(1, 0, "receiver", "unread.1", credit=10_000),
        ]
    ).encode()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", gateway.port))
    head = (
        f"POST /v1/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(first)}\r\n\r\n"
    ).encode()
    await loop.sock_sendall(sock, head + first)
    got = b""
    while b"\n\n" not in got.partition(b"event: stream\n")[2]:
        got += await loop.sock_recv(sock, 1)  # the hello, and not a byte more
    hello = json.loads(got.partition(b"event: stream\ndata: ")[2].partition(b"\n")[0])
    try:
        publisher = await gateway.sender("unread.1")
        big = "x" * 60_000
        async with httpx.AsyncClient() as http:
            for i in range(400):
                await publisher.send(
                    {"op": "transfer", "ch": 1, "handle": 0, "delivery": i, "body": big}
                )
                beat = await http.post(
                    f"{gateway.http}/v1/stream/{hello['id']}",
                    content=b"[]",
                    headers={"Wsq-Stream-Secret": hello["secret"], "Wsq-Seq": str(i + 1)},
                )
                if beat.status_code == 404 or app.state.gateway.closes["stall"]:
                    break
                await asyncio.sleep(0.02)
        await eventually(lambda: app.state.gateway.closes["stall"] == 1, "the stall", within=15)
        assert app.state.gateway.closes["heartbeat"] == 0  # it was heard from all along
        await publisher.close()
    finally:
        sock.close()


async def test_a_draining_gateway_says_going_away_on_streams_and_opens_none(
    gateway: Gateway,
) -> None:
    app: Any = gateway.server.config.app
    async with http_stream(gateway.http, open_frame(gateway.token())) as stream:
        await stream.until("open")
        task = app.state.drain.begin(backstop=False)
        closed = await stream.until("close")
        assert closed["error"]["condition"] == "wsq:going-away"
        await stream.rest()
        report = await task
        assert (report.told, report.forced) == (1, 0)
    async with http_stream(gateway.http, open_frame(gateway.token())) as refused:
        assert refused.response.status_code == 503
        await refused.response.aread()
        assert refused.response.json()["error"]["condition"] == "wsq:going-away"
