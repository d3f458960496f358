// The wsq demo page, built on wsq-client (/wsq-client.js, js-client/README.md): one Client, one
// copy subscription on the chosen address (from the oldest retained message), publishes to it.
// The client multiplexes, heartbeats, reconnects, resumes after the last message received and
// refreshes the token by itself; this file only draws.

import { Client, comparePositions, isAddress } from "/wsq-client.js";

const CLIENT_IDLE_MS = 20000; // the longest server silence we tolerate (sent in our open)
const CREDIT_WINDOW = 100;
const MAX_SHOWN = 500; // messages kept in the list
const MAX_ERRORS = 50;

const $ = (id) => document.getElementById(id);
const ui = {
  state: $("state"),
  node: $("node"),
  tokenForm: $("token-form"),
  token: $("token"),
  disconnect: $("disconnect"),
  subscribeForm: $("subscribe-form"),
  address: $("address"),
  subscription: $("subscription"),
  publishForm: $("publish-form"),
  body: $("body"),
  subject: $("subject"),
  publishStatus: $("publish-status"),
  errors: $("errors"),
  messages: $("messages"),
};

let client = null; // the current Client, or null when disconnected on purpose
let sub = null; // the current subscription
let everConnected = false; // the current client had a connection (reconnecting vs connecting)
let address = "demo.chat";
let devToken = null; // the last token fetched from /dev/token (development mode)
const lastIds = new Map(); // address -> id of the last message shown (no doubles in the list)

// -- small helpers -----------------------------------------------------------------------

const STATE_LABELS = {
  "need-token": "waiting for a token",
  connecting: "connecting…",
  open: "connected",
  subscribed: "subscribed",
  reconnecting: "reconnecting",
  closed: "disconnected",
};

function setState(state, detail) {
  ui.state.dataset.state = state;
  ui.state.textContent = STATE_LABELS[state] + (detail ? ` — ${detail}` : "");
}

function describeError(error) {
  if (!error || typeof error !== "object") return String(error);
  return `${error.condition}${error.description ? `: ${error.description}` : ""}`;
}

function addError(text) {
  const li = document.createElement("li");
  const time = document.createElement("time");
  const now = new Date();
  time.dateTime = now.toISOString();
  time.textContent = now.toLocaleTimeString();
  li.append(time, " ", text);
  ui.errors.prepend(li);
  while (ui.errors.children.length > MAX_ERRORS) ui.errors.lastElementChild.remove();
}

function guestName() {
  let sub = sessionStorage.getItem("wsq-demo-sub");
  if (!sub) {
    sub = `guest-${Math.random().toString(16).slice(2, 6)}`;
    sessionStorage.setItem("wsq-demo-sub", sub);
  }
  return sub;
}

async function fetchDevToken() {
  try {
    const response = await fetch(`/dev/token?sub=${encodeURIComponent(guestName())}`);
    if (!response.ok) return null;
    const { token } = await response.json();
    return typeof token === "string" ? token : null;
  } catch {
    return null;
  }
}

/** The token to connect with: a fresh dev token unless the user typed their own. */
async function currentToken() {
  const typed = ui.token.value.trim();
  if (devToken !== null && (typed === "" || typed === devToken)) {
    const fresh = await fetchDevToken();
    if (fresh) {
      devToken = fresh;
      ui.token.value = fresh;
      return fresh;
    }
  }
  return typed || null;
}

/** The token function given to the client: asked at connect, reconnect and before expiry. */
async function tokenForClient() {
  const token = await currentToken();
  if (!token) throw new Error("no token: paste one and press Connect");
  return token;
}

// -- the connection ----------------------------------------------------------------------

function connect() {
  stop();
  everConnected = false;
  const c = new Client("/ws", {
    token: tokenForClient,
    idle: CLIENT_IDLE_MS,
    credit: CREDIT_WINDOW,
    clientName: "wsq-demo/2",
  });
  client = c;
  const showState = (state) => {
    if (client !== c) return;
    if (state === "connecting") setState(everConnected ? "reconnecting" : "connecting");
    else if (state === "connected") {
      everConnected = true;
      setState(sub?.attached ? "subscribed" : "open", sub?.attached ? address : "");
    } else if (state === "disconnected") {
      ui.node.textContent = "";
      ui.subscription.textContent = "not subscribed";
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
      ui.subscription.textContent = "not subscribed";
      setState("closed", "the token was refused: paste a new one and press Connect");
    }
  });
  subscribeTo(address);
}

function stop() {
  const c = client;
  client = null;
  sub = null;
  c?.close();
}

