// One socket against the fake gateway and a fake clock (test/unit/fake.js): batching under
// max_frame_bytes, heartbeats at half the server's idle, the client's idle and connect timeouts,
// the close handshake both ways, and what breaks the contract.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { FakePeer, connected, settle, fakeWorld } from "./fake.js";

const world = fakeWorld();
const { setup } = world;

/** A transfer's text with an empty body and message_id id-0: its length. */
const BASE = '{"op":"transfer","ch":0,"handle":0,"delivery":0,"settled":false,"body":"","props":{"message_id":"id-0"}}'.length;
const transfers = (ws) => ws.sent.filter((m) => m.includes('"op":"transfer"'));
const heartbeats = (ws) => ws.sent.filter((m) => m === "[]").length;

describe("sending", () => {
  test("what is sent together goes in as few messages as max_frame_bytes allows", async () => {
    const { client, ws } = await setup({ open: { max_frame_bytes: 1024 }, senderCredit: 20 });
    const body = "x".repeat(300 - BASE); // each transfer text: 300 bytes
    for (let i = 0; i < 7; i++) client.publish("a", body, { messageId: `id-${i}` });
    await settle();
    const messages = transfers(ws);
    const sizes = messages.map((m) => Buffer.byteLength(m));
    // 2 + 3 * 301 = 905 fit a message of 1024; a fourth would make 1206.
    assert.deepEqual(
      messages.map((m) => JSON.parse(m).length),
      [3, 3, undefined],
      `sizes ${sizes}`,
    );
    assert.equal(JSON.parse(messages[2]).op, "transfer", "a single frame is not a batch");
    for (const m of messages) assert.ok(Buffer.byteLength(m) <= 1024);
    assert.equal(messages[0], `[${JSON.stringify(JSON.parse(messages[0])[0])},${JSON.stringify(JSON.parse(messages[0])[1])},${JSON.stringify(JSON.parse(messages[0])[2])}]`);
  });

  test("a batch that fills max_frame_bytes exactly is one message", async () => {
    const { client, ws } = await setup({ open: { max_frame_bytes: 1024 }, senderCredit: 20 });
    const base = BASE;
    // Two texts of n bytes: 2 + 2 * (n + 1) = 1024 exactly.
    const n = 510;
    client.publish("a", "y".repeat(n - base), { messageId: "id-0" });
    client.publish("a", "y".repeat(n - base), { messageId: "id-1" });
    await settle();
    const messages = transfers(ws);
    assert.equal(messages.length, 1);
    assert.equal(Buffer.byteLength(messages[0]), 1023);
    const { client: c2, ws: ws2 } = await setup({ open: { max_frame_bytes: 1024 }, senderCredit: 20 });
    c2.publish("a", "y".repeat(n + 1 - base), { messageId: "id-0" });
    c2.publish("a", "y".repeat(n - base), { messageId: "id-1" });
    await settle();
    assert.equal(transfers(ws2).length, 2, "one byte more: two messages");
  });

  test("nothing is written before the socket opens; all of it once it does", async () => {
    const peer = new FakePeer({ autoAccept: false });
    const { client } = await connected(peer);
    world.clients.push(client);
    client.publish("a", 1);
    await settle();
    assert.deepEqual(peer.last.sent, []);
    peer.last.accept("");
    await settle();
    assert.deepEqual(JSON.parse(peer.last.sent[0]).map((f) => f.op), ["open", "begin", "attach"]);
  });

  test("a socket whose send throws is lost", async () => {
    const { peer, client, ws } = await setup();
    peer.failSend = "EPIPE";
    client.publish("a", 1).catch(() => {});
    await settle();
    assert.equal(client.state, "disconnected");
    assert.equal(ws.closedBy, 1000);
  });
});

