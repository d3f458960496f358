"""WebSocket compression against a real ``wsq serve``: ``[server] ws_compression`` decides whether
a browser's offer of permessage-deflate is accepted, and a compressed message is bounded by
``max_frame_bytes`` once inflated (docs/security.md, "Compression").

The clients offer deflate exactly as Chromium does: ``permessage-deflate;
client_max_window_bits``."""

from __future__ import annotations

import asyncio
import json
import textwrap
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    PerMessageDeflate,
)
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader
from wsq_harness import SECRET_ACME, Client, Served, serve_config, tenants

from wsq.auth import mint_token

#: What Chromium sends in Sec-WebSocket-Extensions.
CHROMIUM_OFFER = "permessage-deflate; client_max_window_bits"
#: A message that inflates to this many times max_frame_bytes (each costs ~1/1000 on the wire).
BOMB_FACTOR = 100
#: Large strings are mmapped (and unmapped when freed): RSS is what the process holds.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}


def config(tmp_path: Path, server: str) -> Path:
    path = tmp_path / "wsq.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            [server]
            {server}
            [tenants.acme]
            keys = [{{ kid = "k1", alg = "HS256", secret = "{SECRET_ACME}" }}]
            """
        )
    )
    return path


async def connect(port: int) -> websockets.ClientConnection:
    """A socket that offers permessage-deflate as Chromium does."""
    return await websockets.connect(
        f"ws://127.0.0.1:{port}/ws",
        subprotocols=["wsq.v1"],
        compression=None,
        extensions=[ClientPerMessageDeflateFactory(client_max_window_bits=True)],
        max_size=None,
    )


def token() -> str:
    acme = tenants()["acme"]
    return mint_token(acme, "alice", publish=(">",), subscribe=(">",), ttl_s=600)


def deflate() -> PerMessageDeflate:
    """A client's side of permessage-deflate as the server answers it: a 4 KiB window each way
    (``server_max_window_bits=12; client_max_window_bits=12``)."""
    return PerMessageDeflate(False, False, 12, 12, {"level": 9})


def bomb(size: int) -> bytes:
    """A client's compressed text frame that inflates to ``size`` bytes of an ``open``, made
    once by websockets' encoder (not by each socket's own): the first message of a socket."""
    head = b'{"op":"open","token":"'
    frame = Frame(Opcode.TEXT, head + b"a" * (size - len(head)))
    return frame.serialize(mask=True, extensions=[deflate()])


@contextmanager
def peak_rss(served: Served) -> Iterator[list[int]]:
    """[before, peak] of the server's RSS (KiB), sampled every 2 ms while the block runs."""
    found = [served.rss_kib()] * 2
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            found[1] = max(found[1], served.rss_kib())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield found
    finally:
        done.set()
        sampler.join()


# -- the setting ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "setting, answer",
    [
        ("off", None),
        ("deflate", "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"),
    ],
)
async def test_a_browsers_offer_is_accepted_or_declined_as_ws_compression_says(
    tmp_path: Path, setting: str, answer: str | None
) -> None:
    with serve_config(config(tmp_path, f'ws_compression = "{setting}"')) as served:
        ws = await connect(served.port)
        assert ws.request is not None and ws.response is not None
        assert ws.request.headers["Sec-WebSocket-Extensions"] == CHROMIUM_OFFER
        assert ws.response.headers.get("Sec-WebSocket-Extensions") == answer
        # Either way the socket speaks wsq.v1, compressed both ways or not at all.
        client = Client(ws)
        await client.open(token())
        await client.begin(1)
        await client.subscribe(1, 0, "news.x", credit=10)
        await client.sender(1, 1, "news.x")
        body = {"text": "hello " * 200}
        await client.send(
            {"op": "transfer", "ch": 1, "handle": 1, "delivery": 0, "body": body, "settled": True}
        )
        assert (await client.expect("transfer", handle=0))["body"] == body
        await client.close()


