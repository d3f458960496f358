// The client against a real gateway on the memory broker (python -m wsq serve).
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import WebSocket from "ws";
import { Client, WsqError, comparePositions } from "../src/index.js";
import {
  Gateway,
  SECRET,
  clientsClosedAfterEach,
  collector,
  countingWebSocket,
  freePort,
  sleep,
  token,
  waitFor,
  wsProxy,
} from "./helpers.js";

let gw;

before(async () => {
  gw = await Gateway.start({
    broker: "memory://",
    idleMs: 1500,
    // A tenant that keeps 3 messages per address, to lose some to retention on purpose.
    extraTenant: `[tenants.tiny]\nkeys = [ { kid = "k1", alg = "HS256", secret = "${SECRET}" } ]\nretention_max_len = 3\n`,
  });
});

after(async () => {
  await gw?.stop();
});

const newClient = clientsClosedAfterEach(() => ({ token: token(), maxReconnectDelay: 500 }));
const client = ({ url, ...options } = {}) => newClient(url ?? gw.url, options);

describe("subscribe and publish", () => {
  test("a published message reaches the subscriber with its id, body and props", async () => {
    const c = client({ messageIdPrefix: "first" });
    const { got, handler } = collector();
    const sub = c.subscribe("news.eu", handler);
    await sub.ready;
    const id = await c.publish(
      "news.eu",
      { text: "hello" },
      { subject: "news.eu.sport", headers: { lang: "en" } },
    );
    await waitFor(() => got.length === 1, "the delivery");
    const [msg] = got;
    assert.equal(msg.id, id);
    assert.match(id, /^\d+-\d+$/);
    assert.deepEqual(msg.body, { text: "hello" });
    assert.equal(msg.subject, "news.eu.sport");
    assert.equal(msg.props.publisher, "alice");
    assert.deepEqual(msg.props.headers, { lang: "en" });
    assert.equal(msg.props.message_id, "first-1"); // generated for dedup: prefix, then a count
    assert.equal(sub.position, id);
    assert.equal(c.state, "connected");
    assert.equal(c.info.tenant, "acme");
  });

  test("messages arrive in order and the handler's pace refills credit", async () => {
    const c = client({ credit: 4 });
    const seen = [];
    const sub = c.subscribe("orders.q", async (msg) => {
      await sleep(1); // an async handler: credit is returned only as it finishes
      seen.push(msg.body);
    });
    await sub.ready;
    const ids = await Promise.all(Array.from({ length: 40 }, (_, i) => c.publish("orders.q", i)));
    await waitFor(() => seen.length === 40, "40 deliveries through a window of 4");
    assert.deepEqual(
      seen,
      Array.from({ length: 40 }, (_, i) => i),
    );
    assert.deepEqual([...ids].sort(comparePositions), ids);
  });

  test("from '^' replays what is retained, then continues live", async () => {
    const c = client();
    await c.publish("replay.a", "old-1");
    await c.publish("replay.a", "old-2");
    const { handler, bodies } = collector();
    const sub = c.subscribe("replay.a", handler, { from: "^" });
    await sub.ready;
    await c.publish("replay.a", "new");
    await waitFor(() => bodies().length === 3, "three deliveries");
    assert.deepEqual(bodies(), ["old-1", "old-2", "new"]);
  });

  test("resuming from a position retention dropped is surfaced as a gap", async () => {
    const c = client({ token: token({ iss: "tiny" }) });
    const first = await c.publish("gap.t", 0);
    for (let i = 1; i <= 6; i++) await c.publish("gap.t", i);
    const clientGaps = [];
    c.on("gap", (g) => clientGaps.push(g));
    const subGaps = [];
    const { handler, bodies } = collector();
    const sub = c.subscribe("gap.t", handler, { from: first, onGap: (g) => subGaps.push(g) });
    await sub.ready;
    await waitFor(() => bodies().length === 3, "the retained messages");
    assert.deepEqual(bodies(), [4, 5, 6]);
    assert.equal(subGaps.length, 1);
    assert.equal(subGaps[0].recovered, false);
    assert.equal(clientGaps[0].subscription, sub);
    assert.equal(clientGaps[0].address, "gap.t");
  });

  test("a subject filter only delivers matching messages", async () => {
    const c = client();
    const { handler, bodies } = collector();
    await c.subscribe("filtered", handler, { filter: { subject: "x.*" } }).ready;
    await c.publish("filtered", "no", { subject: "y.1" });
    await c.publish("filtered", "yes", { subject: "x.1" });
    await waitFor(() => bodies().length === 1, "the matching message");
    assert.deepEqual(bodies(), ["yes"]);
  });

  test("unsubscribe stops deliveries", async () => {
    const c = client();
    const a = collector();
    const b = collector();
    const subA = c.subscribe("unsub.t", a.handler);
    await subA.ready;
    await c.subscribe("unsub.t", b.handler).ready;
    await subA.unsubscribe();
    assert.equal(subA.closed, true);
    await c.publish("unsub.t", 1);
    await waitFor(() => b.got.length === 1, "the other subscription's delivery");
    assert.equal(a.got.length, 0);
  });

  test("100 subscriptions share one socket and all receive", async () => {
    const { WebSocket: Counting, sockets } = countingWebSocket();
    const c = client({ WebSocket: Counting });
    const received = new Map();
    const subs = [];
    for (let i = 0; i < 100; i++) {
      subs.push(c.subscribe(`many.s${i}`, (msg) => received.set(msg.address, msg.body)));
    }
    await Promise.all(subs.map((s) => s.ready));
    await Promise.all(subs.map((_, i) => c.publish(`many.s${i}`, i)));
    await waitFor(() => received.size === 100, "100 deliveries");
    for (let i = 0; i < 100; i++) assert.equal(received.get(`many.s${i}`), i);
    assert.equal(sockets.length, 1);
    assert.equal(c.state, "connected");
  });

  test("a message id given by the publisher deduplicates a retry", async () => {
    const c = client();
    const { handler, bodies } = collector();
    await c.subscribe("dedup.t", handler).ready;
    const first = await c.publish("dedup.t", "once", { messageId: "order-42" });
    const second = await c.publish("dedup.t", "once", { messageId: "order-42" });
    assert.equal(second, first);
    await c.publish("dedup.t", "after");
    await waitFor(() => bodies().length === 2, "two deliveries");
    assert.deepEqual(bodies(), ["once", "after"]);
  });
});

