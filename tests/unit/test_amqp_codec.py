"""The AMQP type codec and the message mapping (wsq.amqp.codec, wsq.amqp.messages), checked
against python-qpid-proton's own codec both ways, and against hostile bytes."""

from __future__ import annotations

import contextlib
import re
import struct
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from proton import Data, Message

from wsq.amqp import messages
from wsq.amqp.codec import (
    AmqpDecodeError,
    Described,
    Symbol,
    SymbolArray,
    Timestamp,
    Uint,
    Ulong,
    decode,
    decode_all,
    encode,
)


def _nested(depth: int) -> bytes:
    value = b"\x40"
    for _ in range(depth):
        value = bytes((0xC0, len(value) + 1, 1)) + value
    return value


NESTED = _nested(40)

VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    127,
    -129,
    2**40,
    -(2**63),
    Uint(0),
    Uint(7),
    Uint(70_000),
    Ulong(0),
    Ulong(9),
    Ulong(2**64 - 1),
    1.5,
    "",
    "héllo",
    "x" * 300,
    Symbol("amqp:open:list"),
    b"\x00\xff" * 200,
    [],
    [1, "a", [None, {"k": [2]}]],
    {"a": 1, Symbol("b"): "c"},
    {str(i): i for i in range(200)},
    Described(Ulong(0x77), {"x": 1}),
    Timestamp(1_732_200_000_123),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_a_value_round_trips(value: Any) -> None:
    data = encode(value)
    decoded, end = decode(data)
    assert end == len(data)
    assert decoded == value
    assert type(decoded) is type(value) or isinstance(value, int)


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_proton_reads_what_we_encode(value: Any) -> None:
    data = Data()
    data.decode(encode(value))
    got = data.get_object()
    if isinstance(value, Described):
        assert got.descriptor == value.descriptor and got.value == value.value
    elif isinstance(value, dict):
        assert {str(k): v for k, v in got.items()} == {str(k): v for k, v in value.items()}
    else:
        assert got == value


def test_we_read_what_proton_encodes() -> None:
    data = Data()
    data.put_object({"a": [1, 2.5, "x", None, True], "b": {"c": b"\x01"}})
    assert decode(data.encode())[0] == {"a": [1, 2.5, "x", None, True], "b": {"c": b"\x01"}}
    arr = encode(SymbolArray(("PLAIN", "ANONYMOUS")))
    data = Data()
    data.decode(arr)
    assert list(data.get_object()) == ["PLAIN", "ANONYMOUS"]
    assert decode(arr)[0] == ["PLAIN", "ANONYMOUS"]


@pytest.mark.parametrize(
    "data, why",
    [
        (b"", "past the end"),
        (b"\xa1\x05abc", "past the end"),
        (b"\xb1\xff\xff\xff\xffab", "past the end"),
        (b"\xc0\x03\xff\x40\x40", "counts more"),
        (b"\xd0\x00\x00\x00\x08\xff\xff\xff\xff\x40\x40\x40\x40", "counts more"),
        (b"\xc1\x04\x03\x40\x40\x40", "even number"),
        (b"\xc0\x04\x01\x40\x40\x40", "does not match"),
        (b"\xa1\x02\xff\xfe", "not valid text"),
        (b"\xa3\x02\xc3\xa9", "not valid text"),
        (b"\x33", "unknown type"),
        (b"\x00\x00\x53\x01\x40", "may not be described"),
        (NESTED, "nested too deeply"),
    ],
)
def test_hostile_bytes_are_refused_with_a_decode_error(data: bytes, why: str) -> None:
    with pytest.raises(AmqpDecodeError, match=why):
        decode(data)


def _list32(count: int, body: bytes) -> bytes:
    return b"\xd0" + struct.pack(">II", len(body) + 4, count) + body


N = 100_000
# Each makes one Python container per byte or so: 56-64 bytes of memory per byte received.
AMPLIFIERS = {
    "a list of empty lists": _list32(N, b"\x45" * N),
    "an array of described booleans": b"\xf0"
    + struct.pack(">II", N + 8, N)
    + b"\x00\x53\x01\x56"
    + b"\x00" * N,
    "a list of empty list8s": _list32(N, b"\xc0\x01\x00" * N),
}