class _RecordingDeflate(PerMessageDeflate):
    """The client's side of permessage-deflate, keeping each compressed payload it received."""

    def __init__(self, agreed: PerMessageDeflate) -> None:
        super().__init__(
            agreed.remote_no_context_takeover,
            agreed.local_no_context_takeover,
            agreed.remote_max_window_bits,
            agreed.local_max_window_bits,
        )
        self.received: list[bytes] = []

    def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
        if frame.rsv1:
            self.received.append(frame.data)
        return super().decode(frame, max_size=max_size)


class _RecordingFactory(ClientPerMessageDeflateFactory):
    def __init__(self) -> None:
        super().__init__(client_max_window_bits=True)
        self.extension: _RecordingDeflate | None = None

    def process_response_params(self, params: Any, accepted: Any) -> PerMessageDeflate:
        self.extension = _RecordingDeflate(super().process_response_params(params, accepted))
        return self.extension


async def test_the_server_compresses_at_zlib_level_1(tmp_path: Path) -> None:
    """Accepted, wsq compresses with zlib's level 1 (memLevel 5, a 4 KiB window, context kept),
    not its default 6: the compressed messages a socket receives are byte for byte what one
    level-1 compressor makes of their texts in turn (level 6 makes other bytes of them)."""
    factory = _RecordingFactory()
    with serve_config(config(tmp_path, 'ws_compression = "deflate"')) as served:
        ws = await websockets.connect(
            f"ws://127.0.0.1:{served.port}/ws",
            subprotocols=["wsq.v1"],
            compression=None,
            extensions=[factory],
            max_size=None,
        )
        client = Client(ws)
        await client.open(token())
        await client.begin(1)
        await client.subscribe(1, 0, "news.x", credit=10)
        await client.sender(1, 1, "news.x")
        body = {"text": "hello there, " * 40, "n": list(range(40))}
        await client.send(
            {"op": "transfer", "ch": 1, "handle": 1, "delivery": 0, "body": body, "settled": True}
        )
        assert (await client.expect("transfer", handle=0))["body"] == body
        await client.close()
    assert factory.extension is not None
    received = factory.extension.received
    flush = b"\x00\x00\xff\xff"  # what permessage-deflate strips off each message
    inflater = zlib.decompressobj(-12)
    texts = [inflater.decompress(data + flush) for data in received]

    def compressed(level: int) -> list[bytes]:
        c = zlib.compressobj(level, zlib.DEFLATED, -12, 5)
        return [(c.compress(t) + c.flush(zlib.Z_SYNC_FLUSH)).removesuffix(flush) for t in texts]

    assert len(received) >= 3
    assert received == compressed(1)
    # what tells the two levels apart on these texts (else the test would prove nothing)
    assert compressed(1) != compressed(6)


# -- the compression bomb ------------------------------------------------------------------------


async def test_a_message_that_inflates_past_max_frame_bytes_is_refused_while_inflating(
    tmp_path: Path,
) -> None:
    """A ~6 KB frame that inflates to 100 x max_frame_bytes (6.4 MiB): wsq:frame-too-large and
    close 1009, the server having inflated no more than max_frame_bytes of it."""
    limit = 65536
    frame = bomb(BOMB_FACTOR * limit)
    assert len(frame) < BOMB_FACTOR * limit / 900
    with serve_config(
        config(tmp_path, f'ws_compression = "deflate"\nmax_frame_bytes = {limit}')
    ) as (served):
        with peak_rss(served) as rss:
            ws = await connect(served.port)
            ws.transport.write(frame)
            client = Client(ws)
            closing = await client.closed_with("wsq:frame-too-large")
            assert ws.close_code == 1009
            assert f"max_frame_bytes ({limit})" in closing["error"]["description"]
        # The gateway is still there for the next socket.
        client = Client(await connect(served.port))
        await client.open(token())
        await client.close()
    assert rss[1] - rss[0] < 8 * 1024, f"RSS +{(rss[1] - rss[0]) / 1024:.1f} MiB"


