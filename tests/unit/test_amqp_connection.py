"""The AMQP connection state machine (wsq.amqp.connection), sans-I/O: python-qpid-proton's
engine as the client, bytes pumped between the two in memory, and the gateway's answers played
by a small stand-in (``Server``)."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from amqp_proton import ProtonClient
from proton import Delivery, Endpoint, Message, Terminus, symbol
from proton import Described as PDescribed
from proton import Link as ProtonLink

from wsq.amqp import frames as F
from wsq.amqp.codec import Described, Symbol, Uint, Ulong
from wsq.amqp.connection import AmqpConnection
from wsq.core.errors import Unauthorized
from wsq.core.messages import Outcome
from wsq.protocol.connection import Limits
from wsq.protocol.events import (
    AttachRequested,
    ConnectionEnded,
    CreditGranted,
    DeliveriesSettled,
    Event,
    LinkEnded,
    OpenRequested,
    PublishRequested,
)
from wsq.protocol.state import ConnectionState, Link

GOOD = "good-token"
TAIL = '"id":"5-0","body":{"a":1},"props":{"ts":5,"subject":"s.t","publisher":"p"}}'


class Server:
    """Plays the gateway: accepts the token ``GOOD``, every attach, every publish."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.conn = AmqpConnection(limits or Limits(max_frame_bytes=65_536))
        self.events: list[Event] = []
        self.published: list[str] = []

    def answer(self) -> None:
        conn = self.conn
        while (event := conn.next_event()) is not None:
            self.events.append(event)
            if isinstance(event, OpenRequested):
                if event.token == GOOD:
                    conn.accept_open({"node": "n1", "idle": 30_000, "tenant": "t", "sub": "s"})
                else:
                    conn.reject_open(Unauthorized("bad token"))
            elif isinstance(event, AttachRequested):
                conn.accept_attach(event.link, from_="0-0", recovered=True)
            elif isinstance(event, PublishRequested):
                results = []
                for item in event.items:
                    if item.error is None:
                        self.published.append(item.body)
                        results.append((item, f"9-{len(self.published)}", None))
                    else:
                        results.append((item, None, Unauthorized(item.error)))
                conn.settle_publish(event.link, results)

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


def pump(client: ProtonClient, server: Server, rounds: int = 20) -> None:
    for _ in range(rounds):
        data = client.output()
        if data:
            server.conn.receive_data(data)
        server.answer()
        out = server.conn.next_message()
        while out is not None:
            client.feed(out)
            out = server.conn.next_message()
        if not data and not server.conn.has_output:
            return


def opened(limits: Limits | None = None) -> tuple[ProtonClient, Server]:
    client = ProtonClient(GOOD)
    server = Server(limits)
    pump(client, server)
    assert client.opened
    return client, server


def test_sasl_plain_carries_the_token_and_the_open_names_the_principal() -> None:
    client, server = opened()
    [open_] = server.of(OpenRequested)
    assert open_.token == GOOD
    assert server.conn.state is ConnectionState.OPEN
    props = client.connection.remote_properties
    assert props[Symbol("wsq-tenant")] == "t" and props[Symbol("wsq-sub")] == "s"
    assert client.connection.remote_container == "n1"


def test_a_refused_token_fails_sasl_and_nothing_else_happens() -> None:
    client = ProtonClient("bad-token")
    server = Server()
    pump(client, server)
    assert not client.opened
    assert client.transport.closed or client.transport.condition is not None
    assert server.of(ConnectionEnded)
    assert not server.of(AttachRequested)


def test_amqp_without_sasl_is_answered_with_the_sasl_header_and_ends() -> None:
    server = Server()
    server.conn.receive_data(F.AMQP_HEADER)
    server.answer()
    assert server.conn.next_message() == F.SASL_HEADER
    assert server.of(ConnectionEnded)


