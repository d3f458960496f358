// static/figures.js, what /ops draws from consecutive snapshots: exact rates, no rate (never a
// negative one) across a restart, duplicates of a rewind skipped, staleness robust to a page
// clock that is off. Run by test_ops_page.py (node --test).
import assert from "node:assert/strict";
import { test } from "node:test";
import { ageOf, pointOf } from "../../static/figures.js";

const snap = (time, pid, fields = {}) => ({ node: "gw-a", pid, time, ...fields });

test("rates are counter deltas per second, per tenant and from 0 for a new tenant", () => {
  const before = snap(100, 7, { deliveries: { acme: 10 }, publishes: { acme: 4 } });
  const now = snap(100.5, 7, { deliveries: { acme: 60, other: 5 }, publishes: { acme: 4 } });
  const point = pointOf(now, before);
  assert.equal(point.restart, false);
  assert.deepEqual({ ...point.rates.deliveries }, { acme: 100, other: 10 });
  assert.deepEqual({ ...point.rates.publishes }, { acme: 0 });
});

test("the first snapshot and a restart (another pid) give no rate, never a negative one", () => {
  assert.equal(pointOf(snap(1, 7, { deliveries: { acme: 9 } }), null).rates, null);
  const before = snap(100, 7, { deliveries: { acme: 5000 } });
  const after = pointOf(snap(101, 8, { deliveries: { acme: 3 }, connections: { acme: 2 } }), before);
  assert.equal(after.duplicate, false);
  assert.equal(after.restart, true);
  assert.equal(after.rates, null);
  assert.equal(after.connections, 2); // the other charts go on
});

test("a snapshot not newer than the last of its pid is a duplicate (a rewind seen again)", () => {
  const last = snap(100, 7);
  assert.equal(pointOf(snap(100, 7), last).duplicate, true);
  assert.equal(pointOf(snap(99, 7), last).duplicate, true);
  assert.equal(pointOf(snap(99, 8), last).duplicate, false); // another process's clock
});

test("levels are summed over tenants and roles; odd values count as 0", () => {
  const point = pointOf(
    snap(1, 7, {
      connections: { acme: 2, "": 1, bad: "x" },
      links: { acme: { receiver: 3, sender: 1 }, other: { receiver: 2 } },
      sessions: 4,
      outbox_bytes: null,
      broker: { reader_lag_s: 0.25 },
    }),
    null,
  );
  assert.deepEqual(
    [point.connections, point.links, point.sessions, point.outbox, point.lag],
    [3, 6, 4, 0, 0.25],
  );
});

test("age: since received, or since sent on the gateways' clock, whichever is longer", () => {
  const now = 1_000_000; // page clock, ms
  // Page clock 30 s ahead of the gateways' (skew 30): a fresh snapshot is 0 s old, not 30.
  assert.equal(ageOf(970, now, now, 30), 0);
  // Received now, but sent 12 s ago (a rewound snapshot of a stopped node).
  assert.equal(ageOf(958, now, now, 30), 12);
  // Nothing received for 6 s.
  assert.equal(ageOf(964, now - 6000, now, 30), 6);
});
