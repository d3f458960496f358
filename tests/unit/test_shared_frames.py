"""The write path of a fan-out batch: a compact frame of a whole broker batch keeps its messages
as one shared, once-encoded body (``SharedTails``, ``SharedFrame``); the outbox hands the writer
UTF-8 pieces (``next_output``) that make exactly the text ``next_message`` gives; the WebSocket
protocol frames them with a head of its own (``text_frame_head``, ``write_now``) that is the
frame websockets would have written."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from protocol_helpers import OPEN_ANSWER, Harness, decode
from test_ws_protocol_pending import SERVER, Socket
from websockets.frames import Frame, Opcode

from wsq.admission import Admission
from wsq.core.messages import Message
from wsq.core.wire import (
    SharedFrame,
    SharedTails,
    compact_frames,
    compact_head,
    compact_head_of,
    copy_tail,
)
from wsq.protocol.connection import ServerConnection
from wsq.ws_protocol import text_frame_head


def opened(compact: bool | None, **limits: Any) -> Harness:
    h = Harness(**limits)
    frame: dict[str, Any] = {"op": "open", "token": "token"}
    if compact is not None:
        frame["compact"] = compact
    h.send(frame)
    h.events()
    h.conn.accept_open(OPEN_ANSWER)
    h.conn.data_to_send()
    h.begin(1)
    return h


def tails_of(n: int, start: int = 0, body: str = "x") -> SharedTails:
    """Tails of messages whose bodies hold ``body`` as it is (not escaped: the server keeps a
    body's JSON text as published, UTF-8 on the wire)."""
    tails = SharedTails()
    for i in range(start, start + n):
        text = json.dumps({"n": i, "t": body * (i % 7)}, ensure_ascii=False)
        tails.append(copy_tail(Message(f"5-{i}", text, ts=1_732_200_000_000, publisher="bob")))
    return tails


def drain_text(conn: ServerConnection, max_bytes: int | None) -> list[str]:
    return conn.data_to_send(max_bytes)


def drain_pieces(conn: ServerConnection, max_bytes: int | None) -> list[list[bytes]]:
    out: list[list[bytes]] = []
    while (pieces := conn.next_output(max_bytes)) is not None:
        out.append(pieces)
    return out


def scenario(h: Harness, kind: str) -> None:
    """Queue a mix of frames on ``h``'s connection."""
    a = h.attach_receiver(1, 0, credit=10_000)
    b = h.attach_receiver(1, 1, settled=True, credit=10_000)
    if kind == "one shared batch":
        h.conn.send_transfers(a, tails_of(100))
    elif kind == "shared batches and control frames":
        h.conn.send_transfers(a, tails_of(30))
        h.conn.heartbeat()  # nothing: frames go out anyway
        h.conn.send_transfers(b, tails_of(5, 30))
        h.conn.detach(b)
        h.conn.send_transfers(a, tails_of(12, 35, body="é€𝄞"))  # characters of 2, 3 and 4 bytes
    elif kind == "a part of a batch and a whole one":
        tails = tails_of(20)
        h.conn.send_transfers(a, tails[:7])  # a slice: a plain list, joined per socket
        h.conn.send_transfers(b, tails)
    elif kind == "heartbeat":
        h.conn.heartbeat()
    else:
        raise AssertionError(kind)


KINDS = [
    "one shared batch",
    "shared batches and control frames",
    "a part of a batch and a whole one",
    "heartbeat",
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("compact", [True, False, None])
@pytest.mark.parametrize("max_bytes", [None, 300, 2_000, 65_536])
def test_the_pieces_written_are_the_text_of_the_same_messages(
    kind: str, compact: bool | None, max_bytes: int | None
) -> None:
    as_text, as_pieces = opened(compact), opened(compact)
    scenario(as_text, kind)
    scenario(as_pieces, kind)
    texts = drain_text(as_text.conn, max_bytes)
    pieces = drain_pieces(as_pieces.conn, max_bytes)
    assert [b"".join(p) for p in pieces] == [t.encode() for t in texts]
    assert all(type(p) is bytes for message_ in pieces for p in message_)
    for text in texts:
        decode(text)  # every message is standard JSON
    assert as_text.conn.out_bytes == as_pieces.conn.out_bytes == 0
    if max_bytes is not None:
        # Batches stay within the size asked for (a lone larger frame goes alone).
        for text in texts:
            value = decode(text)
            assert len(text) <= max_bytes or not isinstance(value, list) or len(value) == 1


def test_a_batch_is_encoded_once_for_every_compact_socket() -> None:
    tails = tails_of(100)
    sockets = [opened(True) for _ in range(3)]
    for h in sockets:
        link = h.attach_receiver(1, 0, credit=1000)
        h.conn.data_to_send()
        h.conn.send_transfers(link, tails)
    outputs = [h.conn.next_output() for h in sockets]
    # Each socket's own head, then the batch's body: the same bytes object for all of them.
    assert all(p is not None and len(p) == 2 for p in outputs)
    bodies = {id(p[1]) for p in outputs if p is not None}
    assert len(bodies) == 1
    frame = json.loads(b"".join(outputs[0] or []))
    assert frame["op"] == "transfers" and len(frame["msgs"]) == 100
    assert [m["id"] for m in frame["msgs"]] == [f"5-{i}" for i in range(100)]


def test_a_shared_batch_longer_than_max_frame_bytes_is_split_as_any_other() -> None:
    tails = tails_of(100)
    whole = opened(True, max_frame_bytes=4096)
    listed = opened(True, max_frame_bytes=4096)
    for h, given in ((whole, tails), (listed, list(tails))):
        link = h.attach_receiver(1, 0, credit=1000)
        h.conn.data_to_send()
        h.conn.send_transfers(link, given)
    texts = whole.conn.data_to_send(4096)
    assert texts == listed.conn.data_to_send(4096)
    frames = [f for t in texts for f in (decode(t) if t.startswith("[") else [decode(t)])]
    assert len(frames) > 1 and all(f["op"] == "transfers" for f in frames)
    assert sum(len(f["msgs"]) for f in frames) == 100


def test_a_shared_frame_counts_its_characters_not_its_bytes() -> None:
    tails = tails_of(3, body="€")  # 3 bytes each in UTF-8
    h = opened(True)
    link = h.attach_receiver(1, 0, credit=10)
    h.conn.data_to_send()
    h.conn.send_transfers(link, tails)
    text = h.conn.data_to_send()[0]
    h.conn.send_transfers(link, tails)
    assert h.conn.out_bytes == len(text)  # the same length: only the numbering differs
    frame = h.conn._out[0]
    assert isinstance(frame, SharedFrame) and len(frame.head + frame.body) > len(frame)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65_535, 65_536, 1_048_576])
