// The Client: the public object that composes the rest. It checks its options, keeps the
// subscriptions (subscription.js) and the senders (sender.js) across sockets, puts publishes in
// the outbox (outbox.js), and owns the life cycle: connect, reconnect with backoff (backoff.js)
// when a socket (connection.js) is lost, give up on a refused token (token.js), close.

import { Backoff, STABLE_MS } from "./backoff.js";
import { Connection } from "./connection.js";
import { EMIT, Emitter } from "./emitter.js";
import { WsqError, guarded } from "./errors.js";
import { HttpSocket } from "./http_socket.js";
import { Outbox, randomId } from "./outbox.js";
import { Senders } from "./sender.js";
import { Subscription, subscribeOptions } from "./subscription.js";
import { Token } from "./token.js";
import {
  AUTH_CONDITIONS,
  DEFAULT_MAX_FRAME_BYTES,
  SUBPROTOCOL,
  frame,
  fromWire,
  isSubscribable,
  isObject,
} from "./wire.js";

export const VERSION = "0.1.0";

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

export class Client extends Emitter {
  constructor(url, options = {}) {
    super();
    if (!isObject(options)) throw new TypeError("options must be an object");
    this.url = resolveUrl(url);
    const token = options.token;
    if (typeof token !== "function" && (typeof token !== "string" || token === "")) {
      throw new TypeError("options.token: a token string or a function answering one is required");
    }
    const transport = options.transport ?? "auto";
    if (!["auto", "websocket", "http"].includes(transport)) {
      throw new TypeError('option transport: "auto", "websocket" or "http"');
    }
    const WS = options.WebSocket ?? globalThis.WebSocket;
    this._fetch = options.fetch ?? globalThis.fetch;
    if (typeof WS !== "function" && transport !== "http") {
      if (transport === "websocket" || typeof this._fetch !== "function") {
        throw new TypeError(
          "no WebSocket implementation: pass options.WebSocket (on Node 20: import WebSocket from 'ws')",
        );
      }
    }
    if (transport === "http" && typeof this._fetch !== "function") {
      throw new TypeError("transport http: no fetch implementation (pass options.fetch)");
    }
    this._WebSocket = WS;
    // "auto": a WebSocket while one opens; HTTP (http_socket.js) from the first that cannot, or
    // at once where there is no WebSocket. The "transport" event says which, and why.
    this._transportOption = transport;
    this._webSocketWorked = false;
    this._transport = transport === "http" || typeof WS !== "function" ? "http" : "websocket";
    this._transportWhy =
      transport === "http" ? "asked for" : this._transport === "http" ? "no WebSocket here" : "";
    this._idle = positiveInt(options, "idle", DEFAULTS.idle, 0);
    if (this._idle !== 0 && (this._idle < 500 || this._idle > 3600000)) {
      throw new TypeError("option idle: 0 or 500..3600000 ms");
    }
    this._connectTimeout = positiveInt(options, "connectTimeout", DEFAULTS.connectTimeout);
    const reconnectDelay = positiveInt(options, "reconnectDelay", DEFAULTS.reconnectDelay);
    const maxReconnectDelay = positiveInt(
      options,
      "maxReconnectDelay",
      DEFAULTS.maxReconnectDelay,
    );
    this._credit = positiveInt(options, "credit", DEFAULTS.credit);
    const outboxSize = positiveInt(options, "outboxSize", DEFAULTS.outboxSize, 0);
    const outboxBytes = positiveInt(options, "outboxBytes", DEFAULTS.outboxBytes, 0);
    this._linksPerSession = positiveInt(options, "linksPerSession", DEFAULTS.linksPerSession);
    this._maxSessionsOption = positiveInt(options, "maxSessions", DEFAULTS.maxSessions);
    const maxSenders = positiveInt(options, "maxSenders", DEFAULTS.maxSenders);
    const refreshBefore = positiveInt(options, "refreshBefore", DEFAULTS.refreshBefore, 0);
    this._closeTimeout = positiveInt(options, "closeTimeout", DEFAULTS.closeTimeout);
    this._clientName = String(options.clientName ?? `wsq-client/${VERSION}`).slice(0, 256);
    if (options.compact !== undefined && typeof options.compact !== "boolean") {
      throw new TypeError("option compact: a boolean");
    }
    this._compact = options.compact ?? true;
    const messageIdPrefix = `${options.messageIdPrefix ?? randomId()}-`;
    this._maxFrameBytes = DEFAULT_MAX_FRAME_BYTES;
    this._maxSessions = this._maxSessionsOption;

    this._token = new Token(this, token, refreshBefore);
    this._backoff = new Backoff(reconnectDelay, maxReconnectDelay);
    this._outbox = new Outbox(outboxSize, outboxBytes, messageIdPrefix);
    this._state = "disconnected";
    this._conn = null;
    this._closed = false;
    this._closePromise = null;
    this._resolveClose = null;
    this._reconnectTimer = null;
    this._connectSeq = 0;
    this._subscriptions = new Set();
    this._senders = new Senders(maxSenders); // address -> Sender

    this._setState("connecting");
    queueMicrotask(guarded(() => this._connect()));
  }

