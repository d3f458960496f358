// The fast suite's peer: a WebSocket class whose sockets live in memory, with a fake wsq.v1
// gateway behind them (answers open, begin, attach, detach, end and close the way the gateway
// does; everything else is the test's to send), and a fake clock for the client's timers. No
// process, no port: the tests in this folder run in a fraction of a second, which is what makes
// mutation testing of the whole client affordable (scripts/mutate --only js, docs/testing.md).
import assert from "node:assert/strict";
import { afterEach, beforeEach } from "node:test";
import { Client } from "../../src/index.js";

/** What the client reported instead of throwing (errors.js: reportListenerError, a bug in a
 * callback of its own, or a listener's). The client tests check after each test that nothing
 * was: a mutant that makes a timer or a socket event throw is otherwise invisible. */
export const reported = [];
globalThis.reportError = (error) => reported.push(error);

/** What the fake gateway answers to `open`, unless the peer is told otherwise. */
export const OPEN_ANSWER = Object.freeze({
  op: "open",
  node: "fake-node",
  idle: 0,
  max_sessions: 8,
  max_frame_bytes: 65536,
  tenant: "acme",
  sub: "alice",
  exp: 0,
});

/** Every pending microtask, promise and immediate run (the client sends in a microtask). */
export async function settle(rounds = 4) {
  for (let i = 0; i < rounds; i++) await new Promise((resolve) => setImmediate(resolve));
}

/** One socket of the fake network: the client's end is the WebSocket interface; the test
 * drives the server's end (`push`, `serverClose`) and reads what the client sent (`frames`). */
export class FakeSocket {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSING = 2;
  static CLOSED = 3;

  constructor(peer, url, protocols) {
    this.peer = peer;
    this.url = url;
    this.protocols = protocols;
    this.protocol = "";
    this.readyState = 0;
    this.onopen = this.onmessage = this.onclose = this.onerror = null;
    this.sent = []; // every WebSocket message the client wrote, as text
    this.frames = []; // every frame in them, parsed, in order
    this.closedBy = null; // the code of the client's ws.close(code)
    this.terminated = false;
    this.opens = 0;
    this.gateway = peer.gateway;
    // What the server began: the client's answer to it is not answered again.
    this.serverDetached = new Set();
    this.serverEnded = new Set();
    this.serverClosed = false;
  }

  /** The server's handshake answer: the socket opens (with the subprotocol it chose). */
  accept(protocol = "wsq.v1") {
    if (this.readyState !== 0) return;
    this.protocol = protocol;
    this.readyState = 1;
    this.onopen?.({ type: "open" });
  }

  send(text) {
    if (this.readyState !== 1) throw new Error("the socket is not open");
    if (this.peer.failSend) throw new Error(this.peer.failSend);
    this.sent.push(text);
    const value = JSON.parse(text);
    for (const f of Array.isArray(value) ? value : [value]) {
      this.frames.push(f);
      if (this.gateway) this.answer(f);
      this.peer.onFrame?.(f, this);
    }
  }

  /** The frames the client sent with this op. */
  ops(op) {
    return this.frames.filter((f) => f.op === op);
  }

