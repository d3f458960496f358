// The wsq demo page: a deliberately small wsq.v1 client speaking raw frames (docs/protocol.md).
// One WebSocket, one session (ch 0), one copy receiver and one sender link on the chosen address.

const SUBPROTOCOL = "wsq.v1";
const CH = 0;
const CLIENT_IDLE_MS = 20000; // the longest server silence we tolerate (sent in our open)
const CREDIT_WINDOW = 100; // receiver credit we keep topped up
const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 15000;
const MAX_SHOWN = 500; // messages kept in the list
const MAX_ERRORS = 50;
const ADDRESS_RE = /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/;

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

let conn = null; // the current connection's state (see openSocket)
let wanted = false; // the user wants to be connected: reconnect when the socket drops
let attempts = 0; // failed attempts since the last successful subscribe (backoff)
let reconnectTimer = null;
let address = "demo.chat";
let devToken = null; // the last token fetched from /dev/token (development mode)
const lastIds = new Map(); // address -> id of the last message received: where to resume

// -- small helpers -----------------------------------------------------------------------

const STATE_LABELS = {
  idle: "idle",
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

/** Positions are "<ms>-<seq>": compare them as numbers, not as strings. */
function comparePositions(a, b) {
  const [am, as] = a.split("-").map(Number);
  const [bm, bs] = b.split("-").map(Number);
  return am - bm || as - bs;
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

// -- the connection ----------------------------------------------------------------------

async function connect() {
  clearTimeout(reconnectTimer);
  wanted = true;
  if (conn) {
    // Connect pressed while connected: replace the socket without scheduling a reconnect.
    const old = conn;
    conn = null;
    dropSocket(old);
  }
  const token = await currentToken();
  if (!wanted) return;
  if (!token) {
    setState("need-token", "paste a token and press Connect");
    return;
  }
  setState(attempts ? "reconnecting" : "connecting");
  openSocket(token);
}

function openSocket(token) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(`${scheme}//${location.host}/ws`, SUBPROTOCOL);
  const c = {
    socket,
    token,
    open: false, // the server's open has arrived
    closing: false, // a close was sent or received
    error: null, // the error of the server's close, if any
    idle: 0, // the server's idle (ms)
    maxFrameBytes: 1048576,
    exp: 0,
    nextHandle: 0,
    nextDelivery: 0, // our delivery numbering on the session
    links: new Map(), // handle -> link
    receiver: null,
    sender: null,
    pending: new Map(), // our delivery number -> true, until its disposition
    lastSent: Date.now(),
    lastRecv: Date.now(),
    timer: null,
    refreshTimer: null,
  };
  conn = c;
  startTimer(c, 1000);
  socket.onopen = () => {
    // Pipelining: begin and the attaches go right behind open, in one batch.
    send(c, [
      { op: "open", token, idle: CLIENT_IDLE_MS, client: "wsq-demo/1" },
      { op: "begin", ch: CH },
      ...attachFrames(c, address),
    ]);
  };
  socket.onmessage = (event) => onMessage(c, event.data);
  socket.onclose = (event) => onClosed(c, event);
}

function send(c, frames) {
  if (c.socket.readyState !== WebSocket.OPEN) return false;
  c.socket.send(JSON.stringify(frames));
  c.lastSent = Date.now();
  return true;
}

function attachFrames(c, addr) {
  const receiver = { handle: c.nextHandle++, role: "receiver", address: addr, credit: CREDIT_WINDOW };
  const sender = { handle: c.nextHandle++, role: "sender", address: addr, credit: 0 };
  for (const link of [receiver, sender]) {
    link.attached = false;
    link.detaching = false;
    c.links.set(link.handle, link);
  }
  c.receiver = receiver;
  c.sender = sender;
  return [
    {
      op: "attach", ch: CH, handle: receiver.handle, role: "receiver", address: addr,
      mode: "copy", from: lastIds.get(addr) ?? "^", credit: CREDIT_WINDOW,
    },
    { op: "attach", ch: CH, handle: sender.handle, role: "sender", address: addr },
  ];
}

function detachFrames(c) {
  const frames = [];
  for (const link of [c.receiver, c.sender]) {
    if (link && !link.detaching && c.links.has(link.handle)) {
      link.detaching = true; // frames for it that cross our detach are ignored
      frames.push({ op: "detach", ch: CH, handle: link.handle });
    }
  }
  c.receiver = null;
  c.sender = null;
  return frames;
}

function startTimer(c, period) {
  clearInterval(c.timer);
  c.period = period;
  c.timer = setInterval(() => tick(c), period);
}

/** Every period: heartbeats, and the watchdog on the server's silence. */
function tick(c) {
  const now = Date.now();
  if (now - c.lastRecv > (c.open ? CLIENT_IDLE_MS : 15000)) {
    addError(c.open ? "wsq:idle-timeout: the server went silent" : "the gateway did not answer");
    send(c, { op: "close", error: { condition: "wsq:idle-timeout", description: "no frame received" } });
    dropSocket(c);
    return;
  }
  // Send something at least every half of the server's idle: [] when we had nothing to say.
  if (c.open && c.idle > 0 && !c.closing && now - c.lastSent >= c.idle / 2 - c.period) {
    send(c, []);
  }
}

function dropSocket(c) {
  clearInterval(c.timer);
  clearTimeout(c.refreshTimer);
  c.closing = true;
  try {
    c.socket.close();
  } catch {
    // already closed
  }
  // The close event of a socket we dropped may come late: handle it now.
  onClosed(c, null);
}

function onClosed(c, event) {
  if (conn !== c) return;
  conn = null;
  clearInterval(c.timer);
  clearTimeout(c.refreshTimer);
  ui.node.textContent = "";
  ui.subscription.textContent = "not subscribed";
  if (c.pending.size) {
    ui.publishStatus.textContent = "the connection dropped before the publish was confirmed";
  }
  if (!wanted) {
    setState("closed");
    return;
  }
  const condition = c.error?.condition;
  const ownToken = devToken === null || c.token !== devToken;
  if (ownToken && (condition === "wsq:unauthorized" || condition === "wsq:token-expired")) {
    // Retrying with the same token cannot help.
    wanted = false;
    setState("closed", "the token was refused: paste a new one and press Connect");
    return;
  }
  if (event && !c.open && event.code === 1006 && attempts === 0) {
    addError("could not connect to the gateway");
  }
  scheduleReconnect();
}

function scheduleReconnect() {
  attempts += 1;
  // Full jitter: a random wait up to an exponentially growing ceiling.
  const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** attempts);
  const delay = Math.max(250, Math.round(Math.random() * ceiling));
  setState("reconnecting", `next attempt in ${(delay / 1000).toFixed(1)} s`);
  reconnectTimer = setTimeout(connect, delay);
}