def test_the_frame_head_is_what_websockets_writes(size: int) -> None:
    data = b"a" * size
    assert text_frame_head(size) + data == Frame(Opcode.TEXT, data).serialize(mask=False)


async def test_write_now_writes_one_text_frame_of_the_pieces_in_order() -> None:
    socket = Socket(Admission(SERVER))
    await socket.upgrade()
    pieces = [b'{"op":"transfers","msgs":[', b"{" + "é".encode() * 200 + b"}", b"]}"]
    socket.protocol.write_now(pieces)
    written = socket.transport.written
    payload = b"".join(pieces)
    assert written == Frame(Opcode.TEXT, payload).serialize(mask=False)
    socket.protocol.transport.close()
    await asyncio.sleep(0)


@pytest.mark.parametrize("settled", [True, False])
def test_a_links_compact_head_is_its_transfer_head_with_the_compact_op(settled: bool) -> None:
    h = opened(True)
    link = h.attach_receiver(1, 7, settled=settled, credit=1)
    assert compact_head_of(link.prefix) == compact_head(1, 7, settled)


def test_a_shared_frame_is_the_text_the_compact_form_has_for_its_messages() -> None:
    tails = tails_of(40, body="é")
    shared, listed = opened(True), opened(True)
    for h, given in ((shared, tails), (listed, list(tails))):
        link = h.attach_receiver(1, 2, credit=100)
        h.conn.send_transfers(link, given)
    assert isinstance(shared.conn._out[0], SharedFrame)
    assert not isinstance(listed.conn._out[0], SharedFrame)
    (expected,) = compact_frames(compact_head(1, 2, False), 0, list(tails), 1_048_576)
    assert listed.conn.data_to_send() == [expected]
    assert shared.conn.next_output() == [
        b'{"op":"transfers","ch":1,"handle":2,"settled":false,"delivery":0,"msgs":[',
        expected.encode()[
            len('{"op":"transfers","ch":1,"handle":2,"settled":false,"delivery":0,"msgs":[') :
        ],
    ]