describe("heartbeats", () => {
  test("[] at half the server's idle, less a tick, when there is nothing else", async () => {
    const { ws } = await setup({ open: { idle: 2000 } });
    // Ticks every 500 ms (a quarter of 2000); one goes when 2000 / 2 - 500 - 10 ms have passed.
    await world.clock.advance(499);
    assert.equal(heartbeats(ws), 0);
    await world.clock.advance(1);
    assert.equal(heartbeats(ws), 1);
    await world.clock.advance(500);
    assert.equal(heartbeats(ws), 2);
  });

  test("anything sent in between is a heartbeat too", async () => {
    const { client, ws } = await setup({ open: { idle: 2000 } });
    await world.clock.advance(300);
    client.subscribe("a", () => {});
    await settle();
    await world.clock.advance(200); // tick at 500: 200 ms since the attach
    assert.equal(heartbeats(ws), 0);
    await world.clock.advance(500); // tick at 1000: 700 ms
    assert.equal(heartbeats(ws), 1);
  });

  test("ticks at most every second, at least every 50 ms", async () => {
    const { ws } = await setup({ open: { idle: 10000 } });
    // 10000 / 2 - 1000 - 10 = 3990: the fourth tick of a second.
    await world.clock.advance(3999);
    assert.equal(heartbeats(ws), 0);
    await world.clock.advance(1);
    assert.equal(heartbeats(ws), 1);
    const { ws: fast } = await setup({ open: { idle: 100 } });
    // 100 / 4 = 25 -> 50 ms ticks; 50 - 50 - 10 < 0: one every tick.
    await world.clock.advance(49);
    assert.equal(heartbeats(fast), 0);
    await world.clock.advance(1);
    assert.equal(heartbeats(fast), 1);
    await world.clock.advance(50);
    assert.equal(heartbeats(fast), 2);
  });

  test("a server without idle gets none", async () => {
    const { ws } = await setup({ open: { idle: 0 } });
    await world.clock.advance(60000);
    assert.equal(heartbeats(ws), 0);
  });

  test("the client's own idle sets the tick when it is the shorter", async () => {
    const { ws } = await setup({ open: { idle: 8000 } }, { idle: 2000 });
    // Ticks every 500 ms (2000 / 4); a heartbeat once 4000 - 500 - 10 have passed.
    await world.clock.advance(1900);
    ws.push([]); // the server's heartbeat keeps the client's idle satisfied
    await world.clock.advance(1100);
    assert.equal(heartbeats(ws), 0);
    await world.clock.advance(500);
    assert.equal(heartbeats(ws), 1);
  });
});

describe("silence", () => {
  test("nothing from the gateway for the client's idle: close with idle-timeout, reconnect", async () => {
    const { client, ws, errors, peer } = await setup({}, { idle: 500 });
    // Ticks every 125 ms; dropped at the first tick more than 500 ms after the last message.
    await world.clock.advance(624);
    assert.equal(errors.length, 0);
    await world.clock.advance(1);
    assert.equal(errors.length, 1);
    assert.equal(errors[0].condition, "wsq:idle-timeout");
    assert.equal(errors[0].message, "wsq:idle-timeout: nothing from the gateway for 500 ms");
    assert.equal(errors[0].scope, "connection");
    assert.deepEqual(ws.frames.at(-1), {
      op: "close",
      error: { condition: "wsq:idle-timeout", description: "nothing received" },
    });
    assert.equal(client.state, "disconnected");
    await world.clock.advance(250);
    assert.equal(peer.sockets.length, 2);
  });

  test("anything received resets it", async () => {
    const { ws, errors } = await setup({}, { idle: 500 });
    await world.clock.advance(400);
    ws.push([]);
    await world.clock.advance(500);
    assert.equal(errors.length, 0);
    await world.clock.advance(125);
    assert.equal(errors.length, 1);
  });

  test("idle 0: never", async () => {
    const { errors } = await setup({}, { idle: 0 });
    await world.clock.advance(3600000);
    assert.equal(errors.length, 0);
  });

  test("no open answer within connectTimeout: the connection is given up and tried again", async () => {
    const { client, errors, peer } = await setup({ answerOpen: false }, { connectTimeout: 300 });
    assert.equal(client.state, "connecting");
    await world.clock.advance(599);
    assert.equal(errors.length, 0);
    await world.clock.advance(1);
    assert.equal(errors[0].condition, "wsq:idle-timeout");
    assert.equal(errors[0].message, "wsq:idle-timeout: the gateway did not answer open");
    assert.equal(errors[0].scope, "connection");
    assert.deepEqual(peer.sockets[0].frames.at(-1), { op: "close" });
    assert.equal(client.state, "disconnected");
    await world.clock.advance(250);
    assert.equal(peer.sockets.length, 2);
  });

  test("the connect timer ticks at most every second", async () => {
    const { errors } = await setup({ answerOpen: false }, { connectTimeout: 5000 });
    await world.clock.advance(5999);
    assert.equal(errors.length, 0);
    await world.clock.advance(1);
    assert.equal(errors.length, 1);
  });
});

