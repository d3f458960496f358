// The client against a hostile or broken server (a scripted WebSocket server on a real
// socket): whatever it sends, the client closes that socket, tells the user through an
// "error" event and reconnects; nothing throws into user code.
import assert from "node:assert/strict";
import { afterEach, describe, test } from "node:test";
import WebSocket from "ws";
import { Client } from "../src/index.js";
import { sleep, waitFor, wsqServer } from "./helpers.js";

/** The fake server's idle in the heartbeat test (ms). */
const SERVER_IDLE = 2000;

const OPEN_ANSWER = {
  op: "open",
  node: "fake",
  idle: 0,
  max_sessions: 8,
  max_frame_bytes: 65536,
  tenant: "t",
  sub: "s",
  exp: 0,
};

/** A wsq.v1 server whose every socket runs `script(socket, frame)` for each client frame. */
async function fakeServer(script) {
  const { wss, url } = await wsqServer();
  const server = {
    url,
    sockets: [],
    received: [],
    close: () =>
      new Promise((resolve) => {
        for (const ws of wss.clients) ws.terminate();
        wss.close(() => resolve());
      }),
  };
  wss.on("connection", (ws) => {
    const index = server.sockets.push(ws) - 1;
    ws.on("error", () => {});
    ws.on("message", (data) => {
      let value;
      try {
        value = JSON.parse(data.toString());
      } catch {
        return;
      }
      for (const frame of Array.isArray(value) ? value : [value]) {
        server.received.push({ socket: index, frame });
        if (frame?.op === "close") {
          // Answer a close like a gateway, so that close() in cleanup does not wait.
          ws.send(JSON.stringify({ op: "close" }));
          ws.close(1000);
          continue;
        }
        script(ws, frame, index);
      }
    });
  });
  return server;
}

const cleanup = [];
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn();
});

async function setup(script, options = {}) {
  const server = await fakeServer(script);
  const client = new Client(server.url, {
    token: "t0ken",
    WebSocket,
    reconnectDelay: 30,
    maxReconnectDelay: 100,
    ...options,
  });
  const errors = [];
  client.on("error", (e) => errors.push(e));
  cleanup.push(
    () => server.close(),
    () => client.close(),
  );
  return { server, client, errors };
}

/** Answers open and begin like a gateway would; then `after(ws, frame, index)`. */
function gateway(after = () => {}) {
  return (ws, frame, index) => {
    if (frame.op === "open") ws.send(JSON.stringify(OPEN_ANSWER));
    else if (frame.op === "begin") ws.send(JSON.stringify({ op: "begin", ch: frame.ch }));
    after(ws, frame, index);
  };
}