def test_a_sender_publishes_and_every_transfer_is_settled_with_credit_refilled() -> None:
    client, server = opened()
    snd = client.sender("chat.room1")
    pump(client, server)
    assert snd.credit == Limits().sender_credit
    deliveries = [
        client.send(snd, Message(body={"n": i}, subject="a.b", id=f"m{i}")) for i in range(3)
    ]
    pump(client, server)
    assert server.published == ['{"n":0}', '{"n":1}', '{"n":2}']
    assert [d.remote_state for d in deliveries] == [Delivery.ACCEPTED] * 3
    assert all(d.settled for d in deliveries)  # settled by us (remote)
    assert snd.credit == Limits().sender_credit


def test_more_transfers_at_hand_than_one_publish_takes_are_several_publishes_in_order() -> None:
    # The credit may be larger than one broker write: max_publish_batch splits, nothing else.
    client, server = opened(Limits(max_frame_bytes=65_536, sender_credit=10, max_publish_batch=4))
    snd = client.sender("chat.room1")
    pump(client, server)
    deliveries = [client.send(snd, Message(body=i)) for i in range(10)]
    pump(client, server)
    sizes = [len(e.items) for e in server.of(PublishRequested)]
    assert sizes == [4, 4, 2]
    assert server.published == [str(i) for i in range(10)]
    assert [d.remote_state for d in deliveries] == [Delivery.ACCEPTED] * 10
    assert snd.credit == 10
    assert not server.of(LinkEnded)


def test_a_receiver_gets_transfers_within_its_credit_and_settles_move_deliveries() -> None:
    client, server = opened()
    rcv = client.receiver("jobs.x::workers", credit=2, mode="move")
    pump(client, server)
    [attach] = server.of(AttachRequested)
    link: Link = attach.link
    assert (link.mode, link.group, link.address) == ("move", "workers", "jobs.x")
    assert rcv.remote_source.distribution_mode == rcv.source.DIST_MODE_MOVE
    assert sum(e.credit for e in server.of(CreditGranted)) == 2
    assert link.credit == 2
    server.conn.send_transfers(link, [TAIL, TAIL], ["5-0", "5-1"])
    pump(client, server)
    got = ProtonClient.received(rcv)
    assert [m.body for _, m in got] == [{"a": 1}, {"a": 1}]
    assert got[0][1].subject == "s.t"
    assert got[0][1].annotations == {Symbol("x-opt-wsq-id"): "5-0", "x-opt-wsq-publisher": "p"}
    assert link.credit == 0
    got[0][0].update(Delivery.ACCEPTED)
    got[0][0].settle()
    got[1][0].update(Delivery.RELEASED)
    got[1][0].settle()
    pump(client, server)
    settled = [(e.ids, e.outcome) for e in server.of(DeliveriesSettled)]
    assert settled == [(["5-0"], Outcome.ACCEPTED), (["5-1"], Outcome.RELEASED)]


def test_a_transfer_beyond_the_credit_detaches_the_link_only() -> None:
    client, server = opened(Limits(max_frame_bytes=65_536, sender_credit=2))
    snd = client.sender("chat.room1")
    pump(client, server)
    # proton respects credit; the attacker does not: write the third transfer by hand.
    for i in range(2):
        client.send(snd, Message(body=i))
    pump(client, server)
    assert snd.credit == 2
    for i in range(3):
        # delivery ids 2, 3, 4: credit is 2, so the third one is past it
        fields = [Uint(0), Uint(2 + i), b"x", Uint(0), True]
        server.conn.receive_data(F.frame(0, F.TRANSFER, fields, _value_section(i)))
    server.answer()
    ended = server.of(LinkEnded)
    assert len(ended) == 1
    out = b"".join(iter(server.conn.next_message, None))
    assert b"amqp:link:transfer-limit-exceeded" in out
    assert server.conn.state is ConnectionState.OPEN


