// Subscriptions against the fake gateway (test/unit/fake.js): the attach frame, deliveries in
// order, credit refilled as the handler gets through them, move-mode settlement, resume after a
// lost socket, detach and retry, unsubscribe, gaps, presence, the compact form.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Message } from "../../src/subscription.js";
import { settle, fakeWorld } from "./fake.js";

const world = fakeWorld();
const { setup } = world;

const t = (delivery, id, body, extra = {}) => ({
  op: "transfer",
  ch: 0,
  handle: 0,
  delivery,
  id,
  body,
  ...extra,
});

describe("subscribe", () => {
  test("the attach frame, ready, the attached event", async () => {
    const { client, ws } = await setup();
    const events = [];
    const sub = client.subscribe("news.eu", () => {}, { filter: "news.*" });
    sub.on("attached", (info) => events.push(info));
    assert.equal(sub.attached, false);
    await sub.ready;
    assert.deepEqual(ws.ops("attach")[0], {
      op: "attach",
      ch: 0,
      handle: 0,
      role: "receiver",
      address: "news.eu",
      mode: "copy",
      from: "$",
      filter: { subject: "news.*" },
      credit: 100,
    });
    assert.deepEqual(events, [{ address: "news.eu", from: "0-0", recovered: true, node: "fake-node" }]);
    assert.equal(sub.attached, true);
    assert.equal(sub.closed, false);
    assert.equal(sub.mode, "copy");
    assert.equal(sub.address, "news.eu");
    assert.equal(sub.ready, sub.ready, "one promise");
  });

  test("refused before it is tried: bad handler, options, address", async () => {
    const { client } = await setup();
    assert.throws(() => client.subscribe("a", null), { name: "TypeError", message: "handler must be a function" });
    assert.throws(() => client.subscribe("a", () => {}, 5), { name: "TypeError", message: "options must be an object" });
    assert.throws(() => client.subscribe("a b", () => {}), {
      condition: "wsq:invalid-frame",
      message: 'wsq:invalid-frame: not an address: "a b"',
    });
    assert.throws(() => client.subscribe("a", () => {}, { credit: 0 }), TypeError);
    client.subscribe("$sys.stats", () => {});
  });

  test("messages in order, with their fields; position follows", async () => {
    const { client, ws } = await setup();
    const got = [];
    const sub = client.subscribe("a", (m) => got.push([m.id, m.body, m.subject, m.redelivered, sub.position]));
    await sub.ready;
    ws.push(
      t(0, "1-0", { x: 1 }, { props: { subject: "a.b", redelivered: 2 } }),
      t(1, "1-1", undefined, { props: "junk" }),
    );
    await settle();
    assert.deepEqual(got, [
      ["1-0", { x: 1 }, "a.b", 2, "1-0"],
      ["1-1", null, undefined, 0, "1-1"],
    ]);
  });

  test("a Message: its fields and getters", () => {
    const sub = { address: "a", mode: "copy" };
    const m = new Message(sub, null, { id: "1-0", delivery: 3, body: 0, props: { subject: 5, redelivered: -1 } });
    assert.equal(m.id, "1-0");
    assert.equal(m.body, 0);
    assert.equal(m.address, "a");
    assert.equal(m.subscription, sub);
    assert.equal(m.delivery, 3);
    assert.equal(m.subject, undefined);
    assert.equal(m.redelivered, 0);
    assert.equal(m.settled, true, "copy deliveries are never ours to settle");
    assert.equal(m.settle(), false);
    assert.throws(() => m.settle("maybe"), { name: "TypeError", message: "unknown outcome maybe" });
    const move = new Message({ address: "q", mode: "move" }, null, { id: "1-0", delivery: 0 });
    assert.equal(move.settled, false);
    assert.deepEqual(move.props, {});
    const pre = new Message({ address: "q", mode: "move" }, null, { id: "1-0", delivery: 0, settled: true });
    assert.equal(pre.settled, true);
  });

  test("credit is granted back as the handler gets through half the window", async () => {
    const { client, ws } = await setup();
    const gate = [];
    const sub = client.subscribe("a", () => new Promise((r) => gate.push(r)), { credit: 4 });
    await sub.ready;
    ws.push(t(0, "1-0", 0), t(1, "1-1", 1), t(2, "1-2", 2), t(3, "1-3", 3));
    await settle();
    assert.equal(gate.length, 1, "one at a time");
    assert.deepEqual(ws.ops("flow"), []);
    const flows = () => ws.ops("flow").map((f) => f.credit);
    gate.shift()();
    await settle();
    // 0 credit left, 3 queued: 3 > 4 / 2, no flow yet.
    assert.deepEqual(flows(), []);
    gate.shift()();
    await settle();
    // 2 queued <= 2: the window filled again.
    assert.deepEqual(ws.ops("flow"), [{ op: "flow", ch: 0, handle: 0, credit: 2 }]);
    gate.shift()();
    await settle();
    assert.deepEqual(flows(), [2]);
    gate.shift()();
    await settle();
    assert.deepEqual(flows(), [2, 2]);
  });

  test("a window of 1 is refilled after each message; an odd window at its half", async () => {
    const { client, ws } = await setup();
    const sub = client.subscribe("a", () => {}, { credit: 1 });
    await sub.ready;
    ws.push(t(0, "1-0", 0));
    await settle();
    ws.push(t(1, "1-1", 1));
    await settle();
    assert.deepEqual(ws.ops("flow").map((f) => f.credit), [1, 1]);
    const odd = client.subscribe("b", () => {}, { credit: 5 });
    await odd.ready;
    const u = (d, id) => ({ ...t(d, id, 0), handle: 1 });
    ws.push(u(0, "1-0"), u(1, "1-1"));
    await settle();
    assert.deepEqual(ws.ops("flow").filter((f) => f.handle === 1), [], "3 left > 2.5");
    ws.push(u(2, "1-2"));
    await settle();
    assert.deepEqual(ws.ops("flow").filter((f) => f.handle === 1).map((f) => f.credit), [3]);
  });

  test("a transfer beyond the credit granted breaks the contract; the handler had the rest", async () => {
    const { client, ws, errors, peer } = await setup();
    const seen = [];
    const sub = client.subscribe("a", (m) => seen.push(m.id), { credit: 2 });
    await sub.ready;
    ws.push(t(0, "1-0", 0), t(1, "1-1", 1), t(2, "1-2", 2));
    await settle();
    assert.deepEqual(seen, ["1-0", "1-1"]);
    assert.equal(errors[0].description, "the server sent transfers beyond the credit granted");
    assert.equal(peer.sockets.length, 1);
    assert.equal(client.state, "disconnected");
  });

  test("a transfer with a bad id, on a sender link, or on a handle not attached breaks it", async () => {
    for (const [bad, why] of [
      [t(0, "x", 0), "the server sent a transfer without a valid id"],
      [{ ...t(0, "1-0", 0), handle: 9 }, 'the server sent "transfer" on a handle that is not attached'],
      [{ ...t(0, "1-0", 0), handle: 1 }, "the server sent a transfer on a sender link"],
      [{ op: "presence", ch: 0, handle: 1, count: 0, members: [] }, "the server sent presence on a sender link"],
      [{ op: "transfers", ch: 0, handle: 1, delivery: 0, msgs: [{ id: "1-0" }] }, "the server sent a transfer on a sender link"],
      [{ op: "attach", ch: 0, handle: 0 }, "the server sent a second attach"],
      [{ op: "begin", ch: 0 }, "the server sent a second begin"],
      [{ op: "flow", ch: 0, handle: 1, credit: -1 }, "the server sent a flow without a valid credit"],
      [{ op: "presence", ch: 0, handle: 0, join: {} }, "the server sent presence on a link attached without it"],
    ]) {
      const { client, ws, errors } = await setup({ senderCredit: 0 });
      const sub = client.subscribe("a", () => {});
      client.publish("b", 1).catch(() => {});
      await sub.ready;
      ws.push(bad);
      await settle();
      assert.equal(errors[0]?.description, why);
    }
  });

  test("copy: a lost socket resumes after the last message received, never twice", async () => {
    const { client, ws, peer } = await setup();
    const seen = [];
    const sub = client.subscribe("a", (m) => seen.push(m.id), { from: "^" });
    await sub.ready;
    assert.equal(ws.ops("attach")[0].from, "^");
    ws.push(t(0, "3-0", 0), t(1, "3-1", 1));
    await settle();
    ws.serverClose(1006);
    await world.clock.advance(250);
    await settle();
    const ws2 = peer.last;
    assert.equal(ws2.ops("attach")[0].from, "3-1");
    assert.equal(sub.attached, true);
    ws2.push(t(0, "3-1", 1), t(1, "2-9", 9), t(2, "3-2", 2));
    await settle();
    assert.deepEqual(seen, ["3-0", "3-1", "3-2"]);
    // The duplicates cost credit all the same: it is granted back.
    assert.equal(sub.position, "3-2");
  });

  test("copy: where $ resolved to is where a re-attach resumes", async () => {
    const { client, ws, peer } = await setup({ answerAttach: false });
    const sub = client.subscribe("a", () => {});
    await settle();
    ws.push({ op: "attach", ch: 0, handle: 0, role: "receiver", address: "a", mode: "copy", from: "8-8", recovered: true });
    await settle();
    ws.serverClose(1006);
    await world.clock.advance(250);
    assert.equal(peer.last.ops("attach")[0].from, "8-8");
    void sub;
  });

  test("rewind: only on the first attach", async () => {
    const { client, ws, peer } = await setup();
    const sub = client.subscribe("a", () => {}, { rewind: 5 });
    await sub.ready;
    assert.equal(ws.ops("attach")[0].rewind, 5);
    assert.equal("from" in ws.ops("attach")[0], false);
    ws.serverClose(1006);
    await world.clock.advance(250);
    const again = peer.last.ops("attach")[0];
    assert.equal(again.rewind, undefined);
    assert.equal(again.from, "0-0");
  });

  test("a gap: recovered false is told on the subscription and the client", async () => {
    const { client, ws } = await setup({ answerAttach: false });
    const gaps = [];
    const sub = client.subscribe("a", () => {}, { from: "1-0", onGap: (info) => gaps.push(["sub", info]) });
    client.on("gap", (info) => gaps.push(["client", info]));
    await settle();
    ws.push({ op: "attach", ch: 0, handle: 0, role: "receiver", mode: "copy", from: "1-0", recovered: false });
    await sub.ready;
    const info = { address: "a", from: "1-0", recovered: false, node: "fake-node" };
    assert.deepEqual(gaps, [
      ["sub", info],
      ["client", { ...info, subscription: sub }],
    ]);
  });

  test("an attach answer without from: from null, recovered", async () => {
    const { client, ws } = await setup({ answerAttach: false });
    const events = [];
    const sub = client.subscribe("a", () => {});
    sub.on("attached", (i) => events.push(i));
    await settle();
    ws.push({ op: "attach", ch: 0, handle: 0, from: 5 });
    await settle();
    assert.deepEqual(events, [{ address: "a", from: null, recovered: true, node: "fake-node" }]);
  });

  test("the compact form: the same deliveries", async () => {
    const { client, ws } = await setup();
    const seen = [];
    const sub = client.subscribe("a", (m) => seen.push([m.id, m.body, m.delivery]));
    await sub.ready;
    ws.push({ op: "transfers", ch: 0, handle: 0, delivery: 0, msgs: [{ id: "1-0", body: "x" }, { id: "1-1", body: "y" }] });
    await settle();
    assert.deepEqual(seen, [
      ["1-0", "x", 0],
      ["1-1", "y", 1],
    ]);
  });
});

