// Publishing against the fake gateway (test/unit/fake.js): the sender link and its credit, the
// exact transfers, the dispositions that settle them, publishes kept across a lost socket, the
// bounds on senders, sessions and links.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { WsqError } from "../../src/errors.js";
import { FakePeer, connected, fakeClient, settle, fakeWorld } from "./fake.js";

const world = fakeWorld();
const { setup } = world;

const transfer = (ch, handle, delivery, body, messageId) =>
  `{"op":"transfer","ch":${ch},"handle":${handle},"delivery":${delivery},"settled":false,"body":${JSON.stringify(body)},"props":{"message_id":"${messageId}"}}`;

describe("publish", () => {
  test("pipelined: open, begin and the sender's attach in one message; then the transfer", async () => {
    const peer = new FakePeer();
    const c = fakeClient(peer, { clientName: "app/2" });
    world.clients.push(c);
    const p = c.publish("chat.a", { text: "hi" }, { subject: "chat.a.x" });
    assert.equal(c.pendingPublishes, 1);
    await settle();
    const ws = peer.last;
    assert.deepEqual(JSON.parse(ws.sent[0]), [
      { op: "open", token: "tok-1", idle: 30000, client: "app/2", compact: true, rows: true },
      { op: "begin", ch: 0 },
      { op: "attach", ch: 0, handle: 0, role: "sender", address: "chat.a" },
    ]);
    assert.equal(
      ws.sent[1],
      '{"op":"transfer","ch":0,"handle":0,"delivery":0,"settled":false,"body":{"text":"hi"},"props":{"subject":"chat.a.x","message_id":"m-1"}}',
    );
    ws.push({ op: "disposition", ch: 0, first: 0, outcome: "accepted", ids: ["7-0"] });
    assert.equal(await p, "7-0");
    assert.equal(c.pendingPublishes, 0);
  });

  test("transfers go out as credit allows, numbered per session", async () => {
    const { client, ws } = await setup({ senderCredit: 2 });
    const results = [1, 2, 3, 4].map((n) => client.publish("a", n));
    await settle();
    const sent = () => ws.ops("transfer").map((f) => [f.delivery, f.body]);
    assert.deepEqual(sent(), [
      [0, 1],
      [1, 2],
    ]);
    ws.push({ op: "flow", ch: 0, handle: 0, credit: 1 });
    await settle();
    assert.deepEqual(sent(), [
      [0, 1],
      [1, 2],
      [2, 3],
    ]);
    ws.push({ op: "flow", ch: 0, handle: 0, credit: 5 });
    await settle();
    assert.equal(ws.ops("transfer").length, 4);
    // One disposition for a range: each publish resolves with its own position.
    ws.push({ op: "disposition", ch: 0, first: 0, last: 3, ids: ["1-0", "1-1", "1-2", "1-3"] });
    assert.deepEqual(await Promise.all(results), ["1-0", "1-1", "1-2", "1-3"]);
  });

  test("a second address gets its own link on the same session", async () => {
    const { client, ws } = await setup();
    client.publish("a", 1);
    client.publish("b", 2);
    await settle();
    assert.deepEqual(ws.ops("attach").map((f) => [f.ch, f.handle, f.address]), [
      [0, 0, "a"],
      [0, 1, "b"],
    ]);
    assert.equal(ws.ops("begin").length, 1);
    assert.deepEqual(ws.ops("transfer").map((f) => [f.handle, f.delivery]), [
      [0, 0],
      [1, 1],
    ]);
  });

  test("a rejected publish rejects with the gateway's error; partial ranges settle only theirs", async () => {
    const { client, ws } = await setup();
    const a = client.publish("a", 1);
    const b = client.publish("a", 2);
    const c = client.publish("a", 3);
    await settle();
    ws.push({
      op: "disposition",
      ch: 0,
      first: 1,
      outcome: "rejected",
      error: { condition: "wsq:forbidden", description: "no" },
    });
    await assert.rejects(b, (e) => {
      assert.ok(e instanceof WsqError);
      assert.equal(e.condition, "wsq:forbidden");
      assert.equal(e.description, "no");
      assert.equal(e.scope, "message");
      assert.equal(e.address, "a");
      return true;
    });
    assert.equal(client.pendingPublishes, 2);
    // A range wider than what is pending settles what is pending in it (and nothing twice).
    ws.push({ op: "disposition", ch: 0, first: 0, last: 99, outcome: "accepted", ids: ["5-0", "x", "5-2"] });
    assert.equal(await a, "5-0");
    assert.equal(await c, "5-2");
    assert.equal(client.pendingPublishes, 0);
    ws.push({ op: "disposition", ch: 0, first: 0, outcome: "accepted", ids: ["9-9"] });
    await settle();
    assert.equal(client.state, "connected", "nothing pending: ignored");
  });

  test("a disposition released, modified or rejected without error: a WsqError all the same", async () => {
    const { client, ws } = await setup();
    const a = client.publish("a", 1);
    await settle();
    ws.push({ op: "disposition", ch: 0, first: 0, outcome: "released" });
    await assert.rejects(a, { condition: "wsq:internal-error", scope: "message", address: "a" });
  });

  test("an accepted disposition without ids breaks the contract", async () => {
    const { client, ws, errors } = await setup();
    client.publish("a", 1).catch(() => {});
    await settle();
    ws.push({ op: "disposition", ch: 0, first: 0, outcome: "accepted" });
    await settle();
    assert.equal(errors[0].condition, "wsq:invalid-frame");
    assert.equal(errors[0].description, "the server sent an accepted disposition without its ids");
    assert.deepEqual(ws.ops("close").at(-1).error, {
      condition: "wsq:invalid-frame",
      description: "the server sent an accepted disposition without its ids",
    });
  });

  test("a disposition on a channel not begun, or with a bad range, breaks the contract", async () => {
    for (const bad of [
      [{ op: "disposition", ch: 5, first: 0 }, 'the server sent "disposition" on a channel that is not begun'],
      [{ op: "disposition", ch: 0, first: 3, last: 1 }, "the server sent a disposition with a bad last"],
    ]) {
      const { client, ws, errors } = await setup();
      client.publish("a", 1).catch(() => {});
      await settle();
      ws.push(bad[0]);
      await settle();
      assert.equal(errors[0]?.description, bad[1]);
    }
  });

  test("publishes a lost socket never answered go again on the next, in order, same ids", async () => {
    const { peer, client, ws } = await setup({ senderCredit: 2 });
    const all = [1, 2, 3].map((n) => client.publish("a", n));
    await settle();
    assert.equal(ws.ops("transfer").length, 2);
    ws.serverClose(1006);
    await settle();
    assert.equal(client.state, "disconnected");
    assert.equal(client.pendingPublishes, 3);
    // The backoff: Math.random 0.5 of the first ceiling (500 ms): 250 ms.
    assert.deepEqual(world.clock.pending().slice(0, 1), [250]);
    await world.clock.advance(250);
    const ws2 = peer.last;
    assert.notEqual(ws2, ws);
    await settle();
    assert.deepEqual(
      ws2.ops("transfer").map((f) => [f.delivery, f.body, f.props.message_id]),
      [
        [0, 1, "m-1"],
        [1, 2, "m-2"],
      ],
    );
    ws2.push({ op: "flow", ch: 0, handle: 0, credit: 1 });
    await settle();
    assert.deepEqual(ws2.ops("transfer").map((f) => f.body), [1, 2, 3]);
    ws2.push({ op: "disposition", ch: 0, first: 0, last: 2, ids: ["1-0", "1-1", "1-2"] });
    assert.deepEqual(await Promise.all(all), ["1-0", "1-1", "1-2"]);
  });

  test("the exact transfer text on a later socket", async () => {
    const { client, ws } = await setup({ senderCredit: 1 });
    client.publish("a", "x", { messageId: "id-1" });
    await settle();
    assert.equal(ws.sent.at(-1), transfer(0, 0, 0, "x", "id-1"));
  });

  test("a publish while offline waits in the outbox; a full outbox refuses", async () => {
    const { client } = await setup({ answerOpen: false, autoAccept: false }, { outboxSize: 1 });
    const first = client.publish("a", 1);
    await assert.rejects(client.publish("a", 2), { condition: "wsq:resource-limit-exceeded" });
    await assert.rejects(client.publish("a..", 2), { condition: "wsq:invalid-frame" });
    assert.equal(client.pendingPublishes, 1);
    client.close();
    await assert.rejects(first, (e) => e.condition === "wsq-client:closed" && e.address === "a");
    await assert.rejects(client.publish("a", 3), {
      condition: "wsq-client:closed",
      message: "wsq-client:closed: the client is closed",
      address: "a",
    });
  });

  test("a publish larger than the gateway's max_frame_bytes is refused at once", async () => {
    const { client } = await setup({ open: { max_frame_bytes: 1024 } });
    await assert.rejects(client.publish("a", "x".repeat(1000)), { condition: "wsq:frame-too-large" });
    const ok = client.publish("a", "x".repeat(800));
    await settle();
    assert.equal(client.pendingPublishes, 1);
    void ok;
  });

  test("close: every pending publish rejects, sent or not; the close handshake is done", async () => {
    const { client, ws } = await setup({ senderCredit: 1 });
    const states = [];
    client.on("state", (s) => states.push(s));
    const a = client.publish("a", 1);
    const b = client.publish("a", 2);
    await settle();
    const done = client.close();
    assert.equal(client.close(), done, "the same promise");
    await assert.rejects(a, { condition: "wsq-client:closed", message: "wsq-client:closed: the client was closed", address: "a" });
    await assert.rejects(b, { condition: "wsq-client:closed" });
    await done;
    assert.equal(client.state, "closed");
    assert.deepEqual(states, ["closed"]);
    assert.deepEqual(ws.frames.at(-1), { op: "close" });
    assert.equal(ws.closedBy, 1000);
    assert.throws(() => client.subscribe("a", () => {}), { condition: "wsq-client:closed" });
    await client.close();
  });
});