function scheduleRefresh(c) {
  clearTimeout(c.refreshTimer);
  const delay = Math.max(5000, c.exp * 1000 - Date.now() - 60000);
  c.refreshTimer = setTimeout(async () => {
    if (conn !== c || !c.open) return;
    if (devToken !== null && c.token === devToken) {
      const fresh = await fetchDevToken();
      if (fresh && conn === c) {
        devToken = c.token = ui.token.value = fresh;
        send(c, { op: "refresh", token: fresh });
      }
    } else {
      addError("the token expires in a minute: paste a new one and press Connect");
    }
  }, delay);
}

// -- frames from the server ----------------------------------------------------------------

function onMessage(c, data) {
  if (conn !== c) return;
  c.lastRecv = Date.now();
  let value;
  try {
    value = JSON.parse(data);
  } catch {
    addError("the server sent something that is not JSON");
    dropSocket(c);
    return;
  }
  const frames = Array.isArray(value) ? value : [value]; // [] is the server's heartbeat
  for (const frame of frames) {
    if (conn !== c) return;
    handleFrame(c, frame);
  }
}

function handleFrame(c, f) {
  switch (f.op) {
    case "open":
      c.open = true;
      c.idle = f.idle;
      c.maxFrameBytes = f.max_frame_bytes;
      c.exp = f.exp;
      ui.node.textContent = `node ${f.node} · tenant ${f.tenant} · sub ${f.sub}`;
      if (c.idle > 0) startTimer(c, Math.max(100, Math.min(1000, c.idle / 4)));
      if (!c.receiver?.attached) setState("open");
      scheduleRefresh(c);
      break;
    case "refresh":
      c.exp = f.exp;
      scheduleRefresh(c);
      break;
    case "attach": {
      const link = c.links.get(f.handle);
      if (!link || link.detaching) break;
      link.attached = true;
      if (link.role === "receiver") {
        attempts = 0;
        setState("subscribed", link.address);
        ui.subscription.textContent =
          `subscribed to ${link.address}` +
          (f.from === "0-0" ? " from the oldest retained message" : ` after ${f.from}`);
        if (f.recovered === false) {
          addError("some messages were dropped by retention while this page was away");
        }
      }
      break;
    }
    case "flow": {
      const link = c.links.get(f.handle);
      if (link && link.role === "sender") link.credit += f.credit;
      break;
    }
    case "transfer": {
      const link = c.links.get(f.handle);
      if (!link || link.detaching || link.role !== "receiver") break; // crossed our detach
      link.credit -= 1;
      showMessage(link.address, f);
      if (link.credit <= CREDIT_WINDOW / 2) {
        // Top the window up as messages arrive.
        send(c, { op: "flow", ch: CH, handle: link.handle, credit: CREDIT_WINDOW - link.credit });
        link.credit = CREDIT_WINDOW;
      }
      break;
    }
    case "disposition":
      onPublishResult(c, f);
      break;
    case "detach": {
      const link = c.links.get(f.handle);
      if (!link) break;
      c.links.delete(f.handle);
      if (link.detaching) break; // the answer to our detach
      send(c, { op: "detach", ch: CH, handle: f.handle });
      if (f.error) addError(`${link.role} ${link.address}: ${describeError(f.error)}`);
      if (c.receiver === link) {
        c.receiver = null;
        setState("open", "not subscribed");
        ui.subscription.textContent = `not subscribed (${f.error ? f.error.condition : "detached"})`;
      }
      if (c.sender === link) c.sender = null;
      break;
    }
    case "begin":
      break;
    case "end":
      // The session (and our links) are gone: start again on a fresh connection.
      if (f.error) addError(`session ended: ${describeError(f.error)}`);
      send(c, [{ op: "end", ch: CH }, { op: "close" }]);
      dropSocket(c);
      break;
    case "close":
      c.error = f.error ?? null;
      if (f.error) addError(describeError(f.error));
      if (!c.closing) send(c, { op: "close" });
      c.closing = true;
      // The server closes the WebSocket itself (onClosed then decides whether to reconnect);
      // drop it ourselves if that does not happen soon.
      setTimeout(() => dropSocket(c), 2000);
      break;
    default:
      console.warn("wsq demo: ignoring frame", f);
  }
}

