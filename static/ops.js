// The wsq operator view (/ops), built on wsq-client like the dashboard at / (token.js,
// connection.js and charts.js are shared with it). One copy subscription to $sys.stats with
// rewind (the last REWIND figures of every node: the charts are full from the first paint) and
// no conflation (every figure is a point). Each gateway process publishes its snapshot (wsq
// stats.py: NodeStats.snapshot) there once a second, subject = its node id.
//
// Rates (deliveries/s, publishes/s) are counter deltas between consecutive snapshots of one
// node and pid; another pid is a restart: its counters start again at 0, so no rate is drawn
// across it (never a negative one). A node whose last figures are older than STALE_S is stale.
// Messages only update state; one requestAnimationFrame paints what changed.

import { MetricCard, formatValue, sortedView } from "./charts.js";
import { PageConnection, timeElement } from "./connection.js";
import { ageOf, num, obj, pointOf, total } from "./figures.js";
import { PageToken } from "./token.js";

const ADDRESS = "$sys.stats";
const REWIND = 300; // the last 300 figures of all nodes: 5 min of one node at 1 s
const HISTORY = 300; // points per chart
const STALE_S = 5; // a node silent for longer is marked stale
const MAX_NODES = 32; // nodes drawn; figures of more are counted, not drawn
const MAX_ROWS = 100; // tenants (and reasons) listed per node
const MAX_NAME = 64; // characters of a tenant, reason or node name shown

const $ = (id) => document.getElementById(id);
const ui = {
  state: $("state"),
  node: $("node"),
  connection: $("connection"),
  tokenForm: $("token-form"),
  token: $("token"),
  disconnect: $("disconnect"),
  denied: $("denied"),
  nodes: $("nodes"),
  nodesCount: $("nodes-count"),
  nodesEmpty: $("nodes-empty"),
  errors: $("errors"),
};

/** What the page counted, for tests and the curious. */
const stats = { snapshots: 0, byNode: Object.create(null), paints: 0, restarts: 0, undrawn: 0 };
window.wsqOps = stats;

// -- figures (the arithmetic is in figures.js) --------------------------------------------

const name = (s) => (s === "" ? "(before authentication)" : String(s).slice(0, MAX_NAME));

function formatBytes(n) {
  if (n < 1024) return `${formatValue(n)} B`;
  if (n < 1024 * 1024) return `${formatValue(Math.round((n / 1024) * 10) / 10)} KiB`;
  return `${formatValue(Math.round((n / 1048576) * 10) / 10)} MiB`;
}

// A lag: in ms below a second (the snapshot has ms precision), else in s.
const formatLag = (s) => (s < 1 ? `${formatValue(Math.round(s * 1000))} ms` : `${formatValue(Math.round(s * 100) / 100)} s`);
const formatRate = (r) => formatValue(Math.round(r * 10) / 10);

// Clock skew: the smallest (page clock - snapshot time) seen is the skew plus the shortest
// transit; a snapshot's age is measured against it, so a gateway whose clock is off is not stale.
let skew = Infinity;

/** Seconds since the newest figures of a node (figures.js). */
const ageOfView = (view, nowMs) => ageOf(view.last.time, view.receivedAt, nowMs, skew);

// -- one node ------------------------------------------------------------------------------

const SERIES = [
  { key: "connections", title: "connections", format: formatValue },
  { key: "sessions", title: "sessions", format: formatValue },
  { key: "links", title: "links", format: formatValue },
  { key: "deliveries", title: "deliveries/s", format: formatRate },
  { key: "publishes", title: "publishes/s", format: formatRate },
  { key: "outbox", title: "outbox bytes", format: formatBytes },
  { key: "lag", title: "reader lag", format: formatLag },
];

function element(tag, className, text) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text !== undefined) el.textContent = text;
  return el;
}

function table(className, caption, headings) {
  const t = element("table", className);
  t.append(element("caption", "", caption));
  const row = document.createElement("tr");
  for (const h of headings) {
    const th = element("th", "", h);
    th.scope = "col";
    row.append(th);
  }
  t.append(element("thead"), element("tbody"));
  t.tHead.append(row);
  return t;
}

