"""The scale scenario's publisher (bench/scale.py) tries a publish again when the HTTP bridge
answers 503 (the broker unavailable: nothing was done) or 429, with the same message_id, and
gives up on any other refusal at once. Against a real HTTP server on a free port."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from bench_scripts import load

ROOT = Path(__file__).resolve().parents[2]


scale = load("bench/scale.py", "bench_scale")


class Bridge(HTTPServer):
    def __init__(self, answers: list[int]) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.answers = answers
        self.bodies: list[dict[str, object]] = []


class Handler(BaseHTTPRequestHandler):
    server: Bridge

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        self.server.bodies.append(json.loads(self.rfile.read(length)))
        status = self.server.answers.pop(0) if self.server.answers else 201
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def bridge(request: pytest.FixtureRequest) -> Iterator[Bridge]:
    server = Bridge(list(request.param))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scale.time, "sleep", lambda s: None)


@pytest.mark.parametrize("bridge", [[503, 429]], indirect=True)
def test_a_503_or_429_is_tried_again_with_the_same_message(bridge: Bridge) -> None:
    publisher = scale.Publisher(bridge.server_address[1], "t")
    publisher.publish(7)
    assert publisher.retries == 2
    assert len(bridge.bodies) == 3
    assert bridge.bodies[0] == bridge.bodies[1] == bridge.bodies[2]
    assert bridge.bodies[0]["message_id"]
    assert bridge.bodies[0]["body"]["k"] == 7  # type: ignore[index]


@pytest.mark.parametrize("bridge", [[403]], indirect=True)
def test_another_refusal_is_not_tried_again(bridge: Bridge) -> None:
    publisher = scale.Publisher(bridge.server_address[1], "t")
    with pytest.raises(RuntimeError, match="HTTP 403"):
        publisher.publish(1)
    assert len(bridge.bodies) == 1


@pytest.mark.parametrize("bridge", [[503] * 10], indirect=True)
def test_a_bridge_that_stays_unavailable_is_given_up_on(bridge: Bridge) -> None:
    publisher = scale.Publisher(bridge.server_address[1], "t")
    with pytest.raises(RuntimeError, match="HTTP 503"):
        publisher.publish(1)
    assert len(bridge.bodies) == scale.Publisher.TRIES