def test_a_transfer_past_the_credit_is_refused_though_an_earlier_publish_refilled() -> None:
    # Gathered against the credit whole, published in pieces of max_publish_batch: the refill
    # of the first piece must not excuse the transfer past the credit in the same input.
    client, server = opened(Limits(max_frame_bytes=65_536, sender_credit=6, max_publish_batch=4))
    client.sender("chat.room1")
    pump(client, server)
    data = b"".join(
        F.frame(0, F.TRANSFER, [Uint(0), Uint(i), b"t%d" % i, Uint(0), True], _value_section(i))
        for i in range(7)
    )
    server.conn.receive_data(data)
    server.answer()
    assert [len(e.items) for e in server.of(PublishRequested)] == [4, 2]
    assert len(server.of(LinkEnded)) == 1
    out = b"".join(iter(server.conn.next_message, None))
    assert b"amqp:link:transfer-limit-exceeded" in out


def _value_section(value: int) -> bytes:
    from wsq.amqp.codec import encode

    return encode(Described(Ulong(F.AMQP_VALUE), value))


def test_sessions_are_bounded_by_channel_max_and_a_channel_past_it_closes() -> None:
    client, server = opened(Limits(max_frame_bytes=65_536, max_sessions=2))
    assert client.transport.remote_channel_max == 1
    extra = [client.connection.session() for _ in range(2)]
    for s in extra:
        s.open()
    pump(client, server)
    assert extra[0].state & Endpoint.REMOTE_ACTIVE
    assert not extra[1].state & Endpoint.REMOTE_ACTIVE  # proton keeps to channel-max
    assert len(server.conn.sessions) == 2
    # A client that does not: a begin on channel 5.
    server.conn.receive_data(F.frame(5, F.BEGIN, [None, Uint(0), Uint(10), Uint(10)]))
    server.answer()
    out = b"".join(iter(server.conn.next_message, None))
    assert b"amqp:connection:framing-error" in out
    assert server.of(ConnectionEnded)


def test_links_past_the_limit_are_refused_at_link_scope() -> None:
    client, server = opened(Limits(max_frame_bytes=65_536, max_links_per_session=2))
    links = [client.receiver(f"a.n{i}") for i in range(3)]
    pump(client, server)
    assert [bool(lk.state & Endpoint.REMOTE_CLOSED) for lk in links] == [False, False, True]
    assert links[2].remote_condition.name == "amqp:resource-limit-exceeded"


def test_an_invalid_address_or_pattern_is_refused_at_link_scope() -> None:
    client, server = opened()
    bad = client.receiver("not an address!")
    pattern = client.receiver(
        "a.b",
        filters={symbol("s"): PDescribed(symbol("wsq:subject-filter:string"), "a..b")},
    )
    good = client.receiver("a.b")
    pump(client, server)
    for link in (bad, pattern):
        assert link.state & Endpoint.REMOTE_CLOSED
        assert link.remote_condition.name == "amqp:invalid-field"
    assert good.state & Endpoint.REMOTE_ACTIVE


def test_a_frame_larger_than_max_frame_bytes_closes_the_connection() -> None:
    _client, server = opened(Limits(max_frame_bytes=4096))
    server.conn.receive_data(struct.pack(">IBBH", 10_000, 2, 0, 0) + b"\x00" * 100)
    server.answer()
    out = b"".join(iter(server.conn.next_message, None))
    assert b"amqp:connection:framing-error" in out
    [ended] = server.of(ConnectionEnded)
    assert ended.error["condition"] == "wsq:frame-too-large"


def test_a_message_larger_than_max_frame_bytes_across_frames_detaches_its_link() -> None:
    limits = Limits(max_frame_bytes=4096)
    client, server = opened(limits)
    client.transport.max_frame_size = 1024
    snd = client.sender("big.one")
    pump(client, server)
    client.send(snd, Message(body="x" * 10_000))
    pump(client, server)
    assert snd.state & Endpoint.REMOTE_CLOSED
    assert snd.remote_condition.name == "amqp:link:message-size-exceeded"
    assert server.published == []


