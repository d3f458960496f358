// Presence: subscribe(address, handler, {presence: true, onPresence}) against a real gateway:
// the room after the attach, then joins and leaves of other clients; bad options refused.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Client } from "../src/index.js";
import { Gateway, clientsClosedAfterEach, token, waitFor } from "./helpers.js";

describe("presence options", () => {
  test("bad values are refused before anything is sent", () => {
    const c = new Client("ws://127.0.0.1:1/ws", { token: token(), WebSocket: class {} });
    assert.throws(() => c.subscribe("room.a", () => {}, { presence: "yes" }), /option presence/);
    assert.throws(() => c.subscribe("room.a", () => {}, { onPresence: 1 }), /option onPresence/);
    c.close();
  });
});

describe("presence against a real gateway", () => {
  let gw;
  before(async () => {
    gw = await Gateway.start({ broker: "memory://" });
  });
  after(async () => {
    await gw?.stop();
  });
  const newClient = clientsClosedAfterEach();

  test("a member gets the room, then the joins and leaves of others", async () => {
    const events = [];
    const alice = newClient(gw.url, { token: token({ sub: "alice" }) });
    const sub = alice.subscribe("room.js", () => {}, {
      presence: true,
      onPresence: (e) => events.push(e),
    });
    await sub.ready;
    await waitFor(() => events.length === 1, "the room");
    assert.equal(events[0].type, "room");
    assert.equal(events[0].count, 1);
    assert.deepEqual(
      events[0].members.map((m) => m.sub),
      ["alice"],
    );

    const bob = newClient(gw.url, { token: token({ sub: "bob" }) });
    const bobs = bob.subscribe("room.js", () => {}, { presence: true });
    await bobs.ready;
    await waitFor(() => events.length === 2, "bob's join");
    assert.equal(events[1].type, "join");
    assert.equal(events[1].member.sub, "bob");
    assert.equal(events[1].count, 2);
    assert.equal(sub.presence.count, 2);
    await waitFor(() => bobs.presence.count === 2, "bob's room");
    assert.deepEqual([...bobs.presence.members.values()].map((m) => m.sub).sort(), ["alice", "bob"]);

    await bobs.unsubscribe();
    await waitFor(() => events.length === 3, "bob's leave");
    assert.equal(events[2].type, "leave");
    assert.equal(events[2].member.sub, "bob");
    assert.equal(sub.presence.count, 1);
    assert.deepEqual([...sub.presence.members.keys()], [events[0].members[0].id]);
  });

  test("a subscription without presence has no room", async () => {
    const c = newClient(gw.url, { token: token() });
    const sub = c.subscribe("room.none", () => {});
    await sub.ready;
    assert.equal(sub.presence, null);
  });
});