class NodeView {
  constructor(node) {
    this.node = node;
    this.last = null; // the newest snapshot
    this.receivedAt = 0; // page time (ms) it arrived
    this.rates = null; // {deliveries: {tenant: r}, publishes: {tenant: r}} of the newest pair
    this.restarted = false;

    const id = `gw-${node.replace(/[^A-Za-z0-9_-]/g, "_")}`;
    this.el = element("section", "gw");
    this.el.dataset.node = node;
    this.el.setAttribute("aria-labelledby", `${id}-heading`);
    const head = element("h3", "gw-name", node);
    head.id = `${id}-heading`;
    this.badges = element("p", "badges");
    this.meta = element("p", "meta hint");
    this.charts = element("div", "charts");
    this.cards = {};
    for (const s of SERIES) {
      const card = new MetricCard(s.key, {
        title: s.title,
        label: `${node} ${s.title}`,
        id: `${id}-${s.key}`,
        history: HISTORY,
        format: s.format,
        level: 4, // under the node's h3
      });
      card.el.dataset.metric = s.key;
      this.cards[s.key] = card;
      this.charts.append(card.el);
    }
    this.tenants = table("tenants", `Tenants on ${node}`, [
      "tenant",
      "connections",
      "links recv / send",
      "deliveries/s",
      "publishes/s",
      "refusals",
    ]);
    this.reasons = table("reasons", `Errors and closes on ${node}, since its start`, ["kind", "reason", "count"]);
    const tables = element("div", "tables");
    for (const t of [this.tenants, this.reasons]) {
      const box = element("div", "scroll");
      // Scrollable by keyboard too, named by its table's caption.
      box.tabIndex = 0;
      box.setAttribute("role", "region");
      box.setAttribute("aria-label", t.caption.textContent);
      box.append(t);
      tables.append(box);
    }
    this.el.append(head, this.badges, this.meta, this.charts, tables);
  }

  /** A snapshot of this node: the charts get a point (rates from the previous one of this
   * pid). Answers false for one that is not newer than the newest (a duplicate). */
  update(snap, nowMs) {
    const point = pointOf(snap, this.last);
    if (point.duplicate) return false;
    this.last = snap;
    this.receivedAt = nowMs;
    const c = this.cards;
    for (const key of ["connections", "sessions", "links", "outbox", "lag"]) c[key].push(point[key]);
    if (point.restart) {
      // Counters began again at 0: no rate across it; the other charts go on.
      stats.restarts += 1;
      this.restarted = true;
    }
    this.rates = point.rates;
    if (point.rates) {
      c.deliveries.push(total(point.rates.deliveries));
      c.publishes.push(total(point.rates.publishes));
    }
    return true;
  }

  badge(kind, text, tone) {
    const b = element("span", `badge ${tone}`, text);
    b.dataset.badge = kind;
    return b;
  }

  draw(nowMs) {
    const snap = this.last;
    for (const card of Object.values(this.cards)) card.draw();
    const age = ageOfView(this, nowMs);
    const stale = age > STALE_S;
    const broker = String(obj(snap.broker).status ?? "unknown").slice(0, 16);
    const reasons = Array.isArray(snap.not_ready) ? snap.not_ready.slice(0, 8).map(String) : [];
    this.el.classList.toggle("stale", stale);
    this.badges.replaceChildren(
      stale
        ? this.badge("stale", `stale: no figures for ${Math.round(age)} s`, "bad")
        : this.badge("stale", "reporting", "ok"),
      snap.ready === true
        ? this.badge("ready", "ready", "ok")
        : this.badge("ready", `not ready${reasons.length ? `: ${reasons.join(", ")}` : ""}`, "bad"),
      snap.draining === true ? this.badge("draining", "draining", "warn") : this.badge("draining", "serving", "ok"),
      this.badge("broker", `broker ${broker}`, broker === "up" ? "ok" : broker === "down" ? "bad" : "warn"),
    );
    this.meta.replaceChildren(
      `pid ${num(snap.pid)}${this.restarted ? " (restarted while watched)" : ""} · figures of `,
      timeElement(num(snap.time) * 1000),
    );
    this.drawTenants();
    this.drawReasons();
  }