def test_a_frame_that_does_not_decode_is_a_decode_error() -> None:
    _client, server = opened()
    garbage = b"\x00\x53\x11\xc0\xff\x05"  # begin whose list claims 255 bytes
    server.conn.receive_data(struct.pack(">IBBH", 8 + len(garbage), 2, 0, 0) + garbage)
    server.answer()
    out = b"".join(iter(server.conn.next_message, None))
    assert b"amqp:decode-error" in out


@pytest.mark.parametrize("body", [b"\x00\x01", b"\xff" * 3])
def test_a_message_that_is_not_json_is_rejected_not_fatal(body: bytes) -> None:
    client, server = opened()
    snd = client.sender("x.y")
    pump(client, server)
    delivery = snd.delivery(b"t")
    snd.send(body)
    snd.advance()
    pump(client, server)
    assert delivery.remote_state == Delivery.REJECTED
    assert snd.state & Endpoint.REMOTE_ACTIVE


def test_the_client_incoming_window_holds_transfers_until_it_opens() -> None:
    client, server = opened()
    rcv = client.receiver("w.x", credit=10)
    pump(client, server)
    [attach] = server.of(AttachRequested)
    session = attach.link.session
    session.remote_limit = session.next_outgoing + 1  # as a client with a window of one
    server.conn.send_transfers(attach.link, [TAIL, TAIL, TAIL])
    assert len(session.held) == 2
    held = sum(len(d) for _, d in session.held)
    assert server.conn.out_bytes >= held
    pump(client, server)
    assert len(ProtonClient.received(rcv)) == 1
    # The client's session flow opens its window: what waited goes.
    window = [Uint(session.next_outgoing), Uint(100), Uint(0), Uint(100)]
    server.conn.receive_data(F.frame(session.ch, F.FLOW, window))
    pump(client, server)
    assert len(ProtonClient.received(rcv)) == 2
    assert session.held == []


def test_unfinished_messages_on_many_links_are_bounded_together() -> None:
    limits = Limits(max_frame_bytes=4096)
    client, server = opened(limits)
    senders = [client.sender(f"big.n{i}") for i in range(3)]
    pump(client, server)
    chunk = b"\xa1\xff" + b"x" * 255  # part of a string section; never finished
    for i in range(3):
        fields = [Uint(i), Uint(i), b"t", Uint(0), False, True]  # more: true
        for _ in range(6):
            server.conn.receive_data(F.frame(0, F.TRANSFER, fields, chunk))
            fields = [Uint(i), None, None, None, False, True]
    server.answer()
    # 3 x 6 x 257 bytes is past 4096 (one link's 1542 is not): the link that crossed it goes.
    assert [bool(s.state & Endpoint.REMOTE_CLOSED) for s in senders] == [False, False, False]
    pump(client, server)
    closed = [s for s in senders if s.state & Endpoint.REMOTE_CLOSED]
    assert [s.remote_condition.name for s in closed] == ["amqp:link:message-size-exceeded"]
    assert server.conn._partial_bytes <= 4096
    assert server.published == []


def test_a_delivery_larger_than_the_client_max_frame_size_is_split_into_frames() -> None:
    client = ProtonClient(GOOD)
    client.transport.max_frame_size = 1024
    server = Server()
    pump(client, server)
    rcv = client.receiver("big.x", credit=1)
    pump(client, server)
    [attach] = server.of(AttachRequested)
    big = '"id":"5-0","body":"' + "y" * 5000 + '","props":{"ts":5}}'
    server.conn.send_transfers(attach.link, [big])
    frames = []
    while (out := server.conn.next_message()) is not None:
        frames.append(out)
        client.feed(out)
    sizes = []
    data = b"".join(frames)
    while data:
        size = struct.unpack_from(">I", data)[0]
        sizes.append(size)
        data = data[size:]
    assert len(sizes) >= 5 and max(sizes) <= 1024
    [(_, message)] = ProtonClient.received(rcv)
    assert message.body == "y" * 5000


