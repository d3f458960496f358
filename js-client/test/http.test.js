// wsq.v1 over HTTP (src/http_socket.js, docs/protocol.md "HTTP transport") against a real
// gateway: transport "http", and "auto" falling back by itself when the WebSocket cannot open.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import WebSocket from "ws";
import { streamUrl } from "../src/http_socket.js";
import { Gateway, clientsClosedAfterEach, collector, token, waitFor } from "./helpers.js";

const newClient = clientsClosedAfterEach(() => ({ token: () => token(), maxReconnectDelay: 400 }));

/** A WebSocket that never opens: what a proxy that blocks WebSockets looks like. */
class Blocked {
  constructor() {
    this.readyState = 0;
    this.protocol = "";
    setTimeout(() => {
      this.readyState = 3;
      this.onclose?.({ code: 1006 });
    }, 5);
  }
  send() {
    throw new Error("not open");
  }
  close() {
    this.readyState = 3;
  }
}

/** A WebSocket that opens and then carries nothing: a proxy that buffers WebSockets. */
class Silent {
  constructor() {
    this.readyState = 0;
    this.protocol = "wsq.v1";
    setTimeout(() => {
      this.readyState = 1;
      this.onopen?.({});
    }, 5);
  }
  send() {}
  close() {
    this.readyState = 3;
    setTimeout(() => this.onclose?.({ code: 1006 }), 0);
  }
}

test("the stream's URL sits beside the WebSocket's", () => {
  assert.equal(streamUrl("ws://h:1/ws"), "http://h:1/v1/stream");
  assert.equal(streamUrl("wss://h/app/ws?x=1"), "https://h/app/v1/stream");
});

test("a transport that is not one of the three is refused", () => {
  assert.throws(
    () => newClient("ws://127.0.0.1:9/ws", { transport: "sse" }),
    /option transport/,
  );
});

describe("over HTTP, against a real gateway", () => {
  let gw = null;
  before(async () => {
    gw = await Gateway.start({ idleMs: 2000 });
  });
  after(async () => {
    await gw?.stop();
  });

  test('transport "http": subscribe, publish, receive', async () => {
    const client = newClient(gw.url, { transport: "http" });
    assert.equal(client.transport, "http");
    const { handler, bodies } = collector();
    const sub = client.subscribe("http.rt", handler);
    await sub.ready;
    const ids = await Promise.all([1, 2, 3].map((n) => client.publish("http.rt", { n })));
    assert.equal(ids.length, 3);
    await waitFor(() => bodies().length === 3, "three deliveries");
    assert.deepEqual(bodies(), [{ n: 1 }, { n: 2 }, { n: 3 }]);
  });

  test("fetch is called unbound, as a browser's window.fetch must be", async () => {
    const strictFetch = function (...args) {
      // A browser's fetch throws "Illegal invocation" for any other `this`.
      if (this !== undefined && this !== globalThis) throw new TypeError("Illegal invocation");
      return fetch(...args);
    };
    const client = newClient(gw.url, { transport: "http", fetch: strictFetch });
    const errors = [];
    client.on("error", (e) => errors.push(e));
    const { handler, bodies } = collector();
    client.subscribe("http.unbound", handler);
    client.publish("http.unbound", 1).catch(() => {});
    await waitFor(() => bodies().length === 1, "the delivery");
    assert.deepEqual(errors, []);
  });

  test("heartbeats keep an idle HTTP connection alive past the gateway's idle", async () => {
    const client = newClient(gw.url, { transport: "http", idle: 1000 });
    const opens = [];
    client.on("open", (info) => opens.push(info));
    await waitFor(() => client.connected, "connected");
    await new Promise((resolve) => setTimeout(resolve, 4500)); // twice the gateway's idle_ms
    assert.equal(opens.length, 1, "the connection was never replaced");
    assert.ok(client.connected);
  });

  test('"auto" falls back to HTTP when the WebSocket cannot open, and says so', async () => {
    const client = newClient(gw.url, { WebSocket: Blocked });
    const switched = [];
    client.on("transport", (event) => switched.push(event));
    const { handler, bodies } = collector();
    const sub = client.subscribe("http.auto", handler);
    await sub.ready;
    assert.deepEqual(switched, [{ transport: "http", reason: "the WebSocket could not open" }]);
    assert.equal(client.transport, "http");
    await client.publish("http.auto", "hello");
    await waitFor(() => bodies().length === 1, "the delivery");
  });

  test('"auto" falls back too when the WebSocket opens but the gateway never answers', async () => {
    const client = newClient(gw.url, { WebSocket: Silent, connectTimeout: 300 });
    const switched = [];
    client.on("transport", (event) => switched.push(event.transport));
    const { handler, bodies } = collector();
    client.subscribe("http.silent", handler);
    client.publish("http.silent", "through").catch(() => {});
    await waitFor(() => bodies().length === 1, "the delivery over HTTP");
    assert.deepEqual(switched, ["http"]);
  });

  test('"auto" goes back to a WebSocket when the HTTP stream cannot open either', async () => {
    const down = () => Promise.reject(new TypeError("network error"));
    const client = newClient(gw.url, { WebSocket: Blocked, fetch: down, reconnectDelay: 20 });
    const switched = [];
    client.on("transport", (event) => switched.push(event.transport));
    await waitFor(() => switched.length >= 3, "three changes");
    assert.deepEqual(switched.slice(0, 3), ["http", "websocket", "http"]);
  });

  test('"auto" keeps to WebSockets once one has worked', async () => {
    let sockets = 0;
    class OnceThenBlocked extends WebSocket {
      constructor(...args) {
        sockets += 1;
        if (sockets === 1) super(...args);
        else return new Blocked();
      }
    }
    const client = newClient(gw.url, { WebSocket: OnceThenBlocked, reconnectDelay: 20 });
    const switched = [];
    client.on("transport", (event) => switched.push(event));
    await waitFor(() => client.connected, "the first WebSocket");
    client._conn.ws.close(); // lost; every WebSocket after it fails
    await waitFor(() => sockets >= 3, "two more attempts");
    assert.deepEqual(switched, []);
    assert.equal(client.transport, "websocket");
  });

  test('"websocket" never falls back', async () => {
    const client = newClient(gw.url, { WebSocket: Blocked, transport: "websocket" });
    const switched = [];
    client.on("transport", (event) => switched.push(event));
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.deepEqual(switched, []);
    assert.equal(client.transport, "websocket");
    assert.equal(client.connected, false);
  });

  test("move mode over HTTP: each job to one consumer, accepted", async () => {
    const a = newClient(gw.url, { transport: "http" });
    const b = newClient(gw.url, { transport: "http" });
    const got = [];
    const work = (who) => (msg) => {
      got.push([who, msg.body]);
    };
    const subs = [
      a.subscribe("http.jobs", work("a"), { mode: "move", group: "g", credit: 5 }),
      b.subscribe("http.jobs", work("b"), { mode: "move", group: "g", credit: 5 }),
    ];
    await Promise.all(subs.map((s) => s.ready));
    for (let i = 0; i < 20; i++) await a.publish("http.jobs", i);
    await waitFor(() => got.length === 20, "20 jobs");
    assert.deepEqual(got.map(([, n]) => n).sort((x, y) => x - y), [...Array(20).keys()]);
  });
});