describe("refusals", () => {
  test("publishing to a forbidden address rejects with wsq:forbidden; the rest goes on", async () => {
    const c = client({ token: token({ publish: ["allowed.>"], subscribe: ["allowed.>"] }) });
    await assert.rejects(c.publish("secret.x", 1), (error) => {
      assert.ok(error instanceof WsqError);
      assert.equal(error.condition, "wsq:forbidden");
      assert.equal(error.address, "secret.x");
      return true;
    });
    const errors = [];
    const sub = c.subscribe("secret.y", () => {}, { onError: (e) => errors.push(e) });
    await assert.rejects(sub.ready, (error) => error.condition === "wsq:forbidden");
    assert.equal(sub.closed, true);
    assert.equal(errors[0].condition, "wsq:forbidden");
    const { handler, bodies } = collector();
    await c.subscribe("allowed.z", handler).ready;
    await c.publish("allowed.z", "fine");
    await waitFor(() => bodies().length === 1, "a delivery after the refusals");
    assert.equal(c.state, "connected");
  });

  test("a $sys. address goes to the gateway (which refuses it without the ops right)", async () => {
    const c = client();
    for (const bad of ["$sys.", "$sys", "$other.stats", "$sys..stats"]) {
      assert.throws(
        () => c.subscribe(bad, () => {}),
        (e) => e.condition === "wsq:invalid-frame",
        bad,
      );
    }
    const sub = c.subscribe("$sys.stats", () => {}, { rewind: 10 });
    await assert.rejects(sub.ready, (error) => error.condition === "wsq:forbidden");
    await assert.rejects(c.publish("$sys.stats", 1), (e) => e.condition === "wsq:invalid-frame");
    assert.equal(c.state, "connected");
  });

  test("a bad message is rejected locally before it can break the socket", async () => {
    const c = client();
    await assert.rejects(c.publish("bad..address", 1), (e) => e.condition === "wsq:invalid-frame");
    await assert.rejects(
      c.publish("big.one", "x".repeat(2 * 1048576)),
      (e) => e.condition === "wsq:frame-too-large",
    );
    const cyclic = {};
    cyclic.self = cyclic;
    await assert.rejects(c.publish("cyclic.t", cyclic), (e) => e.condition === "wsq:invalid-frame");
    assert.throws(
      () => c.subscribe("a b", () => {}),
      (e) => e.condition === "wsq:invalid-frame",
    );
    assert.match(await c.publish("ok.t", 1), /^\d+-\d+$/);
  });

  test("a refused token gives up with a fatal error event, without reconnecting", async () => {
    const { WebSocket: Counting, sockets } = countingWebSocket();
    const bad = token({ secret: "not-the-secret-not-the-secret-not-the-secret" });
    const c = client({ token: bad, WebSocket: Counting });
    const errors = [];
    c.on("error", (e) => errors.push(e));
    const rejected = assert.rejects(
      c.publish("never.t", 1),
      (e) => e.condition === "wsq:unauthorized",
    );
    await waitFor(() => c.state === "closed", "the client to give up");
    await rejected;
    assert.equal(errors.at(-1).condition, "wsq:unauthorized");
    assert.equal(errors.at(-1).fatal, true);
    assert.equal(sockets.length, 1);
    await sleep(300); // no reconnect storm
    assert.equal(sockets.length, 1);
  });

  test("a token function is asked again once after a refusal, then the client gives up", async () => {
    const { WebSocket: Counting, sockets } = countingWebSocket();
    let calls = 0;
    const c = client({
      WebSocket: Counting,
      token: async () => {
        calls += 1;
        return token({ secret: `wrong-secret-number-${calls}-wrong-secret-wrong-secret` });
      },
    });
    const fatal = new Promise((resolve) => c.on("error", (e) => e.fatal && resolve(e)));
    const error = await fatal;
    assert.equal(error.condition, "wsq:unauthorized");
    assert.equal(calls, 2);
    assert.equal(sockets.length, 2);
    assert.equal(c.state, "closed");
  });

  test("a token function that answers the refused token again: one fatal error, closed", async () => {
    // A page's paste field: the token function answers whatever is typed, the same bad token.
    const { WebSocket: Counting, sockets } = countingWebSocket();
    const bad = token({ secret: "not-the-secret-not-the-secret-not-the-secret" });
    const c = client({ WebSocket: Counting, token: async () => bad });
    const errors = [];
    c.on("error", (e) => errors.push(e));
    await waitFor(() => c.state === "closed", "the client to give up");
    assert.deepEqual(
      errors.map((e) => [e.condition, e.fatal]),
      [
        ["wsq:unauthorized", false], // the gateway's refusal: the function is asked once more
        ["wsq:unauthorized", true], // it answered the same token: the client gives up
      ],
    );
    assert.equal(sockets.length, 1);
  });

  test("a token function that recovers after one refusal gets connected", async () => {
    let calls = 0;
    const c = client({
      token: () =>
        ++calls === 1 ? token({ secret: "wrong-secret-wrong-secret-wrong-secret-1" }) : token(),
    });
    const { handler, bodies } = collector();
    await c.subscribe("recovering.t", handler).ready;
    await c.publish("recovering.t", "in");
    await waitFor(() => bodies().length === 1, "a delivery");
    assert.equal(calls, 2);
  });
});