def test_heartbeats_are_empty_frames_and_only_once_open() -> None:
    server = Server()
    server.conn.heartbeat()
    assert server.conn.next_message() is None
    client = ProtonClient(GOOD, idle_timeout=10)
    pump(client, server)
    assert server.conn.client_idle_ms == 5_000  # proton advertises half its own timeout
    server.conn.heartbeat()
    assert server.conn.next_message() == F.EMPTY_FRAME


def _anonymous() -> tuple[ProtonClient, Server]:
    client = ProtonClient(GOOD)
    client.transport.sasl().allowed_mechs("ANONYMOUS")
    server = Server()
    pump(client, server)
    assert client.opened
    return client, server


def _put_token(client: ProtonClient, snd: Any, token: Any, op: str = "put-token") -> None:
    client.send(snd, Message(id="r1", properties={"operation": op, "type": "jwt"}, body=token))


def test_anonymous_then_a_put_token_on_cbs_opens_and_its_answer_correlates() -> None:
    client, server = _anonymous()
    assert server.conn.state is ConnectionState.AWAIT_OPEN
    early = client.receiver("a.b", credit=1)
    replies = client.receiver("$cbs", credit=2)
    requests = client.sender("$cbs")
    pump(client, server)
    assert early.remote_condition.name == "amqp:unauthorized-access"
    assert not server.of(AttachRequested), "neither the $cbs links nor a link before the token"
    _put_token(client, requests, GOOD)
    pump(client, server)
    [open_] = server.of(OpenRequested)
    assert open_.token == GOOD
    assert server.conn.state is ConnectionState.OPEN
    [(_, answer)] = ProtonClient.received(replies)
    assert answer.correlation_id == "r1"
    assert answer.properties["status-code"] == 202
    assert answer.properties["wsq-tenant"] == "t"
    assert server.conn.links() == []  # $cbs links are the connection's own


@pytest.mark.parametrize(
    "token, op, status",
    [(GOOD, "delete-token", 400), (b"binary", "put-token", 400), ("bad-token", "put-token", 401)],
)
def test_a_put_token_that_is_malformed_or_refused_is_answered(
    token: Any, op: str, status: int
) -> None:
    client, server = _anonymous()
    replies = client.receiver("$cbs", credit=2)
    requests = client.sender("$cbs")
    pump(client, server)
    _put_token(client, requests, token, op)
    pump(client, server)
    [(_, answer)] = ProtonClient.received(replies)
    assert answer.properties["status-code"] == status
    assert bool(server.of(ConnectionEnded)) is (status == 401)


def test_a_drain_is_answered_with_the_unused_credit_spent() -> None:
    client, server = opened()
    rcv = client.receiver("d.x", mode="move")
    pump(client, server)
    rcv.drain(5)
    pump(client, server)
    [attach] = server.of(AttachRequested)
    link = attach.link
    assert link.drain and link.credit == 5
    server.conn.send_transfers(link, [TAIL], ["5-0"])
    pump(client, server)
    assert rcv.draining(), "not answered before the gateway says so"
    server.conn.drain_done(link)
    pump(client, server)
    assert not rcv.draining()
    assert len(ProtonClient.received(rcv)) == 1
    assert rcv.credit == 0 and link.credit == 0 and link.delivery_count == 5
    server.conn.drain_done(link)  # once only
    assert server.conn.next_message() is None


@pytest.mark.parametrize("how", ["close", "detach"])
def test_a_link_the_client_closes_or_detaches_ends_with_its_unsettled_ids(how: str) -> None:
    client, server = opened()
    rcv = client.receiver("jobs.y::w", credit=2, mode="move")
    pump(client, server)
    [attach] = server.of(AttachRequested)
    server.conn.send_transfers(attach.link, [TAIL, TAIL], ["5-0", "5-1"])
    pump(client, server)
    getattr(rcv, how)()
    server.conn.receive_data(client.output())
    server.answer()
    [ended] = server.of(LinkEnded)
    assert ended.unsettled == ["5-0", "5-1"]
    # Our answer echoes closed: true for a close, false for a detach that only suspends.
    answer = b"".join(iter(server.conn.next_message, None))
    closed_field = {"close": b"\x41", "detach": b"\x42"}[how]
    # detach (0x16), a list of 2: handle 0 (uint0), closed
    assert answer.endswith(b"\x53\x16\xc0\x03\x02\x43" + closed_field), answer