async def test_many_sockets_sending_bombs_at_once_cost_no_more_than_one_message(
    tmp_path: Path,
) -> None:
    """100 sockets each send, at the same moment, a 3 KB frame that inflates to 3 x
    max_frame_bytes (3 MiB): all refused with wsq:frame-too-large, and the server's RSS grows
    by less than 32 MiB (each is refused as it is inflated, one at a time; before, each was
    inflated whole, up to 4 x max_frame_bytes, and queued for the gateway: +601 MiB here)."""
    sockets = 100
    frame = bomb(3 * 1_048_576)
    with serve_config(config(tmp_path, 'ws_compression = "deflate"')) as served:
        clients = [Client(await connect(served.port)) for _ in range(sockets)]
        with peak_rss(served) as rss:
            for client in clients:
                client.ws.transport.write(frame)
            await asyncio.gather(*(c.closed_with("wsq:frame-too-large", 20) for c in clients))
        assert all(c.ws.close_code == 1009 for c in clients)
    assert rss[1] - rss[0] < 32 * 1024, f"RSS +{(rss[1] - rss[0]) / 1024:.1f} MiB"


async def answered_at(client: Client, n: int) -> list[tuple[int, float]]:
    """The channels of the next ``n`` ``begin`` answers, each with when it was read."""
    return [((await client.expect("begin", timeout=60))["ch"], time.monotonic()) for _ in range(n)]


async def test_one_read_full_of_bombs_is_inflated_a_message_at_a_time(tmp_path: Path) -> None:
    """An authenticated socket writes at once 300 frames of ~1 KB, each inflating to just under
    max_frame_bytes (1 MiB: a ``begin`` and its padding; one read of 256 KiB holds ~250):
    websockets parses, and inflates, the next only once the gateway has taken the previous
    message, so the socket holds one message waiting for it, not the read's ~250. The server's
    RSS grows by less than 16 MiB (+5 MiB here; before: a read's messages inflated and queued
    at once, +302 MiB), every message is answered in order, and a bystander is served
    meanwhile."""
    bombs = 300
    padding = 1_048_576 - 64
    # Each compressed on its own (no context shared), as the client's encoder never sees them.
    frames = b"".join(
        Frame(Opcode.TEXT, b'{"op":"begin","ch":%d}' % ch + b" " * padding).serialize(
            mask=True, extensions=[deflate()]
        )
        for ch in range(bombs)
    )
    assert len(frames) < bombs * 1_100
    with serve_config(config(tmp_path, 'ws_compression = "deflate"'), env=MALLOC_ENV) as served:
        bystander = Client(await connect(served.port))
        await bystander.open(token())
        attacker = Client(await connect(served.port))
        await attacker.open(token())
        with peak_rss(served) as rss:
            attacker.ws.transport.write(frames)
            reading = asyncio.create_task(answered_at(attacker, bombs))
            # Served while the attacker's messages are: its answer comes before the attacker's
            # last (an order, not a time: the machine may be loaded).
            await bystander.send({"op": "begin", "ch": 1})
            await bystander.expect("begin", timeout=60, ch=1)
            bystander_at = time.monotonic()
            answered = await reading
        assert [ch for ch, _ in answered] == list(range(bombs))
        assert answered[-1][1] > bystander_at, "the bystander waited for every bomb"
        await bystander.begin(2)
        await bystander.close()
        await attacker.close()
    assert rss[1] - rss[0] < 16 * 1024, f"RSS +{(rss[1] - rss[0]) / 1024:.1f} MiB"


def test_the_bomb_is_what_it_claims() -> None:
    """The frame above is small and inflates to what it says (a check of the test's tool)."""
    reader = StreamReader()
    reader.feed_data(bomb(1_000_000))
    parser = Frame.parse(reader.read_exact, mask=True, extensions=[deflate()])
    with pytest.raises(StopIteration) as parsed:
        next(parser)
    frame: Frame = parsed.value.value
    assert len(reader.buffer) == 0
    assert len(frame.data) == 1_000_000 and json.loads(bytes(frame.data) + b'"}')["op"] == "open"
    assert len(bomb(1_000_000)) < 1_100