describe("move mode", () => {
  test("settled as the handler returns (accepted) or throws (released)", async () => {
    const { client, ws, errors } = await setup();
    const sub = client.subscribe(
      "q",
      (m) => {
        if (m.body === "bad") throw new Error("boom");
      },
      { mode: "move", group: "g", lease: 1000, credit: 10 },
    );
    await sub.ready;
    assert.deepEqual(ws.ops("attach")[0], {
      op: "attach",
      ch: 0,
      handle: 0,
      role: "receiver",
      address: "q",
      mode: "move",
      group: "g",
      lease: 1000,
      credit: 10,
    });
    ws.push(t(4, "1-0", "ok"), t(5, "1-1", "bad"));
    await settle();
    assert.deepEqual(ws.ops("disposition"), [
      { op: "disposition", ch: 0, first: 4, outcome: "accepted" },
      { op: "disposition", ch: 0, first: 5, outcome: "released" },
    ]);
    assert.equal(errors.length, 1);
    assert.equal(errors[0].condition, "wsq-client:handler");
    assert.equal(errors[0].message, "wsq-client:handler: boom");
    assert.equal(errors[0].scope, "handler");
    assert.equal(errors[0].address, "q");
    assert.equal(errors[0].cause.message, "boom");
  });

  test("a handler that settles itself: one disposition, with its outcome", async () => {
    const { client, ws } = await setup();
    const answers = [];
    const outcomes = { a: "accept", b: "reject", c: "modify", d: "release" };
    const sub = client.subscribe(
      "q",
      async (m) => {
        answers.push(m[outcomes[m.body]]());
        answers.push(m.accept());
        assert.equal(m.settled, true);
      },
      { mode: "move" },
    );
    await sub.ready;
    ws.push(t(0, "1-0", "a"), t(1, "1-1", "b"), t(2, "1-2", "c"), t(3, "1-3", "d"));
    await settle();
    assert.deepEqual(ws.ops("disposition").map((f) => [f.first, f.outcome]), [
      [0, "accepted"],
      [1, "rejected"],
      [2, "modified"],
      [3, "released"],
    ]);
    assert.deepEqual(answers, [true, false, true, false, true, false, true, false]);
  });

  test("a handler throwing nothing useful: released, the error still told", async () => {
    const { client, ws, errors } = await setup();
    const sub = client.subscribe("q", () => Promise.reject(undefined), { mode: "move" });
    await sub.ready;
    ws.push(t(0, "1-0", 1));
    await settle();
    assert.deepEqual(ws.ops("disposition").map((f) => f.outcome), ["released"]);
    assert.equal(errors[0].message, "wsq-client:handler: the handler failed");
  });

  test("a handler throwing a string: its text", async () => {
    const { client, ws, errors } = await setup();
    const sub = client.subscribe("a", () => {
      throw "plain";
    });
    await sub.ready;
    ws.push(t(0, "1-0", 1));
    await settle();
    assert.equal(errors[0].message, "wsq-client:handler: plain");
  });

  test("pre-settled deliveries are not answered", async () => {
    const { client, ws } = await setup();
    const sub = client.subscribe("q", () => {}, { mode: "move", settled: true });
    await sub.ready;
    assert.equal(ws.ops("attach")[0].settled, true);
    ws.push(t(0, "1-0", 1, { settled: true }));
    await settle();
    assert.deepEqual(ws.ops("disposition"), []);
  });

  test("a delivery of a lost socket is not settled, and what was queued is dropped", async () => {
    const { client, ws, peer } = await setup();
    const held = [];
    const seen = [];
    const sub = client.subscribe("q", (m) => {
      seen.push(m.body);
      return new Promise((r) => held.push([m, r]));
    }, { mode: "move" });
    await sub.ready;
    ws.push(t(0, "1-0", 1), t(1, "1-1", 2));
    await settle();
    ws.serverClose(1006);
    await settle();
    held[0][1]();
    await world.clock.advance(250);
    assert.deepEqual(seen, [1], "the second went back to the group");
    assert.equal(held[0][0].accept(), false);
    assert.deepEqual(ws.ops("disposition"), []);
    assert.deepEqual(peer.last.ops("disposition"), []);
  });
});

