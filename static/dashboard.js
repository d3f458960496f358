// The wsq live dashboard, built on wsq-client (/wsq-client.js, js-client/README.md): one Client,
// one copy subscription with rewind (the latest value of each subject at once) and conflate (at
// most one update per subject per CONFLATE_MS: the gateway drops what the screen could not show
// anyway). Messages only update state; one requestAnimationFrame paints what changed.
// The client multiplexes, heartbeats, reconnects, resumes and refreshes the token by itself.
//
// The token: from GET /dev/token when GET /demo/config says this page may have one (development
// mode, on this machine), else from the URL's fragment (#token=…, read once and taken out of
// the address bar) or the paste field. It goes to this gateway only, and is never logged.

import { Client, comparePositions, isAddress } from "/wsq-client.js";
import { MetricCard, formatValue } from "./charts.js";
import { DemoFeed, FEED_INTERVAL_MS } from "./feed.js";

const DEFAULT_ADDRESS = "demo.metrics";
const CLIENT_IDLE_MS = 20000; // the longest server silence we tolerate (sent in our open)
const CONFLATE_MS = 100; // at most 10 updates a second per subject: more than a chart shows
const REWIND = 1000; // with conflate: the latest of each subject among the last 1000 retained
const MAX_CARDS = 60; // subjects charted; more are counted, not drawn
const MAX_LOG = 100; // messages kept in the log
const MAX_ERRORS = 50;
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

let address = DEFAULT_ADDRESS;
let client = null; // the current Client, or null when disconnected on purpose
let sub = null; // the current subscription
let everConnected = false; // the current client had a connection (reconnecting vs connecting)
let devTokens = false; // GET /demo/config said /dev/token answers this page
let devToken = null; // the last token from /dev/token

// -- small helpers -----------------------------------------------------------------------

const STATE_LABELS = {
  "need-token": "waiting for a token",
  connecting: "connecting…",
  open: "connected",
  subscribed: "live",
  reconnecting: "reconnecting",
  closed: "disconnected",
};

function setState(state, detail) {
  ui.state.dataset.state = state;
  ui.state.textContent = STATE_LABELS[state] + (detail ? ` — ${detail}` : "");
}

function describeError(error) {
  if (!error || typeof error !== "object") return String(error);
  if (typeof error.condition !== "string") return String(error.message ?? error);
  return `${error.condition}${error.description ? `: ${error.description}` : ""}`;
}

function timeElement(ms) {
  const time = document.createElement("time");
  if (Number.isFinite(ms)) {
    const when = new Date(ms);
    time.dateTime = when.toISOString();
    time.textContent = when.toLocaleTimeString("en-GB");
  }
  return time;
}

function addError(text) {
  const li = document.createElement("li");
  li.append(timeElement(Date.now()), " ", text);
  ui.errors.prepend(li);
  while (ui.errors.children.length > MAX_ERRORS) ui.errors.lastElementChild.remove();
}

// -- the token -----------------------------------------------------------------------------

/** A token given in the URL's fragment (#token=…): read once, then taken out of the address bar
 * and the history entry (a fragment never reaches a server, nor a Referer). */
