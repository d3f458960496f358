// The client's life against the fake gateway and a fake clock (test/unit/fake.js): reconnecting
// with backoff, the prompt return after going-away, the token function and its refresh, giving
// up on a refused token, the HTTP fallback of transport "auto".
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { FakePeer, connected, fakeClient, settle, fakeWorld } from "./fake.js";

const world = fakeWorld();
const { setup } = world;

const NOW_S = () => Math.floor(world.clock.now / 1000);
/** When the client's token refresh is due, from now (ms). */
const refreshDelay = (client) => world.clock.timers.get(client._conn.refreshTimer.id).at - world.clock.now;

describe("reconnecting", () => {
  test("full-jitter exponential backoff between failed connections, up to its ceiling", async () => {
    const { peer, client } = await setup({}, { reconnectDelay: 100, maxReconnectDelay: 300 });
    const waits = [];
    for (let i = 0; i < 4; i++) {
      peer.last.serverClose(1006);
      await settle();
      waits.push(world.clock.pending()[0]);
      await world.clock.advance(world.clock.pending()[0]);
    }
    // 0.5 of 100, 200, then the ceiling 300.
    assert.deepEqual(waits, [50, 100, 150, 150]);
    assert.equal(peer.sockets.length, 5);
    assert.equal(client.state, "connected");
  });

  test("one less millisecond and it has not reconnected yet", async () => {
    const { peer } = await setup({}, { reconnectDelay: 100 });
    peer.last.serverClose(1006);
    await world.clock.advance(49);
    assert.equal(peer.sockets.length, 1);
    await world.clock.advance(1);
    assert.equal(peer.sockets.length, 2);
  });

  test("a connection that lasted STABLE_MS starts the backoff again", async () => {
    const { peer } = await setup({}, { reconnectDelay: 100 });
    peer.last.serverClose(1006);
    await world.clock.advance(50);
    peer.last.serverClose(1006);
    await settle();
    assert.equal(world.clock.pending()[0], 100);
    await world.clock.advance(100);
    await world.clock.advance(5000);
    peer.last.serverClose(1006);
    await settle();
    assert.equal(world.clock.pending()[0], 50, "reset after 5 s up");
    await world.clock.advance(50);
    await world.clock.advance(4999);
    peer.last.serverClose(1006);
    await settle();
    assert.equal(world.clock.pending()[0], 100, "4,999 ms is not stable");
  });

  test("going-away: back promptly, within a second whatever the backoff", async () => {
    const { peer, errors } = await setup({}, { reconnectDelay: 4000, maxReconnectDelay: 60000 });
    peer.last.push({ op: "close", error: { condition: "wsq:going-away", description: "draining" } });
    await settle();
    peer.last.serverClose(1001);
    await settle();
    assert.equal(errors[0].condition, "wsq:going-away");
    // soon(): 0.5 of min(4000, 1000); an ordinary failure would wait 0.5 of 4000.
    assert.deepEqual(world.clock.pending(), [500]);
    await world.clock.advance(500);
    assert.equal(peer.sockets.length, 2);
    // Not stable: the next ordinary failure backs off one step further (0.5 of 8000).
    peer.last.serverClose(1006);
    await settle();
    assert.deepEqual(world.clock.pending(), [4000]);
  });

  test("a socket closed with 1001 and no close frame is going away too", async () => {
    const { peer } = await setup({}, { reconnectDelay: 4000, maxReconnectDelay: 60000 });
    peer.last.serverClose(1001);
    await settle();
    assert.deepEqual(world.clock.pending(), [500]);
    await world.clock.advance(500);
    peer.last.serverClose(1006);
    await settle();
    assert.deepEqual(world.clock.pending(), [4000], "the prompt return counted as an attempt");
  });

  test("going away after a stable connection: prompt, and the backoff starts over", async () => {
    const { peer } = await setup({}, { reconnectDelay: 4000, maxReconnectDelay: 60000, idle: 0 });
    await world.clock.advance(6000);
    peer.last.serverClose(1001);
    await settle();
    assert.deepEqual(world.clock.pending(), [500]);
    await world.clock.advance(500);
    peer.last.serverClose(1006);
    await settle();
    assert.deepEqual(world.clock.pending(), [2000]);
  });

  test("a close code 1001 with another error is not going away", async () => {
    const { peer } = await setup({}, { reconnectDelay: 4000 });
    peer.last.push({ op: "close", error: { condition: "wsq:internal-error" } });
    await settle();
    peer.last.serverClose(1001);
    await settle();
    assert.deepEqual(world.clock.pending(), [2000]);
  });

  test("going-away before the open answer is an ordinary failure", async () => {
    const { peer } = await setup({ answerOpen: false }, { reconnectDelay: 4000 });
    peer.last.serverClose(1001);
    await settle();
    assert.deepEqual(world.clock.pending(), [2000]);
  });

  test("a WebSocket that cannot even be made: told, tried again later", async () => {
    const peer = new FakePeer({ failConstruct: "bad url" });
    const { client, errors } = await connected(peer, { reconnectDelay: 100 });
    world.clients.push(client);
    assert.equal(errors[0].condition, "wsq-client:socket");
    assert.equal(errors[0].message, "wsq-client:socket: bad url");
    assert.equal(errors[0].cause.message, "bad url");
    const nothing = new FakePeer();
    nothing.WebSocket = function () {
      throw null;
    };
    const { client: c2, errors: e2 } = await connected(nothing);
    world.clients.push(c2);
    assert.equal(e2[0].message, "wsq-client:socket: null");
    assert.equal(client.state, "disconnected");
    peer.failConstruct = null;
    await world.clock.advance(50);
    assert.equal(client.state, "connected");
  });

  test("state events through a loss", async () => {
    const peer = new FakePeer();
    const states = [];
    const client = fakeClient(peer);
    world.clients.push(client);
    client.on("state", (s) => states.push(s));
    assert.equal(client.state, "connecting");
    await settle();
    peer.last.serverClose(1006);
    await world.clock.advance(250);
    assert.deepEqual(states, ["connected", "disconnected", "connecting", "connected"]);
  });
});