describe("the link's life", () => {
  test("a final detach ends the subscription: error, closed, ready rejects", async () => {
    const { client, ws, errors } = await setup({ answerAttach: false });
    const sub = client.subscribe("a", () => {});
    const events = [];
    sub.on("error", (e) => events.push(["error", e.condition]));
    sub.on("closed", (e) => events.push(["closed", e?.condition]));
    await settle();
    ws.push({ op: "detach", ch: 0, handle: 0, error: { condition: "wsq:forbidden", description: "no" } });
    await assert.rejects(sub.ready, { condition: "wsq:forbidden", scope: "link", address: "a" });
    assert.deepEqual(events, [
      ["error", "wsq:forbidden"],
      ["closed", "wsq:forbidden"],
    ]);
    assert.equal(errors[0].condition, "wsq:forbidden");
    assert.equal(sub.closed, true);
    assert.deepEqual(ws.frames.at(-1), { op: "detach", ch: 0, handle: 0 });
    await world.clock.advance(60000);
    assert.equal(ws.ops("attach").length, 1);
  });

  test("a retryable detach: retried after the backoff, ready when it attaches", async () => {
    const { client, ws, errors } = await setup({ answerAttach: false }, { reconnectDelay: 100 });
    const sub = client.subscribe("a", () => {});
    await settle();
    ws.push({ op: "detach", ch: 0, handle: 0, error: { condition: "wsq:internal-error" } });
    await settle();
    assert.equal(errors[0].condition, "wsq:internal-error");
    await world.clock.advance(49);
    assert.equal(ws.ops("attach").length, 1);
    await world.clock.advance(1);
    assert.equal(ws.ops("attach").length, 2);
    ws.push({ op: "detach", ch: 0, handle: 1 }); // no error: not found, retried as well
    await world.clock.advance(99);
    assert.equal(ws.ops("attach").length, 2);
    await world.clock.advance(1);
    assert.equal(ws.ops("attach").length, 3);
    ws.push({ op: "attach", ch: 0, handle: 2, from: "1-0" });
    await sub.ready;
    ws.push({ op: "detach", ch: 0, handle: 2, error: { condition: "wsq:internal-error" } });
    await world.clock.advance(50);
    assert.equal(ws.ops("attach").length, 4, "the backoff starts again after an attach");
  });

  test("a retry waiting while the socket is lost attaches on the next socket instead", async () => {
    const { client, ws, peer } = await setup({ answerAttach: false });
    const sub = client.subscribe("a", () => {});
    await settle();
    ws.push({ op: "detach", ch: 0, handle: 0, error: { condition: "wsq:internal-error" } });
    await settle();
    ws.serverClose(1006);
    await world.clock.advance(1000);
    assert.equal(peer.sockets.length, 2);
    assert.equal(peer.last.ops("attach").length, 1);
    void sub;
  });

  test("unsubscribe: a detach, resolved with the gateway's answer", async () => {
    const { client, ws } = await setup({ answerDetach: false });
    const seen = [];
    const sub = client.subscribe("a", (m) => seen.push(m.id));
    await sub.ready;
    const closed = [];
    sub.on("closed", (e) => closed.push(e));
    const done = sub.unsubscribe();
    assert.equal(sub.unsubscribe(), done);
    assert.equal(sub.closed, true);
    assert.deepEqual(closed, [null]);
    await settle();
    assert.deepEqual(ws.ops("detach"), [{ op: "detach", ch: 0, handle: 0 }]);
    let resolved = false;
    done.then(() => (resolved = true));
    ws.push(t(0, "1-0", 0)); // crossing our detach: ignored
    await settle();
    assert.equal(resolved, false);
    assert.deepEqual(seen, []);
    ws.push({ op: "detach", ch: 0, handle: 0 });
    await settle();
    assert.equal(resolved, true);
    await sub.ready; // it had attached: unsubscribing does not change that
  });

  test("unsubscribe while offline resolves at once", async () => {
    const { client } = await setup({ failConstruct: "offline" });
    const sub = client.subscribe("a", () => {});
    await sub.unsubscribe();
    assert.equal(sub.closed, true);
  });

  test("close ends every subscription", async () => {
    const { client } = await setup();
    const sub = client.subscribe("a", () => {});
    await sub.ready;
    const closed = [];
    sub.on("closed", (e) => closed.push(e));
    await client.close();
    assert.deepEqual(closed, [null]);
    assert.equal(sub.closed, true);
    assert.equal(sub.attached, false);
  });

  test("no room on the socket: the subscription ends with resource-limit-exceeded", async () => {
    const { client } = await setup({}, { linksPerSession: 1, maxSessions: 1 });
    client.subscribe("a", () => {});
    const sub = client.subscribe("b", () => {});
    await assert.rejects(sub.ready, { condition: "wsq:resource-limit-exceeded" });
    assert.equal(sub.closed, true);
  });
});

