"""A client's heartbeat ``[]`` read alone is answered by wsq's WebSocket protocol itself, through
the gateway's ``on_heartbeat`` (which notes that the socket is not silent), with no parsing and
no message for the gateway's task to wake up for; anything else, and a heartbeat the gateway does
not take (before the open, or while closing), is read as any message. On a stand-in transport
(test_ws_protocol_pending); end to end: tests/integration/test_transport_and_connection.py."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator

import pytest
from test_ws_protocol_pending import SERVER, Socket

from wsq.admission import Admission
from wsq.ws_protocol import is_heartbeat_frame


def masked(text: bytes, key: bytes = b"\x5a\x17\xc3\x09") -> bytes:
    """A client's final text frame of ``text`` (under 126 bytes), masked with ``key``."""
    assert len(text) < 126
    payload = bytes(b ^ key[i % 4] for i, b in enumerate(text))
    return struct.pack("!BB", 0x81, 0x80 | len(text)) + key + payload


class Heard:
    """The gateway's side of ``on_heartbeat``: counts the heartbeats, takes them or not."""

    def __init__(self, take: bool = True) -> None:
        self.take = take
        self.count = 0

    def __call__(self) -> bool:
        self.count += 1
        return self.take


@pytest.fixture
async def socket() -> AsyncIterator[Socket]:
    sock = Socket(Admission(SERVER))
    await sock.upgrade()
    sock.ticket.authenticated()
    yield sock
    await sock.end()


def test_a_heartbeat_frame_is_told_by_its_eight_bytes_whatever_its_mask() -> None:
    for key in (b"\0\0\0\0", b"\xff\xff\xff\xff", b"\x5a\x17\xc3\x09"):
        assert is_heartbeat_frame(masked(b"[]", key))
    assert not is_heartbeat_frame(masked(b"{}"))
    assert not is_heartbeat_frame(masked(b"[ ]"))
    assert not is_heartbeat_frame(masked(b"[]")[:7])
    unmasked = b"\x81\x02[]"
    assert not is_heartbeat_frame(unmasked + b"\0\0")
    binary = b"\x82" + masked(b"[]")[1:]
    assert not is_heartbeat_frame(binary)
    fragment = b"\x01" + masked(b"[]")[1:]  # not final
    assert not is_heartbeat_frame(fragment)


async def test_a_heartbeat_read_alone_goes_to_the_gateway_without_a_message(
    socket: Socket,
) -> None:
    heard = socket.protocol.on_heartbeat = Heard()
    for _ in range(3):
        socket.protocol.data_received(masked(b"[]"))
    assert heard.count == 3
    assert socket.protocol.queue.empty()
    # The parser is where it was: the next message is read as ever.
    socket.protocol.data_received(masked(b'{"op":"begin","ch":1}'))
    assert (await socket.take())["text"] == '{"op":"begin","ch":1}'
    assert heard.count == 3


async def test_a_heartbeat_the_gateway_does_not_take_is_read_as_a_message(
    socket: Socket,
) -> None:
    heard = socket.protocol.on_heartbeat = Heard(take=False)
    socket.protocol.data_received(masked(b"[]"))
    assert heard.count == 1
    assert (await socket.take())["text"] == "[]"


async def test_without_a_gateway_hook_a_heartbeat_is_read_as_a_message(socket: Socket) -> None:
    assert socket.protocol.on_heartbeat is None
    socket.protocol.data_received(masked(b"[]"))
    assert (await socket.take())["text"] == "[]"


async def test_a_heartbeat_split_over_reads_or_read_with_more_is_read_as_a_message(
    socket: Socket,
) -> None:
    heard = socket.protocol.on_heartbeat = Heard()
    beat = masked(b"[]")
    socket.protocol.data_received(beat[:4])
    socket.protocol.data_received(beat[4:])
    assert (await socket.take())["text"] == "[]"
    socket.protocol.data_received(beat + masked(b"[]"))
    assert (await socket.take())["text"] == "[]"
    assert (await socket.take())["text"] == "[]"
    assert heard.count == 0


async def test_eight_bytes_inside_a_frame_that_look_like_a_heartbeat_are_its_payload(
    socket: Socket,
) -> None:
    # A frame's head and mask in one read, its 8 bytes of payload in the next: those bytes are
    # a heartbeat frame's, but the parser waits inside a frame, so they are the payload.
    heard = socket.protocol.on_heartbeat = Heard()
    looks_like_a_beat = bytes((0x81, 0x82, 0x00, 0x00, 0x83, 0x8C, 0x5B, 0x5D))
    text = b"xyabzw:?"
    key = bytes(looks_like_a_beat[i] ^ text[i] for i in range(4))
    assert all(looks_like_a_beat[i] ^ key[i % 4] == text[i] for i in range(8))
    assert is_heartbeat_frame(looks_like_a_beat)
    socket.protocol.data_received(struct.pack("!BB", 0x81, 0x80 | 8) + key)
    socket.protocol.data_received(looks_like_a_beat)
    assert (await socket.take())["text"] == text.decode()
    assert heard.count == 0


async def test_a_heartbeat_inside_a_fragmented_message_is_read_as_before(socket: Socket) -> None:
    # A final text frame where a continuation was due breaks RFC 6455: websockets fails the
    # connection (close 1002). Taken as a heartbeat, it would have been let through.
    heard = socket.protocol.on_heartbeat = Heard()
    first_part = b"\x01" + masked(b'["a"')[1:]  # text, not final
    socket.protocol.data_received(first_part)
    socket.protocol.data_received(masked(b"[]"))
    assert heard.count == 0
    assert socket.transport.written.startswith(b"\x88")  # websockets' close
    assert socket.transport.written[2:4] == (1002).to_bytes(2, "big")