function takeFragmentToken() {
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get("token");
  if (token === null) return null;
  params.delete("token");
  const rest = params.toString();
  history.replaceState(null, "", `${location.pathname}${location.search}${rest ? `#${rest}` : ""}`);
  return token.trim() || null;
}

async function fetchJson(path) {
  try {
    const response = await fetch(path, { cache: "no-store" });
    return response.ok ? await response.json() : null;
  } catch {
    return null;
  }
}

function guestName() {
  let name = sessionStorage.getItem("wsq-demo-sub");
  if (!name) {
    name = `guest-${Math.random().toString(16).slice(2, 6)}`;
    sessionStorage.setItem("wsq-demo-sub", name);
  }
  return name;
}

async function fetchDevToken() {
  if (!devTokens) return null;
  const answer = await fetchJson(`/dev/token?sub=${encodeURIComponent(guestName())}`);
  return typeof answer?.token === "string" ? answer.token : null;
}

/** The token function given to the client: asked at connect, reconnect and before expiry. A
 * development token is fetched fresh each time, unless the user put another one in the field. */
async function tokenForClient() {
  const typed = ui.token.value.trim();
  if (devToken !== null && (typed === "" || typed === devToken)) {
    const fresh = await fetchDevToken();
    if (fresh) {
      devToken = fresh;
      ui.token.value = fresh;
      return fresh;
    }
  }
  if (!typed) throw new Error("no token: paste one and press Connect");
  return typed;
}

function askForToken(why) {
  setState("need-token", why);
  ui.connection.open = true;
}

// -- the connection ----------------------------------------------------------------------

function connect() {
  stop();
  everConnected = false;
  const c = new Client("/ws", { token: tokenForClient, idle: CLIENT_IDLE_MS, clientName: "wsq-dashboard/1" });
  client = c;
  const showState = (state) => {
    if (client !== c) return;
    if (state === "connecting") setState(everConnected ? "reconnecting" : "connecting");
    else if (state === "connected") {
      everConnected = true;
      setState(sub?.attached ? "subscribed" : "open", sub?.attached ? address : "");
    } else if (state === "disconnected") {
      ui.node.textContent = "";
      setState("reconnecting");
    }
  };
  c.on("state", showState);
  // The client is "connecting" from its constructor, before this listener could hear it.
  showState(c.state);
  c.on("open", (info) => {
    if (client === c) ui.node.textContent = `node ${info.node} · tenant ${info.tenant} · sub ${info.sub}`;
  });
  c.on("error", (error) => {
    if (client !== c || error.condition === "wsq-client:closed") return;
    addError(describeError(error));
    if (error.fatal) {
      client = null;
      sub = null;
      ui.node.textContent = "";
      askForToken("the token was refused: paste a new one and press Connect");
    }
  });

  const s = c.subscribe(address, onMessage, {
    rewind: REWIND,
    conflate: { ms: CONFLATE_MS, by: "subject" },
  });
  sub = s;
  s.on("attached", () => {
    if (sub === s) setState("subscribed", address);
  });
  s.on("gap", () => addError("some messages were dropped by retention while this page was away"));
  s.on("error", (error) => {
    if (sub !== s) return;
    sub = null;
    addError(`subscription to ${address}: ${describeError(error)}`);
    setState("open", `not subscribed (${error.condition})`);
  });
}

function stop() {
  const c = client;
  client = null;
  sub = null;
  c?.close();
}

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
  let card = cards.get(subject);
  if (card || cards.size >= MAX_CARDS) return card ?? null;
  card = new MetricCard(subject);
  cards.set(subject, card);
  // In subject order: before the first card whose subject sorts after it.
  const after = [...cards.values()].filter((c) => c.subject > subject).sort((a, b) => (a.subject < b.subject ? -1 : 1))[0];
  ui.charts.insertBefore(card.el, after ? after.el : null);
  ui.chartsEmpty.hidden = true;
  return card;
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
  if (!client?.connected || client.pendingPublishes > 2 * feed.size) return;
  for (const { subject, body } of feed.tick()) {
    client.publish(address, body, { subject }).then(
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

// -- the connection form -------------------------------------------------------------------

ui.tokenForm.addEventListener("submit", (event) => {
  event.preventDefault();
  if (!ui.token.value.trim() && devToken === null) {
    askForToken("paste a token and press Connect");
    return;
  }
  connect();
});

ui.disconnect.addEventListener("click", () => {
  stop();
  ui.node.textContent = "";
  setState("closed");
});

// -- start -------------------------------------------------------------------------------

async function start() {
  const wanted = new URLSearchParams(location.search).get("address");
  if (wanted && isAddress(wanted)) address = wanted;
  ui.addressShown.textContent = address;
  const given = takeFragmentToken();
  const config = await fetchJson("/demo/config");
  devTokens = config?.dev_token === true;
  if (given) {
    ui.token.value = given;
    connect();
    return;
  }
  devToken = await fetchDevToken();
  if (devToken) {
    ui.token.value = devToken;
    connect();
  } else {
    askForToken("paste a token (or open this page with #token=…) and press Connect");
  }
}

start();
