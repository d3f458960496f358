// Receiving: a Subscription is one receiver link that outlives sockets. It checks its options,
// hands messages to its handler one at a time, refills credit as the handler gets through them,
// settles move-mode deliveries, keeps its resume position, and re-attaches after a retryable
// detach. Which socket and session it is on is sessions.js's business.

import { EMIT, Emitter } from "./emitter.js";
import { WsqError, guarded } from "./errors.js";
import {
  FINAL_LINK_CONDITIONS,
  OUTCOMES,
  checkTransfer,
  comparePositions,
  frame,
  fromWire,
  isAddress,
  isObject,
  isPattern,
  isPosition,
  isUint,
  Violation,
} from "./wire.js";

/** The options of `client.subscribe` checked, a string filter made `{subject}`; throws a
 * TypeError naming the first bad one. */
export function subscribeOptions(options) {
  const opts = { ...options };
  if (opts.mode !== undefined && opts.mode !== "copy" && opts.mode !== "move") {
    throw new TypeError('option mode: "copy" or "move"');
  }
  if (opts.from !== undefined && opts.from !== "$" && opts.from !== "^" && !isPosition(opts.from)) {
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
  if (opts.rewind !== undefined) {
    if (!(isUint(opts.rewind, 1000) && opts.rewind >= 1)) {
      throw new TypeError("option rewind: 1..1000 messages");
    }
    if (opts.from !== undefined) throw new TypeError("options rewind and from are exclusive");
  }
  if (typeof opts.conflate === "number") opts.conflate = { ms: opts.conflate, by: "subject" };
  if (opts.conflate !== undefined) {
    const c = opts.conflate;
    if (
      !isObject(c) ||
      !(isUint(c.ms, 86400000) && c.ms >= 10) ||
      (c.by !== undefined && c.by !== "subject")
    ) {
      throw new TypeError('option conflate: {ms: 10..86400000, by: "subject"} or a number of ms');
    }
    opts.conflate = { ms: c.ms, by: "subject" };
  }
  if ((opts.rewind !== undefined || opts.conflate !== undefined) && opts.mode === "move") {
    throw new TypeError("options rewind and conflate: copy mode only");
  }
  if (opts.presence !== undefined && typeof opts.presence !== "boolean") {
    throw new TypeError("option presence: a boolean");
  }
  if (opts.onPresence !== undefined && typeof opts.onPresence !== "function") {
    throw new TypeError("option onPresence: a function");
  }
  if (typeof opts.filter === "string") opts.filter = { subject: opts.filter };
  if (opts.filter !== undefined) {
    if (
      !isObject(opts.filter) ||
      (opts.filter.subject !== undefined && !isPattern(opts.filter.subject))
    ) {
      throw new TypeError("option filter: {subject: pattern}");
    }
  }
  return opts;
}

/** One delivery handed to a subscription's handler. */
export class Message {
  constructor(subscription, binding, f) {
    this.id = f.id;
    this.body = f.body === undefined ? null : f.body;
    this.props = isObject(f.props) ? f.props : {};
    this.address = subscription.address;
    this.subscription = subscription;
    this.delivery = f.delivery;
    this._binding = binding;
    // Only unsettled move-mode deliveries are ours to settle.
    this._settled = subscription.mode !== "move" || f.settled === true;
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
    // A delivery of a link or socket that is gone went back to the group already (counted).
    if (!b.live || b.link._binding !== b) return false;
    b.conn.send(frame.disposition(b.session.ch, this.delivery, outcome));
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

const MEMBER_FIELDS = ["id", "sub", "client", "node"];

function isMember(m) {
  return isObject(m) && MEMBER_FIELDS.every((k) => typeof m[k] === "string" && m[k].length <= 256);
}

export class Subscription extends Emitter {
  constructor(client, address, handler, options) {
    super();
    this.client = client;
    this.address = address;
    this.mode = options.mode ?? "copy";
    this._handler = handler;
    this._from = options.from ?? "$";
    this._rewind = options.rewind;
    this._conflate = options.conflate;
    this._group = options.group;
    this._lease = options.lease;
    this._filter = options.filter;
    this._window = options.credit ?? client._credit;
    this._presettled = options.settled === true;
    this._presence = options.presence === true;
    /** With presence: the room's count and the members known by id (the first page, then
     * every join and leave). */
    this.presence = this._presence ? { count: 0, members: new Map() } : null;
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
      b.conn.send(frame.detach(b.session.ch, b.handle));
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

  /** No room for the link on the socket (sessions.js): the subscription ends. */
  _refuse(error) {
    this._end(error);
  }

  _attachFrame(b) {
    const credit = Math.max(0, this._window - this._queue.length);
    const f = frame.receiver(b.session.ch, b.handle, {
      address: this.address,
      mode: this.mode,
      from: this._resumeFrom ?? this._from,
      // Only the first attach rewinds; a re-attach resumes after what it received.
      rewind: this._resumeFrom === null ? this._rewind : undefined,
      conflate: this._conflate,
      group: this._group,
      lease: this._lease,
      filter: this._filter,
      settled: this._presettled,
      presence: this._presence,
      credit,
    });
    b.credit = credit;
    return f;
  }

  _onAttached(b, f) {
    this.attached = true;
    this._retries = 0;
    if (this.mode === "copy" && this._resumeFrom === null && typeof f.from === "string") {
      if (isPosition(f.from)) this._resumeFrom = f.from; // what "$" or "^" resolved to
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
    // The gateway sends only against credit we granted; ours never lags its view (a flow
    // counts here as it is sent), so one past it is the server's fault, however it crossed.
    if (b.credit <= 0) throw new Violation("transfers beyond the credit granted");
    b.credit -= 1;
    checkTransfer(f);
    if (this.closed) return;
    if (this.mode === "copy") {
      // Resume and crossing frames must never hand a message over twice.
      if (this._resumeFrom !== null && comparePositions(f.id, this._resumeFrom) <= 0) {
        this._refill();
        return;
      }
      this._resumeFrom = f.id;
    }
    this._queue.push(new Message(this, b, f));
    this._schedule();
  }

  /** A presence frame: the room (after each attach, replacing what was known), a join, a
   * leave. Emits "presence" with {type: "room"|"join"|"leave", count, members|member}. */
  _onPresence(f) {
    const room = this.presence;
    if (!room) throw new Violation("presence on a link attached without it");
    if (this.closed) return;
    if (Array.isArray(f.members)) {
      if (!isUint(f.count) || !f.members.every(isMember)) throw new Violation("a bad presence room");
      room.members = new Map(f.members.map((m) => [m.id, m]));
      room.count = f.count;
      this[EMIT]("presence", { type: "room", count: room.count, members: f.members });
      return;
    }
    const type = isMember(f.join) ? "join" : isMember(f.leave) ? "leave" : null;
    if (!type) throw new Violation("a presence frame without room, join or leave");
    const member = f[type];
    if (type === "join") {
      if (!room.members.has(member.id)) room.count += 1;
      room.members.set(member.id, member);
    } else {
      room.members.delete(member.id);
      room.count = Math.max(0, room.count - 1);
    }
    this[EMIT]("presence", { type, count: room.count, member });
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
    const delay = client._backoff.delay(this._retries++);
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
    b.conn.send(frame.flow(b.session.ch, b.handle, grant));
  }
}