  drawTenants() {
    const snap = this.last;
    const connections = obj(snap.connections);
    const links = obj(snap.links);
    const refusals = obj(snap.refusals);
    const r = this.rates ?? { deliveries: {}, publishes: {} };
    const tenants = new Set([
      ...Object.keys(connections),
      ...Object.keys(links),
      ...Object.keys(obj(snap.deliveries)),
      ...Object.keys(obj(snap.publishes)),
      ...Object.keys(refusals),
    ]);
    const rows = [...tenants].sort().slice(0, MAX_ROWS).map((tenant) => {
      const tr = document.createElement("tr");
      tr.dataset.tenant = tenant;
      const th = element("th", "", name(tenant));
      th.scope = "row";
      const roles = obj(links[tenant]);
      const kinds = Object.entries(obj(refusals[tenant]))
        .sort()
        .map(([kind, n]) => `${name(kind)} ${num(n)}`);
      const cells = {
        connections: formatValue(num(connections[tenant])),
        links: `${num(roles.receiver)} / ${num(roles.sender)}`,
        deliveries: this.rates ? formatRate(num(r.deliveries[tenant])) : "–",
        publishes: this.rates ? formatRate(num(r.publishes[tenant])) : "–",
        refusals: kinds.length ? kinds.join(", ") : "none",
      };
      tr.append(th);
      for (const [col, text] of Object.entries(cells)) {
        const td = element("td", "", text);
        td.dataset.col = col;
        // The counter since the process started, beside its rate (for tests and tooltips).
        if (col === "deliveries" || col === "publishes") {
          const since = num(obj(snap[col])[tenant]);
          td.dataset.total = String(since);
          td.title = `${formatValue(since)} since the process started`;
        }
        tr.append(td);
      }
      return tr;
    });
    if (rows.length === 0) rows.push(emptyRow(6, "no tenant yet"));
    this.tenants.tBodies[0].replaceChildren(...rows);
  }

  drawReasons() {
    const snap = this.last;
    const rows = [];
    for (const [kind, counts] of [
      ["error", snap.errors],
      ["close", snap.closes],
    ]) {
      for (const [reason, n] of Object.entries(obj(counts)).sort()) {
        if (rows.length >= MAX_ROWS) break;
        const tr = document.createElement("tr");
        tr.dataset.kind = kind;
        tr.dataset.reason = reason;
        tr.append(element("td", "", kind), element("td", "reason", name(reason)), element("td", "count", formatValue(num(n))));
        rows.push(tr);
      }
    }
    if (rows.length === 0) rows.push(emptyRow(3, "none"));
    this.reasons.tBodies[0].replaceChildren(...rows);
  }
}

function emptyRow(span, text) {
  const tr = document.createElement("tr");
  const td = element("td", "hint", text);
  td.colSpan = span;
  tr.append(td);
  return tr;
}

// -- receiving: state only; paint() draws --------------------------------------------------

const views = new Map(); // node -> NodeView
const dirty = new Set();
let paintScheduled = false;

function viewFor(node) {
  return sortedView(views, node, {
    max: MAX_NODES,
    make: (key) => new NodeView(key),
    container: ui.nodes,
    empty: ui.nodesEmpty,
  });
}

function onMessage(msg) {
  let snap = msg.body;
  if (typeof snap === "string") {
    try {
      snap = JSON.parse(snap);
    } catch {
      return;
    }
  }
  snap = obj(snap);
  const node = typeof snap.node === "string" && snap.node ? snap.node.slice(0, MAX_NAME) : null;
  if (node === null || !Number.isFinite(snap.time) || snap.truncated !== undefined) return;
  const nowMs = Date.now();
  skew = Math.min(skew, nowMs / 1000 - snap.time);
  stats.snapshots += 1;
  stats.byNode[node] = (stats.byNode[node] ?? 0) + 1;
  const view = viewFor(node);
  if (view === null) {
    stats.undrawn += 1;
    return;
  }
  if (view.update(snap, nowMs)) dirty.add(view);
  schedulePaint();
}

function schedulePaint() {
  if (paintScheduled) return;
  paintScheduled = true;
  requestAnimationFrame(paint);
}

function paint() {
  paintScheduled = false;
  stats.paints += 1;
  const nowMs = Date.now();
  for (const view of dirty) view.draw(nowMs);
  dirty.clear();
  const stale = [...views.values()].filter((v) => ageOfView(v, nowMs) > STALE_S).length;
  ui.nodesCount.textContent =
    `(${views.size} node${views.size === 1 ? "" : "s"}${stale ? `, ${stale} stale` : ""}` +
    (stats.undrawn ? `; figures of nodes beyond the first ${MAX_NODES} not drawn` : "") +
    ")";
}

// Staleness needs no message: every second, redraw the badges of every node.
setInterval(() => {
  for (const view of views.values()) dirty.add(view);
  if (views.size) schedulePaint();
}, 1000);

// -- the connection --------------------------------------------------------------------------

const live = new PageConnection({
  ui,
  token: new PageToken(ui.token),
  clientName: "wsq-ops/1",
  label: ADDRESS,
  subscribe: (client) => {
    ui.denied.hidden = true;
    return client.subscribe(ADDRESS, onMessage, { rewind: REWIND });
  },
  onSubscriptionError: (error) => {
    if (error.condition === "wsq:forbidden") {
      ui.denied.hidden = false;
      ui.connection.open = true;
    }
  },
});
live.wire(ui.tokenForm, ui.disconnect);
live.start();