describe("the server's frames", () => {
  test("open: the client's info and events", async () => {
    const peer = new FakePeer({ open: { exp: 99, max_sessions: 2, idle: 1000 } });
    const opens = [];
    const states = [];
    const { client } = await connected(peer);
    world.clients.push(client);
    client.on("open", (info) => opens.push(info));
    client.on("state", (s) => states.push(s));
    assert.equal(client.connected, true);
    assert.equal(client.state, "connected");
    assert.deepEqual(client.info, {
      node: "fake-node",
      tenant: "acme",
      sub: "alice",
      exp: 99,
      idle: 1000,
      maxSessions: 2,
      maxFrameBytes: 65536,
      compact: false,
      rows: false,
    });
    peer.last.serverClose(1006);
    await settle();
    assert.equal(client.info, null);
    assert.equal(client.connected, false);
    await world.clock.advance(250);
    assert.deepEqual(states, ["disconnected", "connecting", "connected"]);
    assert.equal(opens.length, 1);
    assert.equal(opens[0].node, "fake-node");
    assert.notEqual(opens[0], client.info, "a copy");
  });

  test("before the open answer: info is null, and only open or close may come", async () => {
    const { client, ws, errors } = await setup({ answerOpen: false });
    assert.equal(client.info, null);
    ws.push({ op: "flow", ch: 0, handle: 0, credit: 1 });
    await settle();
    assert.equal(errors[0].description, 'the server sent "flow" before open');
  });

  for (const [name, send, why] of [
    ["text that is not JSON", (ws) => ws.pushRaw("{nope"), "a message that is not JSON"],
    ["a binary message", (ws) => ws.pushRaw(new Uint8Array([1])), "a binary message"],
    ["a frame without op", (ws) => ws.push({ hello: 1 }), "a frame without an op"],
    ["an unknown op", (ws) => ws.push({ op: "launch" }), 'an unknown op "launch"'],
    ["a second open", (ws) => ws.push({ op: "open" }), "a second open"],
    ["a bad refresh", (ws) => ws.push({ op: "refresh" }), "a refresh without exp"],
    ["a frame on a channel never begun", (ws) => ws.push({ op: "flow", ch: 77, handle: 0, credit: 1 }), '"flow" on a channel that is not begun'],
    ["a channel out of range", (ws) => ws.push({ op: "end", ch: 70000 }), '"end" on a channel that is not begun'],
    ["a detach on a handle not attached", (ws) => ws.push({ op: "detach", ch: 0, handle: 5 }), '"detach" on a handle that is not attached'],
  ]) {
    test(`${name}: closed with invalid-frame and the reason, then reconnected`, async () => {
      const { client, ws, errors, peer } = await setup();
      client.subscribe("a", () => {});
      await settle();
      send(ws);
      ws.push({ op: "flow", ch: 0, handle: 0, credit: 1 }); // after the violation: not read
      await settle();
      assert.equal(errors.length, 1);
      assert.equal(errors[0].condition, "wsq:invalid-frame");
      assert.equal(errors[0].description, `the server sent ${why}`);
      assert.equal(errors[0].scope, "connection");
      assert.deepEqual(ws.ops("close"), [
        { op: "close", error: { condition: "wsq:invalid-frame", description: `the server sent ${why}` } },
      ]);
      assert.equal(ws.closedBy, 1000);
      assert.equal(client.state, "disconnected");
      await world.clock.advance(250);
      assert.equal(peer.sockets.length, 2);
      assert.equal(client.state, "connected");
    });
  }

  test("a frame the client fails on is a violation too", async () => {
    const { client, ws, errors } = await setup();
    const sub = client.subscribe("a", () => {});
    await sub.ready;
    ws.push({ op: "transfer", ch: 0, handle: 0, delivery: 0, id: "1-0" }, { op: "transfer", ch: 0, handle: 0, delivery: 1, id: "1-0" });
    sub._resumeFrom = {}; // comparePositions throws a TypeError on it
    await settle();
    assert.match(errors[0].description, /^the server sent a frame the client failed on: TypeError: not positions/);
  });

  test("a subprotocol other than wsq.v1 is refused", async () => {
    const { client, errors, peer } = await setup({ autoAccept: false });
    peer.last.accept("mqtt");
    await settle();
    assert.equal(errors[0].description, "the server sent the server chose the subprotocol mqtt");
    assert.equal(client.state, "disconnected");
  });

  test("refresh: the new exp in info, and a refresh event", async () => {
    const { client, ws } = await setup({ open: { exp: 5 } });
    const seen = [];
    client.on("refresh", (e) => seen.push(e));
    ws.push({ op: "refresh", exp: 77 });
    await settle();
    assert.deepEqual(seen, [{ exp: 77 }]);
    assert.equal(client.info.exp, 77);
  });

  test("the server's close: told, answered, the socket dropped when it does not close it", async () => {
    const { client, ws, errors, peer } = await setup({}, { closeTimeout: 300 });
    ws.push({ op: "close", error: { condition: "wsq:internal-error", description: "oops" } }, { op: "bogus" });
    await settle();
    assert.deepEqual(ws.ops("close"), [{ op: "close" }]);
    assert.equal(errors.length, 0, "told once the socket is gone");
    assert.equal(client.state, "connected");
    await world.clock.advance(299);
    assert.equal(client.state, "connected");
    await world.clock.advance(1);
    assert.equal(errors.length, 1);
    assert.equal(errors[0].condition, "wsq:internal-error");
    assert.equal(errors[0].scope, "connection");
    assert.equal(client.state, "disconnected");
    await world.clock.advance(250);
    assert.equal(peer.sockets.length, 2);
  });

  test("the server's close without error, then its socket closing: reconnected quietly", async () => {
    const { client, ws, errors, peer } = await setup();
    ws.push({ op: "close" });
    await settle();
    ws.serverClose(1000);
    await settle();
    assert.equal(errors.length, 0);
    assert.equal(client.state, "disconnected");
    await world.clock.advance(250);
    assert.equal(peer.sockets.length, 2);
  });

  test("a session ended by the server: told, answered, and the socket started afresh", async () => {
    const { client, ws, errors, peer } = await setup();
    const sub = client.subscribe("a", () => {});
    await sub.ready;
    ws.push({ op: "end", ch: 0, error: { condition: "wsq:resource-limit-exceeded", description: "x" } });
    await settle();
    assert.equal(errors[0].condition, "wsq:resource-limit-exceeded");
    assert.equal(errors[0].scope, "session");
    assert.deepEqual(ws.ops("end"), [{ op: "end", ch: 0 }]);
    assert.deepEqual(ws.ops("close"), [{ op: "close" }]);
    assert.equal(client.state, "disconnected");
    await world.clock.advance(250);
    assert.equal(peer.last.ops("attach").length, 1);
  });
});