describe("the token", () => {
  test("a function is asked at every connect, as the client's method", async () => {
    const asked = [];
    let n = 0;
    const { peer, client } = await setup(
      {},
      {
        token() {
          asked.push(this);
          return `tok-${++n}`;
        },
      },
    );
    peer.last.serverClose(1006);
    await world.clock.advance(250);
    assert.deepEqual(asked, [client, client]);
    assert.deepEqual(peer.sockets.map((s) => s.frames[0].token), ["tok-1", "tok-2"]);
  });

  test("a function that answers no token, or throws: told, tried again after the backoff", async () => {
    let answer = () => "";
    const { peer, client, errors } = await setup({}, { token: async () => answer(), reconnectDelay: 100 });
    assert.equal(peer.sockets.length, 0);
    assert.equal(errors[0].condition, "wsq-client:token");
    assert.equal(errors[0].message, "wsq-client:token: the token function answered no token");
    assert.equal(client.state, "disconnected");
    answer = () => {
      throw new Error("vault down");
    };
    await world.clock.advance(50);
    assert.equal(errors[1].message, "wsq-client:token: vault down");
    assert.equal(errors[1].cause.message, "vault down");
    answer = () => 5;
    await world.clock.advance(100);
    assert.equal(errors.length, 3);
    answer = () => "good";
    await world.clock.advance(200);
    assert.equal(peer.sockets.length, 1);
    assert.equal(client.state, "connected");
  });

  test("refreshed refreshBefore ahead of its exp, on the live socket", async () => {
    let n = 0;
    const peer = new FakePeer();
    peer.open = { exp: NOW_S() + 3600 };
    const { client, errors } = await connected(peer, { token: () => `tok-${++n}`, idle: 0 });
    world.clients.push(client);
    const ws = peer.last;
    // 3,600 s left, refreshed 60 s before: after 3,540 s.
    await world.clock.advance(3540000 - 1);
    assert.deepEqual(ws.ops("refresh"), []);
    await world.clock.advance(1);
    assert.deepEqual(ws.ops("refresh"), [{ op: "refresh", token: "tok-2" }]);
    ws.push({ op: "refresh", exp: NOW_S() + 120 });
    await settle();
    // 120 s left: a third of it is 40 s, less than refreshBefore: after 80 s.
    await world.clock.advance(79999);
    assert.equal(ws.ops("refresh").length, 1);
    await world.clock.advance(1);
    assert.deepEqual(ws.ops("refresh").at(-1), { op: "refresh", token: "tok-3" });
    assert.equal(errors.length, 0);
    assert.equal(peer.sockets.length, 1);
  });

  test("a refresh at least a second out; at most setTimeout's ceiling", async () => {
    const delays = [];
    for (const exp of [NOW_S() + 1, NOW_S() - 10, NOW_S() + 100 * 86400, NOW_S() + 3]) {
      const peer = new FakePeer();
      peer.open = { exp };
      const { client } = await connected(peer, { token: () => "x", idle: 0 });
      world.clients.push(client);
      delays.push(refreshDelay(client));
    }
    // 1 s left: a third is 333 ms, 667 ms is too soon; 3 s left: 2 s (a third kept).
    assert.deepEqual(delays, [1000, 1000, 2147483647, 2000]);
  });

  test("refreshBefore 0: refreshed at its exp", async () => {
    const peer = new FakePeer();
    peer.open = { exp: NOW_S() + 30 };
    let n = 0;
    const { client } = await connected(peer, { token: () => `t${++n}`, refreshBefore: 0, idle: 0 });
    world.clients.push(client);
    await world.clock.advance(29999);
    assert.equal(peer.last.ops("refresh").length, 0);
    await world.clock.advance(1);
    assert.equal(peer.last.ops("refresh").length, 1);
  });

  test("a static token, or no exp: no refresh", async () => {
    const peer = new FakePeer();
    peer.open = { exp: NOW_S() + 10 };
    const { client } = await connected(peer, { idle: 0 });
    world.clients.push(client);
    const none = new FakePeer();
    const { client: c2 } = await connected(none, { token: () => "t", idle: 0 });
    world.clients.push(c2);
    await world.clock.advance(100000);
    assert.equal(peer.last.ops("refresh").length, 0);
    assert.equal(none.last.ops("refresh").length, 0);
    assert.equal(client._conn.refreshTimer, null, "nothing scheduled for a static token");
  });

  test("nothing newer yet, or the function fails: asked again a second later", async () => {
    const peer = new FakePeer();
    peer.open = { exp: NOW_S() + 30 };
    let answer = () => "tok-1";
    const { client, errors } = await connected(peer, { token: () => answer(), refreshBefore: 0, idle: 0 });
    world.clients.push(client);
    await world.clock.advance(30000);
    assert.equal(peer.last.ops("refresh").length, 0, "the same token: not sent");
    answer = () => {
      throw new Error("later");
    };
    await world.clock.advance(999);
    assert.equal(errors.length, 0);
    await world.clock.advance(1);
    assert.equal(errors[0].message, "wsq-client:token: later");
    assert.equal(errors[0].cause.message, "later");
    answer = () => "tok-2";
    await world.clock.advance(999);
    assert.equal(peer.last.ops("refresh").length, 0);
    await world.clock.advance(1);
    assert.deepEqual(peer.last.ops("refresh"), [{ op: "refresh", token: "tok-2" }]);
  });

  test("a refresh due on a socket that is gone does nothing", async () => {
    const peer = new FakePeer();
    peer.open = { exp: NOW_S() + 30 };
    let asked = 0;
    const { client } = await connected(peer, {
      token: () => `t${++asked}`,
      refreshBefore: 0,
      reconnectDelay: 100000,
      maxReconnectDelay: 100000,
    });
    world.clients.push(client);
    peer.last.serverClose(1006);
    await world.clock.advance(30000);
    assert.equal(asked, 1);
  });

  test("a refused static token ends the client: fatal, one socket", async () => {
    const { peer, client, errors } = await setup({ refuse: { condition: "wsq:unauthorized", description: "no" } });
    await settle();
    assert.equal(client.state, "closed");
    assert.equal(peer.sockets.length, 1);
    assert.equal(errors.length, 1);
    assert.equal(errors[0].condition, "wsq:unauthorized");
    assert.equal(errors[0].description, "no");
    assert.equal(errors[0].fatal, true);
    assert.equal(errors[0].scope, "connection");
  });

  test("a refused token from a function: asked once more at once; refused again, the end", async () => {
    let n = 0;
    const { peer, client, errors } = await setup(
      { refuse: { condition: "wsq:token-expired", description: "old" } },
      { token: () => `t${++n}`, reconnectDelay: 1000 },
    );
    await settle();
    assert.equal(peer.sockets.length, 1);
    assert.equal(errors[0].condition, "wsq:token-expired");
    assert.equal(errors[0].fatal, false);
    assert.equal(errors[0].scope, "connection");
    await world.clock.advance(0);
    assert.equal(peer.sockets.length, 2);
    assert.equal(peer.last.frames[0].token, "t2");
    await settle();
    assert.equal(client.state, "closed");
    assert.equal(errors.at(-1).fatal, true);
    assert.equal(errors.at(-1).condition, "wsq:token-expired");
  });

  test("the function answers the refused token again: given up without a socket", async () => {
    const { peer, client, errors } = await setup(
      { refuse: { condition: "wsq:unauthorized", description: "no" } },
      { token: () => "same" },
    );
    await world.clock.advance(0);
    assert.equal(peer.sockets.length, 1);
    assert.equal(client.state, "closed");
    assert.equal(errors.at(-1).message, "wsq:unauthorized: the token was refused and no other token is available");
    assert.equal(errors.at(-1).fatal, true);
    assert.equal(errors.at(-1).scope, "connection");
  });

  test("an accepted open forgets earlier refusals", async () => {
    let n = 0;
    const peer = new FakePeer({ refuse: { condition: "wsq:unauthorized" } });
    const { client, errors } = await connected(peer, { token: () => `t${++n}` });
    world.clients.push(client);
    peer.refuse = null;
    await world.clock.advance(0);
    assert.equal(client.state, "connected");
    peer.refuse = { condition: "wsq:unauthorized" };
    peer.onFrame = (f) => {
      if (f.op === "open") peer.refuse = null; // this once
    };
    peer.last.serverClose(1006);
    await world.clock.advance(250);
    assert.equal(client.state, "connected", "asked once more after the new refusal");
    assert.equal(errors.filter((e) => e.fatal).length, 0);
  });
});