describe("presence", () => {
  const member = (id) => ({ id, sub: `s${id}`, client: "c", node: "n" });

  test("the room, joins and leaves", async () => {
    const { client, ws } = await setup();
    const events = [];
    const sub = client.subscribe("room.a", () => {}, { presence: true, onPresence: (e) => events.push(e) });
    await sub.ready;
    assert.equal(ws.ops("attach")[0].presence, true);
    assert.deepEqual(sub.presence, { count: 0, members: new Map() });
    const p = (f) => ({ op: "presence", ch: 0, handle: 0, ...f });
    ws.push(p({ count: 5, members: [member("1"), member("2")] }));
    ws.push(p({ join: member("3") }));
    ws.push(p({ join: member("3") }));
    ws.push(p({ leave: member("1") }));
    await settle();
    assert.deepEqual(events, [
      { type: "room", count: 5, members: [member("1"), member("2")] },
      { type: "join", count: 6, member: member("3") },
      { type: "join", count: 6, member: member("3") },
      { type: "leave", count: 5, member: member("1") },
    ]);
    assert.deepEqual([...sub.presence.members.keys()], ["2", "3"]);
    assert.equal(sub.presence.count, 5);
    ws.push(p({ count: 0, members: [] }));
    ws.push(p({ leave: member("9") }));
    await settle();
    assert.equal(sub.presence.count, 0, "never below 0");
    assert.equal(client.subscribe("b", () => {}).presence, null);
  });

  test("a bad presence frame breaks the contract", async () => {
    for (const [bad, why] of [
      [{ count: -1, members: [] }, "a bad presence room"],
      [{ count: 1, members: [{ id: "1" }] }, "a bad presence room"],
      [{ count: 1, members: [{ ...member("1"), node: "x".repeat(257) }] }, "a bad presence room"],
      [{ join: { ...member("1"), sub: 5 } }, "a presence frame without room, join or leave"],
      [{}, "a presence frame without room, join or leave"],
    ]) {
      const { client, ws, errors } = await setup();
      const sub = client.subscribe("room.a", () => {}, { presence: true });
      await sub.ready;
      ws.push({ op: "presence", ch: 0, handle: 0, ...bad });
      await settle();
      assert.equal(errors[0]?.description, `the server sent ${why}`);
    }
    const { client, ws, errors } = await setup();
    const sub = client.subscribe("room.a", () => {}, { presence: true });
    await sub.ready;
    ws.push({ op: "presence", ch: 0, handle: 0, count: 1, members: [{ ...member("1"), node: "x".repeat(256) }] });
    await settle();
    assert.equal(errors.length, 0);
  });
});