describe("closing", () => {
  test("close waits for the server's answer, or closeTimeout", async () => {
    const { client, ws } = await setup({ answerClose: false }, { closeTimeout: 400 });
    let done = false;
    client.close().then(() => (done = true));
    await settle();
    assert.deepEqual(ws.frames.at(-1), { op: "close" });
    await world.clock.advance(399);
    assert.equal(done, false);
    await world.clock.advance(1);
    assert.equal(done, true);
    assert.equal(client.state, "closed");
  });

  test("a socket whose close handshake never ends is terminated after closeTimeout", async () => {
    const { client, ws } = await setup({ answerClose: false, silentClose: true }, { closeTimeout: 200 });
    let done = false;
    client.close().then(() => (done = true));
    await world.clock.advance(200); // the close answer's wait
    assert.equal(done, false);
    assert.equal(ws.terminated, false);
    await world.clock.advance(200); // the socket's own close
    assert.equal(ws.terminated, true);
    assert.equal(done, true);
  });

  test("closing before the socket opens", async () => {
    const { client, peer } = await setup({ autoAccept: false });
    await client.close();
    assert.equal(peer.last.closedBy, 1000);
    assert.deepEqual(peer.last.sent, []);
    assert.equal(client.state, "closed");
  });
});

describe("after the server's close", () => {
  test("no idle timeout and no heartbeat while its socket closes", async () => {
    const { client, ws, errors } = await setup({ open: { idle: 400 } }, { idle: 500, closeTimeout: 5000 });
    ws.push({ op: "close" });
    await world.clock.advance(4999);
    assert.deepEqual(errors, []);
    assert.equal(heartbeats(ws), 0);
    assert.equal(client.state, "connected");
    await world.clock.advance(1);
    assert.equal(client.state, "disconnected");
  });

  test("no connect timeout either", async () => {
    const { client, ws, errors } = await setup({ answerOpen: false }, { connectTimeout: 100, closeTimeout: 3000 });
    ws.push({ op: "close", error: { condition: "wsq:internal-error" } });
    await world.clock.advance(2999);
    assert.deepEqual(errors, []);
    await world.clock.advance(1);
    assert.equal(errors[0].condition, "wsq:internal-error");
    assert.equal(client.state, "disconnected");
  });
});