describe("move mode", () => {
  test("accepted when the handler returns, released when it throws, settled explicitly", async () => {
    const c = client();
    const calls = [];
    let failOnce = true;
    const sub = c.subscribe(
      "jobs.q",
      (msg) => {
        calls.push([msg.body, msg.redelivered]);
        if (msg.body === "flaky" && failOnce) {
          failOnce = false;
          throw new Error("not now");
        }
        if (msg.body === "poison") msg.reject();
      },
      { mode: "move", group: "workers" },
    );
    const handlerErrors = [];
    c.on("error", (e) => e.condition === "wsq-client:handler" && handlerErrors.push(e));
    await sub.ready;
    await c.publish("jobs.q", "flaky");
    await c.publish("jobs.q", "poison");
    await c.publish("jobs.q", "fine");
    await waitFor(() => calls.length === 4, "four handler calls");
    // Released (not counted as a failure) and delivered again; the rest exactly once.
    assert.deepEqual(calls.map(([b]) => b).sort(), ["fine", "flaky", "flaky", "poison"]);
    assert.ok(calls.every(([, redelivered]) => redelivered === 0));
    assert.equal(handlerErrors.length, 1);
    await sub.unsubscribe();
    // Nothing is left for the group: a new consumer's first message is a new one.
    await c.publish("jobs.q", "next");
    const { handler, bodies } = collector();
    await c.subscribe("jobs.q", handler, { mode: "move", group: "workers" }).ready;
    await waitFor(() => bodies().length >= 1, "the next job");
    assert.deepEqual(bodies(), ["next"]);
  });

  test("the job of a consumer that went away reaches another, marked redelivered", async () => {
    const a = client();
    const held = [];
    // A takes the job and never finishes it.
    await a.subscribe("jobs.vanish", (msg) => held.push(msg) && new Promise(() => {}), {
      mode: "move",
    }).ready;
    await a.publish("jobs.vanish", "job");
    await waitFor(() => held.length === 1, "A holding the job");
    const b = client();
    const seen = [];
    await b.subscribe("jobs.vanish", (msg) => seen.push([msg.body, msg.redelivered]), {
      mode: "move",
    }).ready;
    await a.close(); // gone without an answer: the job may have been half done
    await waitFor(() => seen.length === 1, "B getting the job");
    assert.deepEqual(seen, [["job", 1]]);
    assert.equal(held[0].redelivered, 0);
  });

  test("a modified delivery comes back with its redelivery counted", async () => {
    const c = client();
    const seen = [];
    await c.subscribe(
      "jobs.retry",
      (msg) => {
        seen.push(msg.redelivered);
        if (msg.redelivered === 0) msg.modify();
      },
      { mode: "move" },
    ).ready;
    await c.publish("jobs.retry", "job");
    await waitFor(() => seen.length === 2, "the redelivery");
    assert.deepEqual(seen, [0, 1]);
  });
});