describe("a broken server", () => {
  for (const [name, garbage] of [
    ["text that is not JSON", "{nope"],
    ["a frame without op", JSON.stringify({ hello: 1 })],
    ["an unknown op", JSON.stringify({ op: "launch-missiles" })],
    [
      "a frame on a channel never begun",
      JSON.stringify({ op: "flow", ch: 77, handle: 0, credit: 1 }),
    ],
    ["a number", "42"],
    ["a binary message", Buffer.from([1, 2, 3])],
  ]) {
    test(`${name}: closed with wsq:invalid-frame and reconnected`, async () => {
      const { server, client, errors } = await setup(
        gateway((ws, frame, index) => {
          if (frame.op === "open" && index === 0) ws.send(garbage);
        }),
      );
      await waitFor(
        () => server.sockets.length >= 2 && client.state === "connected",
        "a second connection",
      );
      assert.equal(errors[0].condition, "wsq:invalid-frame");
      const closes = server.received.filter((r) => r.socket === 0 && r.frame.op === "close");
      assert.equal(closes[0]?.frame.error?.condition, "wsq:invalid-frame", "the client said why");
    });
  }

  test("a transfer beyond any credit granted is refused, not queued without bound", async () => {
    const { server, client, errors } = await setup(
      gateway((ws, frame, index) => {
        if (frame.op === "attach" && index === 0) {
          ws.send(JSON.stringify({ ...frame, from: "0-0", recovered: true }));
          const flood = Array.from({ length: 500 }, (_, i) => ({
            op: "transfer",
            ch: frame.ch,
            handle: frame.handle,
            delivery: i,
            id: `1-${i}`,
            body: i,
          }));
          ws.send(JSON.stringify(flood));
        }
      }),
    );
    const seen = [];
    client.subscribe("flood.t", (msg) => seen.push(msg.id), { credit: 5 });
    await waitFor(
      () => errors.some((e) => e.condition === "wsq:invalid-frame"),
      "the flood refused",
    );
    await waitFor(() => server.sockets.length >= 2, "a reconnect");
    // Exactly the credit granted is handed over; the sixth transfer is the violation.
    assert.deepEqual(seen, ["1-0", "1-1", "1-2", "1-3", "1-4"]);
  });

  test("a server that never answers open is given up on after connectTimeout", async () => {
    const { server, errors } = await setup(() => {}, { connectTimeout: 300 });
    await waitFor(() => server.sockets.length >= 2, "a second attempt");
    assert.equal(errors[0].condition, "wsq:idle-timeout");
  });

  test("a server that stops talking is dropped after the client's idle", async () => {
    const { server, errors } = await setup(gateway(), { idle: 500 });
    await waitFor(() => server.sockets.length >= 2, "a second connection");
    assert.equal(errors[0].condition, "wsq:idle-timeout");
    const closes = server.received.filter((r) => r.socket === 0 && r.frame.op === "close");
    assert.equal(closes[0]?.frame.error?.condition, "wsq:idle-timeout");
  });

  test("heartbeats go out at half the server's idle when there is nothing else to say", async () => {
    const heartbeats = [];
    const server = await fakeServer((ws, frame) => {
      if (frame.op === "open") ws.send(JSON.stringify({ ...OPEN_ANSWER, idle: SERVER_IDLE }));
    });
    const client = new Client(server.url, { token: "t", WebSocket, idle: 0 });
    cleanup.push(
      () => server.close(),
      () => client.close(),
    );
    await waitFor(() => server.sockets.length === 1, "the connection");
    server.sockets[0].on("message", (data) => {
      if (data.toString() === "[]") heartbeats.push(Date.now());
    });
    await waitFor(() => heartbeats.length >= 4, "four heartbeats", 10000);
    // The contract: something at least every half of the server's idle. The client ticks every
    // quarter and sends once half minus a tick has passed, so each gap is about a quarter to a
    // half; a client waiting the whole idle (or the idle plus a tick) fails this.
    const gaps = heartbeats.slice(1).map((t, i) => t - heartbeats[i]);
    for (const gap of gaps) {
      assert.ok(gap <= SERVER_IDLE / 2, `a heartbeat gap of ${gap} ms (${gaps})`);
      assert.ok(gap >= SERVER_IDLE / 8, `a heartbeat gap of ${gap} ms (${gaps})`);
    }
  });

  test("going-away: the client comes back promptly", async () => {
    const { server, errors, client } = await setup(
      gateway((ws, frame, index) => {
        if (frame.op === "open" && index === 0) {
          ws.send(
            JSON.stringify({
              op: "close",
              error: { condition: "wsq:going-away", description: "draining" },
            }),
          );
          setTimeout(() => ws.close(1001), 20);
        }
      }),
      // A normal backoff would wait up to a minute; going-away waits under a second.
      { reconnectDelay: 60000, maxReconnectDelay: 60000 },
    );
    await waitFor(
      () => server.sockets.length >= 2 && client.state === "connected",
      "the prompt reconnect",
      5000,
    );
    assert.equal(errors[0].condition, "wsq:going-away");
  });

  test("a refused static token ends the client: one socket, no retries", async () => {
    const { server, client, errors } = await setup((ws, frame) => {
      if (frame.op === "open") {
        ws.send(
          JSON.stringify({
            op: "close",
            error: { condition: "wsq:unauthorized", description: "no" },
          }),
        );
        setTimeout(() => ws.close(1008), 10);
      }
    });
    await waitFor(() => client.state === "closed", "the client to give up");
    await sleep(200);
    assert.equal(server.sockets.length, 1);
    assert.equal(errors.at(-1).fatal, true);
    assert.equal(errors.at(-1).condition, "wsq:unauthorized");
  });

  test("a throwing listener or handler does not break the client", async () => {
    const original = console.error;
    const reported = [];
    console.error = (...args) => reported.push(args);
    try {
      const { client } = await setup(
        gateway((ws, frame) => {
          if (frame.op === "attach") {
            ws.send(JSON.stringify({ ...frame, from: "0-0", recovered: true }));
            ws.send(
              JSON.stringify({
                op: "transfer",
                ch: frame.ch,
                handle: frame.handle,
                delivery: 0,
                id: "5-0",
                body: "x",
              }),
            );
            ws.send(
              JSON.stringify({
                op: "transfer",
                ch: frame.ch,
                handle: frame.handle,
                delivery: 1,
                id: "5-1",
                body: "y",
              }),
            );
          }
        }),
      );
      const buggy = () => {
        throw new Error("listener bug");
      };
      client.on("state", buggy);
      const seen = [];
      client.subscribe("throws.t", (msg) => {
        seen.push(msg.body);
        throw new Error("handler bug");
      });
      await waitFor(() => seen.length === 2, "both deliveries despite the throws");
      assert.equal(client.state, "connected");
      client.off("state", buggy);
    } finally {
      console.error = original;
    }
  });

  test("a copy delivery at or before the resume position is not handed over twice", async () => {
    const { client } = await setup(
      gateway((ws, frame) => {
        if (frame.op === "attach") {
          ws.send(JSON.stringify({ ...frame, from: "5-0", recovered: true }));
          const t = (delivery, id) => ({
            op: "transfer",
            ch: frame.ch,
            handle: frame.handle,
            delivery,
            id,
            body: id,
          });
          ws.send(
            JSON.stringify([t(0, "4-9"), t(1, "5-0"), t(2, "5-1"), t(3, "5-1"), t(4, "10-0")]),
          );
        }
      }),
    );
    const seen = [];
    client.subscribe("dups.t", (msg) => seen.push(msg.id), { from: "5-0" });
    await waitFor(() => seen.includes("10-0"), "the last delivery");
    assert.deepEqual(seen, ["5-1", "10-0"]);
  });
});
