// The wsq live dashboard, built on wsq-client (/wsq-client.js, js-client/README.md): one Client,
// one copy subscription with rewind (the latest value of each subject at once) and conflate (at
// most one update per subject per CONFLATE_MS: the gateway drops what the screen could not show
// anyway). Messages only update state; one requestAnimationFrame paints what changed.
// The client multiplexes, heartbeats, reconnects, resumes and refreshes the token by itself.
//
// The token and the connection state: token.js and connection.js, shared with /ops.

import { comparePositions, isAddress } from "/wsq-client.js";
import { MetricCard, formatValue, sortedView } from "./charts.js";
import { PageConnection, describeError, timeElement } from "./connection.js";
import { DemoFeed, FEED_INTERVAL_MS } from "./feed.js";
import { PageToken } from "./token.js";

const DEFAULT_ADDRESS = "demo.metrics";
const CONFLATE_MS = 100; // at most 10 updates a second per subject: more than a chart shows
const REWIND = 1000; // with conflate: the latest of each subject among the last 1000 retained
const MAX_CARDS = 60; // subjects charted; more are counted, not drawn
const MAX_LOG = 100; // messages kept in the log
const MAX_LOG_TEXT = 200; // characters of a body shown in the log

const $ = (id) => document.getElementById(id);
const ui = {
  state: $("state"),
  node: $("node"),
  connection: $("connection"),
  tokenForm: $("token-form"),
  token: $("token"),
  disconnect: $("disconnect"),
  feed: $("feed"),
  feedStatus: $("feed-status"),
  addressShown: $("address-shown"),
  charts: $("charts"),
  chartsCount: $("charts-count"),
  chartsEmpty: $("charts-empty"),
  publishForm: $("publish-form"),
  pubSubject: $("pub-subject"),
  pubValue: $("pub-value"),
  publishStatus: $("publish-status"),
  log: $("log"),
  errors: $("errors"),
};

/** What the page counted, for tests and the curious: transfers received (in all and per
 * subject) and repaints. Subjects are keys of a prototype-less object ("__proto__" is one). */
const stats = { transfers: 0, bySubject: Object.create(null), paints: 0, uncharted: 0 };
window.wsqDashboard = stats;

// ?address=... sets the address; read before the connection starts.
const wanted = new URLSearchParams(location.search).get("address");
const address = wanted && isAddress(wanted) ? wanted : DEFAULT_ADDRESS;

// -- the connection (connection.js) and its token (token.js) ------------------------------

const token = new PageToken(ui.token);
const live = new PageConnection({
  ui,
  token,
  clientName: "wsq-dashboard/1",
  label: address,
  subscribe: (client) =>
    client.subscribe(address, onMessage, { rewind: REWIND, conflate: { ms: CONFLATE_MS, by: "subject" } }),
});
const addError = (text) => live.addError(text);
live.wire(ui.tokenForm, ui.disconnect);

// -- receiving: state only; paint() draws --------------------------------------------------

const cards = new Map(); // subject -> MetricCard
const dirty = new Set(); // cards to redraw
let pendingLog = []; // messages not yet in the log, oldest first
let paintScheduled = false;

/** {value, unit} of a metric body (a number, or {"value": number, "unit": string}), or null. */
function metricOf(body) {
  if (typeof body === "number" && Number.isFinite(body)) return { value: body, unit: "" };
  if (body && typeof body === "object" && typeof body.value === "number" && Number.isFinite(body.value)) {
    const unit = typeof body.unit === "string" ? body.unit.slice(0, 16) : "";
    return { value: body.value, unit };
  }
  return null;
}

function cardFor(subject) {
  return sortedView(cards, subject, {
    max: MAX_CARDS,
    make: (key) => new MetricCard(key),
    container: ui.charts,
    empty: ui.chartsEmpty,
  });
}

function onMessage(msg) {
  const subject = typeof msg.props.subject === "string" ? msg.props.subject : "";
  stats.transfers += 1;
  stats.bySubject[subject] = (stats.bySubject[subject] ?? 0) + 1;
  const metric = metricOf(msg.body);
  if (metric && subject) {
    const card = cardFor(subject);
    if (card === null) stats.uncharted += 1;
    else if (card.lastId && comparePositions(msg.id, card.lastId) <= 0) {
      return; // shown already: a new connection's rewind hands the latest values again
    } else {
      card.push(metric.value, metric.unit);
      card.lastId = msg.id;
      dirty.add(card);
    }
  }
  pendingLog.push({ id: msg.id, subject, body: msg.body, ts: msg.props.ts, metric });
  if (pendingLog.length > MAX_LOG) pendingLog = pendingLog.slice(-MAX_LOG);
  schedulePaint();
}