def test_transactions_and_dynamic_nodes_are_refused_at_link_scope() -> None:
    client, server = opened()
    coordinator = client.session.sender("txn")
    coordinator.target.type = Terminus.COORDINATOR
    coordinator.open()
    dynamic = client.session.receiver("reply-to")
    dynamic.source.dynamic = True
    dynamic.open()
    pump(client, server)
    for link in (coordinator, dynamic):
        assert link.state & Endpoint.REMOTE_CLOSED
        assert link.remote_condition.name == "amqp:invalid-field"
    assert client.opened and not server.of(AttachRequested)


def test_pre_settled_publishes_are_stored_without_dispositions_and_credit_comes_back() -> None:
    client, server = opened(Limits(max_frame_bytes=65_536, sender_credit=2))
    snd = client.session.sender("s-presettled")
    snd.target.address = "fire.forget"
    snd.snd_settle_mode = ProtonLink.SND_SETTLED
    snd.open()
    pump(client, server)
    for i in range(4):  # twice the credit: the refills let them all through
        delivery = client.send(snd, Message(body=i))
        delivery.settle()
        pump(client, server)
    assert server.published == ["0", "1", "2", "3"]
    out = b"".join(iter(server.conn.next_message, None))
    assert b"\x00\x53\x15" not in out  # no disposition frame was ever needed
    assert snd.credit == 2


def _before_the_token(*frames: bytes) -> Server:
    """A connection that chose SASL ANONYMOUS and sent ``frames`` after its open, no token."""
    server = Server()
    init = F.frame(0, F.SASL_INIT, [Symbol("ANONYMOUS")], kind=F.FRAME_SASL)
    opening = F.frame(0, F.OPEN, ["probe"])
    server.conn.receive_data(F.SASL_HEADER + init + F.AMQP_HEADER + opening + b"".join(frames))
    server.answer()
    return server


def _begin(ch: int) -> bytes:
    return F.frame(ch, F.BEGIN, [None, Uint(0), Uint(100), Uint(100)])


def _cbs_attach(handle: int, ch: int = 0, extra: Any = None) -> bytes:
    target = Described(Ulong(F.TARGET), ["$cbs"])
    fields = [f"l{handle}", Uint(handle), False, None, None, None, target]
    return F.frame(ch, F.ATTACH, [*fields, None, None, Uint(0), None, None, None, extra])


def test_before_the_token_sessions_and_links_are_few() -> None:
    # What a client needs before its put-token is served ...
    server = _before_the_token(_begin(0), _begin(1), _cbs_attach(0), _cbs_attach(1))
    assert not server.of(ConnectionEnded)
    # ... a third session closes the connection, and so does a ninth link.
    server = _before_the_token(_begin(0), _begin(1), _begin(2))
    [ended] = server.of(ConnectionEnded)
    assert ended.error["condition"] == "wsq:resource-limit-exceeded"
    server = _before_the_token(_begin(0), *(_cbs_attach(h) for h in range(9)))
    [ended] = server.of(ConnectionEnded)
    assert ended.error["condition"] == "wsq:resource-limit-exceeded"
    assert "links before the token" in ended.error["description"]


def test_an_answered_attach_is_not_kept() -> None:
    # An attach carries up to a frame of values (here 5,000 in its properties): once
    # answered, its link keeps none of them.
    big = {Symbol(f"k{i}"): "v" for i in range(5_000)}
    server = _before_the_token(_begin(0), _cbs_attach(0, extra=big))
    [link] = server.conn.sessions[0].links.values()
    assert link.attach_fields == []