  /** What the fake gateway answers to a frame of the client. */
  answer(f) {
    const peer = this.peer;
    switch (f.op) {
      case "open":
        if (peer.refuse) {
          this.push({ op: "close", error: peer.refuse });
          this.serverClose(1008);
        } else if (peer.answerOpen) this.push({ ...OPEN_ANSWER, ...peer.open });
        return;
      case "begin":
        this.push({ op: "begin", ch: f.ch });
        return;
      case "attach": {
        if (!peer.answerAttach) return;
        const echo = { op: "attach", ch: f.ch, handle: f.handle, role: f.role, address: f.address };
        if (f.role === "receiver") {
          echo.mode = f.mode;
          if (f.mode === "copy") {
            echo.from = f.from === "$" || f.from === "^" || f.from === undefined ? "0-0" : f.from;
            echo.recovered = true;
          }
          this.push(echo);
        } else {
          this.push(echo);
          if (peer.senderCredit > 0)
            this.push({ op: "flow", ch: f.ch, handle: f.handle, credit: peer.senderCredit });
        }
        return;
      }
      case "detach":
        if (this.serverDetached.delete(`${f.ch}/${f.handle}`)) return;
        if (peer.answerDetach) this.push({ op: "detach", ch: f.ch, handle: f.handle });
        return;
      case "end":
        if (this.serverEnded.delete(f.ch)) return;
        this.push({ op: "end", ch: f.ch });
        return;
      case "close":
        if (this.serverClosed || !peer.answerClose) return;
        this.push({ op: "close" });
        this.serverClose(1000);
        return;
    }
  }

  /** The server sends frames (one message: a frame alone, or a batch of several). */
  push(...frames) {
    for (const f of frames.flat()) {
      if (f?.op === "detach") this.serverDetached.add(`${f.ch}/${f.handle}`);
      if (f?.op === "end") this.serverEnded.add(f.ch);
      if (f?.op === "close") this.serverClosed = true;
    }
    this.pushRaw(JSON.stringify(frames.length === 1 ? frames[0] : frames));
  }

  /** The server sends one WebSocket message as it is (text, or anything else). */
  pushRaw(data) {
    queueMicrotask(() => {
      if (this.readyState === 1) this.onmessage?.({ type: "message", data });
    });
  }

  /** The server (or the network) closes the socket (after what it pushed before). */
  serverClose(code = 1006) {
    queueMicrotask(() => this.#closed(code));
  }

  #closed(code) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.onclose?.({ type: "close", code });
  }

  close(code) {
    if (this.readyState >= 2) return;
    this.closedBy = code;
    this.readyState = 2;
    if (this.peer.silentClose) return; // the close handshake never completes
    queueMicrotask(() => this.#closed(code));
  }

  terminate() {
    this.terminated = true;
    this.readyState = 3;
  }
}

/** A fake network with a fake gateway: `peer.WebSocket` is the class to give the client. */
export class FakePeer {
  constructor(options = {}) {
    this.sockets = [];
    this.gateway = true; // answer like a gateway (else the test answers everything)
    this.autoAccept = true; // sockets open in a microtask
    this.answerOpen = true;
    this.answerAttach = true;
    this.answerDetach = true;
    this.answerClose = true;
    this.silentClose = false;
    this.open = {}; // fields of the open answer over OPEN_ANSWER
    this.senderCredit = 10; // the flow after a sender's attach
    this.refuse = null; // an error: open is answered by close with it
    this.failSend = null; // a message: ws.send throws it
    this.failConstruct = null; // a message: new WebSocket throws it
    this.onFrame = null; // (frame, socket) => void, after the gateway's answer
    Object.assign(this, options);
    const peer = this;
    this.WebSocket = class extends FakeSocket {
      constructor(url, protocols) {
        if (peer.failConstruct) throw new Error(peer.failConstruct);
        super(peer, url, protocols);
        peer.sockets.push(this);
        if (peer.autoAccept) queueMicrotask(() => this.accept());
      }
    };
  }

  /** The newest socket. */
  get last() {
    return this.sockets.at(-1);
  }
}

/** A clock for the client's timers: setTimeout, setInterval and Date.now are replaced while it
 * is installed; `advance(ms)` runs what falls due, in order, settling promises between. */
export class FakeClock {
  constructor(now = 1_700_000_000_000) {
    this.now = now;
    this.timers = new Map();
    this.seq = 0;
    this.saved = null;
  }