@pytest.mark.parametrize("name", list(AMPLIFIERS))
def test_values_that_cost_more_memory_than_their_bytes_allow_are_refused(name: str) -> None:
    data = AMPLIFIERS[name]
    with pytest.raises(AmqpDecodeError, match="than the bytes allow"):
        decode(data)
    with pytest.raises(AmqpDecodeError, match="than the bytes allow"):
        decode_all(data + data)  # sections share one budget


def test_containers_at_one_per_four_bytes_still_decode() -> None:
    # The bound's edge: an empty list among three nulls, and a list of described nulls.
    assert decode(_list32(4 * N, b"\x45\x40\x40\x40" * N))[0][:4] == [[], None, None, None]
    described = decode(_list32(N, b"\x00\x53\x01\x40" * N))[0]
    assert len(described) == N and described[0] == Described(1, None)
    # Sections: the many small data sections of one message still fit.
    assert len(decode_all(b"\x00\x53\x75\xa0\x00" * N)) == N


def _sections(message: Message) -> bytes:
    return bytes(message.encode())


def test_a_message_from_proton_becomes_the_wsq_publish() -> None:
    msg = Message(
        body={"text": "hi"},
        subject="orders.eu",
        id="m-1",
        content_type="application/json",
        properties={"k": 1, "s": "v"},
        ttl=60,
    )
    item = messages.publish_item(4, False, _sections(msg))
    assert item.error is None
    assert item.body == '{"text":"hi"}'
    assert (item.props.subject, item.props.message_id) == ("orders.eu", "m-1")
    assert item.props.headers == {"k": 1, "s": "v"}
    assert item.props.ttl_ms == 60_000
    assert item.props.content_type == "application/json"


@pytest.mark.parametrize(
    "message, error",
    [
        (Message(body=b"\x00binary"), "no JSON form|binary|bytes"),
        (Message(body="x", subject="not a subject!"), "properties.subject"),
        (Message(body=1, properties={"h": b"\x01"}), "bytes"),
        (Message(body=float("nan")), "not finite"),
    ],
)
def test_a_message_that_breaks_a_rule_is_an_item_with_an_error(
    message: Message, error: str
) -> None:
    item = messages.publish_item(0, False, _sections(message))
    assert item.error is not None
    assert re.search(error, item.error), item.error


def test_a_json_data_section_is_the_body_and_other_data_is_refused() -> None:
    data = Described(Ulong(0x75), b'{"a":[1]}')
    props = Described(Ulong(0x73), [None, None, None, None, None, None, Symbol("text/plain")])
    assert messages.publish_item(0, False, encode(data)).body == '{"a":[1]}'
    refused = messages.publish_item(0, False, encode(props) + encode(data))
    assert refused.error is not None and "content-type" in refused.error
    garbage = messages.publish_item(0, False, encode(Described(Ulong(0x75), b"\xff")))
    assert garbage.error is not None and "not JSON" in garbage.error


def test_a_delivery_tail_becomes_a_message_proton_reads() -> None:
    tail = (
        '"id":"17-2","body":{"a":[1,2]},"props":{"ts":17,"subject":"s.t","message_id":"m",'
        '"content_type":"application/json","headers":{"h":"v","big":18446744073709551616},'
        '"publisher":"alice","expires":60017,"redelivered":2}}'
    )
    msg = Message()
    msg.decode(messages.encoded_delivery(tail))
    assert msg.body == {"a": [1, 2]}
    assert (msg.subject, msg.id, msg.content_type) == ("s.t", "m", "application/json")
    assert msg.properties == {"h": "v", "big": float(2**64)}
    assert msg.annotations == {"x-opt-wsq-id": "17-2", "x-opt-wsq-publisher": "alice"}
    assert msg.delivery_count == 2 and not msg.first_acquirer
    assert msg.creation_time == pytest.approx(0.017)
    assert msg.expiry_time == pytest.approx(60.017)
    assert messages.encoded_delivery(tail) is messages.encoded_delivery(tail)  # cached
    assert decode_all(messages.encoded_delivery(tail))[-1] == Described(Ulong(0x77), {"a": [1, 2]})


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_decode_or_raise_a_decode_error_only(data: bytes) -> None:
    with contextlib.suppress(AmqpDecodeError):
        decode_all(data)


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_a_json_value_round_trips_through_amqp(value: Any) -> None:
    data = encode(messages.from_json(value))
    assert messages.to_json(decode(data)[0]) == value
    # and a truncated encoding is a decode error, never another exception
    if len(data) > 1:
        with pytest.raises(AmqpDecodeError):
            decode(data[:-1])
