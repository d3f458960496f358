"""Feed the live dashboard at ``/`` from a backend: 20 made-up metrics (5 kinds x 4 hosts, the same
as the page's "Start demo feed") as bounded random walks, one batch per tick over the HTTP bridge.
Only ``httpx`` and the standard library.

    WSQ_URL=http://127.0.0.1:8000 python examples/python/dashboard_feed.py [address] \\
        [--interval 0.25] [--ticks 0]

Credentials, the first that is set: ``WSQ_TOKEN`` (a token with the publish right on the
address); ``WSQ_ISSUER`` + ``WSQ_SECRET`` (+ ``WSQ_KID``): the tenant's HS256 secret, a
short-lived token minted here; else, on a development gateway on this machine, ``/dev/token``.
Each batch carries an ``Idempotency-Key``: a retry after a 429, a 503 or a lost answer never
stores it twice. Exit code 2 without credentials, 1 on an error (its ``wsq:`` condition on stderr).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import random
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

HOSTS = ("web-1", "web-2", "web-3", "web-4")


@dataclass
class Metric:
    subject: str
    unit: str
    low: float
    high: float
    step: float
    value: float

    def next(self) -> float:
        self.value = min(self.high, max(self.low, self.value + random.uniform(-1, 1) * self.step))
        return round(self.value) if self.unit == "jobs" else round(self.value, 1)


def metrics() -> list[Metric]:
    kinds = [  # kind, unit, low, high, step, start
        ("cpu", "%", 0, 100, 6, 35),
        ("mem", "%", 0, 100, 2, 60),
        ("rps", "req/s", 0, 5000, 150, 1200),
        ("p99", "ms", 1, 2000, 25, 180),
        ("queue", "jobs", 0, 500, 8, 20),
    ]
    return [
        Metric(f"{kind}.{host}", unit, low, high, step, start * random.uniform(0.7, 1.3))
        for kind, unit, low, high, step, start in kinds
        for host in HOSTS
    ]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint_token(issuer: str, secret: str, kid: str | None, address: str, ttl_s: int = 300) -> str:
    """A short-lived HS256 token that may publish to ``address`` only."""
    header: dict[str, Any] = {"alg": "HS256", "typ": "JWT"} | ({"kid": kid} if kid else {})
    now = int(time.time())
    claims = {
        "iss": issuer,
        "sub": "dashboard-feed",
        "iat": now,
        "exp": now + ttl_s,
        "wsq": {"publish": [address], "subscribe": []},
    }
    signing = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
    signature = hmac.new(secret.encode(), signing.encode(), hashlib.sha256).digest()
    return f"{signing}.{_b64url(signature)}"


class Failed(Exception):
    """The gateway refused: ``<status> <wsq: condition>: <description>``."""


class NoCredentials(Exception):
    """Nothing to make a token of."""


class Credentials:
    def __init__(self, http: httpx.Client, address: str) -> None:
        self.http = http
        self.address = address
        self.token: str | None = None
        self.issuer = os.environ.get("WSQ_ISSUER")
        self.secret = os.environ.get("WSQ_SECRET")
        self.minted_at = 0.0

    def current(self) -> str:
        """The token to send: WSQ_TOKEN, else one minted (again after 4 of its 5 minutes), else
        one from /dev/token."""
        if os.environ.get("WSQ_TOKEN"):
            return os.environ["WSQ_TOKEN"]
        if time.monotonic() - self.minted_at < 240 and self.token:
            return self.token
        if self.issuer and self.secret:
            kid = os.environ.get("WSQ_KID")
            self.token = mint_token(self.issuer, self.secret, kid, self.address)
        else:
            answer = self.http.get("/dev/token", params={"sub": "dashboard-feed"})
            if answer.status_code != 200:
                raise NoCredentials(f"no /dev/token here: HTTP {answer.status_code}")
            self.token = answer.json()["token"]
        self.minted_at = time.monotonic()
        return self.token


def publish(
    http: httpx.Client, creds: Credentials, address: str, batch: list[dict[str, Any]]
) -> int:
    """Publish ``batch`` in one request; retried on 429, 503 and network errors with one
    Idempotency-Key. Answers how many were stored."""
    key = str(uuid.uuid4())
    for attempt in range(1, 6):
        try:
            answer = http.post(
                f"/v1/addresses/{address}/messages",
                json={"messages": batch},
                headers={"Authorization": f"Bearer {creds.current()}", "Idempotency-Key": key},
            )
        except httpx.TransportError as exc:
            if attempt == 5:
                raise Failed(f"network: {exc}") from exc
            time.sleep(0.2 * attempt)
            continue
        if answer.status_code in (200, 201):
            return len(answer.json()["ids"])
        if answer.status_code in (429, 503) and attempt < 5:
            time.sleep(min(float(answer.headers.get("Retry-After", "1")), 5.0))
            continue
        error = answer.json().get("error", {}) if answer.content else {}
        raise Failed(f"{answer.status_code} {error.get('condition')}: {error.get('description')}")
    raise Failed("gave up after 5 tries")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("address", nargs="?", default="demo.metrics")
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between batches")
    parser.add_argument("--ticks", type=int, default=0, help="batches to send (0: until ^C)")
    args = parser.parse_args(argv)
    base = os.environ.get("WSQ_URL", "http://127.0.0.1:8000")
    feed = metrics()
    sent = 0
    with httpx.Client(base_url=base, timeout=10) as http:
        creds = Credentials(http, args.address)
        tick = 0
        try:
            while args.ticks == 0 or tick < args.ticks:
                tick += 1
                batch = [
                    {"body": {"value": m.next(), "unit": m.unit}, "subject": m.subject}
                    for m in feed
                ]
                sent += publish(http, creds, args.address, batch)
                if args.ticks == 0 or tick < args.ticks:
                    time.sleep(args.interval)
        except KeyboardInterrupt:
            pass
        except NoCredentials as exc:
            print(f"set WSQ_TOKEN, or WSQ_ISSUER and WSQ_SECRET ({exc})", file=sys.stderr)
            return 2
        except Failed as exc:
            print(f"dashboard_feed: {exc}", file=sys.stderr)
            return 1
    print(f"published {sent} values to {args.address}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