function subscribeTo(addr) {
  if (!client) return;
  sub?.unsubscribe();
  const s = client.subscribe(addr, (msg) => showMessage(addr, msg), { from: lastIds.get(addr) ?? "^" });
  sub = s;
  ui.subscription.textContent = `subscribing to ${addr}…`;
  s.on("attached", (info) => {
    if (sub !== s) return;
    setState("subscribed", addr);
    ui.subscription.textContent =
      `subscribed to ${addr}` +
      (info.from === "0-0" ? " from the oldest retained message" : ` after ${info.from}`);
  });
  s.on("gap", () => addError("some messages were dropped by retention while this page was away"));
  s.on("error", (error) => {
    if (sub !== s) return;
    sub = null;
    setState("open", "not subscribed");
    ui.subscription.textContent = `not subscribed (${error.condition})`;
  });
}

// -- drawing -------------------------------------------------------------------------------

function showMessage(addr, f) {
  if (addr !== address) return;
  const last = lastIds.get(addr);
  if (last && comparePositions(f.id, last) <= 0) return; // already shown
  lastIds.set(addr, f.id);
  ui.messages.dataset.lastId = f.id;

  const props = f.props ?? {};
  const atBottom =
    ui.messages.scrollTop + ui.messages.clientHeight >= ui.messages.scrollHeight - 8;
  const li = document.createElement("li");
  li.className = "message";
  li.dataset.id = f.id;

  const body = document.createElement("p");
  body.className = "msg-body";
  body.textContent = typeof f.body === "string" ? f.body : JSON.stringify(f.body);

  const meta = document.createElement("p");
  meta.className = "msg-meta";
  const part = (cls, label, text) => {
    const span = document.createElement("span");
    span.className = cls;
    span.textContent = text;
    span.title = label;
    return span;
  };
  const time = document.createElement("time");
  time.className = "msg-time";
  if (typeof props.ts === "number") {
    const when = new Date(props.ts);
    time.dateTime = when.toISOString();
    time.textContent = when.toLocaleTimeString();
  }
  meta.append(
    time,
    part("msg-publisher", "publisher", props.publisher ?? ""),
    part("msg-subject", "subject", props.subject ?? ""),
    part("msg-id", "id", f.id),
  );
  li.append(body, meta);
  ui.messages.append(li);
  while (ui.messages.children.length > MAX_SHOWN) ui.messages.firstElementChild.remove();
  if (atBottom) ui.messages.scrollTop = ui.messages.scrollHeight;
}

// -- the forms ---------------------------------------------------------------------------

ui.tokenForm.addEventListener("submit", (event) => {
  event.preventDefault();
  connect();
});

ui.disconnect.addEventListener("click", () => {
  stop();
  ui.node.textContent = "";
  ui.subscription.textContent = "not subscribed";
  setState("closed");
});

ui.subscribeForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const addr = ui.address.value.trim();
  if (!isAddress(addr)) {
    addError(`"${addr}" is not an address (dot-separated tokens of A-Z a-z 0-9 _ -)`);
    return;
  }
  if (addr !== address) {
    // A new address starts from its oldest retained message, in a fresh list.
    address = addr;
    lastIds.delete(addr);
    ui.messages.replaceChildren();
    ui.messages.dataset.lastId = "";
  }
  if (client) subscribeTo(addr);
  else connect();
});

ui.publishForm.addEventListener("submit", (event) => {
  event.preventDefault();
  if (!client) {
    ui.publishStatus.textContent = "not connected";
    return;
  }
  const subject = ui.subject.value.trim();
  if (subject && !isAddress(subject)) {
    ui.publishStatus.textContent = "the subject must be dot-separated tokens of A-Z a-z 0-9 _ -";
    return;
  }
  // While disconnected the client keeps it in its outbox and sends it after the reconnect.
  ui.publishStatus.textContent = client.connected ? "publishing…" : "publishing after the reconnect…";
  client.publish(address, ui.body.value, subject ? { subject } : {}).then(
    (id) => {
      ui.publishStatus.textContent = `published as ${id}`;
    },
    (error) => {
      ui.publishStatus.textContent = `not published: ${describeError(error)}`;
      if (error.condition !== "wsq-client:closed") addError(`publish: ${describeError(error)}`);
    },
  );
  ui.body.value = "";
  ui.body.focus();
});

// -- start -------------------------------------------------------------------------------

async function start() {
  const wantedAddress = new URLSearchParams(location.search).get("address");
  if (wantedAddress && isAddress(wantedAddress)) ui.address.value = wantedAddress;
  address = ui.address.value.trim() || "demo.chat";
  devToken = await fetchDevToken();
  if (devToken) {
    ui.token.value = devToken;
    connect();
  } else {
    setState("need-token", "paste a token and press Connect");
  }
}

start();
