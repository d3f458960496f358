"""Webhooks on a real ``wsq serve`` process posting to a receiver in this test.

- A socket opened and closed reaches the receiver as ``connection.opened`` then
  ``connection.closed``, each verified by the reference library (``standardwebhooks``).
- A failing receiver gets the same event again, with the same ``webhook-id``, until it answers
  2xx; ``/metrics`` counts the attempts; an entry that never succeeds is given up and counted.
"""

from __future__ import annotations

import base64
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import websockets
from standardwebhooks import Webhook
from wsq_harness import SECRET_ACME, Client, eventually, serve_config, tenants

from wsq.auth import mint_token

HOOK_SECRET = "whsec_" + base64.b64encode(b"webhook-test-key-0123456789abcdef").decode()


@dataclass
class Receiver:
    """A tiny HTTP server: records every request, answers the next of ``statuses`` (then 204)."""

    statuses: list[int] = field(default_factory=list)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


@contextlib.contextmanager
def receiver(statuses: list[int] | None = None) -> Iterator[Receiver]:
    rec = Receiver(statuses=list(statuses or []))
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            with lock:
                rec.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = rec.statuses.pop(0) if rec.statuses else 204
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    rec.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def write_config(tmp_path: Path, url: str, extra: str = "") -> Path:
    config = tmp_path / "wsq.toml"
    config.write_text(
        "[tenants.acme]\n"
        f'keys = [{{ kid = "k1", alg = "HS256", secret = "{SECRET_ACME}" }}]\n'
        f'webhooks = [{{ url = "{url}", events = ["connection.opened", "connection.closed"], '
        f'secret_env = "HOOK_SECRET", backoff_ms = 50, timeout_ms = 2000{extra} }}]\n'
    )
    return config


async def open_and_close(port: int) -> None:
    ws = await websockets.connect(f"ws://127.0.0.1:{port}/ws", subprotocols=["wsq.v1"])
    client = Client(ws)
    await client.open(mint_token(tenants()["acme"], "alice", publish=(), subscribe=(">",)))
    await client.close()


def metric(port: int, line_start: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    found = [line for line in text.splitlines() if line.startswith(line_start)]
    return float(found[0].rsplit(" ", 1)[1]) if found else 0.0


async def test_connection_events_reach_the_receiver_signed(tmp_path: Path) -> None:
    with (
        receiver() as rec,
        serve_config(write_config(tmp_path, rec.url), env={"HOOK_SECRET": HOOK_SECRET}) as served,
    ):
        await open_and_close(served.port)
        await eventually(lambda: len(rec.requests) == 2, "two events", within=10)
        verified = [Webhook(HOOK_SECRET).verify(body, headers) for headers, body in rec.requests]
        assert [e["type"] for e in verified] == ["connection.opened", "connection.closed"]
        opened, closed = (e["data"] for e in verified)
        assert opened["tenant"] == closed["tenant"] == "acme"
        assert opened["sub"] == closed["sub"] == "alice"
        assert opened["connection"] == closed["connection"]
        assert closed["reason"] == "client"
        ids = [headers["webhook-id"] for headers, _ in rec.requests]
        assert len(set(ids)) == 2
        assert rec.requests[0][0]["content-type"] == "application/json"
        delivered = 'wsq_webhook_deliveries_total{outcome="delivered",tenant="acme"}'
        assert metric(served.port, delivered) == 2.0
        # Neither the secret nor a body reaches the log.
        assert HOOK_SECRET[6:] not in served.log()
        assert '"connection.opened"' not in served.log()


async def test_a_failing_receiver_gets_the_same_id_until_it_answers(tmp_path: Path) -> None:
    # connection.opened: 500, 503, then 204; connection.closed: 204 at once.
    with (
        receiver([500, 503]) as rec,
        serve_config(write_config(tmp_path, rec.url), env={"HOOK_SECRET": HOOK_SECRET}) as served,
    ):
        await open_and_close(served.port)
        await eventually(lambda: len(rec.requests) == 4, "four requests", within=10)
        types = [Webhook(HOOK_SECRET).verify(b, h)["type"] for h, b in rec.requests]
        assert types == ["connection.opened"] * 3 + ["connection.closed"]
        ids = [headers["webhook-id"] for headers, _ in rec.requests]
        assert ids[0] == ids[1] == ids[2] != ids[3]
        assert rec.requests[0][1] == rec.requests[1][1] == rec.requests[2][1]
        outcome = 'wsq_webhook_deliveries_total{{outcome="{}",tenant="acme"}}'
        assert metric(served.port, outcome.format("retried")) == 2.0
        assert metric(served.port, outcome.format("delivered")) == 2.0


async def test_a_receiver_that_never_succeeds_is_given_up(tmp_path: Path) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:1/hook", ", max_attempts = 3")
    with serve_config(config, env={"HOOK_SECRET": HOOK_SECRET}) as served:
        await open_and_close(served.port)
        failed = 'wsq_webhook_deliveries_total{outcome="failed",tenant="acme"}'
        await eventually(lambda: metric(served.port, failed) == 2.0, "both given up", within=10)
        retried = 'wsq_webhook_deliveries_total{outcome="retried",tenant="acme"}'
        assert metric(served.port, retried) == 4.0


async def test_past_the_queue_events_are_dropped_and_counted(tmp_path: Path) -> None:
    # Nobody listens on port 1: the first event holds the queue of one while it is retried
    # (20 attempts, seconds of backoff); the second finds it full and is dropped.
    config = write_config(tmp_path, "http://127.0.0.1:1/hook", ", max_attempts = 20, max_queue = 1")
    with serve_config(config, env={"HOOK_SECRET": HOOK_SECRET}) as served:
        await open_and_close(served.port)
        dropped = 'wsq_webhook_deliveries_total{outcome="dropped",tenant="acme"}'
        await eventually(lambda: metric(served.port, dropped) == 1.0, "one dropped", within=10)
        assert metric(served.port, "wsq_webhook_queued") == 1.0