describe("edges", () => {
  test("a heartbeat exactly at half the server's idle less a tick", async () => {
    // The client's idle 2000: ticks every 500 ms; the server's 4020: one is due once
    // 2010 - 500 - 10 = 1500 ms have passed, which the third tick sees exactly.
    const { ws } = await setup({ open: { idle: 4020 } }, { idle: 2000 });
    await world.clock.advance(1000);
    assert.equal(heartbeats(ws), 0);
    await world.clock.advance(500);
    assert.equal(heartbeats(ws), 1);
  });

  test("the open frame: compact as asked, the client's name at most 256 characters", async () => {
    const { ws } = await setup({}, { compact: false, clientName: "n".repeat(300) });
    assert.deepEqual(ws.frames[0], { op: "open", token: "tok-1", idle: 30000, client: "n".repeat(256), compact: false, rows: false });
    const { ws: plain } = await setup();
    assert.equal(plain.frames[0].client, "wsq-client/0.1.0");
    assert.equal(plain.frames[0].compact, true);
    assert.equal(plain.frames[0].rows, true);
  });

  test("a socket without a subprotocol property (null) or an empty one is accepted", async () => {
    for (const protocol of [null, ""]) {
      const { client, peer, errors } = await setup({ autoAccept: false });
      peer.last.accept(protocol);
      await settle();
      assert.equal(client.state, "connected");
      assert.deepEqual(errors, []);
    }
  });

  test("after the server's close nothing more is sent, and our close goes once", async () => {
    const { client, ws } = await setup({}, { closeTimeout: 5000 });
    ws.push({ op: "close" }, { op: "launch" });
    await settle();
    client.subscribe("a", () => {});
    await settle();
    assert.deepEqual(ws.ops("attach"), []);
    client.close();
    await settle();
    assert.deepEqual(ws.ops("close"), [{ op: "close" }]);
  });

  test("frames after the one that drops the socket are not read", async () => {
    const { client, ws, errors } = await setup();
    const sub = client.subscribe("a", () => {});
    await sub.ready;
    ws.push({ op: "end", ch: 0, error: { condition: "wsq:internal-error" } }, { op: "flow", ch: 0, handle: 0, credit: 1 });
    await settle();
    assert.deepEqual(errors.map((e) => e.condition), ["wsq:internal-error"]);
  });

  test("a session ended without error: nothing told", async () => {
    const { client, ws, errors } = await setup();
    const sub = client.subscribe("a", () => {});
    await sub.ready;
    ws.push({ op: "end", ch: 0 });
    await settle();
    assert.deepEqual(errors, []);
    assert.equal(client.state, "disconnected");
  });
});