function schedulePaint() {
  if (paintScheduled) return;
  paintScheduled = true;
  requestAnimationFrame(paint);
}

function logItem(entry) {
  const li = document.createElement("li");
  li.dataset.id = entry.id;
  const subject = document.createElement("span");
  subject.className = "log-subject";
  subject.textContent = entry.subject || "(no subject)";
  const value = document.createElement("span");
  value.className = "log-value";
  if (entry.metric) {
    value.textContent = `${formatValue(entry.metric.value)}${entry.metric.unit ? ` ${entry.metric.unit}` : ""}`;
  } else {
    const text = typeof entry.body === "string" ? entry.body : JSON.stringify(entry.body);
    value.textContent = text.length > MAX_LOG_TEXT ? `${text.slice(0, MAX_LOG_TEXT)}…` : text;
  }
  const id = document.createElement("span");
  id.className = "log-id";
  id.textContent = entry.id;
  li.append(timeElement(entry.ts), subject, value, id);
  return li;
}

function paint() {
  paintScheduled = false;
  stats.paints += 1;
  for (const card of dirty) card.draw();
  dirty.clear();
  if (pendingLog.length) {
    const items = pendingLog.map(logItem).reverse(); // newest first
    pendingLog = [];
    ui.log.prepend(...items);
    while (ui.log.children.length > MAX_LOG) ui.log.lastElementChild.remove();
  }
  ui.chartsCount.textContent =
    `(${cards.size} subject${cards.size === 1 ? "" : "s"}, ${stats.transfers} updates received` +
    (stats.uncharted ? `, ${stats.uncharted} beyond the first ${MAX_CARDS} subjects not charted` : "") +
    ")";
}

// -- publishing: the form and the demo feed ------------------------------------------------

let feedTimer = null;
let feedPublished = 0;
const feed = new DemoFeed();

function stopFeed(why) {
  clearInterval(feedTimer);
  feedTimer = null;
  ui.feed.setAttribute("aria-pressed", "false");
  ui.feed.textContent = "Start demo feed";
  ui.feedStatus.textContent = `stopped after ${feedPublished} values${why ? ` (${why})` : ""}`;
}

function feedTick() {
  // Publish only what the gateway can take now: no backlog while disconnected.
  if (!live.client?.connected || live.client.pendingPublishes > 2 * feed.size) return;
  for (const { subject, body } of feed.tick()) {
    live.client.publish(address, body, { subject }).then(
      () => {
        feedPublished += 1;
      },
      (error) => {
        if (feedTimer !== null && error.condition !== "wsq-client:closed") {
          addError(`demo feed: ${describeError(error)}`);
          stopFeed(error.condition);
        }
      },
    );
  }
  ui.feedStatus.textContent = `running: ${feedPublished} values published to ${address}`;
}

ui.feed.addEventListener("click", () => {
  if (feedTimer !== null) {
    stopFeed();
    return;
  }
  ui.feed.setAttribute("aria-pressed", "true");
  ui.feed.textContent = "Stop demo feed";
  feedTimer = setInterval(feedTick, FEED_INTERVAL_MS);
  feedTick();
});

ui.publishForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const subject = ui.pubSubject.value.trim();
  const value = Number(ui.pubValue.value);
  if (!isAddress(subject)) {
    ui.publishStatus.textContent = "the subject must be dot-separated tokens of A-Z a-z 0-9 _ -";
    return;
  }
  if (ui.pubValue.value.trim() === "" || !Number.isFinite(value)) {
    ui.publishStatus.textContent = "the value must be a number";
    return;
  }
  const client = live.client;
  if (!client) {
    ui.publishStatus.textContent = "not connected";
    return;
  }
  // While disconnected the client keeps it in its outbox and sends it after the reconnect.
  ui.publishStatus.textContent = client.connected ? "publishing…" : "publishing after the reconnect…";
  client.publish(address, { value }, { subject }).then(
    (id) => {
      ui.publishStatus.textContent = `published ${formatValue(value)} to ${subject} as ${id}`;
    },
    (error) => {
      ui.publishStatus.textContent = `not published: ${describeError(error)}`;
      if (error.condition !== "wsq-client:closed") addError(`publish: ${describeError(error)}`);
    },
  );
});

// -- start -------------------------------------------------------------------------------

function start() {
  ui.addressShown.textContent = address;
  live.start();
}

start();
