// The options of client.subscribe (subscribeOptions) and of new Client: every bound and the
// TypeError that names it. Pure where it can be; a Client only for its constructor's checks.
import assert from "node:assert/strict";
import { after, afterEach, describe, test } from "node:test";
import { Client } from "../../src/client.js";
import { subscribeOptions } from "../../src/subscription.js";
import { FakeClock, FakePeer } from "./fake.js";

const refused = (fn, message) => assert.throws(fn, { name: "TypeError", message });

describe("subscribeOptions", () => {
  test("no options: a copy of nothing", () => {
    const given = {};
    const opts = subscribeOptions(given);
    assert.deepEqual(opts, {});
    assert.notEqual(opts, given);
  });

  test("mode, from, group, lease, credit, rewind: their bounds", () => {
    refused(() => subscribeOptions({ mode: "fanout" }), 'option mode: "copy" or "move"');
    assert.equal(subscribeOptions({ mode: "copy" }).mode, "copy");
    assert.equal(subscribeOptions({ mode: "move" }).mode, "move");
    for (const from of ["$", "^", "1-2"]) assert.equal(subscribeOptions({ from }).from, from);
    for (const from of ["", "1", "$$", 5]) {
      refused(() => subscribeOptions({ from }), 'option from: "$", "^" or a position "<ms>-<seq>"');
    }
    assert.equal(subscribeOptions({ group: "g-1" }).group, "g-1");
    refused(() => subscribeOptions({ group: "a b" }), "option group: an address-like name");
    for (const lease of [100, 86400000]) assert.equal(subscribeOptions({ lease }).lease, lease);
    for (const lease of [99, 86400001, 1.5, "100"]) {
      refused(() => subscribeOptions({ lease }), "option lease: 100..86400000 ms");
    }
    for (const credit of [1, 1000000]) assert.equal(subscribeOptions({ credit }).credit, credit);
    for (const credit of [0, 1000001, -1, 2.5]) {
      refused(() => subscribeOptions({ credit }), "option credit: 1..1000000");
    }
    for (const rewind of [1, 1000]) assert.equal(subscribeOptions({ rewind }).rewind, rewind);
    for (const rewind of [0, 1001, 1.5]) {
      refused(() => subscribeOptions({ rewind }), "option rewind: 1..1000 messages");
    }
    refused(() => subscribeOptions({ rewind: 5, from: "^" }), "options rewind and from are exclusive");
  });

  test("conflate: a number of ms or {ms, by: subject}", () => {
    assert.deepEqual(subscribeOptions({ conflate: 10 }).conflate, { ms: 10, by: "subject" });
    assert.deepEqual(subscribeOptions({ conflate: { ms: 86400000 } }).conflate, {
      ms: 86400000,
      by: "subject",
    });
    assert.deepEqual(subscribeOptions({ conflate: { ms: 20, by: "subject", x: 1 } }).conflate, {
      ms: 20,
      by: "subject",
    });
    const message = 'option conflate: {ms: 10..86400000, by: "subject"} or a number of ms';
    for (const conflate of [9, 86400001, { ms: 9 }, { ms: 50, by: "id" }, null, [], "50", {}]) {
      refused(() => subscribeOptions({ conflate }), message);
    }
    refused(
      () => subscribeOptions({ mode: "move", conflate: 50 }),
      "options rewind and conflate: copy mode only",
    );
    refused(
      () => subscribeOptions({ mode: "move", rewind: 5 }),
      "options rewind and conflate: copy mode only",
    );
    assert.equal(subscribeOptions({ mode: "copy", rewind: 5 }).rewind, 5);
  });

  test("presence, onPresence and filter", () => {
    assert.equal(subscribeOptions({ presence: true }).presence, true);
    assert.equal(subscribeOptions({ presence: false }).presence, false);
    refused(() => subscribeOptions({ presence: 1 }), "option presence: a boolean");
    const fn = () => {};
    assert.equal(subscribeOptions({ onPresence: fn }).onPresence, fn);
    refused(() => subscribeOptions({ onPresence: "x" }), "option onPresence: a function");
    assert.deepEqual(subscribeOptions({ filter: "a.*" }).filter, { subject: "a.*" });
    assert.deepEqual(subscribeOptions({ filter: { subject: "a.>" } }).filter, { subject: "a.>" });
    assert.deepEqual(subscribeOptions({ filter: {} }).filter, {});
    for (const filter of ["a..b", { subject: "a b" }, null, [], 5]) {
      refused(() => subscribeOptions({ filter }), "option filter: {subject: pattern}");
    }
  });
});