describe("transport auto", () => {
  test("a WebSocket that never opens: HTTP at once; HTTP failing too: a WebSocket after the backoff", async () => {
    const peer = new FakePeer({ autoAccept: false });
    const calls = [];
    const fetch = async (url, init) => {
      calls.push([url, init.method, init.body]);
      throw new TypeError("offline");
    };
    const client = fakeClient(peer, { transport: "auto", fetch, reconnectDelay: 100 });
    world.clients.push(client);
    const events = [];
    client.on("transport", (e) => events.push(e));
    assert.equal(client.transport, "websocket");
    await settle();
    peer.last.serverClose(1006);
    await settle();
    assert.equal(client.transport, "http");
    await world.clock.advance(0);
    await settle();
    assert.deepEqual(events, [{ transport: "http", reason: "the WebSocket could not open" }]);
    assert.equal(calls[0][0], "http://gw.test/v1/stream");
    assert.equal(calls[0][1], "POST");
    assert.equal(JSON.parse(calls[0][2]).op, "open");
    await settle();
    assert.equal(client.transport, "websocket");
    assert.equal(peer.sockets.length, 1);
    await world.clock.advance(50);
    assert.equal(peer.sockets.length, 2);
    assert.deepEqual(events[1], { transport: "websocket", reason: "the HTTP stream could not open either" });
  });

  test("a WebSocket that worked once is not given up for HTTP", async () => {
    const peer = new FakePeer();
    const fetch = async () => assert.fail("no HTTP");
    const client = fakeClient(peer, { transport: "auto", fetch, reconnectDelay: 100 });
    world.clients.push(client);
    await settle();
    peer.autoAccept = false;
    peer.last.serverClose(1006);
    await world.clock.advance(50);
    peer.last.serverClose(1006);
    await settle();
    assert.equal(client.transport, "websocket");
  });

  test("transport websocket never falls back; no WebSocket at all: HTTP from the start", async () => {
    const peer = new FakePeer({ autoAccept: false });
    const client = fakeClient(peer, { transport: "websocket", fetch: async () => assert.fail("no") });
    world.clients.push(client);
    await settle();
    peer.last.serverClose(1006);
    await settle();
    assert.equal(client.transport, "websocket");
    const events = [];
    const calls = [];
    const http = fakeClient(peer, {
      transport: "auto",
      WebSocket: undefined,
      fetch: async (url) => {
        calls.push(url);
        throw new TypeError("x");
      },
    });
    world.clients.push(http);
    http.on("transport", (e) => events.push(e));
    await settle();
    assert.deepEqual(events, [{ transport: "http", reason: "no WebSocket here" }]);
    assert.deepEqual(calls, ["http://gw.test/v1/stream"]);
    const asked = fakeClient(peer, { transport: "http", fetch: async () => new Promise(() => {}) });
    world.clients.push(asked);
    const told = [];
    asked.on("transport", (e) => told.push(e));
    await settle();
    assert.deepEqual(told, [{ transport: "http", reason: "asked for" }]);
  });
});

