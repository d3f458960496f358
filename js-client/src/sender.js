// Publishing on the wire: a Sender is the sender link of one address. It holds that address's
// publishes waiting for credit or a socket (in publish order), sends them as credit allows, puts
// back the ones a lost socket never answered, and re-attaches after a retryable detach. Senders
// keeps one per address, at most `maxSenders`: past it the least recently used idle one goes.
// What a publish is and how many may wait is outbox.js's business.

import { EMIT } from "./emitter.js";
import { WsqError, guarded } from "./errors.js";
import { FINAL_LINK_CONDITIONS, MAX_U32, frame, fromWire } from "./wire.js";

/** The sender link of one address and its queue of publishes. */
export class Sender {
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
    return frame.sender(b.session.ch, b.handle, this.address);
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
      b.conn.sendText(frame.transfer(session.ch, b.handle, delivery, item.tail));
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

  /** No room for the link on the socket (sessions.js): what waits for it fails. */
  _refuse(error) {
    this.client._senders.delete(this.address);
    this.failAll(error);
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
      const delay = this.client._backoff.delay(this._retries++);
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
    for (const item of items) this.client._outbox.finish(item, error);
  }
}

/** The client's senders by address, bounded: links per socket are a limited resource. */
export class Senders extends Map {
  constructor(max) {
    super();
    this.max = max;
  }

  /** The sender of `address`, made when there is none (after evicting one past `max`). */
  of(client, address) {
    let sender = this.get(address);
    if (sender) return sender;
    if (this.size >= this.max) this.evict();
    sender = new Sender(client, address);
    this.set(address, sender);
    return sender;
  }

  /** Detach the least recently used idle sender link. */
  evict() {
    let oldest = null;
    for (const s of this.values()) {
      if (s.idle && !s._retryTimer && (!oldest || s.lastUsed < oldest.lastUsed)) oldest = s;
    }
    if (!oldest) return;
    this.delete(oldest.address);
    const b = oldest._binding;
    if (b && b.live) {
      b.detaching = true;
      b.conn.send(frame.detach(b.session.ch, b.handle));
    }
  }
}
