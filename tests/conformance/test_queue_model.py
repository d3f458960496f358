"""A model-based test of the queue (move) rules of contract section 5, on every broker.

Two hubs over one broker (the memory broker shared by two hubs; for Redis and the cluster, two
broker instances as two gateway processes would have) serve consumers that attach, grant credit,
accept, release, reject, modify, let leases run out, and leave, in a random order drawn from a
seed. After every step what the consumers were handed is checked against a small reference
model (``Model``):

- no job is handed to a consumer while another consumer holds it under a lease still running;
- no job is handed again once accepted or dead-lettered;
- ``redelivered`` is exactly the number of earlier deliveries that ended without an outcome
  (lease ran out, link ended, ``modified``); ``released`` does not count;
- a job released by a consumer, or whose lease ran out on it, does not go back to that consumer
  within the hand-over wait while another consumer has credit and has been handed nothing;
- past ``max_deliveries`` a job is dead-lettered, never delivered again;
- fair share: no consumer is handed most of a burst while another had credit and got none.

At the end a consumer with credit on each hub accepts whatever comes: every job is then accepted
exactly once or dead-lettered exactly once, and the dead-letter address holds exactly the
dead jobs, each with its ``dead_letter_from``, ``dead_letter_id`` and ``dead_letter_reason``.
On a failure the seed is in the message: ``WSQ_MODEL_SEED=<seed>`` replays it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from types import MappingProxyType
from typing import Any

import pytest

from wsq.broker.base import Broker
from wsq.config import Settings, TenantConfig
from wsq.core.limits import HANDOFF_MS, QUEUE_ROUND
from wsq.core.messages import NewMessage, Outcome
from wsq.hub import Hub, Outlet
from wsq.hub.move import MAX_UNSETTLED_PER_LINK
from wsq.protocol.connection import Limits, ServerConnection
from wsq.protocol.events import AttachRequested, CreditGranted, DeliveriesSettled, LinkEnded
from wsq.protocol.state import Link

TENANT = "model"
MAX_DELIVERIES = 3
DELAY_MS = 50
SHORT_LEASE_MS = 400
LONG_LEASE_MS = 60_000
#: A settle this close to a lease's end might race it: the model only settles well before.
LEASE_MARGIN_S = 0.15
STEPS = 60
#: Now and then a burst of jobs: fair share must spread it over the consumers with credit.
BURST = 200
#: Handed this many of a burst in one look while another consumer with credit got none: unfair
#: (rounds of 32 per link; the other node's consumer starts a round trip or two late).
UNFAIR = 150


@pytest.fixture
def broker_settings(address: str) -> Settings:
    dead = f"{address}.dead"
    tenant = TenantConfig(
        name=TENANT,
        issuer=TENANT,
        keys=(),
        dead_letter=dead,
        max_deliveries=MAX_DELIVERIES,
        redelivery_delay_ms=DELAY_MS,
    )
    return Settings(tenants=MappingProxyType({TENANT: tenant}))


@dataclasses.dataclass
class Held:
    """A delivery a consumer holds. It was handed over after ``earliest`` (the model's look
    before it) and by ``at`` (the look that found it): a busy machine may be slow to look, so
    the model judges leases by whichever end of that span is safe."""

    job: str
    earliest: float
    at: float
    lease_s: float
    void: bool = False  # handed to another since (its lease ran out)


@dataclasses.dataclass
class Job:
    failures: int = 0  # deliveries that ended without an outcome, as the model counts them
    done: bool = False
    dead: str | None = None  # dead_letter_reason
    # Who let it go last (released, or its lease ran out) and when, for the hand-over rule.
    let_go_by: str | None = None
    let_go_at: float = 0.0
    deliveries: int = 0
    history: list[str] = dataclasses.field(default_factory=list)
    holder: str = ""  # who was handed it last
    # When the broker call that handed it over last began: what the broker knew then decides.
    claim_started: float = 0.0


class Consumer:
    """One consumer link on a socket of its own, served by one hub."""

    def __init__(self, name: str, hub: Hub) -> None:
        self.name = name
        self.hub = hub
        self.conn = ServerConnection(Limits())
        self.outlet = Outlet(self.conn, 1 << 22)
        self.link: Link | None = None
        self.credit = 0
        self.lease_s = 0.0
        self.held: dict[int, Held] = {}  # delivery number -> what it holds
        self.last_handed = 0.0
        # Since when it has had credit without a break (inf: it has none): the broker learns
        # that a consumer wants work at its next claim, a moment after it gets credit.
        self.wanting_since = float("inf")
        # When the broker surely knew that it wants work (inf: not yet): the end of a claim of
        # its, begun while it had credit, that left it wanting more. Only a claim tells the
        # broker; on a busy machine that may come well after the credit.
        self.heard_at = float("inf")
        # When the hub queued each delivery on this socket, by delivery number: the model
        # judges leases by it (a look may come late on a busy machine).
        self.sent_at: dict[int, float] = {}
        send = self.conn.send_transfers

        def send_transfers(
            link: Link, tails: Sequence[str], message_ids: Sequence[str] | None = None
        ) -> None:
            now = time.monotonic()
            first = link.session.next_outgoing
            for delivery in range(first, first + len(tails)):
                self.sent_at[delivery] = now
            send(link, tails, message_ids)

        self.conn.send_transfers = send_transfers  # type: ignore[method-assign]
        self.conn.receive_text(json.dumps({"op": "open", "token": "t"}))
        self.conn.next_event()
        self.conn.accept_open({})
        self.conn.receive_text(json.dumps({"op": "begin", "ch": 1}))
        self.conn.next_event()
        self.conn.data_to_send()

    def frame(self, frame: dict[str, Any]) -> Any:
        self.conn.receive_text(json.dumps({"ch": 1, "handle": 0, **frame}))
        return self.conn.next_event()

    async def attach(self, credit: int, lease_ms: int, group: str, address: str) -> None:
        event = self.frame(
            {
                "op": "attach",
                "role": "receiver",
                "address": address,
                "mode": "move",
                "group": group,
                "lease": lease_ms,
                "credit": credit,
            }
        )
        assert isinstance(event, AttachRequested)
        self.link = event.link
        self.credit = credit
        self.wanting_since = time.monotonic() if credit else float("inf")
        self.heard_at = float("inf")
        self.lease_s = lease_ms / 1000
        await self.hub.attach_move(TENANT, event.link, self.outlet, f"{self.name}-{id(self)}")
        self.conn.accept_attach(event.link)
        self.hub.activate(event.link)

    def grant(self, n: int) -> None:
        event = self.frame({"op": "flow", "credit": n})
        assert isinstance(event, CreditGranted)
        if self.credit == 0:
            self.wanting_since = time.monotonic()
            self.heard_at = float("inf")
        self.credit += n
        self.hub.credit(event.link)

    async def settle(self, delivery: int, outcome: str) -> None:
        event = self.frame({"op": "disposition", "first": delivery, "outcome": outcome})
        assert isinstance(event, DeliveriesSettled)
        self.held.pop(delivery)
        await self.hub.settle(event.link, event.ids, event.outcome)

    async def leave(self) -> list[Held]:
        event = self.frame({"op": "detach"})
        assert isinstance(event, LinkEnded)
        self.link = None
        self.credit = 0
        self.wanting_since = float("inf")
        self.heard_at = float("inf")
        await self.hub.detach(event.link, event.unsettled)
        gone = list(self.held.values())
        self.held.clear()
        return gone

    def transfers(self) -> list[tuple[float, dict[str, Any]]]:
        """The transfers queued on the socket since the last look, each with when it was."""
        out: list[tuple[float, dict[str, Any]]] = []
        for text in self.conn.data_to_send():
            value = json.loads(text)
            for f in value if isinstance(value, list) else [value]:
                if f.get("op") == "transfer":
                    out.append((self.sent_at.pop(f["delivery"]), f))
        if self.outlet.stalled:
            self.hub.drained(self.outlet)
        return out


class Model:
    def __init__(self, rng: random.Random, seed: int, address: str, kind: str) -> None:
        self.kind = kind
        self.rng = rng
        self.seed = seed
        self.address = address
        self.jobs: dict[str, Job] = {}
        self.consumers: list[Consumer] = []
        self.log: list[str] = []
        self.last_look = 0.0

    def fail(self, why: str) -> None:
        tail = "\n".join(self.log[-150:])
        pytest.fail(
            f"{why}\n{self.kind}: seed {self.seed} (WSQ_MODEL_SEED={self.seed})\nlast steps:\n{tail}"
        )

    def observe(self, now: float) -> None:
        """Check each transfer the consumers were handed since the last look against the model,
        then record it. Credit first, for all: whether another consumer still wanted work is
        judged by what it holds after this look."""
        batches = [(c, c.transfers()) for c in self.consumers]
        for c, ts in batches:
            if len(ts) < UNFAIR:
                continue
            for other, theirs in batches:
                if (
                    theirs
                    or other.link is None
                    or other.credit <= 0
                    or other.wanting_since + 0.1 >= self.last_look
                    # A link holding this many unsettled takes no more (MAX_UNSETTLED_PER_LINK).
                    or len(other.held) + QUEUE_ROUND > MAX_UNSETTLED_PER_LINK
                ):
                    continue
                # What ``other`` held last goes to others first: that is no unfairness.
                owed = [t for _, t in ts if self.jobs[t["id"]].holder != other.name]
                if len(owed) >= UNFAIR:
                    self.fail(f"{c.name} was handed {len(owed)} while {other.name} waited")
        self.last_look = now
        for c, ts in batches:
            if ts:
                if c.link is None or c.credit < len(ts):
                    self.fail(f"{c.name} was handed {len(ts)} without a link or credit")
                c.credit -= len(ts)
                c.last_handed = ts[-1][0]
                if c.credit == 0:
                    c.wanting_since = float("inf")
                    c.heard_at = float("inf")
        # In the order the hub handed them over.
        handed = [(at, c, t) for c, ts in batches for at, t in ts]
        for at, c, t in sorted(handed, key=lambda x: x[0]):
            self.record(c, t, at)

    def record(self, c: Consumer, t: dict[str, Any], now: float) -> None:
        """Check one transfer against the model, then record it."""
        job_id = t["id"]
        job = self.jobs.get(job_id)
        self.log.append(f"  {c.name} <- {job_id} redelivered={t['props']['redelivered']}")
        if job is None:
            self.fail(f"{c.name} was handed {job_id}, never published")
            return
        if job.done or job.dead:
            self.fail(f"{c.name} was handed {job_id}, already {job.dead or 'accepted'}")
        for other in self.consumers:
            for h in other.held.values():
                if h.job != job_id or h.void:
                    continue
                if now - h.earliest < h.lease_s - LEASE_MARGIN_S:
                    self.fail(f"{job_id} handed to {c.name} while {other.name} holds it")
                # Its lease ran out: a delivery that ended without an outcome.
                h.void = True
                job.let_go_by = other.name
                job.let_go_at = h.earliest + h.lease_s
                self.ended_without_outcome(job_id, f"{other.name}'s lease ran out (handed on)")
                if job.dead:
                    self.fail(f"{job_id} handed to {c.name} past max_deliveries")
        if t["props"]["redelivered"] != job.failures:
            self.log.append(f"{job_id}: {job.history}")
            self.fail(
                f"{job_id} to {c.name}: redelivered {t['props']['redelivered']}, "
                f"the model counts {job.failures}"
            )
        if job.let_go_by == c.name and now - job.let_go_at < HANDOFF_MS / 1000 - 0.3:
            for other in self.consumers:
                if (
                    other is not c
                    and other.link is not None
                    and other.credit > 0
                    and other.wanting_since + 0.1 < job.let_go_at
                    and other.last_handed < job.let_go_at
                    and other.heard_at < job.claim_started
                ):
                    self.log.append(f"{job_id}: {job.history}")
                    self.fail(
                        f"{job_id} went back to {c.name}, who let it go, while "
                        f"{other.name} wanted work"
                    )
        job.history.append(f"{now:.2f} to {c.name} ({t['props']['redelivered']})")
        c.held[t["delivery"]] = Held(job_id, now, now, c.lease_s)
        job.holder = c.name
        job.deliveries += 1
        job.let_go_by = None

    def expire(self, now: float) -> None:
        """Holds whose lease has surely run out end without an outcome (counted once, whenever
        the broker gets to it: on its timer, or on the next claim)."""
        for c in self.consumers:
            for h in c.held.values():
                if not h.void and now - h.at > h.lease_s + LEASE_MARGIN_S:
                    h.void = True
                    job = self.jobs[h.job]
                    job.let_go_by, job.let_go_at = c.name, h.earliest + h.lease_s
                    self.ended_without_outcome(h.job, f"{c.name}'s lease ran out")

    def ended_without_outcome(self, job_id: str, why: str) -> None:
        job = self.jobs[job_id]
        job.history.append(f"{time.monotonic():.2f} {why}")
        job.failures += 1
        if job.failures >= MAX_DELIVERIES:
            job.dead = "delivery-limit"


def trace(model: Model, brokers: list[Broker]) -> None:
    """Record each broker call on a job in its history (what a failure message shows)."""
    for n, broker in enumerate(dict.fromkeys(brokers)):
        claim, settle, leave = broker.claim, broker.settle, broker.leave

        async def traced_claim(*args: Any, _claim: Any = claim, _n: int = n, **kw: Any) -> Any:
            start = time.monotonic()
            got = await _claim(*args, **kw)
            end = time.monotonic()
            # The broker hears that a consumer wants work at a claim that leaves it room (and
            # forgets it at one that fills it): the hand-over rule can only hold from then.
            who = [c for c in model.consumers if str(args[3]).startswith(f"{c.name}-")]
            if who and who[0].wanting_since <= start:
                if len(got) < kw.get("room", args[4]):
                    who[0].heard_at = min(who[0].heard_at, end)
                else:
                    who[0].heard_at = float("inf")
            for d in got:
                job = model.jobs.get(d.message.id)
                if job is not None:
                    job.claim_started = start
                    job.history.append(
                        f"{time.monotonic():.2f} b{_n} claim {args[3]} ({d.redelivered})"
                    )
            return got

        async def traced_settle(*args: Any, _settle: Any = settle, _n: int = n) -> None:
            for i in args[4]:
                if i in model.jobs:
                    model.jobs[i].history.append(
                        f"{time.monotonic():.2f} b{_n} settle {args[3]} {args[5].value}"
                    )
            await _settle(*args)

        async def traced_leave(*args: Any, _leave: Any = leave, _n: int = n) -> None:
            for i in args[4]:
                if i in model.jobs:
                    model.jobs[i].history.append(f"{time.monotonic():.2f} b{_n} leave {args[3]}")
            await _leave(*args)

        broker.claim = traced_claim  # type: ignore[method-assign]
        broker.settle = traced_settle  # type: ignore[method-assign]
        broker.leave = traced_leave  # type: ignore[method-assign]


async def settle_loop(brokers: list[Broker]) -> None:
    """Let the hubs and brokers act on the last step (a Redis round trip or two)."""
    remote = any(type(b).__name__ == "RedisBroker" for b in brokers)
    for _ in range(3):
        await asyncio.sleep(0.02 if remote else 0)
        for _ in range(10):
            await asyncio.sleep(0)


async def test_queue_semantics_match_the_model(
    make_broker: Callable[[Settings], Awaitable[Broker]],
    broker_kind: str,
    broker_settings: Settings,
    address: str,
) -> None:
    seed = int(os.environ.get("WSQ_MODEL_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    model = Model(rng, seed, address, broker_kind)
    policies = broker_settings.storage_policies()
    b1 = await make_broker(broker_settings)
    b2 = b1 if broker_kind == "memory" else await make_broker(broker_settings)
    brokers = [b1, b2]
    trace(model, brokers)
    hubs = [Hub(b1, policies), Hub(b2, policies)]
    dead_start = await b1.last_position(TENANT, f"{address}.dead")
    model.consumers = [Consumer(f"c{i}", hubs[i % 2]) for i in range(4)]
    published = 0
    side = f"{address}.side"
    side_dead: dict[str, str] = {}
    try:
        for step in range(STEPS):
            now = time.monotonic()
            model.log.append(f"{now:.2f}")
            c = rng.choice(model.consumers)
            roll = rng.random()
            if roll < 0.15 or published == 0:
                n = BURST if rng.random() < 0.3 else rng.randint(1, 6)
                results = await rng.choice(brokers).publish(
                    TENANT,
                    address,
                    [
                        NewMessage(
                            body=json.dumps(published + i),
                            publisher="p",
                            message_id=f"job-{published + i}",
                        )
                        for i in range(n)
                    ],
                )
                for r in results:
                    model.jobs[r.id] = Job()
                published += n
                model.log.append(f"{step}: publish {n}")
            elif roll < 0.2 and len(side_dead) < published:
                # A job of another queue with the message_id of one of ours, rejected there:
                # its dead letter lands beside ours, whatever its message_id.
                mid = f"job-{len(side_dead)}"  # a new one there, within its dedup window
                broker = rng.choice(brokers)
                await broker.publish(
                    TENANT, side, [NewMessage(body="0", publisher="p", message_id=mid)]
                )
                [d] = await broker.claim(TENANT, side, "g", "side", 1, LONG_LEASE_MS)
                await broker.settle(TENANT, side, "g", "side", [d.message.id], Outcome.REJECTED)
                side_dead[d.message.id] = "rejected"
                model.log.append(f"{step}: {mid} rejected on the side")
            elif c.link is None:
                credit = rng.choice([0, 1, 3, 10, 40, 1000])
                lease = rng.choice([SHORT_LEASE_MS, LONG_LEASE_MS])
                model.log.append(f"{step}: {c.name} attaches credit={credit} lease={lease}")
                await c.attach(credit, lease, "g", address)
            elif roll < 0.3:
                n = rng.choice([1, 2, 5, 20])
                model.log.append(f"{step}: {c.name} grants {n}")
                c.grant(n)
            elif roll < 0.75 and c.held:
                delivery, h = rng.choice(sorted(c.held.items()))
                if h.void or now - h.earliest > h.lease_s - LEASE_MARGIN_S:
                    model.log.append(f"{step}: {c.name} sits on {h.job}")
                else:
                    outcome = rng.choice(
                        ["accepted", "accepted", "released", "modified", "rejected"]
                    )
                    model.log.append(f"{step}: {c.name} {outcome} {h.job}")
                    job = model.jobs[h.job]
                    await c.settle(delivery, outcome)
                    if outcome == "accepted":
                        job.done = True
                    elif outcome == "rejected":
                        job.dead = "rejected"
                    elif outcome == "released":
                        job.let_go_by, job.let_go_at = c.name, time.monotonic()
                        job.history.append(f"{job.let_go_at:.2f} {c.name} released")
                    else:
                        model.ended_without_outcome(h.job, f"{c.name} modified")
            elif roll < 0.82:
                model.log.append(f"{step}: {c.name} leaves")
                # What the link was handed up to its detach is the model's too (no await
                # between this look and the detach).
                model.observe(time.monotonic())
                for h in await c.leave():
                    if not h.void:
                        model.ended_without_outcome(h.job, f"{c.name} left")
            else:
                wait = rng.choice([0.05, 0.2, SHORT_LEASE_MS / 1000 + 0.1])
                model.log.append(f"{step}: wait {wait}")
                # In slices, looking at what arrives after each: the model needs to know when
                # each transfer came to within a slice (leases run out meanwhile).
                end = time.monotonic() + wait
                while time.monotonic() < end:
                    await asyncio.sleep(0.03)
                    model.observe(time.monotonic())
                    model.expire(time.monotonic())
            await settle_loop(brokers)
            model.observe(time.monotonic())
            model.expire(time.monotonic())

        # The end: whoever still holds a job under a long lease accepts it; every consumer
        # grants plenty and accepts everything, until nothing is left to deliver.
        model.log.append("drain")
        for c in model.consumers:
            if c.link is None:
                await c.attach(0, LONG_LEASE_MS, "g", address)
            c.grant(1000)
        deadline = time.monotonic() + SHORT_LEASE_MS / 1000 + HANDOFF_MS / 1000 + 4
        while time.monotonic() < deadline:
            await settle_loop(brokers)
            model.observe(time.monotonic())
            model.expire(time.monotonic())
            for c in model.consumers:
                for delivery, h in sorted(c.held.items()):
                    age = time.monotonic() - h.earliest
                    if not h.void and age < h.lease_s - LEASE_MARGIN_S:
                        await c.settle(delivery, "accepted")
                        model.jobs[h.job].done = True
            if all(j.done or j.dead for j in model.jobs.values()):
                break
            await asyncio.sleep(0.05)
        left = [i for i, j in model.jobs.items() if not (j.done or j.dead)]
        if left:
            model.fail(f"never delivered to consumers with credit: {left}")
        expected = {(address, i): j.dead for i, j in model.jobs.items() if j.dead}
        expected.update(((side, i), why) for i, why in side_dead.items())
        got: dict[tuple[str, str], str] = {}
        for _ in range(200):
            letters = (await b1.read(TENANT, f"{address}.dead", dead_start, 1000)).messages
            got = {}
            for m in letters:
                headers = dict(m.headers or {})
                key = (str(headers["dead_letter_from"]), str(headers["dead_letter_id"]))
                if key in got:
                    model.fail(f"{key} dead-lettered twice")
                got[key] = str(headers["dead_letter_reason"])
            if len(got) >= len(expected):
                break
            await asyncio.sleep(0.02)
        if got != expected:
            wrong = sorted(set(got.items()) ^ set(expected.items()))
            model.log.extend(
                f"{k}: {model.jobs[k[1]].history}" for k, _ in wrong[:5] if k[1] in model.jobs
            )
            model.fail(f"dead letters differ from the model's (either side): {wrong[:10]}")
    finally:
        for hub in hubs:
            await hub.close()
