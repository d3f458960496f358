// The demo feed: 20 made-up metrics (5 kinds × 4 hosts) as bounded random walks, published by
// the page itself over its own connection. examples/python/dashboard_feed.py is the same feed
// from a backend, through the HTTP bridge.

const HOSTS = ["web-1", "web-2", "web-3", "web-4"];
const KINDS = [
  { kind: "cpu", unit: "%", min: 0, max: 100, start: 35, step: 6 },
  { kind: "mem", unit: "%", min: 0, max: 100, start: 60, step: 2 },
  { kind: "rps", unit: "req/s", min: 0, max: 5000, start: 1200, step: 150 },
  { kind: "p99", unit: "ms", min: 1, max: 2000, start: 180, step: 25 },
  { kind: "queue", unit: "jobs", min: 0, max: 500, start: 20, step: 8 },
];
export const FEED_INTERVAL_MS = 250;

export class DemoFeed {
  constructor() {
    this.metrics = [];
    for (const k of KINDS) {
      for (const host of HOSTS) {
        this.metrics.push({ ...k, subject: `${k.kind}.${host}`, value: k.start * (0.7 + Math.random() * 0.6) });
      }
    }
  }

  get size() {
    return this.metrics.length;
  }

  /** The next value of every metric: [{subject, body: {value, unit}}]. */
  tick() {
    return this.metrics.map((m) => {
      const next = m.value + (Math.random() * 2 - 1) * m.step;
      m.value = Math.min(m.max, Math.max(m.min, next));
      const value = m.unit === "jobs" ? Math.round(m.value) : Math.round(m.value * 10) / 10;
      return { subject: m.subject, body: { value, unit: m.unit } };
    });
  }
}