describe("sender links", () => {
  test("a final detach (forbidden) fails the address's publishes; the next publish attaches again", async () => {
    const { client, ws, errors } = await setup({ senderCredit: 0 });
    const a = client.publish("a", 1);
    const b = client.publish("a", 2);
    await settle();
    ws.push({ op: "detach", ch: 0, handle: 0, error: { condition: "wsq:forbidden", description: "no" } });
    await assert.rejects(a, { condition: "wsq:forbidden", scope: "link", address: "a" });
    await assert.rejects(b, { condition: "wsq:forbidden" });
    assert.deepEqual(ws.frames.at(-1), { op: "detach", ch: 0, handle: 0 }, "the detach answered");
    assert.equal(errors.length, 0, "told through the publishes");
    client.publish("a", 3);
    await settle();
    assert.deepEqual(ws.ops("attach").map((f) => f.handle), [0, 1]);
  });

  test("a retryable detach: the error told, the link attached again after the backoff", async () => {
    const { client, ws, errors } = await setup({ answerAttach: false }, { reconnectDelay: 100 });
    const a = client.publish("a", 1);
    await settle();
    ws.push({ op: "detach", ch: 0, handle: 0, error: { condition: "wsq:resource-limit-exceeded", description: "busy" } });
    await settle();
    assert.equal(errors.length, 1);
    assert.equal(errors[0].condition, "wsq:resource-limit-exceeded");
    assert.equal(errors[0].address, "a");
    assert.equal(ws.ops("attach").length, 1);
    // The first retry: 0.5 of 100 ms; the second 0.5 of 200 ms.
    await world.clock.advance(49);
    assert.equal(ws.ops("attach").length, 1);
    await world.clock.advance(1);
    assert.equal(ws.ops("attach").length, 2);
    ws.push({ op: "detach", ch: 0, handle: 1, error: { condition: "wsq:internal-error" } });
    await world.clock.advance(99);
    assert.equal(ws.ops("attach").length, 2);
    await world.clock.advance(1);
    assert.equal(ws.ops("attach").length, 3);
    const answer = (handle) => ws.push({ op: "attach", ch: 0, handle, role: "sender", address: "a" });
    answer(2);
    ws.push({ op: "flow", ch: 0, handle: 2, credit: 1 });
    await settle();
    assert.deepEqual(ws.ops("transfer").map((f) => f.handle), [2]);
    ws.push({ op: "disposition", ch: 0, first: 0, ids: ["3-0"] });
    assert.equal(await a, "3-0");
    // Attached: the next retry starts from the first delay again.
    client.publish("a", 2); // no credit left: it waits
    ws.push({ op: "detach", ch: 0, handle: 2, error: { condition: "wsq:internal-error" } });
    await world.clock.advance(49);
    assert.equal(ws.ops("attach").length, 3);
    await world.clock.advance(1);
    assert.equal(ws.ops("attach").length, 4);
    assert.equal(errors.length, 3);
    // An idle sender detached is not retried (nor told): the next publish attaches it at once.
    answer(3);
    ws.push({ op: "flow", ch: 0, handle: 3, credit: 1 });
    await settle();
    ws.push({ op: "disposition", ch: 0, first: 1, ids: ["3-1"] });
    await settle();
    ws.push({ op: "detach", ch: 0, handle: 3, error: { condition: "wsq:internal-error" } });
    await world.clock.advance(10000);
    assert.equal(errors.length, 3);
    assert.equal(ws.ops("attach").length, 4);
    client.publish("a", 3);
    await settle();
    assert.equal(ws.ops("attach").length, 5);
  });

  test("an idle sender detached without error stays detached; a busy one is attached again", async () => {
    const { client, ws, errors } = await setup({ senderCredit: 1 });
    await Promise.all([client.publish("a", 1), (async () => {
      await settle();
      ws.push({ op: "disposition", ch: 0, first: 0, ids: ["1-0"] });
    })()]);
    ws.push({ op: "detach", ch: 0, handle: 0 });
    await world.clock.advance(10000);
    assert.equal(errors.length, 0);
    assert.equal(ws.ops("attach").length, 1);
  });

  test("in-flight publishes of a detached sender go back to its queue, in order", async () => {
    const { client, ws } = await setup({ senderCredit: 2 });
    const all = [1, 2].map((n) => client.publish("a", n));
    await settle();
    ws.push({ op: "detach", ch: 0, handle: 0, error: { condition: "wsq:internal-error" } });
    await world.clock.advance(250);
    assert.equal(ws.ops("attach").length, 2);
    await settle();
    assert.deepEqual(ws.ops("transfer").map((f) => [f.handle, f.delivery, f.body]), [
      [0, 0, 1],
      [0, 1, 2],
      [1, 2, 1],
      [1, 3, 2],
    ]);
    ws.push({ op: "disposition", ch: 0, first: 2, last: 3, ids: ["2-0", "2-1"] });
    assert.deepEqual(await Promise.all(all), ["2-0", "2-1"]);
  });

  test("past maxSenders the least recently used idle sender is detached", async () => {
    const { client, ws } = await setup({ senderCredit: 5 }, { maxSenders: 2 });
    const answer = async (first) => {
      await settle();
      ws.push({ op: "disposition", ch: 0, first, ids: [`${first}-0`] });
    };
    await Promise.all([client.publish("a", 1), answer(0)]);
    world.clock.now += 10;
    await Promise.all([client.publish("b", 1), answer(1)]);
    world.clock.now += 10;
    await Promise.all([client.publish("a", 2), answer(2)]); // a used last: b is the oldest
    world.clock.now += 10;
    const c = client.publish("c", 1);
    await settle();
    assert.deepEqual(ws.ops("detach"), [{ op: "detach", ch: 0, handle: 1 }]);
    assert.deepEqual(ws.ops("attach").map((f) => f.address), ["a", "b", "c"]);
    await answer(3);
    assert.equal(await c, "3-0");
  });

  test("no idle sender to evict: the new one is added beyond", async () => {
    const { client, ws } = await setup({ senderCredit: 0 }, { maxSenders: 1 });
    client.publish("a", 1);
    client.publish("b", 1);
    await settle();
    assert.deepEqual(ws.ops("detach"), []);
    assert.deepEqual(ws.ops("attach").map((f) => f.address), ["a", "b"]);
  });

  test("no room for another link: the publish fails with resource-limit-exceeded", async () => {
    const { client, ws } = await setup({ senderCredit: 0 }, { linksPerSession: 2, maxSessions: 2 });
    const ps = ["a", "b", "c", "d", "e"].map((x) => client.publish(x, 1));
    await assert.rejects(ps[4], {
      condition: "wsq:resource-limit-exceeded",
      message: "wsq:resource-limit-exceeded: more than 4 links",
      address: "e",
    });
    assert.deepEqual(ws.ops("begin"), [{ op: "begin", ch: 0 }, { op: "begin", ch: 1 }]);
    assert.deepEqual(ws.ops("attach").map((f) => [f.ch, f.handle, f.address]), [
      [0, 0, "a"],
      [0, 1, "b"],
      [1, 0, "c"],
      [1, 1, "d"],
    ]);
  });

  test("the gateway's max_sessions bounds the sessions too", async () => {
    const { client, ws } = await setup({ senderCredit: 0, open: { max_sessions: 1 } }, { linksPerSession: 1 });
    await settle();
    const ps = ["a", "b"].map((x) => client.publish(x, 1));
    await assert.rejects(ps[1], { message: "wsq:resource-limit-exceeded: more than 1 links" });
    assert.equal(ws.ops("begin").length, 1);
  });
});

