"""The /metrics collector, readiness, the reader's lag, log lines and their settings: no sockets."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections import Counter
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from wsq.admission import parse_networks
from wsq.broker.base import Broker
from wsq.broker.memory import MemoryBroker
from wsq.broker.redis.entries import entry_fields
from wsq.broker.redis.reader import LiveReader
from wsq.cli import describe_settings
from wsq.config import load_settings
from wsq.core.errors import ConfigError
from wsq.core.messages import NewMessage
from wsq.core.policy import StoragePolicies
from wsq.hub import Hub
from wsq.logs import JsonFormatter, RedactTokens, bind_connection, redact
from wsq.metrics import METRICS, SnapshotCollector, allowed, samples
from wsq.readiness import Readiness

SNAPSHOT: dict[str, Any] = {
    "node": "n1",
    "pid": 1,
    "time": 0.0,
    "ready": True,
    "draining": False,
    "not_ready": [],
    "connections": {"acme": 3, "": 1},
    "subprotocols": {"wsq.v1": 3, "amqp": 1},
    "sessions": 4,
    "links": {"acme": {"sender": 1, "receiver": 2}},
    "outbox_bytes": 512,
    "deliveries": {"acme": 6},
    "publishes": {"acme": 10},
    "dispositions": {"accepted": 3},
    "errors": {"wsq:idle-timeout": 1},
    "closes": {"heartbeat": 1, "client": 2},
    "stream_posts": {"relayed": 3},
    "refusals": {"acme": {"links": 1}, "": {"max_pending": 2}},
    "broker": {"status": "up", "reader_lag_s": 0.25},
    "conflated": 998,
    "conflate_dropped": 2,
    "webhook_deliveries": {"acme": {"delivered": 5, "retried": 2, "dropped": 1}},
    "webhook_queued": {"acme": 3},
    "webhook_requests": {"acme": {"ok": 5, "timeout": 2}},
    "webhook_sink_addresses": {"acme": 4},
    "dead_lettered": {"acme": 7},
    "presence_members": {"acme": 2},
    "presence_joins": {"acme": 9},
    "presence_leaves": {"acme": {"left": 6, "node-lost": 1}},
    "presence_rooms": {"notice": 12, "poll": 0},
    "presence_notices": 40,
    "occupied_addresses": {"acme": 11},
}


class FixedStats:
    def snapshot(self) -> dict[str, Any]:
        return SNAPSHOT


def exposition() -> list[str]:
    registry = CollectorRegistry()
    registry.register(SnapshotCollector(FixedStats(), ["acme", "other"]))  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    return [line for line in text.splitlines() if not line.startswith("#")]


def test_the_collector_serves_every_family_with_its_exact_values() -> None:
    assert exposition() == [
        'wsq_connections{tenant="acme"} 3.0',
        'wsq_connections{tenant=""} 1.0',
        'wsq_connections{tenant="other"} 0.0',
        'wsq_connections_by_subprotocol{subprotocol="wsq.v1"} 3.0',
        'wsq_connections_by_subprotocol{subprotocol="amqp"} 1.0',
        "wsq_sessions 4.0",
        'wsq_links{role="sender",tenant="acme"} 1.0',
        'wsq_links{role="receiver",tenant="acme"} 2.0',
        "wsq_outbox_bytes 512.0",
        "wsq_broker_reader_lag_seconds 0.25",
        "wsq_ready 1.0",
        "wsq_draining 0.0",
        'wsq_deliveries_total{tenant="acme"} 6.0',
        'wsq_deliveries_total{tenant="other"} 0.0',
        'wsq_publishes_total{tenant="acme"} 10.0',
        'wsq_publishes_total{tenant="other"} 0.0',
        'wsq_dispositions_total{outcome="accepted"} 3.0',
        'wsq_errors_total{condition="wsq:idle-timeout"} 1.0',
        'wsq_refusals_total{kind="links",tenant="acme"} 1.0',
        'wsq_refusals_total{kind="max_pending",tenant=""} 2.0',
        'wsq_closes_total{reason="heartbeat"} 1.0',
        'wsq_closes_total{reason="client"} 2.0',
        'wsq_stream_posts_total{outcome="relayed"} 3.0',
        "wsq_conflated_total 998.0",
        "wsq_conflate_dropped_total 2.0",
        'wsq_webhook_deliveries_total{outcome="delivered",tenant="acme"} 5.0',
        'wsq_webhook_deliveries_total{outcome="retried",tenant="acme"} 2.0',
        'wsq_webhook_deliveries_total{outcome="dropped",tenant="acme"} 1.0',
        'wsq_webhook_queued{tenant="acme"} 3.0',
        'wsq_webhook_queued{tenant="other"} 0.0',
        'wsq_webhook_requests_total{result="ok",tenant="acme"} 5.0',
        'wsq_webhook_requests_total{result="timeout",tenant="acme"} 2.0',
        'wsq_webhook_sink_addresses{tenant="acme"} 4.0',
        'wsq_dead_lettered_total{tenant="acme"} 7.0',
        'wsq_presence_members{tenant="acme"} 2.0',
        'wsq_presence_members{tenant="other"} 0.0',
        'wsq_presence_joins_total{tenant="acme"} 9.0',
        'wsq_presence_leaves_total{reason="left",tenant="acme"} 6.0',
        'wsq_presence_leaves_total{reason="node-lost",tenant="acme"} 1.0',
        'wsq_presence_rooms_watched{how="notice"} 12.0',
        'wsq_presence_rooms_watched{how="poll"} 0.0',
        "wsq_presence_notices_total 40.0",
        'wsq_occupied_addresses{tenant="acme"} 11.0',
    ]


def test_the_agreed_names_are_all_there() -> None:
    assert [(f.name, f.kind, f.labels) for f in METRICS] == [
        ("wsq_connections", "gauge", ("tenant",)),
        ("wsq_connections_by_subprotocol", "gauge", ("subprotocol",)),
        ("wsq_sessions", "gauge", ()),
        ("wsq_links", "gauge", ("tenant", "role")),
        ("wsq_outbox_bytes", "gauge", ()),
        ("wsq_broker_reader_lag_seconds", "gauge", ()),
        ("wsq_ready", "gauge", ()),
        ("wsq_draining", "gauge", ()),
        ("wsq_deliveries", "counter", ("tenant",)),
        ("wsq_publishes", "counter", ("tenant",)),
        ("wsq_dispositions", "counter", ("outcome",)),
        ("wsq_errors", "counter", ("condition",)),
        ("wsq_refusals", "counter", ("tenant", "kind")),
        ("wsq_closes", "counter", ("reason",)),
        ("wsq_stream_posts", "counter", ("outcome",)),
        ("wsq_conflated", "counter", ()),
        ("wsq_conflate_dropped", "counter", ()),
        ("wsq_webhook_deliveries", "counter", ("tenant", "outcome")),
        ("wsq_webhook_queued", "gauge", ("tenant",)),
        ("wsq_webhook_requests", "counter", ("tenant", "result")),
        ("wsq_webhook_sink_addresses", "gauge", ("tenant",)),
        ("wsq_dead_lettered", "counter", ("tenant",)),
        ("wsq_presence_members", "gauge", ("tenant",)),
        ("wsq_presence_joins", "counter", ("tenant",)),
        ("wsq_presence_leaves", "counter", ("tenant", "reason")),
        ("wsq_presence_rooms_watched", "gauge", ("how",)),
        ("wsq_presence_notices", "counter", ()),
        ("wsq_occupied_addresses", "gauge", ("tenant",)),
    ]


def test_per_tenant_families_show_each_configured_tenant_once() -> None:
    family = next(f for f in METRICS if f.name == "wsq_publishes")
    assert samples(family, SNAPSHOT, ["acme", "other"]) == [(("acme",), 10.0), (("other",), 0.0)]


@pytest.mark.parametrize(
    ("client", "ok"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("10.1.2.3", True),
        ("172.31.255.1", True),
        ("192.168.0.7", True),
        ("fd12::1", True),
        ("::ffff:10.0.0.1", True),
        ("8.8.8.8", False),
        ("172.32.0.1", False),
        ("2001:db8::1", False),
        ("not-an-ip", False),
        ("", False),
        (None, False),
    ],
)
def test_metrics_allow_defaults_to_loopback_and_private_ranges(
    client: str | None, ok: bool
) -> None:
    networks = parse_networks(load_settings(environ={}).server.metrics_allow)
    assert allowed(client, networks) is ok


# -- readiness ---------------------------------------------------------------------------


class Unanswering(MemoryBroker):
    def __init__(self, answer: bool | None) -> None:
        super().__init__(StoragePolicies())
        self.answer = answer
        self.lag = 0.0

    async def ready(self) -> bool:
        if self.answer is None:
            raise ConnectionError("down")
        return self.answer

    def reader_lag_s(self) -> float:
        return self.lag


async def test_readiness_names_every_reason_in_order() -> None:
    broker = Unanswering(True)
    readiness = Readiness(broker, max_lag_ms=5000)
    assert await readiness.check() == ["starting"]
    readiness.set_started(True)
    assert await readiness.check() == []
    broker.answer = False
    assert await readiness.check() == ["broker-unavailable"]
    broker.answer = None  # an exception counts as unavailable
    assert await readiness.check() == ["broker-unavailable"]
    readiness.set_draining(True)
    broker.lag = 5.001
    assert await readiness.check() == ["draining", "broker-unavailable", "reader-lag"]
    broker.answer, broker.lag = True, 5.0  # at the bound: still ready
    readiness.set_draining(False)
    assert await readiness.check() == []


def test_the_reader_lags_from_a_notice_until_it_passes_the_position_on() -> None:
    reader = LiveReader(clients=None, policies=StoragePolicies())  # type: ignore[arg-type]
    st = reader.add_stream("acme", "prices", "1000-0")
    st.tails.append(object())  # type: ignore[arg-type]
    st.publishing = 1  # our own publish in flight: the notice waits, no read is started
    assert reader.lag_s() == 0.0
    reader._on_notice(st.channel, "1000-2")
    time.sleep(0.02)
    assert reader.lag_s() >= 0.02
    # Passed on up to 1000-1 only: still behind; then up to 1000-2: caught up.
    fields = entry_fields(NewMessage(body="1", publisher="p"))
    st.tails.clear()
    reader._dispatch(st, [("1000-1", fields)], 0)
    assert reader.lag_s() >= 0.02
    reader._dispatch(st, [("1000-2", fields)], 0)
    assert reader.lag_s() == 0.0


def test_the_memory_broker_never_lags() -> None:
    assert MemoryBroker(StoragePolicies()).reader_lag_s() == 0.0
    assert Broker.reader_lag_s is MemoryBroker.reader_lag_s


# -- log lines ---------------------------------------------------------------------------

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.kX8k2gJb4bVx2C1xFQ3yT9qvJ0"


def record(msg: str, *args: Any, **extra: Any) -> logging.LogRecord:
    rec = logging.LogRecord("wsq.test", logging.WARNING, __file__, 1, msg, args, None)
    rec.__dict__.update(extra)
    return rec


def test_token_shaped_text_is_redacted_from_message_arguments_and_traceback() -> None:
    rec = record("open with %s failed for %r", TOKEN, {"auth": f"Bearer {TOKEN}"})
    try:
        raise ValueError(f"bad token {TOKEN}")
    except ValueError:
        rec.exc_info = sys.exc_info()
    assert RedactTokens().filter(rec) is True
    text = logging.Formatter().format(rec)
    assert TOKEN not in text
    assert text.count("[redacted]") == 3
    assert redact("Authorization: Bearer abcdefgh12345678") == "Authorization: Bearer [redacted]"
    assert redact("sub alice, address prices.eur") == "sub alice, address prices.eur"


def test_json_lines_carry_the_context_given_or_bound() -> None:
    line = json.loads(JsonFormatter().format(record("refused %d", 3, condition="wsq:x")))
    assert line["level"] == "warning"
    assert line["logger"] == "wsq.test"
    assert line["message"] == "refused 3"
    assert line["condition"] == "wsq:x"
    assert line["time"].endswith("+00:00")
    assert "conn" not in line

    def bound() -> dict[str, Any]:
        bind_connection(7, "acme", "alice")
        return json.loads(JsonFormatter().format(record("hello")))  # type: ignore[no-any-return]

    import contextvars

    line = contextvars.copy_context().run(bound)
    assert (line["conn"], line["tenant"], line["sub"]) == (7, "acme", "alice")


async def test_tasks_the_hub_starts_from_a_socket_carry_no_socket_context() -> None:
    """A group pump or catch-up started from one socket's task serves them all: its lines must
    not name that socket."""
    hub = Hub(MemoryBroker(StoragePolicies()))
    seen: list[dict[str, Any]] = []
    done = asyncio.Event()

    async def log_a_line() -> None:
        seen.append(json.loads(JsonFormatter().format(record("pump"))))
        done.set()

    bind_connection(7, "acme", "alice")  # this test's task plays the socket's
    hub.spawn(log_a_line())
    await done.wait()
    assert "conn" not in seen[0] and "tenant" not in seen[0], seen[0]


# -- settings ----------------------------------------------------------------------------


def test_the_new_server_settings_are_validated(tmp_path: Any) -> None:
    def load(text: str) -> Any:
        path = tmp_path / "wsq.toml"
        path.write_text(f"[server]\n{text}\n")
        return load_settings(config_path=str(path), environ={}).server

    server = load('metrics_allow = ["10.0.0.0/8"]\nready_max_lag_ms = 250\nlog_format = "json"')
    assert (server.metrics_allow, server.ready_max_lag_ms, server.log_format) == (
        ("10.0.0.0/8",),
        250,
        "json",
    )
    assert load("metrics_allow = []").metrics_allow == ()
    with pytest.raises(ConfigError, match=r"metrics_allow.*\[0\]: 'nope' is not an IP address"):
        load('metrics_allow = ["nope"]')
    with pytest.raises(ConfigError, match=r"log_format.*expected one of 'text', 'json'"):
        load('log_format = "xml"')
    with pytest.raises(ConfigError, match="ready_max_lag_ms"):
        load("ready_max_lag_ms = 0")
    lines = "\n".join(describe_settings(load_settings(environ={}), None))
    assert "metrics_allow 127.0.0.0/8, ::1/128, 10.0.0.0/8" in lines
    assert "ready_max_lag_ms 5000, log_format text" in lines


def test_counters_are_plain_and_cheap() -> None:
    # What the hot paths count into: Counters, read only when a snapshot is taken.
    from wsq.ratelimit import PublishRateLimiter

    assert isinstance(PublishRateLimiter().refused, Counter)
