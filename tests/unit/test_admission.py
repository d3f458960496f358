"""wsq.admission: the bounds before authentication, as counts (the sockets are in
tests/integration/test_before_auth.py)."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from wsq.admission import (
    HEADROOM,
    LOG_EVERY,
    MAX_CONNECTIONS,
    MAX_PENDING,
    MAX_PENDING_BYTES,
    MAX_PENDING_BYTES_PER_IP,
    MAX_PENDING_PER_IP,
    Admission,
    Ticket,
    source_key,
)
from wsq.config import ServerConfig

SERVER = ServerConfig(
    max_connections=20,
    max_pending=10,
    max_pending_per_ip=3,
    max_pending_bytes=1000,
    max_pending_bytes_per_ip=400,
    trusted_proxies=("10.0.0.0/8",),
)


def admission(**changes: object) -> Admission:
    return Admission(replace(SERVER, **changes))  # type: ignore[arg-type]


def admitted(a: Admission, peer: str) -> Ticket:
    ticket = a.admit(peer)
    assert ticket is not None
    return ticket


def test_sources_are_addresses_and_ipv6_counts_by_its_64() -> None:
    assert source_key("192.0.2.7") == "192.0.2.7"
    assert source_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert source_key("2001:db8:1:2:aaaa::1") == source_key("2001:db8:1:2:bbbb::9")
    assert source_key("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert source_key("2001:db8:1:3::1") != source_key("2001:db8:1:2::1")
    assert source_key("fe80::1%eth0") == "fe80::/64"


def test_x_forwarded_for_is_believed_from_trusted_proxies_only() -> None:
    a = admission()
    assert a.client_ip("192.0.2.7", "203.0.113.1") == "192.0.2.7"
    assert a.client_ip("10.1.2.3", "203.0.113.1") == "203.0.113.1"
    # The nearest hop that is not a proxy of ours: what came before it may be forged.
    assert a.client_ip("10.1.2.3", "198.51.100.9, 203.0.113.1, 10.9.9.9") == "203.0.113.1"
    assert a.client_ip("10.1.2.3", "10.2.2.2, 10.9.9.9") == "10.2.2.2"
    assert a.client_ip("10.1.2.3", None) == "10.1.2.3"
    assert not admission(trusted_proxies=()).is_trusted("127.0.0.1")
    assert a.is_trusted("::ffff:10.0.0.1")


def test_pending_is_bounded_per_source_and_released_by_open_or_close() -> None:
    a = admission()
    tickets = [admitted(a, "192.0.2.7") for _ in range(3)]
    assert a.admit("192.0.2.7") is None
    assert a.refused == {MAX_PENDING_PER_IP: 1}
    other = admitted(a, "192.0.2.8")  # another source is not affected
    tickets[0].authenticated()
    again = admitted(a, "192.0.2.7")
    tickets[1].closed()
    tickets[1].closed()  # once only
    assert (a.open, a.pending, a.pending_by_ip["192.0.2.7"]) == (4, 3, 2)
    for t in (tickets[0], tickets[2], other, again):
        t.closed()
    assert (a.open, a.pending, dict(a.pending_by_ip)) == (0, 0, {})


def test_bytes_before_authentication_are_bounded_in_total_and_per_source() -> None:
    a = admission()
    first, second = admitted(a, "192.0.2.7"), admitted(a, "192.0.2.7")
    assert first.hold(300) and second.hold(100)  # 400: the source's share, all of it
    assert not second.hold(1)
    assert a.refused == {MAX_PENDING_BYTES_PER_IP: 1}
    others = [admitted(a, f"198.51.100.{i}") for i in range(2)]
    assert others[0].hold(400) and others[1].hold(200)  # 1000 in all: the budget
    assert not others[1].hold(1)
    assert a.refused == {MAX_PENDING_BYTES_PER_IP: 1, MAX_PENDING_BYTES: 1}
    assert (a.pending_bytes, a.pending_bytes_by_ip["192.0.2.7"]) == (1000, 400)
    assert (first.held, second.held) == (300, 100)  # a refused read is not counted


def test_bytes_are_released_when_authenticated_or_closed_and_not_counted_after() -> None:
    a = admission()
    opened, gone = admitted(a, "192.0.2.7"), admitted(a, "192.0.2.7")
    assert opened.hold(250) and gone.hold(150)
    opened.authenticated()
    assert (a.pending_bytes, dict(a.pending_bytes_by_ip)) == (150, {"192.0.2.7": 150})
    assert opened.hold(10_000)  # authenticated: its bytes are the gateway's business
    gone.closed()
    gone.closed()  # once only
    assert (a.pending_bytes, dict(a.pending_bytes_by_ip), opened.held) == (0, {}, 0)
    opened.closed()
    assert (a.pending_bytes, dict(a.pending_bytes_by_ip)) == (0, {})


def test_bytes_through_a_proxy_count_per_client_named_by_the_head() -> None:
    a = admission()
    proxied = [admitted(a, "10.0.0.1") for _ in range(3)]
    for t, client in zip(proxied, ["203.0.113.1", "203.0.113.1", "203.0.113.2"], strict=True):
        assert t.on_request("GET", "/ws", True, client)
    assert proxied[0].hold(400)
    assert not proxied[1].hold(1)  # the same client, past its share
    assert proxied[2].hold(400)  # another client behind the same proxy
    assert dict(a.pending_bytes_by_ip) == {"203.0.113.1": 400, "203.0.113.2": 400}
    for t in proxied:
        t.closed()
    assert (a.pending_bytes, dict(a.pending_bytes_by_ip)) == (0, {})


def test_a_request_in_full_is_no_longer_pending_until_the_next_one_on_the_connection() -> None:
    a = admission()
    ticket = admitted(a, "192.0.2.7")
    assert ticket.on_request("POST", "/v1/addresses/a/messages", False, None)
    ticket.request_done()
    assert (a.pending, dict(a.pending_by_ip)) == (0, {})
    assert ticket.on_request("GET", "/v1/addresses/a/messages", False, None)
    assert (a.pending, dict(a.pending_by_ip)) == (1, {"192.0.2.7": 1})
    ticket.closed()
    assert (a.open, a.pending, dict(a.pending_by_ip)) == (0, 0, {})


def test_connections_through_a_proxy_count_per_client_once_the_head_names_it() -> None:
    a = admission()
    through = [admitted(a, "10.0.0.1") for _ in range(5)]  # not counted per source yet
    assert a.pending_by_ip == {}
    assert all(t.on_request("GET", "/ws", True, "203.0.113.1") for t in through[:3])
    assert not through[3].on_request("GET", "/ws", True, "203.0.113.1")
    assert through[4].on_request("GET", "/ws", True, "203.0.113.2")
    assert a.pending_by_ip == {"203.0.113.1": 3, "203.0.113.2": 1}
    for t in through:
        t.closed()
    assert (a.open, a.pending, dict(a.pending_by_ip)) == (0, 0, {})


@pytest.mark.parametrize(
    ("bound", "fill", "max_connections"),
    [(MAX_PENDING, "pending", 30), (MAX_CONNECTIONS, "authenticated", 10)],
)
def test_past_a_bound_health_checks_have_headroom_and_nothing_else_is_served(
    bound: str, fill: str, max_connections: int
) -> None:
    a = admission(max_connections=max_connections, max_pending=10, max_pending_per_ip=10)
    for i in range(10):
        t = admitted(a, f"192.0.2.{i}")
        if fill == "authenticated":
            t.authenticated()
    reserve = [admitted(a, f"198.51.100.{i}") for i in range(HEADROOM)]
    assert a.admit("198.51.100.200") is None  # past the headroom: refused at once
    assert reserve[0].on_request("GET", "/healthz", False, None)
    assert reserve[1].on_request("HEAD", "/readyz", False, None)
    assert not reserve[2].on_request("GET", "/ws", True, None)
    assert not reserve[3].on_request("POST", "/healthz", False, None)
    assert a.refused == {bound: 3}


def test_refusals_are_logged_once_per_thousand(caplog: pytest.LogCaptureFixture) -> None:
    a = admission()
    for _ in range(3):
        admitted(a, "192.0.2.7")
    with caplog.at_level(logging.WARNING, logger="wsq.admission"):
        for _ in range(2 * LOG_EVERY):
            assert a.admit("192.0.2.7") is None
        for _ in range(LOG_EVERY + 1):
            a.deadline_passed()
    assert a.refused[MAX_PENDING_PER_IP] == 2 * LOG_EVERY and a.timed_out == LOG_EVERY + 1
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4, lines
    assert lines[0].startswith("refused 1 connection(s) before authentication")
    assert lines[1].startswith(f"refused {LOG_EVERY + 1} connection(s)")
    assert "handshake_timeout_ms (5000 ms)" in lines[2]