describe("publish edges", () => {
  const answer = async (ws, first, id = `${first}-0`) => {
    await settle();
    ws.push({ op: "disposition", ch: 0, first, ids: [id] });
    await settle();
  };

  test("eviction picks the least recently used; on a tie, the first", async () => {
    const { client, ws } = await setup({ senderCredit: 5 }, { maxSenders: 2 });
    await Promise.all([client.publish("a", 1), answer(ws, 0)]);
    world.clock.now += 10;
    await Promise.all([client.publish("b", 1), answer(ws, 1)]);
    world.clock.now += 10;
    await Promise.all([client.publish("b", 2), answer(ws, 2)]);
    client.publish("c", 1);
    await settle();
    assert.deepEqual(ws.ops("detach"), [{ op: "detach", ch: 0, handle: 0 }], "a: the oldest");
    const tie = await setup({ senderCredit: 5 }, { maxSenders: 2 });
    await Promise.all([tie.client.publish("a", 1), answer(tie.ws, 0)]);
    await Promise.all([tie.client.publish("b", 1), answer(tie.ws, 1)]);
    tie.client.publish("c", 1);
    await settle();
    assert.deepEqual(tie.ws.ops("detach"), [{ op: "detach", ch: 0, handle: 0 }]);
  });

  test("an idle sender without a link is evicted without a detach", async () => {
    const { client, ws, errors } = await setup({ senderCredit: 5 }, { maxSenders: 1 });
    await Promise.all([client.publish("a", 1), answer(ws, 0)]);
    ws.push({ op: "detach", ch: 0, handle: 0 });
    await settle();
    const b = client.publish("b", 1);
    await answer(ws, 1);
    assert.equal(await b, "1-0");
    assert.deepEqual(ws.ops("detach"), [{ op: "detach", ch: 0, handle: 0 }]);
    assert.deepEqual(errors, []);
  });

  test("a sender waiting for answers is not idle: not evicted", async () => {
    const { client, ws } = await setup({ senderCredit: 5 }, { maxSenders: 1 });
    const a = client.publish("a", 1);
    await settle();
    client.publish("b", 1);
    await settle();
    assert.deepEqual(ws.ops("detach"), []);
    ws.push({ op: "disposition", ch: 0, first: 0, ids: ["1-0"] });
    assert.equal(await a, "1-0");
  });

  test("after a requeue and its answer, or a rejection, the sender is idle again", async () => {
    const { peer, client, ws, errors } = await setup({ senderCredit: 1 });
    const a = client.publish("a", 1);
    await settle();
    ws.serverClose(1006);
    await world.clock.advance(250);
    const ws2 = peer.last;
    await answer(ws2, 0);
    assert.equal(await a, "0-0");
    const r = client.publish("a", 2);
    ws2.push({ op: "flow", ch: 0, handle: 0, credit: 1 });
    await settle();
    ws2.push({ op: "disposition", ch: 0, first: 1, outcome: "rejected", error: { condition: "wsq:forbidden" } });
    await assert.rejects(r, { condition: "wsq:forbidden" });
    // Idle: a detach without error is neither told nor retried.
    ws2.push({ op: "detach", ch: 0, handle: 0 });
    await world.clock.advance(10000);
    assert.deepEqual(errors, []);
    assert.equal(ws2.ops("attach").length, 1);
  });

  test("a busy sender detached without error: told as not-found, retried", async () => {
    const { client, ws, errors } = await setup({ senderCredit: 0 });
    client.publish("a", 1);
    await settle();
    ws.push({ op: "detach", ch: 0, handle: 0 });
    await settle();
    assert.equal(errors[0].condition, "wsq:not-found");
    assert.equal(errors[0].description, "detached");
    await world.clock.advance(250);
    assert.equal(ws.ops("attach").length, 2);
  });

  test("a detach takes back only that link's publishes", async () => {
    const { client, ws } = await setup({ senderCredit: 1 });
    const a = client.publish("a", "A");
    const b = client.publish("b", "B");
    await settle();
    assert.deepEqual(ws.ops("transfer").map((f) => [f.handle, f.delivery]), [[0, 0], [1, 1]]);
    ws.push({ op: "detach", ch: 0, handle: 0, error: { condition: "wsq:internal-error" } });
    await world.clock.advance(250);
    assert.deepEqual(ws.ops("transfer").map((f) => [f.handle, f.delivery, f.body]), [
      [0, 0, "A"],
      [1, 1, "B"],
      [2, 2, "A"],
    ]);
    ws.push({ op: "disposition", ch: 0, first: 1, ids: ["1-1"] });
    ws.push({ op: "disposition", ch: 0, first: 2, ids: ["1-2"] });
    assert.equal(await b, "1-1");
    assert.equal(await a, "1-2");
  });

  test("a disposition range settles exactly the pending deliveries in it, either way it is walked", async () => {
    const { client, ws } = await setup({ senderCredit: 10 });
    const ps = [0, 1, 2, 3].map((n) => client.publish("a", n));
    await settle();
    ws.push({ op: "disposition", ch: 0, first: 0, ids: ["9-0"] });
    await settle();
    // pending 1, 2, 3; the range 0..1 is shorter than what is pending: walked by number.
    ws.push({ op: "disposition", ch: 0, first: 0, last: 1, ids: ["x", "9-1"] });
    await settle();
    assert.equal(await ps[1], "9-1");
    assert.equal(client.pendingPublishes, 2);
    // pending 2, 3; the range 3..50 is longer: the pending are filtered, 2 is left alone.
    ws.push({ op: "disposition", ch: 0, first: 3, last: 50, outcome: "rejected" });
    await assert.rejects(ps[3], { condition: "wsq:internal-error" });
    assert.equal(client.pendingPublishes, 1);
    // pending 2 only; 0..2 (2 >= 1): filtered, and 2 is the range's last.
    ws.push({ op: "disposition", ch: 0, first: 0, last: 2, ids: ["a", "b", "9-2"] });
    assert.equal(await ps[2], "9-2");
    assert.equal(client.pendingPublishes, 0);
  });
});

