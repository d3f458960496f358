// Positions "<ms>-<seq>": each part 1 to 19 decimal digits (the gateway's rule), compared as
// numbers. No gateway needed: a scripted server where one is.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import WebSocket from "ws";
import { Client, comparePositions } from "../src/index.js";
import { waitFor, wsqServer } from "./helpers.js";

const MAX = "9999999999999999999"; // 19 digits: the largest part
const TWENTY = "1".repeat(20);

describe("positions", () => {
  test("parts of 1 to 19 digits compare as numbers", () => {
    assert.equal(comparePositions("1-0", "2-0"), -1);
    assert.equal(comparePositions("10-0", "9-0"), 1);
    assert.equal(comparePositions("5-10", "5-9"), 1);
    assert.equal(comparePositions("5-3", "5-3"), 0);
    assert.equal(comparePositions("0000000000000000007-0", "7-0"), 0);
    assert.equal(comparePositions(`${MAX}-${MAX}`, `${MAX}-${MAX}`), 0);
    // Past Number.MAX_SAFE_INTEGER and 2^63: still exact.
    assert.equal(comparePositions("9223372036854775807-0", "9223372036854775808-0"), -1);
    assert.equal(comparePositions(`${MAX}-0`, "1000000000000000000-0"), 1);
  });

  test("anything else is not a position", () => {
    const bad20 = [`${TWENTY}-0`, `0-${TWENTY}`];
    for (const bad of [...bad20, "1", "-1", "1-", "a-1", "1-1-1", " 1-1", "１-1", "1.5-0"]) {
      assert.throws(() => comparePositions(bad, "1-0"), TypeError, bad);
      assert.throws(() => comparePositions("1-0", bad), TypeError, bad);
    }
  });

  test("subscribe's from takes a position of at most 19 digits per part", async () => {
    const sockets = [];
    class Idle {
      constructor() {
        this.readyState = 0;
        sockets.push(this);
      }
      send() {}
      close() {
        this.readyState = 3;
      }
    }
    const client = new Client("ws://127.0.0.1:9/ws", { token: "t", WebSocket: Idle });
    try {
      const sub = client.subscribe("a.b", () => {}, { from: `${MAX}-${MAX}` });
      assert.equal(sub.address, "a.b");
      assert.throws(() => client.subscribe("a.b", () => {}, { from: `${TWENTY}-0` }), TypeError);
      assert.throws(() => client.subscribe("a.b", () => {}, { from: `1-${TWENTY}` }), TypeError);
    } finally {
      await client.close();
    }
  });

  test("a delivery whose id has a 20-digit part breaks the contract", async () => {
    const { wss, url } = await wsqServer();
    const closes = [];
    wss.on("connection", (ws) => {
      ws.on("message", (data) => {
        const value = JSON.parse(data.toString());
        for (const f of Array.isArray(value) ? value : [value]) {
          const answer = (frame) => ws.send(JSON.stringify(frame));
          if (f.op === "open") answer({ op: "open", node: "n", idle: 0, exp: 0 });
          if (f.op === "begin") answer({ op: "begin", ch: f.ch });
          if (f.op === "close") closes.push(f);
          if (f.op !== "attach") continue;
          answer({ ...f, from: "1-0", recovered: true });
          const transfer = { op: "transfer", ch: f.ch, handle: f.handle, settled: true, body: 1 };
          answer({ ...transfer, delivery: 0, id: `${MAX}-0` });
          answer({ ...transfer, delivery: 1, id: `${TWENTY}-0` });
        }
      });
    });
    const client = new Client(url, {
      token: "t",
      WebSocket,
      reconnectDelay: 5000,
    });
    const errors = [];
    client.on("error", (e) => errors.push(e));
    const got = [];
    try {
      client.subscribe("a.b", (msg) => got.push(msg.id));
      await waitFor(() => closes.length, "the client's close");
      assert.equal(errors[0]?.condition, "wsq:invalid-frame");
      assert.match(errors[0].description, /a transfer without a valid id/);
      assert.equal(closes[0].error?.condition, "wsq:invalid-frame");
      await waitFor(() => got.length, "the 19-digit delivery");
      assert.deepEqual(got, [`${MAX}-0`]);
    } finally {
      await client.close();
      for (const ws of wss.clients) ws.terminate();
      await new Promise((resolve) => wss.close(resolve));
    }
  });
});