describe("closing for good", () => {
  test("a refused token fails pending publishes with the fatal error itself", async () => {
    const peer = new FakePeer({ refuse: { condition: "wsq:unauthorized", description: "no" } });
    const client = fakeClient(peer);
    world.clients.push(client);
    const errors = [];
    client.on("error", (e) => errors.push(e));
    const p = client.publish("a", 1);
    await settle();
    await assert.rejects(p, (e) => e === errors[0] && e.fatal === true && e.address === undefined);
    let resolved = false;
    await client.close().then(() => (resolved = true));
    assert.equal(resolved, true, "closing a closed client resolves at once");
  });

  test("an ordinary close fails them with a closed error naming their address", async () => {
    const { client } = await setup({ senderCredit: 0 });
    const p = client.publish("a.b", 1);
    await settle();
    client.close();
    await assert.rejects(p, (e) => e.condition === "wsq-client:closed" && e.address === "a.b" && e.fatal === false);
  });

  test("closed while the token function is still answering: no socket, nothing told", async () => {
    const peer = new FakePeer();
    let answer;
    let fail;
    const client = fakeClient(peer, { token: () => new Promise((resolve, reject) => ((answer = resolve), (fail = reject))) });
    const errors = [];
    client.on("error", (e) => errors.push(e));
    await settle();
    await client.close();
    answer("late");
    await world.clock.advance(60000);
    assert.equal(peer.sockets.length, 0);
    const other = fakeClient(peer, { token: () => new Promise((resolve, reject) => ((answer = resolve), (fail = reject))) });
    other.on("error", (e) => errors.push(e));
    await settle();
    await other.close();
    fail(new Error("late failure"));
    await world.clock.advance(60000);
    assert.deepEqual(errors, []);
    assert.equal(other.state, "closed");
  });

  test("close clears every retry: no timer is left", async () => {
    const { client, ws } = await setup({ answerAttach: false });
    const sub = client.subscribe("a", () => {});
    client.publish("b", 1);
    await settle();
    ws.push({ op: "detach", ch: 0, handle: 0, error: { condition: "wsq:internal-error" } });
    ws.push({ op: "detach", ch: 0, handle: 1, error: { condition: "wsq:internal-error" } });
    await settle();
    assert.equal(world.clock.pending().length >= 2, true);
    await client.close();
    assert.deepEqual(world.clock.pending(), []);
    assert.equal(sub.closed, true);
  });

  test("a close during the backoff: no reconnect", async () => {
    const { client, peer } = await setup();
    peer.last.serverClose(1006);
    await settle();
    await client.close();
    await world.clock.advance(60000);
    assert.equal(peer.sockets.length, 1);
    assert.equal(client.state, "closed");
  });
});

