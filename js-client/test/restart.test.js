// The gateway dies (SIGKILL) or drains (SIGTERM, wsq:going-away) and comes back on the same
// port: subscriptions resume after their last position and the outbox delivers what was
// published meanwhile, each message exactly once. On Redis the history survives the gateway,
// so this holds even for messages in flight at the kill; on the memory broker it holds for
// messages published while the gateway is down.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  Gateway,
  clientsClosedAfterEach,
  collector,
  countingWebSocket,
  sleep,
  startRedis,
  token,
  waitFor,
} from "./helpers.js";

const newClient = clientsClosedAfterEach(() => ({ token: () => token(), maxReconnectDelay: 400 }));
const client = (gw, options = {}) => newClient(gw.url, options);

const range = (from, to) => Array.from({ length: to - from }, (_, i) => from + i);

describe("Redis broker: gateway restarts", () => {
  let redis = null;
  let gw = null;

  before(async () => {
    redis = await startRedis(); // null locally without redis-server: the tests skip
    if (redis) gw = await Gateway.start({ broker: redis.url, idleMs: 2000 });
  });

  after(async () => {
    await gw?.stop();
    await redis?.stop();
  });

  test("SIGKILL mid-stream: every message delivered once, in order, across the restart", async (t) => {
    if (!redis) return t.skip("redis-server is not installed");
    const subSockets = countingWebSocket();
    const subscriber = client(gw, { WebSocket: subSockets.WebSocket });
    const publisher = client(gw);
    const { handler, bodies } = collector();
    const gaps = [];
    const sub = subscriber.subscribe("feed.restart", handler, { onGap: (g) => gaps.push(g) });
    await sub.ready;
    const firstNode = subscriber.info.node;

    const published = [];
    const publishSome = async (from, to, pause) => {
      for (const i of range(from, to)) {
        published.push(publisher.publish("feed.restart", i));
        if (pause) await sleep(pause);
      }
    };
    await publishSome(0, 60, 2);
    await waitFor(() => bodies().length >= 20, "deliveries before the kill");
    // Killed with publishes in flight and deliveries on the wire.
    const streaming = publishSome(60, 120, 2);
    await sleep(20);
    await gw.kill("SIGKILL");
    await streaming;
    await waitFor(
      () => subscriber.state !== "connected" && publisher.state !== "connected",
      "both clients noticing",
    );
    await publishSome(120, 150, 0); // while the gateway is down: kept in the outbox
    assert.ok(publisher.pendingPublishes > 0);
    await gw.start();
    await publishSome(150, 200, 1);
    const ids = await Promise.all(published);
    assert.equal(new Set(ids).size, 200, "each message stored once");
    await waitFor(() => bodies().length >= 200, "200 deliveries");
    await sleep(100); // a late duplicate would show up here
    assert.deepEqual(bodies(), range(0, 200));
    assert.deepEqual(gaps, []);
    assert.ok(subSockets.sockets.length >= 2, "the subscriber reconnected");
    assert.equal(subscriber.state, "connected");
    assert.notEqual(subscriber.info.node, firstNode, "served by the new gateway process");
  });

  test("SIGTERM: going-away, then the outbox and the feed carry on after the restart", async (t) => {
    if (!redis) return t.skip("redis-server is not installed");
    const subscriber = client(gw);
    const publisher = client(gw);
    const errors = [];
    subscriber.on("error", (e) => errors.push(e.condition));
    const { handler, bodies } = collector();
    await subscriber.subscribe("feed.drain", handler).ready;
    await Promise.all(range(0, 10).map((i) => publisher.publish("feed.drain", i)));
    await waitFor(() => bodies().length === 10, "deliveries before the drain");
    await gw.kill("SIGTERM");
    assert.ok(errors.includes("wsq:going-away"), `errors seen: ${errors}`);
    await waitFor(() => publisher.state !== "connected", "the publisher noticing");
    const offline = range(10, 30).map((i) => publisher.publish("feed.drain", i));
    await sleep(50);
    assert.equal(publisher.pendingPublishes, 20);
    await gw.start();
    const ids = await Promise.all(offline);
    assert.equal(new Set(ids).size, 20);
    await waitFor(() => bodies().length >= 30, "30 deliveries");
    await sleep(100);
    assert.deepEqual(bodies(), range(0, 30));
  });
});

describe("memory broker: gateway restart", () => {
  let gw = null;

  before(async () => {
    gw = await Gateway.start({ broker: "memory://", idleMs: 2000 });
  });

  after(async () => {
    await gw?.stop();
  });

  test("publishes made while the gateway is down arrive once after it is back", async () => {
    const subscriber = client(gw);
    const publisher = client(gw);
    const { handler, bodies } = collector();
    await subscriber.subscribe("mem.restart", handler).ready;
    await publisher.publish("mem.restart", "before");
    await waitFor(() => bodies().length === 1, "the first delivery");
    await gw.kill("SIGKILL");
    await waitFor(
      () => subscriber.state !== "connected" && publisher.state !== "connected",
      "both noticing",
    );
    const offline = range(0, 20).map((i) => publisher.publish("mem.restart", i));
    await gw.start();
    await Promise.all(offline);
    await waitFor(() => bodies().length >= 21, "the offline publishes");
    await sleep(100);
    assert.deepEqual(bodies(), ["before", ...range(0, 20)]);
  });
});
