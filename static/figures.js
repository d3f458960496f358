// What /ops draws from two consecutive snapshots of one node (wsq/stats.py NodeStats.snapshot):
// plain functions, no DOM, so that node can test them (tests/e2e/ops_figures.test.mjs). The
// snapshot is the gateway's, but still read as input: a missing or odd value counts as 0.

export const num = (v) => (typeof v === "number" && Number.isFinite(v) ? v : 0);
export const obj = (v) => (v && typeof v === "object" && !Array.isArray(v) ? v : {});

/** The sum of the numbers of {key: n}. */
export const total = (counts) => Object.values(obj(counts)).reduce((sum, n) => sum + num(n), 0);

/** The links of {tenant: {role: n}} in all. */
export const allLinks = (links) => Object.values(obj(links)).reduce((sum, roles) => sum + total(roles), 0);

/** Per second from `before` to `now` of counters {key: n}, per key; a key new in `now` counted
 * from 0 (every counter starts at 0 with its process); never below 0. */
export function rates(now, before, seconds) {
  const out = Object.create(null);
  const prev = obj(before);
  for (const [key, n] of Object.entries(obj(now))) out[key] = Math.max(0, num(n) - num(prev[key])) / seconds;
  return out;
}

/**
 * The point a snapshot `snap` adds after `before` (the node's previous one, or null):
 * {duplicate} when it is not newer than `before` of the same pid (a rewind seen again), else
 * {connections, sessions, links, outbox, lag, restart, rates}. `rates` ({deliveries: {tenant:
 * r}, publishes: {tenant: r}}) is null for the first snapshot and across a restart (another
 * pid: its counters began again at 0, so a delta would be meaningless, or negative).
 */
export function pointOf(snap, before) {
  const samePid = before !== null && before.pid === snap.pid;
  if (samePid && !(snap.time > before.time)) return { duplicate: true };
  const point = {
    duplicate: false,
    connections: total(snap.connections),
    sessions: num(snap.sessions),
    links: allLinks(snap.links),
    outbox: num(snap.outbox_bytes),
    lag: num(obj(snap.broker).reader_lag_s),
    restart: before !== null && !samePid,
    rates: null,
  };
  if (samePid) {
    const seconds = snap.time - before.time;
    point.rates = {
      deliveries: rates(snap.deliveries, before.deliveries, seconds),
      publishes: rates(snap.publishes, before.publishes, seconds),
    };
  }
  return point;
}

/** How long ago a node last reported, in s: the longer of the time since the page received its
 * newest snapshot (`receivedMs`, page clock) and that snapshot's age on the gateways' clock as
 * well as the page knows it (`skew`: the smallest page-clock-minus-snapshot-time seen, i.e. the
 * clock difference plus the shortest transit). A page whose clock is off makes nobody stale. */
export function ageOf(snapTime, receivedMs, nowMs, skew) {
  const sinceReceived = (nowMs - receivedMs) / 1000;
  const sinceSent = nowMs / 1000 - (Number.isFinite(skew) ? skew : 0) - snapTime;
  return Math.max(sinceReceived, sinceSent);
}