  /** "websocket" or "http": what carries the connection (now, or next). */
  get transport() {
    return this._transport;
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
    return this._outbox.count;
  }

  subscribe(address, handler, options = {}) {
    if (typeof handler !== "function") throw new TypeError("handler must be a function");
    if (!isObject(options)) throw new TypeError("options must be an object");
    if (this._closed) throw new WsqError("wsq-client:closed", "the client is closed");
    if (!isSubscribable(address)) {
      throw new WsqError("wsq:invalid-frame", `not an address: ${JSON.stringify(address)}`);
    }
    const opts = subscribeOptions(options);
    const sub = new Subscription(this, address, handler, opts);
    if (typeof opts.onGap === "function") sub.on("gap", opts.onGap);
    if (typeof opts.onError === "function") sub.on("error", opts.onError);
    if (typeof opts.onPresence === "function") sub.on("presence", opts.onPresence);
    this._subscriptions.add(sub);
    if (this._conn) this._attach(this._conn, sub);
    return sub;
  }

  /** Publish `body` to `address`; resolves with its position once the gateway stored it. */
  publish(address, body, options = {}) {
    return new Promise((resolve, reject) => {
      if (this._closed)
        throw new WsqError("wsq-client:closed", "the client is closed", { address });
      const item = this._outbox.add(address, body, options, this._maxFrameBytes, resolve, reject);
      const sender = this._senders.of(this, address);
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

  async _connect() {
    this._reconnectTimer = null;
    if (this._closed) return;
    const seq = ++this._connectSeq;
    this._setState("connecting");
    let token;
    try {
      token = await this._token.get();
    } catch (error) {
      if (this._closed || seq !== this._connectSeq) return;
      this[EMIT](
        "error",
        new WsqError("wsq-client:token", String(error?.message ?? error), { cause: error }),
      );
      this._reconnectLater(this._backoff.next());
      return;
    }
    if (this._closed || seq !== this._connectSeq) return;
    if (this._token.isRefused(token)) {
      this._giveUp(
        new WsqError("wsq:unauthorized", "the token was refused and no other token is available", {
          scope: "connection",
          fatal: true, // the client closes: said like every other give-up
        }),
      );
      return;
    }
    if (this._transportWhy) {
      this[EMIT]("transport", { transport: this._transport, reason: this._transportWhy });
      this._transportWhy = "";
    }
    let ws;
    try {
      ws =
        this._transport === "http"
          ? new HttpSocket(this.url, SUBPROTOCOL, {
              fetch: this._fetch,
              maxBytes: () => this._maxFrameBytes,
            })
          : new this._WebSocket(this.url, SUBPROTOCOL);
    } catch (error) {
      this[EMIT](
        "error",
        new WsqError("wsq-client:socket", String(error?.message ?? error), { cause: error }),
      );
      this._reconnectLater(this._backoff.next());
      return;
    }
    const conn = new Connection(this, ws, token);
    this._conn = conn;
    conn.listen();
    // Pipelined: the gateway applies these in order once the token is verified.
    conn.send(frame.open(token, this._idle, this._clientName, this._compact));
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

  /** A link (Subscription or Sender) onto the socket; refused when it has no room left. */
  _attach(conn, link) {
    const error = conn.sessions.place(link, this._linksPerSession, this._maxSessions);
    if (error) link._refuse(error);
  }

  // -- what the socket tells -------------------------------------------------------------

  /** The server's open answer on `conn`. */
  _opened(conn) {
    if (this._transport === "websocket") this._webSocketWorked = true;
    this._maxFrameBytes = conn.maxFrameBytes;
    this._maxSessions = Math.min(this._maxSessionsOption, conn.info.maxSessions);
    this._token.accepted();
    this._token.schedule(conn);
    this._setState("connected");
    this[EMIT]("open", { ...conn.info });
  }

  /** The token was replaced on `conn`, valid until `exp`. */
  _refreshed(conn, exp) {
    this._token.schedule(conn);
    this[EMIT]("refresh", { exp });
  }

  /** The socket is gone (or given up on): unbind every link, then reconnect or finish. */
  _lost(conn, { code } = {}) {
    if (conn.dead) return;
    conn.release();
    if (this._conn === conn) this._conn = null;
    conn.sessions.unbind();

    if (this._closed) {
      conn.gone.then(() => this._finishClose());
      return;
    }
    // Lost before the gateway's open answer, and not refused by it: try the other transport.
    if (!conn.opened && !conn.closeReceived && this._switchTransport()) return;
    const error = isObject(conn.closeReceived) ? conn.closeReceived : null;
    const condition = error?.condition;
    if (AUTH_CONDITIONS.has(condition)) {
      const failure = fromWire(error, "connection");
      if (!this._token.retryAfterRefusal(conn)) {
        this._giveUp(
          new WsqError(failure.condition, failure.description, {
            scope: "connection",
            fatal: true,
          }),
        );
        return;
      }
      // Ask the token function again; if that token is refused too, give up.
      this[EMIT]("error", failure);
      this._reconnectLater(0);
      return;
    }
    if (error) this[EMIT]("error", fromWire(error, "connection"));
    const stable = conn.opened && Date.now() - conn.openedAt >= STABLE_MS;
    if (stable) this._backoff.attempts = 0;
    const goingAway = condition === "wsq:going-away" || (!error && code === 1001);
    if (goingAway && conn.opened) {
      // The node is draining: come back promptly.
      if (!stable) this._backoff.attempts += 1;
      this._reconnectLater(this._backoff.soon());
      return;
    }
    this._reconnectLater(this._backoff.next());
  }

  /** In "auto", a connection lost before the gateway's open: a WebSocket's is followed by HTTP
   * at once (a proxy that blocks or buffers WebSockets); an HTTP stream's by a WebSocket again,
   * after the backoff (the gateway may just have been down). */
  _switchTransport() {
    if (this._transportOption !== "auto" || typeof this._WebSocket !== "function") return false;
    if (typeof this._fetch !== "function") return false;
    if (this._transport === "websocket") {
      // A WebSocket that worked before is not blocked: this failure is the gateway's (a drain).
      if (this._webSocketWorked) return false;
      this._transport = "http";
      this._transportWhy = "the WebSocket could not open";
      this._reconnectLater(0);
    } else {
      this._transport = "websocket";
      this._transportWhy = "the HTTP stream could not open either";
      this._reconnectLater(this._backoff.next());
    }
    return true;
  }

  // -- closing ---------------------------------------------------------------------------

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
    if (conn) conn.sessions.requeuePending();
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
      if (conn.writable) {
        conn.sendClose(null);
        conn.loseLater();
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
