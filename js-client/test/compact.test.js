// The compact delivery form (`transfers`) and its rows: the client offers both by default, parses
// every form and hands the handler the same messages either way. Against a real gateway (memory broker)
// and a scripted server for what a real one never sends.
import assert from "node:assert/strict";
import { after, afterEach, before, describe, test } from "node:test";
import WebSocket from "ws";
import { Client } from "../src/index.js";
import { Gateway, clientsClosedAfterEach, token, waitFor, wsqServer } from "./helpers.js";

let gw;

before(async () => {
  gw = await Gateway.start({ broker: "memory://" });
});

after(async () => {
  await gw?.stop();
});

const newClient = clientsClosedAfterEach(() => ({ token: token() }));

/** A WebSocket class that keeps every text the server sends, decoded, frames flattened. */
function recordingWebSocket() {
  const frames = [];
  class Recording extends WebSocket {
    constructor(...args) {
      super(...args);
      this.on("message", (data) => {
        const value = JSON.parse(data.toString());
        frames.push(...(Array.isArray(value) ? value : [value]));
      });
    }
  }
  return { WebSocket: Recording, frames };
}

/** Two clients of the gateway, each recording what its socket received: `a` asks for the
 * compact form (the default), `b` does not. */
function twoClients() {
  const compact = recordingWebSocket();
  const plain = recordingWebSocket();
  const a = newClient(gw.url, { WebSocket: compact.WebSocket });
  const b = newClient(gw.url, { WebSocket: plain.WebSocket, compact: false });
  return { compact, plain, a, b };
}

/** What a handler can see of a message. */
const seen = (m) => ({
  id: m.id,
  body: m.body,
  props: m.props,
  subject: m.subject,
  address: m.address,
  redelivered: m.redelivered,
  settled: m.settled,
});

describe("against the gateway", () => {
  test("compact and plain subscribers get the same messages and positions", async () => {
    const publisher = newClient(gw.url);
    const ids = [];
    for (let i = 0; i < 30; i++) {
      ids.push(
        await publisher.publish(
          "compact.feed",
          { n: i, text: "é✓" },
          { subject: `compact.feed.${i % 3}`, headers: { i: String(i) } },
        ),
      );
    }
    const { compact, plain, a, b } = twoClients();
    const gotA = [];
    const gotB = [];
    const subA = a.subscribe("compact.feed", (m) => gotA.push(m), { from: "^", credit: 50 });
    const subB = b.subscribe("compact.feed", (m) => gotB.push(m), { from: "^", credit: 50 });
    await Promise.all([subA.ready, subB.ready]);
    await waitFor(() => gotA.length === 30 && gotB.length === 30, "30 messages each");
    assert.deepEqual(gotA.map((m) => m.id), ids);
    assert.deepEqual(gotA.map(seen), gotB.map(seen));
    assert.equal(subA.position, ids[29]);
    assert.equal(subB.position, ids[29]);
    assert.equal(a.info.compact, true);
    assert.equal(b.info.compact, false);
    // The compact socket got its deliveries in compact frames, several at once; the plain one
    // only per-message transfers.
    const ops = (frames) => new Set(frames.map((f) => f.op));
    assert.ok(ops(compact.frames).has("transfers") && !ops(compact.frames).has("transfer"));
    assert.ok(ops(plain.frames).has("transfer") && !ops(plain.frames).has("transfers"));
    const counts = compact.frames.filter((f) => f.op === "transfers").map((f) => f.msgs.length);
    assert.equal(counts.reduce((x, y) => x + y, 0), 30);
    assert.ok(Math.max(...counts) > 1, `messages per compact frame: ${counts}`);
  });

  test("a publish of several messages while subscribed arrives as rows, read as the plain form", async () => {
    const { compact, plain, a, b } = twoClients();
    const gotA = [];
    const gotB = [];
    // Each handler changes its message's props: with shared props that would reach the next.
    const handler = (got) => (m) => {
      m.props.seenBy = m.id;
      got.push(m);
    };
    const subA = a.subscribe("rows.feed", handler(gotA), { credit: 100 });
    const subB = b.subscribe("rows.feed", handler(gotB), { credit: 100 });
    await Promise.all([subA.ready, subB.ready]);
    assert.equal(a.info.compact, true);
    assert.equal(a.info.rows, true);
    assert.equal(b.info.rows, false);
    // One publish call (the HTTP bridge's batch): one broker batch, its props shared by runs.
    const messages = Array.from({ length: 12 }, (_, i) => ({
      body: i % 4 === 3 ? [i, "é✓"] : { n: i },
      ...(i >= 8 ? { subject: "rows.feed.x", headers: { k: "v" } } : {}),
    }));
    const res = await fetch(`${gw.http}/v1/addresses/rows.feed/messages`, {
      method: "POST",
      headers: { authorization: `Bearer ${token()}`, "content-type": "application/json" },
      body: JSON.stringify({ messages }),
    });
    assert.equal(res.status, 201);
    const { ids } = await res.json();
    assert.equal(ids.length, 12);
    await waitFor(() => gotA.length === 12 && gotB.length === 12, "12 messages each");
    assert.deepEqual(gotA.map((m) => m.id), ids);
    assert.deepEqual(gotA.map(seen), gotB.map(seen));
    assert.deepEqual(
      gotA.map((m) => [m.body, m.subject, m.props.headers, m.props.publisher, m.props.seenBy]),
      messages.map((m, i) => [m.body, m.subject, m.headers, "alice", ids[i]]),
    );
    assert.ok(gotA.every((m) => typeof m.props.ts === "number"));
    // On the wire: rows only, the first of each run of props with them, then bodies alone.
    const rows = compact.frames.filter((f) => f.op === "transfers").flatMap((f) => f.msgs);
    assert.equal(rows.length, 12);
    assert.ok(rows.every(Array.isArray), `elements: ${JSON.stringify(rows)}`);
    assert.deepEqual(
      rows.map((r) => r.length),
      [3, 1, 1, 1, 1, 1, 1, 1, 3, 1, 1, 1],
    );
    assert.ok(plain.frames.every((f) => f.op !== "transfers"));
  });

  test("move mode over compact frames: released work comes back, settled work does not", async () => {
    const c = newClient(gw.url);
    for (const body of ["flaky", "fine", "also"]) await c.publish("compact.jobs", body);
    const calls = [];
    let failOnce = true;
    const sub = c.subscribe(
      "compact.jobs",
      (msg) => {
        calls.push([msg.body, msg.settled]);
        if (msg.body === "flaky" && failOnce) {
          failOnce = false;
          throw new Error("not now");
        }
      },
      { mode: "move", group: "compact" },
    );
    c.on("error", () => {});
    await sub.ready;
    await waitFor(() => calls.length === 4, "four handler calls");
    assert.deepEqual(calls.map(([b]) => b).sort(), ["also", "fine", "flaky", "flaky"]);
    assert.ok(calls.every(([, settled]) => settled === false), "handed over unsettled");
    await sub.unsubscribe();
    await c.publish("compact.jobs", "next");
    const bodies = [];
    await c.subscribe("compact.jobs", (m) => bodies.push(m.body), {
      mode: "move",
      group: "compact",
    }).ready;
    await waitFor(() => bodies.length >= 1, "the next job");
    assert.deepEqual(bodies, ["next"]);
  });
});

