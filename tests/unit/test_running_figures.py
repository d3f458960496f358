"""The running figures of what the sockets hold (wsq.protocol.figures, read by
``NodeStats.snapshot``) against a walk over the sockets, the snapshot's former way and this
test's oracle: random sequences of what clients and the gateway do, on wsq.v1 and AMQP
connections of one gateway (the HTTP stream carrier drives the same wsq.v1 ``Peer``).

Each step is one thing a client sends (open, begin, attach a sender or a receiver, detach, end,
flow, close, garbage, a put-token on AMQP's ``$cbs``) or the gateway does (answer an open or an
attach, refuse one, end a session, detach a link, deliver, write, close, the socket gone); after
each, the snapshot's connections, subprotocols, sessions, links and outbox bytes must be the
walk's.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from typing import Any

import pytest
from proton import Message

from wsq import subprotocols
from wsq.admission import Admission
from wsq.amqp import frames as F
from wsq.amqp.codec import Described, Symbol, Uint, Ulong
from wsq.amqp.connection import AmqpConnection
from wsq.amqp.output import AmqpLink
from wsq.auth.rights import Principal, Rights
from wsq.broker.memory import MemoryBroker
from wsq.config import Settings
from wsq.core.errors import Forbidden, IdleTimeout, Unauthorized
from wsq.core.wire import SharedTails
from wsq.gateway import Gateway, Peer
from wsq.node import Node
from wsq.protocol.connection import Limits, ServerConnection
from wsq.protocol.events import AttachRequested, OpenRequested, PublishRequested
from wsq.protocol.state import ConnectionState, Link, Role, SessionState
from wsq.readiness import Readiness
from wsq.stats import NodeStats

TAIL = '"id":"5-0","body":{"a":1},"props":{"ts":5,"subject":"s.t","publisher":"p"}}'
TENANTS = ("acme", "other")
ADDRESSES = ("a.b", "c.d", "")  # "" is refused by the protocol core (an invalid address)
FIGURES = ("connections", "subprotocols", "sessions", "links", "outbox_bytes")


def walk(gateway: Gateway) -> dict[str, Any]:
    """The figures by walking every socket and its links (what ``snapshot`` did before)."""
    connections: Counter[str] = Counter()
    by_subprotocol: Counter[str] = Counter()
    links: dict[str, Counter[str]] = {}
    sessions = outbox = 0
    for peer in gateway.peers:
        tenant = peer.principal.tenant if peer.principal is not None else ""
        connections[tenant] += 1
        by_subprotocol[peer.subprotocol or ""] += 1
        conn = peer.conn
        outbox += conn.out_bytes
        sessions += sum(1 for s in conn.sessions.values() if s.state is SessionState.BEGUN)
        for link in conn.links():
            links.setdefault(tenant, Counter())[link.role.value] += 1
    return {
        "connections": dict(connections),
        "subprotocols": dict(by_subprotocol),
        "sessions": sessions,
        "links": {t: dict(c) for t, c in links.items()},
        "outbox_bytes": outbox,
    }


class Client:
    """One socket of the gateway, its protocol object driven by hand (no I/O, no tasks)."""

    def __init__(self, sim: Sim, subprotocol: str) -> None:
        self.sim = sim
        self.rng = sim.rng

        async def receive() -> dict[str, Any]:
            raise AssertionError("not read")

        async def send(message: dict[str, Any]) -> None:
            raise AssertionError("not written")

        scope = {"type": "websocket", "subprotocols": [subprotocol]}
        self.peer = Peer(sim.gateway, scope, receive, send)
        # Its own protocol object, with no writer to wake: this test takes the output itself.
        self.conn = subprotocols.connection(self.peer.subprotocol, sim.gateway, lambda: None)
        self.peer.conn = self.conn
        sim.gateway.add_peer(self.peer)
        self.tenant = self.rng.choice(TENANTS)
        self.waiting: list[Link] = []  # attaches the gateway has not answered yet
        self.gone = False

    # -- the gateway's side ------------------------------------------------------------------

    def answer(self) -> None:
        conn = self.conn
        while (event := conn.next_event()) is not None:
            if isinstance(event, OpenRequested):
                if self.rng.random() < 0.85:
                    self.peer.principal = Principal(self.tenant, "s", 0, Rights.of())
                    self.sim.gateway.authenticated(self.peer, self.tenant)
                    conn.accept_open({"node": "n", "idle": 30_000, "tenant": self.tenant})
                else:
                    conn.reject_open(Unauthorized("refused"))
            elif isinstance(event, AttachRequested):
                self.waiting.append(event.link)
            elif isinstance(event, PublishRequested):
                conn.settle_publish(event.link, [(i, "1-1", None) for i in event.items])

    def answer_attach(self) -> None:
        if self.waiting:
            link = self.waiting.pop(self.rng.randrange(len(self.waiting)))
            if self.rng.random() < 0.7:
                self.conn.accept_attach(link, from_="0-0", recovered=True)
            else:
                self.conn.detach(link, Forbidden("refused"))  # a refused attach

    def deliver(self) -> None:
        receivers = [lk for lk in self.conn.links() if lk.role is Role.RECEIVER]
        if receivers:
            link = self.rng.choice(receivers)
            n = self.rng.randint(1, 3)
            # A broker batch's tails come shared (SharedTails) or as a plain list.
            tails = SharedTails([TAIL] * n) if self.rng.random() < 0.5 else [TAIL] * n
            self.conn.send_transfers(link, tails, [f"5-{i}" for i in range(n)])

    def write(self) -> None:
        self.conn.next_message(self.rng.choice([None, 60, 300]))

    def server_end(self) -> None:
        if self.conn.sessions:
            session = self.rng.choice(list(self.conn.sessions.values()))
            self.conn.end_session(session, IdleTimeout("ended"))

    def server_detach(self) -> None:
        """A link error, or rights lost: of the links the gateway knows (not AMQP's $cbs)."""
        links = self.conn.links()
        if links:
            self.conn.detach(self.rng.choice(links), Forbidden("detached"))

    def server_close(self) -> None:
        self.conn.close(IdleTimeout("closed"))

    def socket_gone(self) -> None:
        """What ``Peer._shutdown`` does: out of the peers, every link ended, out of the figures."""
        self.sim.gateway.remove_peer(self.peer)
        if self.conn.state not in (ConnectionState.CLOSED, ConnectionState.CLOSE_SENT):
            self.conn.close()
        self.answer()
        self.conn.stop_counting()
        self.gone = True

    def gateway_step(self) -> None:
        self.rng.choice(
            [
                self.answer_attach,
                self.answer_attach,
                self.deliver,
                self.deliver,
                self.write,
                self.write,
                self.server_detach,
            ]
        )()
        if self.rng.random() < 0.03:
            self.server_end()

    def channel(self, channels: list[int]) -> int:
        """Mostly a channel with a session (a frame on another closes the connection)."""
        begun = list(self.conn.sessions)
        if begun and self.rng.random() < 0.95:
            return self.rng.choice(begun)
        return self.rng.choice(channels)

    def free_channel(self, channels: list[int]) -> int:
        """Mostly a channel without a begun session (a begin on one closes the connection)."""
        free = [
            ch
            for ch in channels
            if ch not in self.conn.sessions or self.conn.sessions[ch].state is SessionState.END_SENT
        ]
        if free and self.rng.random() < 0.95:
            return self.rng.choice(free)
        return self.rng.choice(channels)

    def handle(self, ch: int, free: bool) -> int:
        """Mostly a handle of the session on ``ch`` that is free (for an attach) or holds a
        link (for the rest): the other way ends the session."""
        session = self.conn.sessions.get(ch)
        held = list(session.links) if session is not None else []
        fit = [h for h in range(3) if (h not in held) is free]
        if fit and self.rng.random() < 0.95:
            return self.rng.choice(fit)
        return self.rng.randrange(3)

    def client_step(self) -> None:
        raise NotImplementedError


class WsqClient(Client):
    def __init__(self, sim: Sim) -> None:
        super().__init__(sim, "wsq.v1")
        if self.rng.random() < 0.9:  # else it waits (its first frame may be another)
            # Some ask for the compact form: a broker batch then queues as one shared frame.
            open_: dict[str, Any] = {"op": "open", "token": "t"}
            if self.rng.random() < 0.5:
                open_["compact"] = True
            self.send(open_)

    def send(self, *frames: Any) -> None:
        assert isinstance(self.conn, ServerConnection)
        self.conn.receive_text(json.dumps(list(frames)))
        self.answer()

    def client_step(self) -> None:
        rng = self.rng
        ch = self.channel([0, 1, 2, 3])
        what = rng.choices(
            ["open", "begin", "end", "attach", "detach", "flow", "close", "garbage"],
            [0.5, 4, 1.5, 10, 3, 2, 0.2, 0.2],
        )[0]
        if not self.conn.sessions and rng.random() < 0.9:
            what = "begin"
        handle = self.handle(ch, free=what in ("attach", "cbs"))
        if what == "open":
            self.send({"op": "open", "token": "t"})
        elif what == "begin":
            self.send({"op": "begin", "ch": self.free_channel([0, 1, 2, 3])})
        elif what == "end":
            self.send({"op": "end", "ch": ch})
        elif what == "attach":
            role = rng.choice(["sender", "receiver"])
            address = rng.choice(ADDRESSES)
            self.send(
                {"op": "attach", "ch": ch, "handle": handle, "role": role, "address": address}
            )
        elif what == "detach":
            self.send({"op": "detach", "ch": ch, "handle": handle})
        elif what == "flow":
            self.send({"op": "flow", "ch": ch, "handle": handle, "credit": 5})
        elif what == "close":
            self.send({"op": "close"})
        else:
            self.send({"op": "nonsense"})


def _receiver_attach(name: str, handle: int, address: str) -> list[Any]:
    source = Described(Ulong(F.SOURCE), [address])
    return [name, Uint(handle), True, None, None, source, Described(Ulong(F.TARGET), [])]


def _sender_attach(name: str, handle: int, address: str) -> list[Any]:
    target = Described(Ulong(F.TARGET), [address])
    fields = [name, Uint(handle), False, None, None, Described(Ulong(F.SOURCE), []), target]
    return [*fields, None, None, Uint(0)]


class AmqpClient(Client):
    """SASL PLAIN (the token at once), or ANONYMOUS: sessions and ``$cbs`` links before the
    token, which comes in a put-token on ``$cbs``."""

    def __init__(self, sim: Sim) -> None:
        super().__init__(sim, "amqp")
        self.anonymous = self.rng.random() < 0.4
        self.incoming: dict[int, int] = {}  # channel -> the next delivery id we send on it
        if self.anonymous:
            init = F.frame(0, F.SASL_INIT, [Symbol("ANONYMOUS")], kind=F.FRAME_SASL)
            self.send(F.SASL_HEADER + init + F.AMQP_HEADER + F.frame(0, F.OPEN, ["c"]))
        else:
            response = b"\x00u\x00token"
            init = F.frame(0, F.SASL_INIT, [Symbol("PLAIN"), response], kind=F.FRAME_SASL)
            self.send(F.SASL_HEADER + init)
            self.send(F.AMQP_HEADER + F.frame(0, F.OPEN, ["c"]))

    def send(self, data: bytes) -> None:
        assert isinstance(self.conn, AmqpConnection)
        self.conn.receive_data(data)
        self.answer()

    def client_step(self) -> None:
        rng = self.rng
        # channel-max is max_sessions - 1: a begin on channel 2 closes the connection
        ch = self.channel([0, 1, 2])
        what = rng.choices(
            ["begin", "end", "attach", "cbs", "put-token", "detach", "flow", "close", "garbage"],
            [4, 1.5, 10, 3 if self.anonymous else 0, 2 if self.anonymous else 0, 3, 2, 0.2, 0.2],
        )[0]
        if not self.conn.sessions and rng.random() < 0.9:
            what = "begin"
        handle = self.handle(ch, free=what in ("attach", "cbs"))
        if what == "begin":
            ch = self.free_channel([0, 1] if rng.random() < 0.98 else [2])
            window = rng.choice([0, 2, 100])
            self.incoming[ch] = 0
            self.send(F.frame(ch, F.BEGIN, [None, Uint(0), Uint(window), Uint(100)]))
        elif what == "end":
            self.send(F.frame(ch, F.END, []))
        elif what in ("attach", "cbs"):
            address = "$cbs" if what == "cbs" else rng.choice(ADDRESSES)
            make = rng.choice([_receiver_attach, _sender_attach])
            self.send(F.frame(ch, F.ATTACH, make(f"l{ch}-{handle}", handle, address)))
        elif what == "put-token":
            self._put_token()
        elif what == "detach":
            self.send(F.frame(ch, F.DETACH, [Uint(handle), True]))
        elif what == "flow":
            session = self.conn.sessions.get(ch)
            start = session.next_outgoing if session is not None else 0
            window = rng.choice([0, 1, 5])
            self.send(F.frame(ch, F.FLOW, [Uint(start), Uint(window), Uint(0), Uint(100)]))
        elif what == "close":
            self.send(F.frame(0, F.CLOSE, []))
        else:
            self.send(F.frame(ch, 0x77, []))

    def _put_token(self) -> None:
        senders = [
            lk
            for s in self.conn.sessions.values()
            for lk in s.links.values()
            if isinstance(lk, AmqpLink) and lk.cbs and lk.role is Role.SENDER
        ]
        if not senders:
            return
        link = self.rng.choice(senders)
        request = Message(id="r", properties={"operation": "put-token", "type": "jwt"}, body="t")
        delivery = self.incoming.get(link.ch, 0)
        self.incoming[link.ch] = delivery + 1
        fields = [Uint(link.handle), Uint(delivery), b"tag", Uint(0), True]
        self.send(F.frame(link.ch, F.TRANSFER, fields, request.encode()))


class Sim:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        settings = Settings()
        broker = MemoryBroker(settings.storage_policies())
        self.gateway = Gateway(Node.build(settings, broker, "n"))
        # Small limits, so that refused begins and attaches happen too.
        self.gateway.limits = Limits(max_frame_bytes=4096, max_sessions=2, max_links_per_session=2)
        self.stats = NodeStats(self.gateway, Admission(settings.server), Readiness(broker, 1000))
        self.clients: list[Client] = []

    def step(self) -> None:
        rng = self.rng
        live = [c for c in self.clients if not c.gone]
        if len(live) < 3 or rng.random() < 0.02:
            kind = WsqClient if rng.random() < 0.6 else AmqpClient
            self.clients.append(kind(self))
            return
        client = rng.choice(live)
        roll = rng.random()
        closed = client.conn.state in (ConnectionState.CLOSE_SENT, ConnectionState.CLOSED)
        if closed and roll < 0.7:
            client.socket_gone()  # the gateway lets a closed socket go soon
        elif roll < 0.5:
            client.client_step()
        elif roll < 0.97:
            client.gateway_step()
        elif roll < 0.985:
            client.server_close()
            client.answer()
        else:
            client.socket_gone()

    def check(self) -> None:
        snapshot = self.stats.snapshot()
        assert {k: snapshot[k] for k in FIGURES} == walk(self.gateway)


@pytest.mark.parametrize("seed", range(6))
async def test_the_running_figures_are_what_a_walk_over_the_sockets_finds(seed: int) -> None:
    sim = Sim(seed)
    try:
        for _ in range(1_500):
            sim.step()
            sim.check()
        # It did happen: links of both roles, AMQP sockets, sessions, output waiting.
        seen = Counter(type(c).__name__ for c in sim.clients)
        assert seen["WsqClient"] and seen["AmqpClient"], seen
        for client in sim.clients:
            if not client.gone:
                client.socket_gone()
                sim.check()
        # Every socket gone: nothing left counted.
        figures = sim.stats.snapshot()
        assert {k: figures[k] for k in FIGURES} == {
            "connections": {},
            "subprotocols": {},
            "sessions": 0,
            "links": {},
            "outbox_bytes": 0,
        }
    finally:
        await sim.gateway.node.hub.close()


async def test_the_random_sequences_reach_what_they_are_meant_to() -> None:
    # The walk would agree with figures that never move: the sequences must make them move.
    sim = Sim(0)
    most: Counter[str] = Counter()
    try:
        for _ in range(1_500):
            sim.step()
            walked = walk(sim.gateway)
            most["sessions"] = max(most["sessions"], walked["sessions"])
            most["outbox"] = max(most["outbox"], walked["outbox_bytes"])
            for tenant, roles in walked["links"].items():
                for role, n in roles.items():
                    most[f"{tenant}/{role}"] = max(most[f"{tenant}/{role}"], n)
            most["amqp"] = max(most["amqp"], walked["subprotocols"].get("amqp", 0))
            amqp_links = sum(
                len(c.conn.links()) for c in sim.clients if isinstance(c, AmqpClient) and not c.gone
            )
            most["amqp links"] = max(most["amqp links"], amqp_links)
            most["unauthenticated"] = max(most["unauthenticated"], walked["connections"].get("", 0))
    finally:
        await sim.gateway.node.hub.close()
    for key in ("sessions", "outbox", "amqp", "unauthenticated"):
        assert most[key] >= 2, most
    assert most["amqp links"] >= 1, most
    for tenant in TENANTS:
        assert most[f"{tenant}/sender"] >= 1 and most[f"{tenant}/receiver"] >= 1, most


def test_a_connection_counts_its_sessions_under_its_tenant_once_known() -> None:
    # AMQP may begin sessions before its token ($cbs): they move with the connection.
    conn = AmqpConnection(Limits())
    figures = conn.figures
    init = F.frame(0, F.SASL_INIT, [Symbol("ANONYMOUS")], kind=F.FRAME_SASL)
    begin = F.frame(0, F.BEGIN, [None, Uint(0), Uint(100), Uint(100)])
    cbs = F.frame(0, F.ATTACH, _sender_attach("c", 0, "$cbs"))
    conn.receive_data(F.SASL_HEADER + init + F.AMQP_HEADER + F.frame(0, F.OPEN, ["c"]))
    conn.receive_data(begin + cbs)
    assert conn.next_event() is None
    assert figures.of("").sessions == 1
    assert conn.links() == [] and figures.of("").senders == 0  # $cbs is not the tenant's
    conn.count_as("acme")
    assert figures.of("").sessions == 0 and figures.of("acme").sessions == 1
    conn.stop_counting()
    assert figures.of("acme").sessions == 0 and figures.outbox_bytes == 0
    assert conn.figures is not figures  # what it does now is counted where nobody reads it


def test_output_queued_and_written_is_counted_as_it_goes() -> None:
    conn = ServerConnection(Limits(max_frame_bytes=4096))
    figures = conn.figures
    conn.receive_text('{"op":"nonsense"}')
    while conn.next_event() is not None:
        pass
    assert conn.out_bytes > 0 and figures.outbox_bytes == conn.out_bytes
    conn.next_message()
    assert conn.out_bytes == 0 and figures.outbox_bytes == 0
