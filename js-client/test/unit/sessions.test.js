// src/sessions.js on its own, with a stand-in connection: where links are placed (sessions,
// channels, handles and their bounds), and what a lost socket or a closing client does with the
// links and unanswered publishes.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Binding, Session, Sessions } from "../../src/sessions.js";
import { MAX_U32 } from "../../src/wire.js";

function stand() {
  const sent = [];
  const conn = { usable: true, dead: false, sent, send: (f) => sent.push(f) };
  conn.client = { _conn: conn };
  return { conn, sessions: new Sessions(conn), sent };
}

function link(address = "a") {
  return {
    address,
    _binding: null,
    lost: [],
    _attachFrame: (b) => ({ op: "attach", ch: b.session.ch, handle: b.handle, address }),
    _onLost(b) {
      this.lost.push(b);
    },
  };
}

describe("Sessions.place", () => {
  test("links fill a session up to linksPerSession, then a new one begins", () => {
    const { sessions, sent } = stand();
    const links = ["a", "b", "c"].map(link);
    for (const l of links) assert.equal(sessions.place(l, 2, 10), null);
    assert.deepEqual(sent, [
      { op: "begin", ch: 0 },
      { op: "attach", ch: 0, handle: 0, address: "a" },
      { op: "attach", ch: 0, handle: 1, address: "b" },
      { op: "begin", ch: 1 },
      { op: "attach", ch: 1, handle: 0, address: "c" },
    ]);
    assert.equal(links[2]._binding.session, sessions.get(1));
    assert.equal(links[2]._binding.handle, 0);
    assert.equal(links[2]._binding.link, links[2]);
    assert.equal(sessions.get(0).links.get(1), links[1]._binding);
  });

  test("past maxSessions: the error, nothing sent", () => {
    const { sessions, sent } = stand();
    sessions.place(link("a"), 1, 1);
    const error = sessions.place(link("b"), 1, 1);
    assert.equal(error.condition, "wsq:resource-limit-exceeded");
    assert.equal(error.message, "wsq:resource-limit-exceeded: more than 1 links");
    assert.equal(error.address, "b");
    assert.equal(sent.length, 2);
  });

  test("a freed place in an earlier session is used first", () => {
    const { sessions } = stand();
    const [a, b, c] = ["a", "b", "c"].map(link);
    sessions.place(a, 1, 5);
    sessions.place(b, 1, 5);
    sessions.get(0).links.delete(0);
    sessions.place(c, 1, 5);
    assert.equal(c._binding.session.ch, 0);
    assert.equal(c._binding.handle, 1, "handles are not reused");
  });

  test("a session whose handles ran out takes no more links", () => {
    const { sessions } = stand();
    sessions.place(link("a"), 5, 5);
    sessions.get(0).nextHandle = MAX_U32;
    const b = link("b");
    sessions.place(b, 5, 5);
    assert.equal(b._binding.session.ch, 0);
    assert.equal(b._binding.handle, MAX_U32);
    const c = link("c");
    sessions.place(c, 5, 5);
    assert.equal(c._binding.session.ch, 1);
  });

  test("channels count up, wrap past 65535 and skip those in use", () => {
    const { sessions, sent } = stand();
    sessions.set(65535, new Session(65535));
    sessions.set(0, new Session(0));
    sessions.get(65535).links.set(0, {});
    sessions.get(0).links.set(0, {});
    sessions.nextCh = 65535;
    const l = link("x");
    sessions.place(l, 1, 10);
    assert.equal(l._binding.session.ch, 1);
    assert.equal(sessions.nextCh, 2);
    assert.deepEqual(sent[0], { op: "begin", ch: 1 });
    sessions.nextCh = 65534;
    const m = link("y");
    sessions.place(m, 1, 10);
    assert.equal(m._binding.session.ch, 65534);
    assert.equal(sessions.nextCh, 65535);
  });

  test("nothing placed on an unusable socket, nor a link already bound", () => {
    const { conn, sessions, sent } = stand();
    const a = link("a");
    sessions.place(a, 5, 5);
    const bound = a._binding;
    assert.equal(sessions.place(a, 5, 5), null);
    assert.equal(a._binding, bound);
    conn.usable = false;
    const b = link("b");
    assert.equal(sessions.place(b, 5, 5), null);
    assert.equal(b._binding, null);
    assert.equal(sent.length, 2);
  });
});

describe("Binding", () => {
  test("live: not detaching, the socket alive and current", () => {
    const { conn } = stand();
    const b = new Binding(conn, new Session(0), 0, link());
    assert.equal(b.attached, false);
    assert.equal(b.credit, 0);
    assert.equal(b.live, true);
    b.detaching = true;
    assert.equal(b.live, false);
    b.detaching = false;
    conn.dead = true;
    assert.equal(b.live, false);
    conn.dead = false;
    conn.client._conn = {};
    assert.equal(b.live, false);
  });
});

describe("losing the socket", () => {
  function withPublishes() {
    const { sessions } = stand();
    const sender = link("s");
    sender.requeued = [];
    sender.requeue = (item) => sender.requeued.push(item.n);
    const sub = link("r");
    sessions.place(sender, 1, 5);
    sessions.place(sub, 1, 5);
    const s0 = sessions.get(0);
    s0.pending.set(0, { n: 0, binding: sender._binding });
    s0.pending.set(1, { n: 1, binding: sender._binding });
    return { sessions, sender, sub, s0 };
  }

  test("unbind: every link told, unanswered publishes back to their sender, nothing left", () => {
    const { sessions, sender, sub, s0 } = withPublishes();
    const bs = [sender._binding, sub._binding];
    sessions.unbind();
    assert.deepEqual(sender.lost, [bs[0]]);
    assert.deepEqual(sub.lost, [bs[1]]);
    assert.deepEqual(sender.requeued, [0, 1]);
    assert.equal(s0.pending.size, 0);
    assert.equal(sessions.size, 0);
  });

  test("requeuePending: the publishes only; links and sessions stay", () => {
    const { sessions, sender, sub, s0 } = withPublishes();
    sessions.requeuePending();
    assert.deepEqual(sender.requeued, [0, 1]);
    assert.equal(s0.pending.size, 0);
    assert.deepEqual(sub.lost, []);
    assert.equal(sessions.size, 2);
  });
});