  install() {
    const g = globalThis;
    this.saved = {
      setTimeout: g.setTimeout,
      clearTimeout: g.clearTimeout,
      setInterval: g.setInterval,
      clearInterval: g.clearInterval,
      now: Date.now,
    };
    const add = (fn, ms, args, every) => {
      const id = ++this.seq;
      const delay = Math.max(0, Number(ms) || 0);
      this.timers.set(id, { id, at: this.now + delay, fn, args, every: every ? delay : null });
      return { id, unref() {}, ref() {}, [Symbol.toPrimitive]: () => id };
    };
    const clear = (handle) => {
      if (handle === null || handle === undefined) return;
      this.timers.delete(typeof handle === "object" ? handle.id : handle);
    };
    g.setTimeout = (fn, ms, ...args) => add(fn, ms, args, false);
    g.setInterval = (fn, ms, ...args) => add(fn, ms, args, true);
    g.clearTimeout = clear;
    g.clearInterval = clear;
    Date.now = () => this.now;
    return this;
  }

  uninstall() {
    if (!this.saved) return;
    const g = globalThis;
    g.setTimeout = this.saved.setTimeout;
    g.clearTimeout = this.saved.clearTimeout;
    g.setInterval = this.saved.setInterval;
    g.clearInterval = this.saved.clearInterval;
    Date.now = this.saved.now;
    this.saved = null;
  }

  /** The delays of the timers pending now, from now, soonest first. */
  pending() {
    return [...this.timers.values()].map((t) => t.at - this.now).sort((a, b) => a - b);
  }

  async advance(ms) {
    const end = this.now + ms;
    await settle();
    for (;;) {
      let next = null;
      for (const t of this.timers.values()) {
        if (t.at <= end && (!next || t.at < next.at || (t.at === next.at && t.id < next.id)))
          next = t;
      }
      if (!next) break;
      this.now = next.at;
      if (next.every === null) this.timers.delete(next.id);
      else next.at += Math.max(1, next.every);
      next.fn(...next.args);
      await settle();
    }
    this.now = end;
    await settle();
  }
}

/** A client on `peer` with the fast suite's defaults (a static token, no random message ids,
 * WebSocket only: no HTTP fallback to a real fetch). */
export function fakeClient(peer, options = {}) {
  const client = new Client("ws://gw.test/ws", {
    token: "tok-1",
    WebSocket: peer.WebSocket,
    transport: "websocket",
    messageIdPrefix: "m",
    ...options,
  });
  // A publish a test does not await (it fails when the client closes after the test) is not an
  // unhandled rejection; one the test awaits still rejects there.
  const publish = client.publish.bind(client);
  client.publish = (...args) => {
    const promise = publish(...args);
    promise.catch(() => {});
    return promise;
  };
  return client;
}

/** A client connected to `peer`'s fake gateway (its open answered), and its errors. */
export async function connected(peer, options = {}) {
  const client = fakeClient(peer, options);
  const errors = [];
  client.on("error", (e) => errors.push(e));
  await settle();
  return { client, errors, ws: peer.last };
}

/** What every client test file of this folder runs each test in: a fresh fake clock
 * (`world.clock`, installed before the test and removed after), Math.random pinned at 0.5 (the
 * backoff's jitter), the clients it made closed after it (`world.clients`), and nothing
 * reported by a client (`reported`). `world.setup(peerOptions, options)`: a FakePeer and a
 * client connected to it. Call once, at the top level of a test file. */
export function fakeWorld() {
  const random = Math.random;
  const world = {
    clock: null,
    clients: [],
    async setup(peerOptions = {}, options = {}) {
      const peer = new FakePeer(peerOptions);
      const got = await connected(peer, options);
      world.clients.push(got.client);
      return { peer, ...got };
    },
  };
  beforeEach(() => {
    world.clock = new FakeClock().install();
    world.clients = [];
    Math.random = () => 0.5;
  });
  afterEach(async () => {
    for (const c of world.clients) c.close();
    await settle();
    world.clock.uninstall();
    Math.random = random;
    assert.deepEqual(reported.splice(0), [], "nothing reported by the client");
  });
  return world;
}