describe("new Client: its options", () => {
  const clock = new FakeClock();
  const peer = new FakePeer({ autoAccept: false });
  const clients = [];
  const make = (url, options) => {
    const c = new Client(url, { token: "t", WebSocket: peer.WebSocket, ...options });
    clients.push(c);
    return c;
  };
  clock.install();
  afterEach(async () => {
    for (const c of clients.splice(0)) await c.close();
  });
  after(() => clock.uninstall());

  test("the URL: ws, wss, http and https made ws and wss; anything else refused", () => {
    assert.equal(make("ws://h/ws").url, "ws://h/ws");
    assert.equal(make("http://h/ws").url, "ws://h/ws");
    assert.equal(make("https://h:8443/ws").url, "wss://h:8443/ws");
    assert.equal(make("wss://h/ws").url, "wss://h/ws");
    refused(() => make("ftp://h/ws"), "a ws:// or wss:// URL expected, got ftp://h/ws");
    assert.throws(() => make("/ws"), { code: "ERR_INVALID_URL" }, "a relative URL without a page");
  });

  test("a relative URL in a page: the page's host", () => {
    globalThis.location = { href: "https://page.example/app/index.html" };
    try {
      assert.equal(make("/ws").url, "wss://page.example/ws");
      assert.equal(make("ws://other/ws").url, "ws://other/ws");
      assert.equal(make("HTTP://other/ws").url, "ws://other/ws");
      assert.equal(make("/ws?k=a:b").url, "wss://page.example/ws?k=a:b");
      globalThis.location = { href: 5 };
      assert.throws(() => make("/ws"), { code: "ERR_INVALID_URL" });
    } finally {
      delete globalThis.location;
    }
  });

  test("options must be an object; a token is required", () => {
    refused(() => new Client("ws://h/ws", null), "options must be an object");
    const message = "options.token: a token string or a function answering one is required";
    refused(() => new Client("ws://h/ws", { WebSocket: peer.WebSocket }), message);
    refused(() => new Client("ws://h/ws", { token: "", WebSocket: peer.WebSocket }), message);
    refused(() => new Client("ws://h/ws", { token: 5, WebSocket: peer.WebSocket }), message);
    assert.equal(typeof make("ws://h/ws", { token: () => "t" }).state, "string");
  });

  test("transport and the WebSocket and fetch it needs", () => {
    refused(() => make("ws://h/ws", { transport: "smoke" }), 'option transport: "auto", "websocket" or "http"');
    const noWs = "no WebSocket implementation: pass options.WebSocket (on Node 20: import WebSocket from 'ws')";
    refused(() => make("ws://h/ws", { WebSocket: null, transport: "websocket" }), noWs);
    refused(() => make("ws://h/ws", { WebSocket: null, fetch: false }), noWs);
    refused(
      () => make("ws://h/ws", { transport: "http", fetch: "x" }),
      "transport http: no fetch implementation (pass options.fetch)",
    );
    refused(
      () => make("ws://h/ws", { transport: "http", WebSocket: null, fetch: false }),
      "transport http: no fetch implementation (pass options.fetch)",
    );
    assert.equal(make("ws://h/ws", { fetch: false }).transport, "websocket");
    assert.equal(make("ws://h/ws", { WebSocket: null, fetch: async () => {} }).transport, "http");
    assert.equal(make("ws://h/ws", { transport: "http", fetch: async () => {} }).transport, "http");
    assert.equal(make("ws://h/ws", { transport: "websocket" }).transport, "websocket");
    assert.equal(make("ws://h/ws").transport, "websocket");
  });

  test("numbers: integers with their minimums; idle 0 or 500..3600000", () => {
    const int = (name, min, value) =>
      refused(() => make("ws://h/ws", { [name]: value }), `option ${name}: an integer >= ${min} expected, got ${value}`);
    for (const name of ["connectTimeout", "reconnectDelay", "maxReconnectDelay", "credit", "linksPerSession", "maxSessions", "maxSenders", "closeTimeout"]) {
      int(name, 1, 0);
      int(name, 1, 1.5);
      make("ws://h/ws", { [name]: 1 });
    }
    for (const name of ["outboxSize", "outboxBytes", "refreshBefore", "idle"]) {
      int(name, 0, -1);
      int(name, 0, "5");
    }
    make("ws://h/ws", { outboxSize: 0, outboxBytes: 0, refreshBefore: 0, idle: 0 });
    for (const idle of [499, 3600001]) refused(() => make("ws://h/ws", { idle }), "option idle: 0 or 500..3600000 ms");
    make("ws://h/ws", { idle: 500 });
    make("ws://h/ws", { idle: 3600000 });
    refused(() => make("ws://h/ws", { compact: 1 }), "option compact: a boolean");
    make("ws://h/ws", { compact: false });
  });
});
