// The sessions and links of one socket: which session each link (a Subscription or a Sender) is
// attached on, under which handle, and the publishes sent on each session awaiting their
// disposition. The server's session and link frames (begin, end, attach, flow, transfer,
// disposition, detach) are checked against that state here and handed to their link (a publish's
// answer settles it in the client's outbox); one that names a channel or handle we do not have
// breaks the contract (a Violation).

import { EMIT } from "./emitter.js";
import { WsqError } from "./errors.js";
import { Sender } from "./sender.js";
import { Subscription } from "./subscription.js";
import {
  MAX_CH,
  MAX_U32,
  Violation,
  checkFlow,
  dispositionLast,
  expandTransfers,
  frame,
  fromWire,
  isObject,
  isUint,
} from "./wire.js";

/** The sender holding a publish that was sent on a link. */
const senderOf = (item) => item.binding.link;

export class Session {
  constructor(ch) {
    this.ch = ch;
    this.links = new Map(); // handle -> Binding
    this.nextHandle = 0;
    this.nextDelivery = 0; // our numbering of transfers on this session
    this.pending = new Map(); // our delivery -> publish item awaiting its disposition
    this.begun = false;
  }
}

/** One link (a Subscription or a Sender) attached on one session of one socket. */
export class Binding {
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

/** The sessions of one connection, by channel. */
export class Sessions extends Map {
  constructor(conn) {
    super();
    this.conn = conn;
    this.nextCh = 0;
  }

  /** Attach `link` on a session with room (a new one begun when needed). Answers the error
   * when the socket has no room left for it, else null. */
  place(link, linksPerSession, maxSessions) {
    const conn = this.conn;
    if (!conn.usable || link._binding) return null;
    let session = null;
    for (const s of this.values()) {
      if (s.links.size < linksPerSession && s.nextHandle <= MAX_U32) {
        session = s;
        break;
      }
    }
    if (!session) {
      if (this.size >= maxSessions) {
        return new WsqError(
          "wsq:resource-limit-exceeded",
          `more than ${maxSessions * linksPerSession} links`,
          { address: link.address },
        );
      }
      let ch = this.nextCh;
      while (this.has(ch % (MAX_CH + 1))) ch++;
      ch %= MAX_CH + 1;
      this.nextCh = ch + 1;
      session = new Session(ch);
      this.set(ch, session);
      conn.send(frame.begin(ch));
    }
    const b = new Binding(conn, session, session.nextHandle++, link);
    session.links.set(b.handle, b);
    link._binding = b;
    conn.send(link._attachFrame(b));
    return null;
  }

  /** Every link unbound, and its unanswered publishes back in their senders' queues. */
  unbind() {
    for (const session of this.values()) {
      for (const b of session.links.values()) b.link._onLost(b);
      for (const item of session.pending.values()) senderOf(item).requeue(item);
      session.pending.clear();
    }
    this.clear();
  }

  /** Unanswered publishes back in their senders' queues (the client is closing). */
  requeuePending() {
    for (const session of this.values()) {
      for (const item of session.pending.values()) senderOf(item).requeue(item);
      session.pending.clear();
    }
  }

  // -- what the server sends -------------------------------------------------------------

  session(f) {
    const session = isUint(f.ch, MAX_CH) ? this.get(f.ch) : undefined;
    if (!session) throw new Violation(`"${f.op}" on a channel that is not begun`);
    return session;
  }

  binding(f) {
    const session = this.session(f);
    const b = isUint(f.handle, MAX_U32) ? session.links.get(f.handle) : undefined;
    if (!b) throw new Violation(`"${f.op}" on a handle that is not attached`);
    return b;
  }

  /** A session or link frame (wire.checkFrame passed). */
  onFrame(f) {
    switch (f.op) {
      case "begin": {
        const session = this.session(f);
        if (session.begun) throw new Violation("a second begin");
        session.begun = true;
        return;
      }
      case "end":
        return this.onEnd(f);
      case "attach": {
        const b = this.binding(f);
        if (b.detaching) return;
        if (b.attached) throw new Violation("a second attach");
        b.attached = true;
        return b.link._onAttached(b, f);
      }
      case "flow": {
        const b = this.binding(f);
        checkFlow(f);
        if (!b.detaching && b.link instanceof Sender) b.link._onFlow(b, f.credit);
        return;
      }
      case "transfer": {
        const b = this.binding(f);
        if (b.detaching) return;
        if (!(b.link instanceof Subscription)) throw new Violation("a transfer on a sender link");
        return b.link._onTransfer(b, f);
      }
      case "presence": {
        const b = this.binding(f);
        if (b.detaching) return;
        if (!(b.link instanceof Subscription)) throw new Violation("presence on a sender link");
        return b.link._onPresence(f);
      }
      case "transfers": {
        // The compact form: the same deliveries, the shared fields said once.
        const b = this.binding(f);
        if (b.detaching) return;
        if (!(b.link instanceof Subscription)) throw new Violation("a transfer on a sender link");
        for (const t of expandTransfers(f)) b.link._onTransfer(b, t);
        return;
      }
      case "disposition":
        return this.onDisposition(f);
      case "detach":
        return this.onDetach(f);
    }
    throw new Violation(`an unknown op "${String(f.op).slice(0, 64)}"`);
  }

  onEnd(f) {
    const conn = this.conn;
    const session = this.session(f);
    this.delete(session.ch);
    for (const b of session.links.values()) b.link._onLost(b);
    for (const item of session.pending.values()) senderOf(item).requeue(item);
    session.pending.clear();
    // The client never ends a session itself, so this is the server ending one of ours: a
    // limit, or a mistake of ours. Start afresh.
    if (f.error) conn.client[EMIT]("error", fromWire(f.error, "session"));
    conn.send(frame.end(session.ch));
    conn.drop(null);
  }

  onDisposition(f) {
    const session = this.session(f);
    const last = dispositionLast(f);
    const pending = session.pending;
    if (!pending.size) return;
    const outcome = f.outcome ?? "accepted";
    const deliveries = [];
    if (last - f.first < pending.size) {
      for (let d = f.first; d <= last; d++) if (pending.has(d)) deliveries.push(d);
    } else {
      for (const d of pending.keys()) if (d >= f.first && d <= last) deliveries.push(d);
    }
    const outbox = this.conn.client._outbox;
    for (const d of deliveries) {
      const item = pending.get(d);
      const sender = senderOf(item);
      if (outcome === "accepted") {
        const id = Array.isArray(f.ids) ? f.ids[d - f.first] : undefined;
        if (typeof id !== "string") throw new Violation("an accepted disposition without its ids");
        pending.delete(d);
        sender.inflight -= 1;
        outbox.finish(item, null, id);
      } else {
        pending.delete(d);
        sender.inflight -= 1;
        outbox.finish(item, fromWire(f.error, "message", item.address));
      }
    }
  }

  onDetach(f) {
    const b = this.binding(f);
    b.session.links.delete(b.handle);
    if (b.detaching) {
      // The answer to ours. In-flight publishes of a detached sender go back to the queue.
      b.link._onDetached(b, null);
      return;
    }
    b.detaching = true;
    this.conn.send(frame.detach(b.session.ch, b.handle));
    b.link._onDetached(b, isObject(f.error) ? f.error : null);
  }
}