describe("connection upkeep", () => {
  test("heartbeats keep an idle connection up past both sides' idle", async () => {
    const { WebSocket: Counting, sockets } = countingWebSocket();
    // The gateway's idle is 1500 ms; the client tolerates 1000 ms of silence from it.
    const c = client({ WebSocket: Counting, idle: 1000 });
    const errors = [];
    c.on("error", (e) => errors.push(e));
    await waitFor(() => c.state === "connected", "connected");
    await sleep(3200);
    assert.equal(c.state, "connected");
    assert.equal(sockets.length, 1);
    assert.deepEqual(errors, []);
  });

  test("a short-lived token is refreshed on the live socket before it expires", async () => {
    const { WebSocket: Counting, sockets } = countingWebSocket();
    let calls = 0;
    const c = client({
      WebSocket: Counting,
      token: () => {
        calls += 1;
        return token({ ttl: 3 });
      },
    });
    const refreshed = [];
    c.on("refresh", (r) => refreshed.push(r.exp));
    const { handler, bodies } = collector();
    await c.subscribe("refresh.t", handler).ready;
    const firstExp = c.info.exp;
    await waitFor(() => refreshed.length >= 2, "two refreshes", 10000);
    assert.ok(refreshed[0] >= firstExp);
    assert.ok(Date.now() / 1000 > firstExp, "the first token has expired meanwhile");
    await c.publish("refresh.t", "still here");
    await waitFor(() => bodies().length === 1, "a delivery on the refreshed socket");
    assert.equal(sockets.length, 1);
    assert.ok(calls >= 3);
  });

  test("close() fails pending publishes and leaves no timer or socket behind", async () => {
    const port = await freePort(); // nothing listens: the publish waits in the outbox
    const timers = () => process.getActiveResourcesInfo().filter((r) => r === "Timeout").length;
    const before = timers();
    const c = new Client(`ws://127.0.0.1:${port}/ws`, {
      token: token(),
      WebSocket,
      reconnectDelay: 20,
    });
    const states = [];
    c.on("state", (s) => states.push(s));
    const rejected = assert.rejects(
      c.publish("offline.t", 1),
      (e) => e.condition === "wsq-client:closed",
    );
    await waitFor(() => states.includes("disconnected"), "a failed connection");
    await c.close();
    await rejected;
    assert.equal(c.state, "closed");
    assert.throws(
      () => c.subscribe("x", () => {}),
      (e) => e.condition === "wsq-client:closed",
    );
    await assert.rejects(c.publish("x", 1), (e) => e.condition === "wsq-client:closed");
    assert.ok(timers() <= before, "a timer of the client outlived close()");
  });

  test("the outbox is bounded: a publish beyond it is refused at once", async () => {
    const port = await freePort();
    const c = new Client(`ws://127.0.0.1:${port}/ws`, { token: token(), WebSocket, outboxSize: 3 });
    const waiting = [1, 2, 3].map((i) =>
      assert.rejects(c.publish("offline.t", i), (e) => e.condition === "wsq-client:closed"),
    );
    await assert.rejects(c.publish("offline.t", 4), (e) => {
      assert.equal(e.condition, "wsq:resource-limit-exceeded");
      return true;
    });
    assert.equal(c.pendingPublishes, 3);
    await c.close();
    await Promise.all(waiting);
  });
});