describe("against a scripted server", () => {
  const cleanup = [];
  afterEach(async () => {
    for (const fn of cleanup.splice(0).reverse()) await fn();
  });

  /** A server that answers open (with `compact` and `rows` when asked), begin and attach, then
   * sends `deliveries(frame)` on the attach. Records the client's open frames. */
  async function server(deliveries) {
    const { wss, url } = await wsqServer();
    const opens = [];
    wss.on("connection", (ws) => {
      ws.on("error", () => {});
      ws.on("message", (data) => {
        const value = JSON.parse(data.toString());
        for (const f of Array.isArray(value) ? value : [value]) {
          if (f.op === "open") {
            opens.push(f);
            ws.send(
              JSON.stringify({
                op: "open",
                node: "fake",
                idle: 0,
                compact: !!f.compact,
                rows: !!f.compact && !!f.rows,
              }),
            );
          } else if (f.op === "begin") ws.send(JSON.stringify({ op: "begin", ch: f.ch }));
          else if (f.op === "attach") {
            ws.send(JSON.stringify({ ...f, from: "0-0", recovered: true }));
            ws.send(JSON.stringify(deliveries(f)));
          } else if (f.op === "close") {
            ws.send(JSON.stringify({ op: "close" }));
            ws.close(1000);
          }
        }
      });
    });
    cleanup.push(
      () =>
        new Promise((resolve) => {
          for (const ws of wss.clients) ws.terminate();
          wss.close(() => resolve());
        }),
    );
    return { url, opens };
  }

  function client(url, options = {}) {
    const c = new Client(url, { token: "t", WebSocket, reconnectDelay: 30, ...options });
    const errors = [];
    c.on("error", (e) => errors.push(e));
    cleanup.push(() => c.close());
    return { c, errors };
  }

  const msgs = (n) =>
    Array.from({ length: n }, (_, i) => ({
      id: `7-${i}`,
      body: { i },
      props: { ts: 7, subject: `s.${i}` },
    }));

  test("a compact frame becomes the messages the plain frames would make", async () => {
    const compact = await server((f) => ({
      op: "transfers",
      ch: f.ch,
      handle: f.handle,
      settled: false,
      delivery: 0,
      msgs: msgs(4),
    }));
    const plain = await server((f) =>
      msgs(4).map((m, i) => ({
        op: "transfer",
        ch: f.ch,
        handle: f.handle,
        settled: false,
        delivery: i,
        ...m,
      })),
    );
    const got = { compact: [], plain: [] };
    for (const [name, s] of Object.entries({ compact, plain })) {
      const { c } = client(s.url, { compact: name === "compact" });
      c.subscribe("s", (m) => got[name].push(m), { credit: 10 });
    }
    await waitFor(() => got.compact.length === 4 && got.plain.length === 4, "4 messages each");
    assert.deepEqual(got.compact.map(seen), got.plain.map(seen));
    assert.deepEqual(
      got.compact.map((m) => [m.delivery, m.subject]),
      [
        [0, "s.0"],
        [1, "s.1"],
        [2, "s.2"],
        [3, "s.3"],
      ],
    );
    // The default offers compact and rows; compact: false neither.
    assert.equal(compact.opens[0].compact, true);
    assert.equal(compact.opens[0].rows, true);
    assert.equal(plain.opens[0].compact, false);
    assert.equal(plain.opens[0].rows, false);
  });

  test("rows of every shape, mixed with objects, become the messages plain frames would make", async () => {
    const props = { ts: 7, publisher: "p" };
    const objects = [
      { id: "7-0", body: { i: 0 }, props },
      { id: "7-1", body: [1], props },
      { id: "7-2", body: null, props },
      { id: "8-5", body: "x", props },
      { id: "8-6", body: 2, props: { ts: 8, subject: "s.t" } },
      { id: "8-7", body: { i: 5 }, props: { ts: 8, subject: "s.t" } },
      { id: "9-0", body: false, props: { ts: 9 } },
      { id: "9-1", body: "y", props: { ts: 9 } },
    ];
    const msgs = [
      ["7-0", { i: 0 }, props],
      [[1]],
      [null],
      ["8-5", "x"],
      ["8-6", 2, { ts: 8, subject: "s.t" }],
      [{ i: 5 }],
      objects[6],
      ["y"],
    ];
    const transfers = (f) => ({ op: "transfers", ch: f.ch, handle: f.handle, settled: false, delivery: 0, msgs });
    const rows = await server(transfers);
    const plain = await server((f) =>
      objects.map((m, i) => ({ op: "transfer", ch: f.ch, handle: f.handle, settled: false, delivery: i, ...m })),
    );
    const got = { rows: [], plain: [] };
    for (const [name, s] of Object.entries({ rows, plain })) {
      const { c } = client(s.url, { compact: name === "rows" });
      c.subscribe(
        "s",
        (m) => {
          m.props.mine = m.delivery; // a handler's change stays with its message
          got[name].push(m);
        },
        { credit: 10 },
      );
    }
    await waitFor(() => got.rows.length === 8 && got.plain.length === 8, "8 messages each");
    assert.deepEqual(got.rows.map(seen), got.plain.map(seen));
    assert.deepEqual(
      got.rows.map((m) => [m.id, m.delivery, m.props.mine]),
      objects.map((m, i) => [m.id, i, i]),
    );
    assert.equal(got.rows[5].subject, "s.t");
  });

  const first = ["5-0", "a", { ts: 5 }];
  for (const [name, bad] of [
    ["msgs that is not an array", { msgs: "nope" }],
    ["no msgs", { msgs: [] }],
    ["a message that is not an object", { msgs: [1] }],
    ["a message without a valid id", { msgs: [{ id: "x", body: 1 }] }],
    ["a delivery number that is not one", { delivery: -1 }],
    ["more messages than the credit granted", { msgs: msgs(6) }],
    ["an empty row", { msgs: [first, []] }],
    ["a row of four", { msgs: [first, ["5-1", "b", {}, 1]] }],
    ["a first row of two", { msgs: [["5-0", "a"], ["b"]] }],
    ["a first row of one", { msgs: [["a"], ["b"]] }],
    ["a row whose props are not an object", { msgs: [["5-0", "a", [1]], ["b"]] }],
    ["a row sharing props that are not an object", { msgs: [{ id: "5-0", body: "a", props: null }, ["b"]] }],
    ["a body row after an id that is not a position", { msgs: [["5x0", "a", {}], ["b"]] }],
    ["a body row after an id that is not a string", { msgs: [first, [50, "b"], ["c"]] }],
    ["a row with an id that is not a position", { msgs: [first, ["x", "b"]] }],
    ["a body row past 2^53", { msgs: [[`5-${Number.MAX_SAFE_INTEGER}`, "a", {}], ["b"]] }],
  ]) {
    test(`transfers with ${name}: closed with wsq:invalid-frame`, async () => {
      const s = await server((f) => ({
        op: "transfers",
        ch: f.ch,
        handle: f.handle,
        settled: false,
        delivery: 0,
        msgs: msgs(2),
        ...bad,
      }));
      const { c, errors } = client(s.url);
      c.subscribe("s", () => {}, { credit: 5 });
      await waitFor(() => errors.length > 0, "the error");
      assert.equal(errors[0].condition, "wsq:invalid-frame");
    });
  }

  test("an invalid compact option is refused at construction", () => {
    assert.throws(
      () => new Client("ws://127.0.0.1:1/ws", { token: "t", WebSocket, compact: "yes" }),
      /option compact/,
    );
  });
});
