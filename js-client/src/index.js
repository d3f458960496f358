// wsq-client: the JavaScript client for wsq gateways (the wsq.v1 protocol, docs/protocol.md).
//
// One WebSocket carries every subscription and publisher of a Client: links spread over a few
// sessions, opened pipelined behind `open`. The client heals itself: it heartbeats, notices a
// silent server, reconnects with full-jitter exponential backoff, resumes every feed after the
// last position it received, keeps publishes in a bounded outbox while disconnected (each with
// a message_id, so a retry after an unknown outcome is stored once), and refreshes its token on
// the live socket before it expires. No runtime dependency: browsers, Deno, Bun and Node (pass
// `WebSocket` from the `ws` package on Node 20).

export const SUBPROTOCOL = "wsq.v1";
export const VERSION = "0.1.0";

const ADDRESS_RE = /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/;
const PATTERN_RE = /^([A-Za-z0-9_-]+|\*)(\.([A-Za-z0-9_-]+|\*))*(\.>)?$|^>$/;
const POSITION_RE = /^(\d{1,20})-(\d{1,20})$/;
const OUTCOMES = new Set(["accepted", "released", "rejected", "modified"]);
// A link refused for one of these will be refused again: no retry, the user is told.
const FINAL_LINK_CONDITIONS = new Set(["wsq:forbidden", "wsq:invalid-frame", "wsq:not-found"]);
const AUTH_CONDITIONS = new Set(["wsq:unauthorized", "wsq:token-expired"]);
const MAX_U32 = 4294967295;
const MAX_CH = 65535;
const MAX_TIMER_MS = 2147483647; // setTimeout's ceiling
const DEFAULT_MAX_FRAME_BYTES = 1048576;
const OPEN = 1; // WebSocket.OPEN, the same in every implementation
const CLOSED = 3;
// A connection that stayed up this long resets the backoff: one that dies right after its open
// (a node that accepts and fails) keeps backing off instead of looping.
const STABLE_MS = 5000;
// Room for a transfer frame's fields around the body and props when sizing a publish.
const TRANSFER_OVERHEAD = 128;

const DEFAULTS = Object.freeze({
  idle: 30000,
  connectTimeout: 10000,
  reconnectDelay: 500,
  maxReconnectDelay: 30000,
  credit: 100,
  outboxSize: 1000,
  outboxBytes: 16 * 1048576,
  linksPerSession: 64,
  maxSessions: 64,
  maxSenders: 64,
  refreshBefore: 60000,
  closeTimeout: 1000,
});

// -- errors ------------------------------------------------------------------------------

/** An error with a wsq condition (`wsq:forbidden`, …) or a client one (`wsq-client:closed`, …). */
export class WsqError extends Error {
  constructor(condition, description = "", details = {}) {
    super(
      description ? `${condition}: ${description}` : condition,
      details.cause !== undefined ? { cause: details.cause } : undefined,
    );
    this.name = "WsqError";
    this.condition = condition;
    this.description = description;
    this.scope = details.scope ?? "client";
    this.fatal = details.fatal ?? false;
    if (details.address !== undefined) this.address = details.address;
  }
}

/** Thrown inside frame handling when the server broke the protocol. */
class Violation extends Error {}

function fromWire(error, scope, address) {
  const ok = error !== null && typeof error === "object";
  const condition =
    ok && typeof error.condition === "string" ? error.condition : "wsq:internal-error";
  const description = ok && typeof error.description === "string" ? error.description : "";
  return new WsqError(condition.slice(0, 256), description.slice(0, 4096), { scope, address });
}

function reportListenerError(error) {
  // A listener's own bug must not break the client; surface it the way the platform does.
  if (typeof globalThis.reportError === "function") globalThis.reportError(error);
  else console.error("wsq-client: a listener threw", error);
}

/** `fn` for a callback the platform calls (socket events, timers, microtasks): a bug of ours in
 * there is reported, never thrown into the event loop (where Node would end the process). */
function guarded(fn) {
  return (...args) => {
    try {
      const result = fn(...args);
      if (result && typeof result.catch === "function") result.catch(reportListenerError);
    } catch (error) {
      reportListenerError(error);
    }
  };
}

// -- small helpers -----------------------------------------------------------------------

/** Compare two positions `"<ms>-<seq>"` as numbers: < 0, 0 or > 0. */
export function comparePositions(a, b) {
  const ma = POSITION_RE.exec(a);
  const mb = POSITION_RE.exec(b);
  if (!ma || !mb) throw new TypeError(`not positions: ${a}, ${b}`);
  return compareDigits(ma[1], mb[1]) || compareDigits(ma[2], mb[2]);
}

function compareDigits(a, b) {
  // Arbitrary length without BigInt: strip leading zeros, then length, then lexical order.
  const x = a.replace(/^0+(?=\d)/, "");
  const y = b.replace(/^0+(?=\d)/, "");
  if (x.length !== y.length) return x.length < y.length ? -1 : 1;
  return x < y ? -1 : x > y ? 1 : 0;
}

export function isAddress(value) {
  return typeof value === "string" && value.length <= 255 && ADDRESS_RE.test(value);
}

