// Live views: subscribe's rewind and conflate options, what goes on the wire on the first attach
// and after a reconnect. A scripted server records the attach frames.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import WebSocket from "ws";
import { Client } from "../src/index.js";
import {
  Gateway,
  clientsClosedAfterEach,
  collector,
  sleep,
  token,
  waitFor,
  wsqServer,
} from "./helpers.js";

class Idle {
  constructor() {
    this.readyState = 0;
  }
  send() {}
  close() {
    this.readyState = 3;
  }
}

describe("rewind and conflate", () => {
  test("bad values are refused before anything is sent", async () => {
    const client = new Client("ws://127.0.0.1:9/ws", { token: "t", WebSocket: Idle });
    const sub = (options) => client.subscribe("a.b", () => {}, options);
    try {
      for (const rewind of [0, 1001, -1, 1.5, "3", null]) {
        assert.throws(() => sub({ rewind }), /option rewind: 1\.\.1000/, String(rewind));
      }
      assert.throws(() => sub({ rewind: 3, from: "^" }), /rewind and from are exclusive/);
      for (const conflate of [9, { ms: 9 }, { ms: 100, by: "body" }, {}, "100", { ms: 1.5 }]) {
        assert.throws(() => sub({ conflate }), /option conflate/, JSON.stringify(conflate));
      }
      assert.throws(() => sub({ mode: "move", rewind: 1 }), /copy mode only/);
      assert.throws(() => sub({ mode: "move", conflate: 100 }), /copy mode only/);
      // The edges are fine.
      sub({ rewind: 1 });
      sub({ rewind: 1000, conflate: { ms: 10 } });
    } finally {
      await client.close();
    }
  });

  test("the first attach rewinds, a re-attach resumes after the last message received", async () => {
    const { wss, url } = await wsqServer();
    const attaches = [];
    const sockets = [];
    wss.on("connection", (ws) => {
      sockets.push(ws);
      ws.on("message", (data) => {
        const value = JSON.parse(data.toString());
        for (const f of Array.isArray(value) ? value : [value]) {
          const answer = (frame) => ws.send(JSON.stringify(frame));
          if (f.op === "open") answer({ op: "open", node: "n", idle: 0, exp: 0 });
          if (f.op === "begin") answer({ op: "begin", ch: f.ch });
          if (f.op !== "attach") continue;
          attaches.push(f);
          answer({ ...f, from: "7-0", recovered: true });
          if (attaches.length === 1) {
            const t = { op: "transfer", ch: f.ch, handle: f.handle, settled: true };
            answer({ ...t, delivery: 0, id: "8-0", body: 8 });
            answer({ ...t, delivery: 1, id: "9-0", body: 9 });
          }
        }
      });
    });
    const client = new Client(url, { token: "t", WebSocket, reconnectDelay: 20 });
    try {
      const seen = [];
      const sub = client.subscribe("metrics.cpu", (m) => seen.push(m.body), {
        rewind: 2,
        conflate: 100,
      });
      await waitFor(() => seen.length === 2, "the rewound messages");
      assert.deepEqual(seen, [8, 9]);
      const first = attaches[0];
      assert.equal(first.rewind, 2);
      assert.equal("from" in first, false); // rewind and from are exclusive on the wire too
      assert.deepEqual(first.conflate, { ms: 100, by: "subject" });
      sockets[0].terminate();
      await waitFor(() => attaches.length === 2, "the re-attach");
      const again = attaches[1];
      assert.equal("rewind" in again, false);
      assert.equal(again.from, "9-0");
      assert.deepEqual(again.conflate, { ms: 100, by: "subject" });
      assert.equal(sub.position, "9-0");
    } finally {
      await client.close();
      wss.close();
    }
  });
});

describe("rewind and conflate against a real gateway", () => {
  let gw;
  before(async () => {
    gw = await Gateway.start({ broker: "memory://" });
  });
  after(async () => {
    await gw?.stop();
  });
  const newClient = clientsClosedAfterEach(() => ({ token: token() }));

  test("rewind 3 of 10 gives 8, 9, 10 at once, then live 11 with no gap", async () => {
    const c = newClient(gw.url);
    for (let i = 1; i <= 10; i++) await c.publish("gauge.a", i);
    const { handler, bodies } = collector();
    const sub = c.subscribe("gauge.a", handler, { rewind: 3 });
    await sub.ready;
    await waitFor(() => bodies().length === 3, "the rewound messages");
    await c.publish("gauge.a", 11);
    await waitFor(() => bodies().length === 4, "the live message");
    assert.deepEqual(bodies(), [8, 9, 10, 11]);
  });

  test("a burst of 1000 on one subject arrives conflated, the last one last", async () => {
    const c = newClient(gw.url);
    const { handler, bodies } = collector();
    const sub = c.subscribe("gauge.b", handler, { conflate: { ms: 100 }, credit: 1000 });
    await sub.ready;
    const all = [];
    for (let i = 1; i <= 1000; i++) all.push(c.publish("gauge.b", i, { subject: "gauge.b.eur" }));
    await Promise.all(all);
    await waitFor(() => bodies().at(-1) === 1000, "the 1000th");
    await sleep(250); // nothing more comes: the latest was sent
    const got = bodies();
    // The figure docs/protocol.md and the report quote.
    console.log(`1000 publishes, conflate 100 ms: ${got.length} transfers: ${got.join(",")}`);
    assert.equal(got.at(-1), 1000);
    assert.ok(got.length <= 30, `a handful, not ${got.length}`);
    assert.deepEqual([...got].sort((a, b) => a - b), got);
  });
});