describe("lost answers and a silent gateway (through a proxy)", () => {
  test("a publish whose answer was lost is retried with its message_id and stored once", async () => {
    const proxy = await wsProxy(gw.url);
    try {
      const subscriber = client();
      const { got, handler, bodies } = collector();
      await subscriber.subscribe("lost.answer", handler).ready;
      const publisher = client({ url: proxy.url });
      await publisher.publish("lost.answer", "warm-up");
      // The gateway stores the next one, but its disposition never reaches the publisher.
      proxy.onUp = (text) => {
        if (text.includes('"lost-answer"')) proxy.muteDown = true;
      };
      const pending = publisher.publish("lost.answer", "lost-answer");
      await waitFor(() => bodies().includes("lost-answer"), "the subscriber getting it");
      assert.equal(publisher.pendingPublishes, 1, "no answer reached the publisher");
      proxy.onUp = null;
      proxy.muteDown = false;
      proxy.cutAll(); // the publisher reconnects and sends it again
      const id = await pending;
      await publisher.publish("lost.answer", "after");
      await waitFor(() => bodies().includes("after"), "the next message");
      assert.deepEqual(bodies(), ["warm-up", "lost-answer", "after"]);
      assert.equal(id, got[1].id, "the retry was answered with the first position");
      assert.equal(proxy.connections, 2);
    } finally {
      await proxy.close();
    }
  });

  test("a client whose frames stop reaching the gateway is closed at the gateway's idle", async () => {
    const proxy = await wsProxy(gw.url);
    try {
      const c = client({ url: proxy.url });
      const errors = [];
      c.on("error", (e) => errors.push([e.condition, Date.now()]));
      await c.subscribe("deaf.gw", () => {}).ready;
      proxy.muteUp = true; // heartbeats and all: the gateway hears nothing more
      const last = proxy.lastUp;
      await waitFor(() => errors.length > 0, "the gateway's close", 10000);
      const [[condition, at]] = errors;
      assert.equal(condition, "wsq:idle-timeout");
      // The gateway looks every quarter of its idle (1500 ms): closed between 1500 and 1875 ms
      // after the last frame it received, plus the way down; twice the idle would be 3000.
      const after = at - last;
      assert.ok(after >= 1500 && after <= 2300, `closed ${after} ms after the last frame`);
      proxy.muteUp = false;
      await waitFor(() => proxy.connections >= 2 && c.state === "connected", "a new connection");
    } finally {
      await proxy.close();
    }
  });

  test("a gateway gone silent is noticed by the idle timeout and replaced", async () => {
    const proxy = await wsProxy(gw.url);
    try {
      const c = client({ url: proxy.url, idle: 600 });
      const errors = [];
      c.on("error", (e) => errors.push(e.condition));
      const { handler, bodies } = collector();
      await c.subscribe("silent.gw", handler).ready;
      proxy.muteDown = true; // the socket stays open, nothing comes through
      await waitFor(() => errors.includes("wsq:idle-timeout"), "the client noticing the silence");
      proxy.muteDown = false;
      // ">= 2": on a loaded machine a 600 ms idle may time out once more before one sticks.
      await waitFor(() => proxy.connections >= 2 && c.state === "connected", "a new connection");
      await c.publish("silent.gw", "back");
      await waitFor(() => bodies().includes("back"), "a delivery on the new socket");
    } finally {
      await proxy.close();
    }
  });
});