function onPublishResult(c, f) {
  const last = f.last ?? f.first;
  for (let delivery = f.first; delivery <= last; delivery += 1) {
    if (!c.pending.delete(delivery)) continue;
    if (f.outcome === "accepted") {
      ui.publishStatus.textContent = `published as ${f.ids[delivery - f.first]}`;
    } else {
      ui.publishStatus.textContent = `not published: ${describeError(f.error)}`;
      addError(`publish: ${describeError(f.error)}`);
    }
  }
}

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
  attempts = 0;
  connect();
});

ui.disconnect.addEventListener("click", () => {
  wanted = false;
  clearTimeout(reconnectTimer);
  const c = conn;
  if (c) {
    send(c, [{ op: "end", ch: CH }, { op: "close" }]);
    // Give the server a moment to answer our close, then drop the socket.
    c.closing = true;
    setTimeout(() => dropSocket(c), 500);
  }
  setState("closed");
});

ui.subscribeForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const addr = ui.address.value.trim();
  if (!ADDRESS_RE.test(addr) || addr.length > 255) {
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
  const c = conn;
  if (c && !c.closing && c.socket.readyState === WebSocket.OPEN) {
    // Our open went out already; the server applies these in order behind it.
    send(c, [...detachFrames(c), ...attachFrames(c, addr)]);
    ui.subscription.textContent = `subscribing to ${addr}…`;
  } else if (!c) {
    attempts = 0;
    connect();
  } // else: still connecting, and onopen attaches to the new address

});

ui.publishForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const c = conn;
  const sender = c?.sender;
  if (!c || !c.open || c.closing) {
    ui.publishStatus.textContent = "not connected";
    return;
  }
  if (!sender || !sender.attached) {
    ui.publishStatus.textContent = "the sender link is not ready yet";
    return;
  }
  if (sender.credit <= 0) {
    ui.publishStatus.textContent = "no publish credit yet: try again in a moment";
    return;
  }
  const subject = ui.subject.value.trim();
  if (subject && !ADDRESS_RE.test(subject)) {
    ui.publishStatus.textContent = "the subject must be dot-separated tokens of A-Z a-z 0-9 _ -";
    return;
  }
  const frame = {
    op: "transfer", ch: CH, handle: sender.handle, delivery: c.nextDelivery,
    settled: false, body: ui.body.value,
  };
  if (subject) frame.props = { subject };
  const text = JSON.stringify(frame);
  if (new Blob([text]).size > c.maxFrameBytes) {
    ui.publishStatus.textContent = "the message is too large for this gateway";
    return;
  }
  c.pending.set(c.nextDelivery, true);
  c.nextDelivery += 1;
  sender.credit -= 1;
  send(c, frame);
  ui.publishStatus.textContent = "publishing…";
  ui.body.value = "";
  ui.body.focus();
});

// -- start -------------------------------------------------------------------------------

async function start() {
  const wantedAddress = new URLSearchParams(location.search).get("address");
  if (wantedAddress && ADDRESS_RE.test(wantedAddress)) ui.address.value = wantedAddress;
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