function utf8Length(text) {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const isUint = (v, max = Number.MAX_SAFE_INTEGER) => Number.isInteger(v) && v >= 0 && v <= max;

function randomId() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === "function") return c.randomUUID();
  if (c && typeof c.getRandomValues === "function") {
    const bytes = c.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

function positiveInt(options, name, fallback, min = 1) {
  const value = options[name] ?? fallback;
  if (!Number.isInteger(value) || value < min) {
    throw new TypeError(`option ${name}: an integer >= ${min} expected, got ${value}`);
  }
  return value;
}

function resolveUrl(url) {
  let text = String(url);
  const loc = globalThis.location;
  if (loc && typeof loc.href === "string" && !/^[a-z][a-z0-9+.-]*:/i.test(text)) {
    text = new URL(text, loc.href).href; // "/ws" in a page: the page's own host
  }
  const parsed = new URL(text);
  if (parsed.protocol === "http:") parsed.protocol = "ws:";
  else if (parsed.protocol === "https:") parsed.protocol = "wss:";
  if (parsed.protocol !== "ws:" && parsed.protocol !== "wss:") {
    throw new TypeError(`a ws:// or wss:// URL expected, got ${url}`);
  }
  return parsed.href;
}

// -- events ------------------------------------------------------------------------------

const EMIT = Symbol("emit");

class Emitter {
  #listeners = new Map();

  /** Call `listener` on every `event`; answers this. */
  on(event, listener) {
    if (typeof listener !== "function") throw new TypeError("listener must be a function");
    let set = this.#listeners.get(event);
    if (!set) this.#listeners.set(event, (set = new Set()));
    set.add(listener);
    return this;
  }

  /** Call `listener` on the next `event` only. */
  once(event, listener) {
    if (typeof listener !== "function") throw new TypeError("listener must be a function");
    const wrapper = (...args) => {
      this.off(event, wrapper);
      listener.apply(this, args);
    };
    wrapper.listener = listener;
    return this.on(event, wrapper);
  }

  off(event, listener) {
    const set = this.#listeners.get(event);
    if (!set) return this;
    for (const fn of set) if (fn === listener || fn.listener === listener) set.delete(fn);
    if (!set.size) this.#listeners.delete(event);
    return this;
  }

  listenerCount(event) {
    return this.#listeners.get(event)?.size ?? 0;
  }

  [EMIT](event, ...args) {
    const set = this.#listeners.get(event);
    if (!set) return false;
    for (const fn of [...set]) {
      try {
        fn.apply(this, args);
      } catch (error) {
        reportListenerError(error);
      }
    }
    return true;
  }
}

// -- per-socket state --------------------------------------------------------------------

class Session {
  constructor(ch) {
    this.ch = ch;
    this.links = new Map(); // handle -> Binding
    this.nextHandle = 0;
    this.nextDelivery = 0; // our numbering of transfers on this session
    this.pending = new Map(); // our delivery -> publish item awaiting its disposition
    this.begun = false;
    this.ending = false;
  }
}

/** One link (a Subscription or a Sender) attached on one session of one socket. */
class Binding {
  constructor(conn, session, handle, link) {
    this.conn = conn;
    this.session = session;
    this.handle = handle;
    this.link = link;
    this.attached = false; // the server answered our attach
    this.detaching = false; // we sent detach; frames for it crossing ours are ignored
    this.credit = 0; // receiver: credit the server still holds; sender: credit it gave us
  }

  get live() {
    return !this.detaching && !this.conn.dead && this.conn.client._conn === this.conn;
  }
}

class Connection {
  constructor(client, ws, token) {
    this.client = client;
    this.ws = ws;
    this.token = token;
    this.opened = false; // the server's open arrived
    this.dead = false;
    this.closeSent = false;
    this.closeReceived = null; // the server's close: its error, or true without one
    this.info = null;
    this.serverIdle = 0;
    this.maxFrameBytes = client._maxFrameBytes;
    this.sessions = new Map(); // ch -> Session
    this.nextCh = 0;
    this.out = [];
    this.flushQueued = false;
    this.startedAt = Date.now();
    this.openedAt = 0;
    this.lastRecv = this.startedAt;
    this.lastSent = this.startedAt;
    this.period = 1000;
    this.timer = null;
    this.refreshTimer = null;
    this.closeTimer = null;
    this.killTimer = null;
  }

  get usable() {
    return !this.dead && !this.closeSent && !this.closeReceived;
  }

  send(frame) {
    this.sendText(JSON.stringify(frame));
  }

  sendText(text) {
    if (!this.usable) return;
    this.out.push(text);
    if (!this.flushQueued) {
      this.flushQueued = true;
      queueMicrotask(guarded(() => this.flush()));
    }
  }

  /** Everything queued, in as few WebSocket messages as max_frame_bytes allows. */
  flush() {
    this.flushQueued = false;
    if (this.dead || this.ws.readyState !== OPEN || this.out.length === 0) return;
    const out = this.out;
    this.out = [];
    const limit = this.maxFrameBytes;
    let batch = [];
    let size = 2;
    const write = () => {
      this.write(batch.length === 1 ? batch[0] : `[${batch.join(",")}]`);
      batch = [];
      size = 2;
    };
    for (const text of out) {
      const bytes = utf8Length(text);
      if (batch.length && size + bytes + 1 > limit) write();
      batch.push(text);
      size += bytes + 1;
    }
    if (batch.length) write();
  }

  write(text) {
    if (this.dead || this.ws.readyState !== OPEN) return;
    try {
      this.ws.send(text);
      this.lastSent = Date.now();
    } catch (error) {
      this.client._lost(this, { error: new WsqError("wsq-client:socket", String(error)) });
    }
  }

  /** Our close, at once (nothing queued behind it goes out). */
  sendClose(error) {
    if (this.dead || this.closeSent) return;
    this.flush();
    this.closeSent = true;
    this.write(JSON.stringify(error ? { op: "close", error } : { op: "close" }));
  }

  startTimer(period) {
    clearInterval(this.timer);
    this.period = period;
    this.timer = setInterval(
      guarded(() => this.client._tick(this)),
      period,
    );
  }

  stopTimers() {
    clearInterval(this.timer);
    clearTimeout(this.refreshTimer);
    clearTimeout(this.closeTimer);
    this.timer = this.refreshTimer = this.closeTimer = null;
  }
}

// -- messages ----------------------------------------------------------------------------

/** One delivery handed to a subscription's handler. */
export class Message {
  constructor(subscription, binding, frame) {
    this.id = frame.id;
    this.body = frame.body === undefined ? null : frame.body;
    this.props = isObject(frame.props) ? frame.props : {};
    this.address = subscription.address;
    this.subscription = subscription;
    this.delivery = frame.delivery;
    this._binding = binding;
    // Only unsettled move-mode deliveries are ours to settle.
    this._settled = subscription.mode !== "move" || frame.settled === true;
  }

  get subject() {
    return typeof this.props.subject === "string" ? this.props.subject : undefined;
  }

  get redelivered() {
    return isUint(this.props.redelivered) ? this.props.redelivered : 0;
  }

  get settled() {
    return this._settled;
  }

  /** Settle this delivery (move mode): answers whether a disposition was sent. */
  settle(outcome = "accepted") {
    if (!OUTCOMES.has(outcome)) throw new TypeError(`unknown outcome ${outcome}`);
    if (this._settled) return false;
    this._settled = true;
    const b = this._binding;
    // A delivery of a link or socket that is gone was released by the server already.
    if (!b.live || b.link._binding !== b) return false;
    b.conn.send({ op: "disposition", ch: b.session.ch, first: this.delivery, outcome });
    return true;
  }

  accept() {
    return this.settle("accepted");
  }

  release() {
    return this.settle("released");
  }

  reject() {
    return this.settle("rejected");
  }

  modify() {
    return this.settle("modified");
  }
}

// -- subscriptions -----------------------------------------------------------------------

export class Subscription extends Emitter {
  constructor(client, address, handler, options) {
    super();
    this.client = client;
    this.address = address;
    this.mode = options.mode ?? "copy";
    this._handler = handler;
    this._from = options.from ?? "$";
    this._group = options.group;
    this._lease = options.lease;
    this._filter = options.filter;
    this._window = options.credit ?? client._credit;
    this._presettled = options.settled === true;
    /** Copy mode: the position of the last message handed to the handler. */
    this.position = null;
    this._resumeFrom = null; // the last position received (or where the server started us)
    this._queue = []; // received, not yet handed to the handler: at most the credit window
    this._running = false;
    this._scheduled = false;
    this._binding = null;
    this._retryTimer = null;
    this._retries = 0;
    this._ready = null;
    this._readyState = null; // null, or {ok} / {error}
    this._unsubscribed = null;
    /** The subscription ended: unsubscribed, refused, or its client closed. */
    this.closed = false;
    /** Attached on the current socket. */
    this.attached = false;
  }

  /** A promise of the first attach; rejects if the gateway refuses the subscription. */
  get ready() {
    if (!this._ready) {
      this._ready = new Promise((resolve, reject) => {
        this._settleReady = (state) => (state.error ? reject(state.error) : resolve());
      });
      if (this._readyState) this._settleReady(this._readyState);
    }
    return this._ready;
  }

  _markReady(state) {
    if (this._readyState) return;
    this._readyState = state;
    if (this._settleReady) this._settleReady(state);
  }

  /** Stop receiving; resolves once the gateway confirmed (or at once when offline). */
  unsubscribe() {
    if (this._unsubscribed) return this._unsubscribed;
    this._unsubscribed = new Promise((resolve) => {
      this._onGone = resolve;
    });
    const b = this._binding;
    this._end();
    if (b && b.live) {
      b.detaching = true;
      b.conn.send({ op: "detach", ch: b.session.ch, handle: b.handle });
    } else {
      this._onGone();
    }
    return this._unsubscribed;
  }

  _end(error) {
    if (this.closed) return;
    this.closed = true;
    this.attached = false;
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    this._queue.length = 0;
    this.client._subscriptions.delete(this);
    this._markReady(
      error ? { error } : { error: new WsqError("wsq-client:closed", "unsubscribed") },
    );
    if (error) {
      this[EMIT]("error", error);
      this.client[EMIT]("error", error);
    }
    this[EMIT]("closed", error ?? null);
  }

  _attachFrame(b) {
    const f = { op: "attach", ch: b.session.ch, handle: b.handle, role: "receiver" };
    f.address = this.address;
    f.mode = this.mode;
    if (this.mode === "copy") f.from = this._resumeFrom ?? this._from;
    if (this.mode === "move") {
      if (this._group !== undefined) f.group = this._group;
      if (this._lease !== undefined) f.lease = this._lease;
    }
    if (this._filter !== undefined) f.filter = this._filter;
    if (this._presettled) f.settled = true;
    const credit = Math.max(0, this._window - this._queue.length);
    f.credit = credit;
    b.credit = credit;
    return f;
  }

  _onAttached(b, f) {
    this.attached = true;
    this._retries = 0;
    if (this.mode === "copy" && this._resumeFrom === null && typeof f.from === "string") {
      if (POSITION_RE.test(f.from)) this._resumeFrom = f.from; // what "$" or "^" resolved to
    }
    const info = {
      address: this.address,
      from: typeof f.from === "string" ? f.from : null,
      recovered: f.recovered !== false,
      node: b.conn.info?.node ?? null,
    };
    this._markReady({ ok: true });
    this[EMIT]("attached", info);
    if (f.recovered === false) {
      // Retention dropped messages between our position and the oldest one retained.
      this[EMIT]("gap", info);
      this.client[EMIT]("gap", { ...info, subscription: this });
    }
  }

  _onTransfer(b, f) {
    b.credit = Math.max(0, b.credit - 1);
    if (typeof f.id !== "string" || !POSITION_RE.test(f.id)) {
      throw new Violation("a transfer without a valid id");
    }
    if (!isUint(f.delivery)) throw new Violation("a transfer without a valid delivery number");
    if (this.closed) return;
    if (this.mode === "copy") {
      // Resume and crossing frames must never hand a message over twice.
      if (this._resumeFrom !== null && comparePositions(f.id, this._resumeFrom) <= 0) {
        this._refill();
        return;
      }
      this._resumeFrom = f.id;
    }
    if (this._queue.length >= 2 * this._window + 16) {
      throw new Violation("transfers beyond the credit granted");
    }
    this._queue.push(new Message(this, b, f));
    this._schedule();
  }

  _onLost(b) {
    if (this._binding !== b) return;
    this._binding = null;
    this.attached = false;
    // Move deliveries of a lost socket went back to the group: they are not ours any more.
    if (this.mode === "move") this._queue.length = 0;
    if (this.closed && this._onGone) this._onGone();
  }

  _onDetached(b, error) {
    this._onLost(b);
    if (this.closed) return;
    const failure = fromWire(
      error ?? { condition: "wsq:not-found", description: "detached" },
      "link",
      this.address,
    );
    if (error && FINAL_LINK_CONDITIONS.has(failure.condition)) {
      this._end(failure);
      return;
    }
    // Storage trouble or a limit: try again later on whatever socket is current.
    this.client[EMIT]("error", failure);
    this._retryLater();
  }

  _retryLater() {
    const client = this.client;
    const delay = client._backoff(this._retries++);
    clearTimeout(this._retryTimer);
    this._retryTimer = setTimeout(
      guarded(() => {
        this._retryTimer = null;
        if (!this.closed && !this._binding && client._conn) client._attach(client._conn, this);
      }),
      delay,
    );
  }

  _schedule() {
    if (this._scheduled || this._running) return;
    this._scheduled = true;
    queueMicrotask(
      guarded(() => {
        this._scheduled = false;
        return this._pump();
      }),
    );
  }

  /** Hand queued messages to the handler one at a time, in order; refill credit as it goes. */
  async _pump() {
    if (this._running) return;
    this._running = true;
    try {
      while (this._queue.length && !this.closed) {
        const msg = this._queue.shift();
        if (this.mode === "copy") this.position = msg.id;
        let failure = null;
        try {
          const result = this._handler(msg);
          if (result && typeof result.then === "function") await result;
        } catch (error) {
          failure = error ?? new Error("the handler failed");
        }
        if (failure !== null) {
          this.client[EMIT](
            "error",
            new WsqError("wsq-client:handler", String(failure?.message ?? failure), {
              scope: "handler",
              address: this.address,
              cause: failure,
            }),
          );
        }
        // Move mode: done when the handler returns, back to the group when it throws.
        if (!msg._settled) msg.settle(failure === null ? "accepted" : "released");
        this._refill();
      }
    } finally {
      this._running = false;
    }
  }

  _refill() {
    const b = this._binding;
    if (!b || !b.live || this.closed) return;
    const have = b.credit + this._queue.length;
    if (have > this._window / 2) return;
    const grant = this._window - have;
    if (grant <= 0) return;
    b.credit += grant;
    b.conn.send({ op: "flow", ch: b.session.ch, handle: b.handle, credit: grant });
  }
}

// -- publishing --------------------------------------------------------------------------

/** The sender link of one address and its outbox. */
class Sender {
  constructor(client, address) {
    this.client = client;
    this.address = address;
    this.queue = []; // items waiting for credit or a socket, in publish order
    this.inflight = 0; // items sent, awaiting their disposition
    this._binding = null;
    this._retryTimer = null;
    this._retries = 0;
    this.lastUsed = Date.now();
  }

  get idle() {
    return this.queue.length === 0 && this.inflight === 0;
  }

  _attachFrame(b) {
    return {
      op: "attach",
      ch: b.session.ch,
      handle: b.handle,
      role: "sender",
      address: this.address,
    };
  }

  _onAttached() {
    this._retries = 0;
  }

  _onFlow(b, credit) {
    b.credit = Math.min(MAX_U32, b.credit + credit);
    this.pump();
  }

  pump() {
    const b = this._binding;
    if (!b || !b.attached || !b.live) return;
    const session = b.session;
    while (b.credit > 0 && this.queue.length) {
      const item = this.queue.shift();
      const delivery = session.nextDelivery++;
      session.pending.set(delivery, item);
      item.binding = b;
      this.inflight += 1;
      b.credit -= 1;
      b.conn.sendText(
        `{"op":"transfer","ch":${session.ch},"handle":${b.handle},"delivery":${delivery},` +
          `"settled":false,${item.tail}`,
      );
    }
  }

  /** Back into the queue, in publish order: sent but never answered (it may have been stored;
   * its message_id makes the retry harmless). */
  requeue(item) {
    item.binding = null;
    this.inflight -= 1;
    this.queue.push(item);
    this.queue.sort((a, b) => a.seq - b.seq);
  }

  _onLost(b) {
    if (this._binding === b) this._binding = null;
  }

  _onDetached(b, error) {
    this._onLost(b);
    const pending = b.session.pending;
    const mine = [];
    for (const [delivery, item] of pending) {
      if (item.binding === b) {
        pending.delete(delivery);
        mine.push(item);
      }
    }
    for (const item of mine) this.requeue(item);
    if (this.client._senders.get(this.address) !== this) {
      // Evicted while idle, or the client closed: anything left fails.
      this.failAll(
        new WsqError("wsq-client:closed", "the sender was closed", { address: this.address }),
      );
      return;
    }
    const failure = fromWire(
      error ?? { condition: "wsq:not-found", description: "detached" },
      "link",
      this.address,
    );
    if (error && FINAL_LINK_CONDITIONS.has(failure.condition)) {
      this.client._senders.delete(this.address);
      this.failAll(failure);
      return;
    }
    if (!this.idle) {
      this.client[EMIT]("error", failure);
      const delay = this.client._backoff(this._retries++);
      clearTimeout(this._retryTimer);
      this._retryTimer = setTimeout(
        guarded(() => {
          this._retryTimer = null;
          const client = this.client;
          if (client._senders.get(this.address) === this && !this._binding && client._conn) {
            client._attach(client._conn, this);
          }
        }),
        delay,
      );
    }
  }

  failAll(error) {
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    const items = this.queue;
    this.queue = [];
    for (const item of items) this.client._finish(item, error);
  }
}

// -- the client --------------------------------------------------------------------------

export class Client extends Emitter {
  constructor(url, options = {}) {
    super();
    if (!isObject(options)) throw new TypeError("options must be an object");
    this.url = resolveUrl(url);
    const token = options.token;
    if (typeof token !== "function" && (typeof token !== "string" || token === "")) {
      throw new TypeError("options.token: a token string or a function answering one is required");
    }
    this._token = token;
    const WS = options.WebSocket ?? globalThis.WebSocket;
    if (typeof WS !== "function") {
      throw new TypeError(
        "no WebSocket implementation: pass options.WebSocket (on Node 20: import WebSocket from 'ws')",
      );
    }
    this._WebSocket = WS;
    this._idle = positiveInt(options, "idle", DEFAULTS.idle, 0);
    if (this._idle !== 0 && (this._idle < 500 || this._idle > 3600000)) {
      throw new TypeError("option idle: 0 or 500..3600000 ms");
    }
    this._connectTimeout = positiveInt(options, "connectTimeout", DEFAULTS.connectTimeout);
    this._reconnectDelay = positiveInt(options, "reconnectDelay", DEFAULTS.reconnectDelay);
    this._maxReconnectDelay = positiveInt(options, "maxReconnectDelay", DEFAULTS.maxReconnectDelay);
    this._credit = positiveInt(options, "credit", DEFAULTS.credit);
    this._outboxSize = positiveInt(options, "outboxSize", DEFAULTS.outboxSize, 0);
    this._outboxBytes = positiveInt(options, "outboxBytes", DEFAULTS.outboxBytes, 0);
    this._linksPerSession = positiveInt(options, "linksPerSession", DEFAULTS.linksPerSession);
    this._maxSessionsOption = positiveInt(options, "maxSessions", DEFAULTS.maxSessions);
    this._maxSenders = positiveInt(options, "maxSenders", DEFAULTS.maxSenders);
    this._refreshBefore = positiveInt(options, "refreshBefore", DEFAULTS.refreshBefore, 0);
    this._closeTimeout = positiveInt(options, "closeTimeout", DEFAULTS.closeTimeout);
    this._clientName = String(options.clientName ?? `wsq-client/${VERSION}`).slice(0, 256);
    this._messageIdPrefix = `${options.messageIdPrefix ?? randomId()}-`;
    this._maxFrameBytes = DEFAULT_MAX_FRAME_BYTES;
    this._maxSessions = this._maxSessionsOption;

    this._state = "disconnected";
    this._conn = null;
    this._info = null;
    this._closed = false;
    this._closePromise = null;
    this._resolveClose = null;
    this._reconnectTimer = null;
    this._attempts = 0; // failed connections since the last stable one (backoff exponent)
    this._connectSeq = 0;
    this._authFailures = 0;
    this._refusedToken = null;
    this._subscriptions = new Set();
    this._senders = new Map(); // address -> Sender
    this._outboxCount = 0;
    this._outboxUsed = 0;
    this._seq = 0;
    this._publishCount = 0;

    this._setState("connecting");
    queueMicrotask(guarded(() => this._connect()));
  }

  /** connecting | connected | disconnected | closed */
  get state() {
    return this._state;
  }

  get connected() {
    return this._state === "connected";
  }

  /** The server's open answer on the current socket: node, tenant, sub, exp, … or null. */
  get info() {
    return this._conn?.opened ? this._conn.info : null;
  }

  /** Publishes not yet confirmed: waiting in the outbox or sent and unanswered. */
  get pendingPublishes() {
    return this._outboxCount;
  }

  subscribe(address, handler, options = {}) {
    if (typeof handler !== "function") throw new TypeError("handler must be a function");
    if (!isObject(options)) throw new TypeError("options must be an object");
    if (this._closed) throw new WsqError("wsq-client:closed", "the client is closed");
    if (!isAddress(address)) {
      throw new WsqError("wsq:invalid-frame", `not an address: ${JSON.stringify(address)}`);
    }
    const opts = { ...options };
    if (opts.mode !== undefined && opts.mode !== "copy" && opts.mode !== "move") {
      throw new TypeError('option mode: "copy" or "move"');
    }
    if (
      opts.from !== undefined &&
      opts.from !== "$" &&
      opts.from !== "^" &&
      !POSITION_RE.test(opts.from)
    ) {
      throw new TypeError('option from: "$", "^" or a position "<ms>-<seq>"');
    }
    if (opts.group !== undefined && !isAddress(opts.group))
      throw new TypeError("option group: an address-like name");
    if (opts.lease !== undefined && !(isUint(opts.lease, 86400000) && opts.lease >= 100)) {
      throw new TypeError("option lease: 100..86400000 ms");
    }
    if (opts.credit !== undefined && !(isUint(opts.credit, 1000000) && opts.credit >= 1)) {
      throw new TypeError("option credit: 1..1000000");
    }
    if (typeof opts.filter === "string") opts.filter = { subject: opts.filter };
    if (opts.filter !== undefined) {
      if (
        !isObject(opts.filter) ||
        (opts.filter.subject !== undefined && !PATTERN_RE.test(String(opts.filter.subject)))
      ) {
        throw new TypeError("option filter: {subject: pattern}");
      }
    }
    const sub = new Subscription(this, address, handler, opts);
    if (typeof opts.onGap === "function") sub.on("gap", opts.onGap);
    if (typeof opts.onError === "function") sub.on("error", opts.onError);
    this._subscriptions.add(sub);
    if (this._conn) this._attach(this._conn, sub);
    return sub;
  }

  /** Publish `body` to `address`; resolves with its position once the gateway stored it. */
  publish(address, body, options = {}) {
    return new Promise((resolve, reject) => {
      if (this._closed)
        throw new WsqError("wsq-client:closed", "the client is closed", { address });
      if (!isObject(options)) throw new TypeError("options must be an object");
      if (!isAddress(address)) {
        throw new WsqError("wsq:invalid-frame", `not an address: ${JSON.stringify(address)}`, {
          address,
        });
      }
      const props = {};
      if (options.subject !== undefined) {
        if (!isAddress(options.subject))
          throw new WsqError(
            "wsq:invalid-frame",
            "subject: dot-separated tokens of [A-Za-z0-9_-]",
            { address },
          );
        props.subject = options.subject;
      }
      const messageId = options.messageId ?? `${this._messageIdPrefix}${++this._publishCount}`;
      if (typeof messageId !== "string" || messageId.length === 0 || messageId.length > 1024) {
        throw new TypeError("option messageId: a string of 1..1024 characters");
      }
      props.message_id = messageId;
      if (options.ttl !== undefined) {
        if (!(isUint(options.ttl, 31536000000) && options.ttl >= 1))
          throw new TypeError("option ttl: 1..31536000000 ms");
        props.ttl = options.ttl;
      }
      if (options.contentType !== undefined) props.content_type = String(options.contentType);
      if (options.headers !== undefined) {
        if (!isObject(options.headers)) throw new TypeError("option headers: an object");
        props.headers = options.headers;
      }
      let tail;
      try {
        tail = JSON.stringify({ body: body === undefined ? null : body, props }).slice(1);
      } catch (error) {
        throw new WsqError("wsq:invalid-frame", `the body is not JSON: ${error.message}`, {
          address,
          cause: error,
        });
      }
      const size = utf8Length(tail) + TRANSFER_OVERHEAD;
      if (size > this._maxFrameBytes) {
        throw new WsqError(
          "wsq:frame-too-large",
          `the message has ${size} bytes, the gateway takes ${this._maxFrameBytes}`,
          { address },
        );
      }
      if (this._outboxCount >= this._outboxSize || this._outboxUsed + size > this._outboxBytes) {
        throw new WsqError(
          "wsq:resource-limit-exceeded",
          `the outbox is full (${this._outboxCount} messages, ${this._outboxUsed} bytes unconfirmed)`,
          { address },
        );
      }
      const item = {
        seq: ++this._seq,
        address,
        tail,
        size,
        messageId,
        resolve,
        reject,
        binding: null,
      };
      this._outboxCount += 1;
      this._outboxUsed += size;
      const sender = this._sender(address);
      sender.lastUsed = Date.now();
      sender.queue.push(item);
      if (!sender._binding && !sender._retryTimer && this._conn) this._attach(this._conn, sender);
      else sender.pump();
    });
  }

  /** Close the connection for good; pending publishes reject with `wsq-client:closed`. */
  close() {
    if (this._closePromise) return this._closePromise;
    if (this._state === "closed") return (this._closePromise = Promise.resolve());
    this._closePromise = new Promise((resolve) => {
      this._resolveClose = resolve;
    });
    this._shutdown(new WsqError("wsq-client:closed", "the client was closed"));
    return this._closePromise;
  }

  // -- connecting ------------------------------------------------------------------------

  _setState(state) {
    if (this._state === state) return;
    this._state = state;
    this[EMIT]("state", state);
  }

  _backoff(attempt) {
    // Full jitter: uniformly random up to an exponentially growing ceiling.
    const ceiling = Math.min(
      this._maxReconnectDelay,
      this._reconnectDelay * 2 ** Math.min(attempt, 30),
    );
    return Math.floor(Math.random() * ceiling);
  }

  /** The token to send now: the static one or the token function's answer, never empty. */
  async _token_() {
    const token = typeof this._token === "function" ? await this._token() : this._token;
    if (typeof token !== "string" || token === "")
      throw new TypeError("the token function answered no token");
    return token;
  }

  async _connect() {
    this._reconnectTimer = null;
    if (this._closed) return;
    const seq = ++this._connectSeq;
    this._setState("connecting");
    let token;
    try {
      token = await this._token_();
    } catch (error) {
      if (this._closed || seq !== this._connectSeq) return;
      this[EMIT](
        "error",
        new WsqError("wsq-client:token", String(error?.message ?? error), { cause: error }),
      );
      this._reconnectLater(this._backoff(this._attempts++));
      return;
    }
    if (this._closed || seq !== this._connectSeq) return;
    if (this._refusedToken !== null && token === this._refusedToken) {
      this._giveUp(
        new WsqError("wsq:unauthorized", "the token was refused and no other token is available", {
          scope: "connection",
        }),
      );
      return;
    }
    let ws;
    try {
      ws = new this._WebSocket(this.url, SUBPROTOCOL);
    } catch (error) {
      this[EMIT](
        "error",
        new WsqError("wsq-client:socket", String(error?.message ?? error), { cause: error }),
      );
      this._reconnectLater(this._backoff(this._attempts++));
      return;
    }
    const conn = new Connection(this, ws, token);
    this._conn = conn;
    ws.onopen = guarded(() => this._onSocketOpen(conn));
    ws.onmessage = guarded((event) => this._onSocketMessage(conn, event.data));
    ws.onclose = guarded((event) => this._onSocketClose(conn, event));
    ws.onerror = () => {}; // a close event follows
    // Pipelined: the gateway applies these in order once the token is verified.
    conn.send({ op: "open", token, idle: this._idle, client: this._clientName });
    for (const sub of this._subscriptions) if (!sub._retryTimer) this._attach(conn, sub);
    for (const sender of this._senders.values()) {
      if (!sender.idle && !sender._retryTimer) this._attach(conn, sender);
    }
    conn.startTimer(Math.min(1000, this._connectTimeout));
  }

  _reconnectLater(delay) {
    if (this._closed) return;
    this._setState("disconnected");
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = setTimeout(
      guarded(() => this._connect()),
      delay,
    );
  }

  /** A link onto a session with room (a new one begun when needed). */
  _attach(conn, link) {
    if (!conn.usable || link._binding) return;
    let session = null;
    for (const s of conn.sessions.values()) {
      if (!s.ending && s.links.size < this._linksPerSession && s.nextHandle <= MAX_U32) {
        session = s;
        break;
      }
    }
    if (!session) {
      if (conn.sessions.size >= this._maxSessions) {
        const error = new WsqError(
          "wsq:resource-limit-exceeded",
          `more than ${this._maxSessions * this._linksPerSession} links`,
          { address: link.address },
        );
        if (link instanceof Subscription) link._end(error);
        else {
          this._senders.delete(link.address);
          link.failAll(error);
        }
        return;
      }
      let ch = conn.nextCh;
      while (conn.sessions.has(ch % (MAX_CH + 1))) ch++;
      ch %= MAX_CH + 1;
      conn.nextCh = ch + 1;
      session = new Session(ch);
      conn.sessions.set(ch, session);
      conn.send({ op: "begin", ch });
    }
    const b = new Binding(conn, session, session.nextHandle++, link);
    session.links.set(b.handle, b);
    link._binding = b;
    conn.send(link._attachFrame(b));
  }

  _sender(address) {
    let sender = this._senders.get(address);
    if (sender) return sender;
    if (this._senders.size >= this._maxSenders) this._evictSender();
    sender = new Sender(this, address);
    this._senders.set(address, sender);
    return sender;
  }

  /** Detach the least recently used idle sender link (bounded links per socket). */
  _evictSender() {
    let oldest = null;
    for (const s of this._senders.values()) {
      if (s.idle && !s._retryTimer && (!oldest || s.lastUsed < oldest.lastUsed)) oldest = s;
    }
    if (!oldest) return;
    this._senders.delete(oldest.address);
    const b = oldest._binding;
    if (b && b.live) {
      b.detaching = true;
      b.conn.send({ op: "detach", ch: b.session.ch, handle: b.handle });
    }
  }

  _finish(item, error, id) {
    this._outboxCount -= 1;
    this._outboxUsed -= item.size;
    if (error) item.reject(error);
    else item.resolve(id);
  }

  // -- the socket ------------------------------------------------------------------------

  _onSocketOpen(conn) {
    if (conn.dead || this._conn !== conn) return;
    const protocol = conn.ws.protocol;
    if (typeof protocol === "string" && protocol !== "" && protocol !== SUBPROTOCOL) {
      this._violation(conn, `the server chose the subprotocol ${protocol}`);
      return;
    }
    conn.flush();
  }

  _onSocketClose(conn, event) {
    if (conn.dead) return;
    this._lost(conn, { code: event?.code });
  }

  _onSocketMessage(conn, data) {
    if (conn.dead || this._conn !== conn) return;
    conn.lastRecv = Date.now();
    if (typeof data !== "string") {
      this._violation(conn, "a binary message");
      return;
    }
    let value;
    try {
      value = JSON.parse(data);
    } catch {
      this._violation(conn, "a message that is not JSON");
      return;
    }
    const frames = Array.isArray(value) ? value : [value]; // [] is a heartbeat
    for (const frame of frames) {
      if (conn.dead) return;
      if (conn.closeReceived) continue; // nothing counts after the server's close
      try {
        this._onFrame(conn, frame);
      } catch (error) {
        this._violation(
          conn,
          error instanceof Violation ? error.message : `a frame the client failed on: ${error}`,
        );
        return;
      }
    }
  }

  _violation(conn, description) {
    const error = { condition: "wsq:invalid-frame", description: `the server sent ${description}` };
    this[EMIT]("error", new WsqError(error.condition, error.description, { scope: "connection" }));
    this._drop(conn, error);
  }

  /** Drop a socket now, after our close (with `error`) when it can still be written. */
  _drop(conn, error) {
    if (conn.dead) return;
    conn.sendClose(error);
    this._lost(conn, {});
  }

  _session(conn, f) {
    const session = isUint(f.ch, MAX_CH) ? conn.sessions.get(f.ch) : undefined;
    if (!session) throw new Violation(`"${f.op}" on a channel that is not begun`);
    return session;
  }

  _binding(conn, f) {
    const session = this._session(conn, f);
    const b = isUint(f.handle, MAX_U32) ? session.links.get(f.handle) : undefined;
    if (!b) throw new Violation(`"${f.op}" on a handle that is not attached`);
    return b;
  }

  _onFrame(conn, f) {
    if (!isObject(f) || typeof f.op !== "string") throw new Violation("a frame without an op");
    if (!conn.opened && f.op !== "open" && f.op !== "close")
      throw new Violation(`"${f.op}" before open`);
    switch (f.op) {
      case "open":
        return this._onOpen(conn, f);
      case "begin": {
        const session = this._session(conn, f);
        if (session.begun) throw new Violation("a second begin");
        session.begun = true;
        return;
      }
      case "end":
        return this._onEnd(conn, f);
      case "attach": {
        const b = this._binding(conn, f);
        if (b.detaching) return;
        if (b.attached) throw new Violation("a second attach");
        b.attached = true;
        return b.link._onAttached(b, f);
      }
      case "flow": {
        const b = this._binding(conn, f);
        if (!isUint(f.credit, MAX_U32)) throw new Violation("a flow without a valid credit");
        if (!b.detaching && b.link instanceof Sender) b.link._onFlow(b, f.credit);
        return;
      }
      case "transfer": {
        const b = this._binding(conn, f);
        if (b.detaching) return;
        if (!(b.link instanceof Subscription)) throw new Violation("a transfer on a sender link");
        return b.link._onTransfer(b, f);
      }
      case "disposition":
        return this._onDisposition(conn, f);
      case "detach":
        return this._onDetach(conn, f);
      case "refresh":
        if (!isUint(f.exp)) throw new Violation("a refresh without exp");
        conn.info.exp = f.exp;
        this._scheduleRefresh(conn);
        this[EMIT]("refresh", { exp: f.exp });
        return;
      case "close":
        return this._onClose(conn, f);
      default:
        throw new Violation(`an unknown op "${String(f.op).slice(0, 64)}"`);
    }
  }

  _onOpen(conn, f) {
    if (conn.opened) throw new Violation("a second open");
    const num = (v, fallback, min) => (isUint(v) && v >= min ? v : fallback);
    conn.opened = true;
    conn.openedAt = Date.now();
    conn.serverIdle = num(f.idle, 0, 0);
    conn.maxFrameBytes = num(f.max_frame_bytes, DEFAULT_MAX_FRAME_BYTES, 1024);
    conn.info = {
      node: typeof f.node === "string" ? f.node : null,
      tenant: typeof f.tenant === "string" ? f.tenant : null,
      sub: typeof f.sub === "string" ? f.sub : null,
      exp: isUint(f.exp) ? f.exp : null,
      idle: conn.serverIdle,
      maxSessions: num(f.max_sessions, 1024, 1),
      maxFrameBytes: conn.maxFrameBytes,
    };
    this._maxFrameBytes = conn.maxFrameBytes;
    this._maxSessions = Math.min(this._maxSessionsOption, conn.info.maxSessions);
    this._authFailures = 0;
    this._refusedToken = null;
    // Tick often enough to keep our gaps under half the server's idle and to notice its silence.
    const shortest = Math.min(conn.serverIdle || Infinity, this._idle || Infinity);
    conn.startTimer(Math.max(50, Math.min(1000, Math.floor(shortest / 4))));
    this._scheduleRefresh(conn);
    this._setState("connected");
    this[EMIT]("open", { ...conn.info });
  }

  _onEnd(conn, f) {
    const session = this._session(conn, f);
    conn.sessions.delete(session.ch);
    for (const b of session.links.values()) b.link._onLost(b);
    for (const item of session.pending.values()) this._senderOf(item).requeue(item);
    session.pending.clear();
    if (session.ending) return;
    // The server ended a session of ours: a limit, or a mistake of ours. Start afresh.
    if (f.error) this[EMIT]("error", fromWire(f.error, "session"));
    conn.send({ op: "end", ch: session.ch });
    this._drop(conn, null);
  }

  _senderOf(item) {
    return item.binding.link;
  }

  _onDisposition(conn, f) {
    const session = this._session(conn, f);
    if (!isUint(f.first)) throw new Violation("a disposition without first");
    const last = f.last === undefined ? f.first : f.last;
    if (!isUint(last) || last < f.first) throw new Violation("a disposition with a bad last");
    const pending = session.pending;
    if (!pending.size) return;
    const outcome = f.outcome ?? "accepted";
    const deliveries = [];
    if (last - f.first < pending.size) {
      for (let d = f.first; d <= last; d++) if (pending.has(d)) deliveries.push(d);
    } else {
      for (const d of pending.keys()) if (d >= f.first && d <= last) deliveries.push(d);
    }
    for (const d of deliveries) {
      const item = pending.get(d);
      const sender = this._senderOf(item);
      if (outcome === "accepted") {
        const id = Array.isArray(f.ids) ? f.ids[d - f.first] : undefined;
        if (typeof id !== "string") throw new Violation("an accepted disposition without its ids");
        pending.delete(d);
        sender.inflight -= 1;
        this._finish(item, null, id);
      } else {
        pending.delete(d);
        sender.inflight -= 1;
        this._finish(item, fromWire(f.error, "message", item.address));
      }
    }
  }

  _onDetach(conn, f) {
    const b = this._binding(conn, f);
    b.session.links.delete(b.handle);
    if (b.detaching) {
      // The answer to ours. In-flight publishes of a detached sender go back to the queue.
      b.link._onDetached(b, null);
      return;
    }
    b.detaching = true;
    conn.send({ op: "detach", ch: b.session.ch, handle: b.handle });
    b.link._onDetached(b, isObject(f.error) ? f.error : null);
  }

  _onClose(conn, f) {
    conn.closeReceived = isObject(f.error) ? f.error : true;
    if (conn.closeSent) {
      this._lost(conn, {}); // the answer to our close: done
      return;
    }
    conn.sendClose(null);
    // The server closes the socket; drop it ourselves if that does not happen soon.
    clearTimeout(conn.closeTimer);
    conn.closeTimer = setTimeout(
      guarded(() => this._lost(conn, {})),
      this._closeTimeout,
    );
  }

  // -- timers ----------------------------------------------------------------------------

  _tick(conn) {
    if (conn.dead) return;
    const now = Date.now();
    if (!conn.opened) {
      if (now - conn.startedAt > this._connectTimeout && !conn.closeReceived) {
        this[EMIT](
          "error",
          new WsqError("wsq:idle-timeout", "the gateway did not answer open", {
            scope: "connection",
          }),
        );
        this._drop(conn, null);
      }
      return;
    }
    if (this._idle > 0 && now - conn.lastRecv > this._idle && !conn.closeReceived) {
      this[EMIT](
        "error",
        new WsqError("wsq:idle-timeout", `nothing from the gateway for ${this._idle} ms`, {
          scope: "connection",
        }),
      );
      this._drop(conn, { condition: "wsq:idle-timeout", description: "nothing received" });
      return;
    }
    // Something at least every half of the server's idle: [] when there was nothing to say.
    if (conn.serverIdle > 0 && now - conn.lastSent >= conn.serverIdle / 2 - conn.period - 10) {
      conn.flush();
      if (Date.now() - conn.lastSent >= conn.serverIdle / 2 - conn.period - 10 && conn.usable)
        conn.write("[]");
    }
  }

  _scheduleRefresh(conn) {
    clearTimeout(conn.refreshTimer);
    conn.refreshTimer = null;
    const exp = conn.info?.exp;
    if (typeof this._token !== "function" || !exp) return;
    const remaining = exp * 1000 - Date.now();
    const margin = Math.min(this._refreshBefore, Math.max(0, remaining) / 3);
    const delay = Math.min(MAX_TIMER_MS, Math.max(1000, remaining - margin));
    conn.refreshTimer = setTimeout(
      guarded(() => this._refresh(conn)),
      delay,
    );
  }

  async _refresh(conn) {
    conn.refreshTimer = null;
    if (this._conn !== conn || !conn.opened || !conn.usable) return;
    let token;
    try {
      token = await this._token_();
    } catch (error) {
      if (this._conn !== conn || !conn.usable) return;
      this[EMIT](
        "error",
        new WsqError("wsq-client:token", String(error?.message ?? error), { cause: error }),
      );
      clearTimeout(conn.refreshTimer);
      conn.refreshTimer = setTimeout(
        guarded(() => this._refresh(conn)),
        1000,
      );
      return;
    }
    if (this._conn !== conn || !conn.usable) return;
    if (token === conn.token) {
      // The function has nothing newer yet: ask again a little later.
      clearTimeout(conn.refreshTimer);
      conn.refreshTimer = setTimeout(
        guarded(() => this._refresh(conn)),
        1000,
      );
      return;
    }
    conn.token = token;
    conn.send({ op: "refresh", token });
  }

  // -- losing a socket -------------------------------------------------------------------

  /** The socket is gone (or given up on): unbind every link, then reconnect or finish. */
  _lost(conn, { code } = {}) {
    if (conn.dead) return;
    conn.dead = true;
    conn.stopTimers();
    const ws = conn.ws;
    ws.onopen = ws.onmessage = null;
    ws.onerror = () => {};
    // Settled once the socket is really closed (close() waits for it): `ws` would otherwise
    // wait up to 30 s for a silent peer's close handshake and keep Node alive meanwhile.
    conn.gone = new Promise((resolve) => {
      if (ws.readyState === CLOSED) {
        resolve();
        return;
      }
      ws.onclose = () => {
        clearTimeout(conn.killTimer);
        resolve();
      };
      try {
        ws.close(1000);
      } catch {
        // closing a socket that never connected may throw in some implementations
      }
      conn.killTimer = setTimeout(() => {
        try {
          if (typeof ws.terminate === "function") ws.terminate();
        } catch {
          // already gone
        }
        resolve();
      }, this._closeTimeout);
    });
    if (this._conn === conn) this._conn = null;
    for (const session of conn.sessions.values()) {
      for (const b of session.links.values()) b.link._onLost(b);
      for (const item of session.pending.values()) this._senderOf(item).requeue(item);
      session.pending.clear();
    }
    conn.sessions.clear();

    if (this._closed) {
      conn.gone.then(() => this._finishClose());
      return;
    }
    const error = isObject(conn.closeReceived) ? conn.closeReceived : null;
    const condition = error?.condition;
    if (AUTH_CONDITIONS.has(condition)) {
      const failure = fromWire(error, "connection");
      if (typeof this._token !== "function" || ++this._authFailures >= 2) {
        this._giveUp(
          new WsqError(failure.condition, failure.description, {
            scope: "connection",
            fatal: true,
          }),
        );
        return;
      }
      // Ask the token function again; if that token is refused too, give up.
      this._refusedToken = conn.token;
      this[EMIT]("error", failure);
      this._reconnectLater(0);
      return;
    }
    if (error) this[EMIT]("error", fromWire(error, "connection"));
    const stable = conn.opened && Date.now() - conn.openedAt >= STABLE_MS;
    if (stable) this._attempts = 0;
    const goingAway = condition === "wsq:going-away" || (!error && code === 1001);
    if (goingAway && conn.opened) {
      // The node is draining: come back promptly (jittered, so a node's clients spread out).
      if (!stable) this._attempts += 1;
      this._reconnectLater(Math.floor(Math.random() * Math.min(this._reconnectDelay, 1000)));
      return;
    }
    this._reconnectLater(this._backoff(this._attempts++));
  }

  _giveUp(error) {
    this[EMIT]("error", error);
    this._shutdown(error);
  }

  /** Stop for good: fail what is pending, close the socket, clear every timer. */
  _shutdown(error) {
    if (this._closed) return;
    this._closed = true;
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
    this._connectSeq += 1; // a token fetch in progress comes back to nothing
    for (const sub of [...this._subscriptions]) {
      clearTimeout(sub._retryTimer);
      sub._retryTimer = null;
    }
    const conn = this._conn;
    // Fail every publish that has no answer: waiting, or sent and unanswered.
    if (conn) {
      for (const session of conn.sessions.values()) {
        for (const item of session.pending.values()) this._senderOf(item).requeue(item);
        session.pending.clear();
      }
    }
    const senders = [...this._senders.values()];
    this._senders.clear();
    for (const sender of senders)
      sender.failAll(
        error.fatal
          ? error
          : new WsqError(error.condition, error.description, { address: sender.address }),
      );
    for (const sub of [...this._subscriptions]) sub._end(null);
    if (conn && !conn.dead) {
      if (conn.ws.readyState === OPEN) {
        conn.sendClose(null);
        clearTimeout(conn.closeTimer);
        conn.closeTimer = setTimeout(
          guarded(() => this._lost(conn, {})),
          this._closeTimeout,
        );
        return; // _lost finishes when the server's answer closes the socket
      }
      this._lost(conn, {});
      return;
    }
    this._finishClose();
  }

  _finishClose() {
    this._conn = null;
    this._setState("closed");
    if (this._resolveClose) {
      this._resolveClose();
      this._resolveClose = null;
    }
  }
}

export default Client;
