"""AMQP 1.0 engines for wsq's deliveries: CPU per delivery, wsq's own sans-I/O codec
(``wsq.amqp``) beside Apache Qpid Proton's engine (python-qpid-proton), no sockets.

    .venv/bin/python bench/amqp_engine_micro.py [MESSAGES] [LINKS]

Both sides do the work the gateway would: each of MESSAGES messages (the hub's cached wire tail
of a typical 150-byte delivery) goes to LINKS receiver links of one connection, and the bytes
to write are taken. wsq: ``AmqpConnection.send_transfers`` (the message converted once per
process, then framed per link) and ``next_message``. Proton: a server ``Transport`` bound to a
``Connection`` with LINKS sender links, the message encoded by ``proton.Message`` once, then
``delivery``/``send``/``advance`` per link and the transport's output popped; the client
side (a proton engine that grants credit and settles) is not counted. Also: a client
transfer in, decoded to what wsq publishes (``publish_item``), against proton's ``Message``
decoding. Prints microseconds of CPU per delivery and per publish, as JSON.
"""

from __future__ import annotations

import json
import sys
import time

from proton import Collector, Connection, Event, Message, Transport

from wsq.amqp import messages
from wsq.amqp.connection import AmqpConnection
from wsq.core import codec
from wsq.protocol.connection import Limits
from wsq.protocol.events import AttachRequested, OpenRequested

MESSAGES = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
LINKS = int(sys.argv[2]) if len(sys.argv) > 2 else 10


def tail(i: int) -> str:
    return (
        f'"id":"1732200000{i:03d}-{i}","body":{{"text":"hello","n":{i},"tags":["a","b"]}},'
        f'"props":{{"ts":1732200000{i % 1000:03d},"subject":"orders.de.eu","message_id":"m-{i}",'
        f'"headers":{{"k":"v"}},"publisher":"alice"}}}}'
    )


def wsq_deliveries() -> float:
    client = Connection()
    client_t = Transport()
    sasl = client_t.sasl()
    sasl.allowed_mechs("PLAIN")
    sasl.allow_insecure_mechs = True
    client.user, client.password = "u", "t"
    client_t.bind(client)
    client.open()
    ssn = client.session()
    ssn.open()
    rcvs = []
    for i in range(LINKS):
        r = ssn.receiver(f"r{i}")
        r.source.address = f"bench.a{i}"
        r.open()
        r.flow(MESSAGES)
        rcvs.append(r)
    conn = AmqpConnection(Limits(max_frame_bytes=1 << 20))
    links = []
    for _ in range(10):
        out = client_t.peek(client_t.pending()) if client_t.pending() > 0 else b""
        client_t.pop(len(out))
        conn.receive_data(bytes(out))
        while (event := conn.next_event()) is not None:
            if isinstance(event, OpenRequested):
                conn.accept_open({"node": "n", "idle": 0})
            elif isinstance(event, AttachRequested):
                conn.accept_attach(event.link, from_="0-0", recovered=True)
                links.append(event.link)
        while (data := conn.next_message()) is not None:
            client_t.push(data)
    assert len(links) == LINKS, links
    tails = [tail(i) for i in range(MESSAGES)]
    written: list[bytes] = []
    start = time.process_time()
    for t in tails:
        for link in links:
            conn.send_transfers(link, [t])
        while (data := conn.next_message(1 << 16)) is not None:
            written.append(data)
    elapsed = time.process_time() - start
    # Not counted: the client reads it all, to show every delivery arrived whole.
    received = 0
    for data in written:
        client_t.push(data)
        for r in rcvs:
            while (d := r.current) is not None and not d.partial:
                received += 1
                r.recv(d.pending)
                r.advance()
    assert received == MESSAGES * LINKS, received
    return elapsed / (MESSAGES * LINKS) * 1e6


def proton_deliveries() -> float:
    server = Connection()
    server_t = Transport(Transport.SERVER)
    server_t.bind(server)
    collector = Collector()
    server.collect(collector)
    client = Connection()
    client_t = Transport()
    client_t.bind(client)
    client.open()
    ssn = client.session()
    ssn.open()
    for i in range(LINKS):
        r = ssn.receiver(f"r{i}")
        r.source.address = f"bench.a{i}"
        r.open()
        r.flow(MESSAGES)

    def pump() -> None:
        for _ in range(4):
            for a, b in ((client_t, server_t), (server_t, client_t)):
                n = a.pending()
                if n > 0:
                    b.push(bytes(a.peek(n)))
                    a.pop(n)

    pump()
    server.open()
    senders = []
    while (ev := collector.peek()) is not None:
        if ev.type == Event.SESSION_REMOTE_OPEN:
            ev.session.open()
        elif ev.type == Event.LINK_REMOTE_OPEN:
            ev.link.source.copy(ev.link.remote_source)
            ev.link.open()
            senders.append(ev.link)
        collector.pop()
    pump()
    assert len(senders) == LINKS
    bodies = [codec.loads("{" + tail(i)) for i in range(MESSAGES)]
    client_time = 0.0
    received = 0
    start = time.process_time()
    tag = 0
    for value in bodies:
        props = value["props"]
        msg = Message(
            body=value["body"],
            subject=props["subject"],
            id=props["message_id"],
            properties=props["headers"],
            annotations={"x-opt-wsq-id": value["id"], "x-opt-wsq-publisher": props["publisher"]},
            creation_time=props["ts"] / 1000,
        )
        encoded = msg.encode()
        for s in senders:
            tag += 1
            d = s.delivery(str(tag).encode())
            s.send(encoded)
            s.advance()
            d.settle()
        while (n := server_t.pending()) > 0:
            data = bytes(server_t.peek(n))
            server_t.pop(n)
            c0 = time.process_time()
            client_t.push(data)
            client_time += time.process_time() - c0
        c0 = time.process_time()
        lk = client.link_head(0)
        while lk is not None:
            while (d := lk.current) is not None:
                received += 1
                lk.recv(d.pending)
                lk.advance()
                d.settle()
            lk = lk.next(0)
        n = client_t.pending()
        if n > 0:
            server_t.push(bytes(client_t.peek(n)))
            client_t.pop(n)
        client_time += time.process_time() - c0
        while collector.peek() is not None:
            collector.pop()
    total = time.process_time() - start - client_time
    assert received == MESSAGES * LINKS, received
    return total / (MESSAGES * LINKS) * 1e6


def publishes() -> tuple[float, float]:
    payloads = []
    for i in range(MESSAGES):
        m = Message(body={"text": "hello", "n": i}, subject="orders.de", id=f"m-{i}")
        m.properties = {"k": "v"}
        payloads.append(bytes(m.encode()))
    start = time.process_time()
    for p in payloads:
        messages.publish_item(0, False, p)
    ours = (time.process_time() - start) / MESSAGES * 1e6
    start = time.process_time()
    for p in payloads:
        m = Message()
        m.decode(p)
        codec.dumps(m.body)
    theirs = (time.process_time() - start) / MESSAGES * 1e6
    return ours, theirs


if __name__ == "__main__":
    ours = wsq_deliveries()
    theirs = proton_deliveries()
    pub_ours, pub_theirs = publishes()
    print(
        json.dumps(
            {
                "messages": MESSAGES,
                "links": LINKS,
                "wsq_us_per_delivery": round(ours, 2),
                "proton_us_per_delivery": round(theirs, 2),
                "wsq_us_per_publish_decode": round(pub_ours, 2),
                "proton_us_per_publish_decode": round(pub_theirs, 2),
            }
        )
    )