describe("more of the token and the transports", () => {
  test("a token function rejecting with nothing: told as undefined", async () => {
    const { errors } = await setup({}, { token: () => Promise.reject(undefined) });
    assert.equal(errors[0].message, "wsq-client:token: undefined");
    const peer = new FakePeer();
    peer.open = { exp: NOW_S() + 30 };
    let calls = 0;
    const { client, errors: told } = await connected(peer, {
      token: () => (++calls === 1 ? "t1" : Promise.reject(undefined)),
      refreshBefore: 0,
      idle: 0,
    });
    world.clients.push(client);
    await world.clock.advance(30000);
    assert.equal(told[0].message, "wsq-client:token: undefined", "a refresh's failure too");
  });

  test("a refresh that fails after its socket is gone is not told", async () => {
    const peer = new FakePeer();
    peer.open = { exp: NOW_S() + 30 };
    let fail = null;
    let calls = 0;
    const { client, errors } = await connected(peer, {
      token: () => (++calls === 1 ? "t1" : new Promise((_, reject) => (fail = reject))),
      refreshBefore: 0,
      idle: 0,
      reconnectDelay: 100000,
      maxReconnectDelay: 100000,
    });
    world.clients.push(client);
    await world.clock.advance(30000);
    assert.equal(calls, 2);
    peer.last.serverClose(1006);
    await settle();
    fail(new Error("too late"));
    await world.clock.advance(5000);
    assert.deepEqual(errors, []);
  });

  test("a refresh due while the server closes the socket does not ask for a token", async () => {
    const peer = new FakePeer();
    peer.open = { exp: NOW_S() + 30 };
    let calls = 0;
    const { client } = await connected(peer, { token: () => `t${++calls}`, refreshBefore: 0, idle: 0, closeTimeout: 60000 });
    world.clients.push(client);
    peer.last.push({ op: "close" });
    await world.clock.advance(31000);
    assert.equal(calls, 1);
  });

  test("auto without fetch: a WebSocket that never opens is tried again, never HTTP", async () => {
    const peer = new FakePeer({ autoAccept: false });
    const client = fakeClient(peer, { transport: "auto", fetch: false, reconnectDelay: 100 });
    world.clients.push(client);
    const events = [];
    client.on("transport", (e) => events.push(e));
    await settle();
    peer.last.serverClose(1006);
    await settle();
    assert.equal(client.transport, "websocket");
    assert.deepEqual(world.clock.pending(), [50]);
    assert.deepEqual(events, []);
  });

  test("HTTP only (no WebSocket): it stays HTTP, and says so once", async () => {
    const peer = new FakePeer();
    const events = [];
    const calls = [];
    const client = fakeClient(peer, {
      transport: "auto",
      WebSocket: undefined,
      reconnectDelay: 100,
      fetch: async (url) => {
        calls.push(url);
        throw new TypeError("x");
      },
    });
    world.clients.push(client);
    client.on("transport", (e) => events.push(e));
    await settle();
    await world.clock.advance(50);
    await settle();
    assert.equal(calls.length, 2);
    assert.equal(client.transport, "http");
    assert.deepEqual(events, [{ transport: "http", reason: "no WebSocket here" }]);
  });

  test("a WebSocket that worked once: a failed one is retried after the backoff", async () => {
    const peer = new FakePeer();
    const client = fakeClient(peer, { transport: "auto", fetch: async () => assert.fail("no HTTP"), reconnectDelay: 100 });
    world.clients.push(client);
    await settle();
    peer.autoAccept = false;
    peer.last.serverClose(1006);
    await world.clock.advance(50);
    peer.last.serverClose(1006);
    await settle();
    assert.deepEqual(world.clock.pending(), [100]);
    await world.clock.advance(100);
    assert.equal(peer.sockets.length, 3);
  });

  test("a link waiting for its retry is attached by it, not by the reconnect", async () => {
    const { client, peer } = await setup({ answerAttach: false }, { reconnectDelay: 100, maxReconnectDelay: 100000 });
    client.subscribe("a", () => {});
    client.publish("b", 1);
    await settle();
    const detachAll = (handles) => {
      for (const handle of handles) peer.last.push({ op: "detach", ch: 0, handle, error: { condition: "wsq:internal-error" } });
    };
    detachAll([0, 1]);
    await world.clock.advance(50); // both retried (0.5 of 100)
    assert.equal(peer.last.ops("attach").length, 4);
    detachAll([2, 3]);
    await settle(); // the next retries in 100 ms
    peer.last.serverClose(1006);
    await world.clock.advance(50); // reconnected: the links wait for their retries
    assert.equal(peer.sockets.length, 2);
    assert.equal(peer.last.ops("attach").length, 0);
    await world.clock.advance(50);
    assert.deepEqual(peer.last.ops("attach").map((f) => f.address).sort(), ["a", "b"]);
  });
});