describe("subscription edges", () => {
  test("an ordinary attach: no gap", async () => {
    const { client } = await setup();
    const gaps = [];
    client.on("gap", (g) => gaps.push(g));
    await client.subscribe("a", () => {}).ready;
    assert.deepEqual(gaps, []);
  });

  test("an attach answer without a position: every transfer is new", async () => {
    const { client, ws } = await setup({ answerAttach: false });
    const seen = [];
    client.subscribe("a", (m) => seen.push(m.id));
    await settle();
    ws.push({ op: "attach", ch: 0, handle: 0, from: "$" });
    ws.push(t(0, "1-0", 0));
    await settle();
    assert.deepEqual(seen, ["1-0"]);
  });

  test("a re-attach answered from elsewhere does not move the resume position", async () => {
    const { client, ws, peer } = await setup();
    const seen = [];
    const sub = client.subscribe("a", (m) => seen.push(m.id));
    await sub.ready;
    ws.push(t(0, "3-1", 0));
    await settle();
    peer.answerAttach = false;
    ws.serverClose(1006);
    await world.clock.advance(250);
    peer.last.push({ op: "attach", ch: 0, handle: 0, from: "2-0", recovered: true });
    peer.last.push(t(0, "3-0", 0), t(1, "3-2", 1));
    await settle();
    assert.deepEqual(seen, ["3-1", "3-2"]);
  });

  test("move: ids are not a resume position (a redelivery may be older), nor a position", async () => {
    const { client, ws } = await setup();
    const seen = [];
    const sub = client.subscribe("q", (m) => seen.push(m.id), { mode: "move" });
    await sub.ready;
    ws.push(t(0, "5-0", 0), t(1, "3-0", 1, { props: { redelivered: 1 } }));
    await settle();
    assert.deepEqual(seen, ["5-0", "3-0"]);
    assert.equal(sub.position, null);
  });

  test("a re-attach asks for the window less what is still queued", async () => {
    const { client, ws, peer } = await setup();
    const gate = [];
    const sub = client.subscribe("a", () => new Promise((r) => gate.push(r)), { credit: 4 });
    await sub.ready;
    ws.push(t(0, "1-0", 0), t(1, "1-1", 1), t(2, "1-2", 2), t(3, "1-3", 3));
    await settle();
    ws.serverClose(1006);
    await world.clock.advance(250);
    // One in the handler, three queued: credit 1.
    assert.equal(peer.last.ops("attach")[0].credit, 1);
    void gate;
  });

  test("one message at a time, even when the next arrives while the handler runs", async () => {
    const { client, ws } = await setup();
    const gate = [];
    const sub = client.subscribe("a", () => new Promise((r) => gate.push(r)));
    await sub.ready;
    ws.push(t(0, "1-0", 0));
    await settle();
    ws.push(t(1, "1-1", 1));
    await settle();
    assert.equal(gate.length, 1);
    gate[0]();
    await settle();
    assert.equal(gate.length, 2);
  });

  test("unsubscribed: not attached, no error, one closed event, the crossing transfers ignored", async () => {
    const { client, ws, errors } = await setup({ answerDetach: false });
    const sub = client.subscribe("a", () => {}, { credit: 1 });
    const closed = [];
    const subErrors = [];
    sub.on("closed", (e) => closed.push(e));
    sub.on("error", (e) => subErrors.push(e));
    const attached = new Promise((resolve) => sub.once("attached", resolve));
    await attached;
    ws.push(t(0, "1-0", 0));
    await settle(); // the credit granted back
    const done = sub.unsubscribe();
    assert.equal(sub.attached, false);
    ws.push(t(1, "1-1", 1), t(2, "1-2", 2)); // beyond the credit, but crossing our detach
    await settle();
    ws.push({ op: "detach", ch: 0, handle: 0 });
    await done;
    await sub.ready; // it had attached
    await client.close();
    assert.deepEqual(closed, [null]);
    assert.deepEqual(subErrors, []);
    assert.deepEqual(errors, []);
  });

  test("unsubscribed before it attached: ready rejects with closed", async () => {
    const { client } = await setup({ failConstruct: "offline" });
    const sub = client.subscribe("a", () => {});
    sub.unsubscribe();
    await assert.rejects(sub.ready, { condition: "wsq-client:closed", message: "wsq-client:closed: unsubscribed" });
  });

  test("an attach answer crossing our detach is ignored", async () => {
    const { client, ws, errors } = await setup({ answerAttach: false, answerDetach: false });
    const sub = client.subscribe("a", () => {});
    const events = [];
    sub.on("attached", (e) => events.push(e));
    await settle();
    sub.unsubscribe();
    ws.push({ op: "attach", ch: 0, handle: 0, from: "1-0" });
    ws.push({ op: "presence", ch: 0, handle: 0, join: {} });
    ws.push({ op: "transfers", ch: 0, handle: 0, delivery: 0, msgs: Array.from({ length: 101 }, (_, i) => ({ id: `1-${i}` })) });
    await settle();
    assert.deepEqual(events, []);
    assert.equal(sub.attached, false);
    assert.deepEqual(errors, [], "crossing frames are no violation");
  });

  test("move: a delivery whose handler finishes after unsubscribe is not settled", async () => {
    const { client, ws } = await setup({ answerDetach: false });
    const held = [];
    const sub = client.subscribe("q", (m) => new Promise((r) => held.push([m, r])), { mode: "move" });
    await sub.ready;
    ws.push(t(0, "1-0", 0));
    await settle();
    sub.unsubscribe();
    held[0][1]();
    await settle();
    assert.deepEqual(ws.ops("disposition"), []);
    assert.equal(held[0][0].accept(), false);
  });

  test("move: settling by hand after the socket is lost answers false", async () => {
    const { client, ws } = await setup();
    const held = [];
    const sub = client.subscribe("q", (m) => new Promise((r) => held.push([m, r])), { mode: "move" });
    await sub.ready;
    ws.push(t(0, "1-0", 0));
    await settle();
    ws.serverClose(1006);
    await settle();
    assert.equal(held[0][0].reject(), false);
    held[0][1]();
  });

  test("onError: the subscription's errors", async () => {
    const { client, ws } = await setup({ answerAttach: false });
    const seen = [];
    client.subscribe("a", () => {}, { onError: (e) => seen.push(e.condition) });
    await settle();
    ws.push({ op: "detach", ch: 0, handle: 0, error: { condition: "wsq:forbidden" } });
    await settle();
    assert.deepEqual(seen, ["wsq:forbidden"]);
  });

  test("a detach without error: told as not-found", async () => {
    const { client, ws, errors } = await setup({ answerAttach: false });
    client.subscribe("a", () => {});
    await settle();
    ws.push({ op: "detach", ch: 0, handle: 0 });
    await settle();
    assert.equal(errors[0].condition, "wsq:not-found");
    assert.equal(errors[0].description, "detached");
  });

  test("presence after the client closed is not told", async () => {
    const { client, ws } = await setup({ answerClose: false });
    const events = [];
    const sub = client.subscribe("room", () => {}, { presence: true, onPresence: (e) => events.push(e) });
    await sub.ready;
    client.close();
    ws.push({ op: "presence", ch: 0, handle: 0, count: 1, members: [] });
    await settle();
    assert.deepEqual(events, []);
  });

  test("subscribe on a closed client: the message says so", async () => {
    const { client } = await setup();
    await client.close();
    assert.throws(() => client.subscribe("a", () => {}), { message: "wsq-client:closed: the client is closed" });
  });
});

