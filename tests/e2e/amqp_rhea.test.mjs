// rhea (the AMQP 1.0 client for Node and browsers) against a real `wsq serve`, over the
// WebSocket subprotocol `amqp`. Driven by test_amqp_rhea.py, which starts the gateway and
// passes its URL and tokens in the environment.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import rhea from "rhea";
import WebSocket from "ws";

const BASE = process.env.WSQ_HTTP; // http://127.0.0.1:port
const WS_URL = BASE.replace(/^http/, "ws") + "/ws";
const TOKEN = process.env.WSQ_TOKEN; // publish and subscribe ">"
const TOKEN_NEWS = process.env.WSQ_TOKEN_NEWS; // subscribe "news.>" only
const SECRET = process.env.WSQ_SECRET; // the tenant's HS256 key, for tokens minted here
const BAD_TOKEN = TOKEN.slice(0, -4) + "AAAA";

/** A token of tenant acme that expires ``ttl`` seconds from now. */
function mint(ttl, sub = "carol") {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const now = Math.floor(Date.now() / 1000);
  const rights = { subscribe: [">"], publish: [">"] };
  const claims = { iss: "acme", sub, iat: now, exp: now + ttl, wsq: rights };
  const unsigned = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}`;
  return `${unsigned}.${createHmac("sha256", SECRET).update(unsigned).digest("base64url")}`;
}

let unique = 0;
const address = (what) => `${what}.t${process.pid}x${unique++}`;

function connect(token = TOKEN) {
  const container = rhea.create_container();
  const ws = container.websocket_connect(WebSocket);
  const conn = container.connect({
    connection_details: ws(WS_URL, ["amqp"]),
    username: "ignored",
    password: token,
    reconnect: false,
  });
  return new Promise((resolve, reject) => {
    conn.once("connection_open", () => resolve(conn));
    conn.once("connection_error", (ctx) => reject(ctx.connection.error ?? new Error("error")));
    conn.once("disconnected", (ctx) => reject(ctx.error ?? new Error("disconnected")));
  });
}

function closed(conn) {
  return new Promise((resolve) => {
    if (!conn.is_open()) return resolve();
    conn.once("connection_close", () => resolve());
    conn.once("disconnected", () => resolve());
    conn.close();
  });
}

function once(emitter, event, ms = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event} within ${ms} ms`)), ms);
    emitter.once(event, (ctx) => {
      clearTimeout(timer);
      resolve(ctx);
    });
  });
}

/** A receiver whose messages (rhea contexts) are collected; ``next()`` waits for the next. */
async function receiver(conn, options) {
  const r = conn.open_receiver(options);
  const waiting = [];
  const got = [];
  r.on("message", (ctx) => {
    const w = waiting.shift();
    if (w) w(ctx);
    else got.push(ctx);
  });
  r.next = (ms = 5000) =>
    got.length
      ? Promise.resolve(got.shift())
      : new Promise((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(`no message within ${ms} ms`)), ms);
          waiting.push((ctx) => {
            clearTimeout(timer);
            resolve(ctx);
          });
        });
  r.pending = got;
  await once(r, "receiver_open");
  return r;
}

/** Send ``messages`` on a new sender link; resolves with the outcomes, in order. */
async function send(conn, target, ...messages) {
  const s = conn.open_sender(target);
  await once(s, "sendable");
  const outcomes = messages.map(
    (m) =>
      new Promise((resolve) => {
        const d = s.send(m);
        d.outcome = resolve;
      }),
  );
  const settle = (kind) => (ctx) => ctx.delivery.outcome?.({ kind, state: ctx.delivery.remote_state });
  s.on("accepted", settle("accepted"));
  s.on("rejected", settle("rejected"));
  s.on("released", settle("released"));
  const result = await Promise.all(outcomes);
  s.close();
  return result;
}

async function httpPublish(addr, message) {
  const r = await fetch(`${BASE}/v1/addresses/${addr}/messages`, {
    method: "POST",
    headers: { Authorization: `Bearer ${TOKEN}`, "Content-Type": "application/json" },
    body: JSON.stringify(message),
  });
  const text = await r.text();
  assert.equal(r.status, 201, text);
  return JSON.parse(text).ids[0];
}

async function httpRead(addr) {
  const r = await fetch(`${BASE}/v1/addresses/${addr}/messages?after=0-0&limit=10`, {
    headers: { Authorization: `Bearer ${TOKEN}` },
  });
  assert.equal(r.status, 200);
  return (await r.json()).messages;
}

/** A raw wsq.v1 client: open, session 1, and the frames it receives. */
async function wsqClient() {
  const ws = new WebSocket(WS_URL, ["wsq.v1"]);
  const frames = [];
  const waiting = [];
  ws.on("message", (data) => {
    const value = JSON.parse(data.toString());
    for (const f of Array.isArray(value) ? value : [value]) {
      const i = waiting.findIndex((w) => w.op === f.op);
      if (i >= 0) waiting.splice(i, 1)[0].resolve(f);
      else frames.push(f);
    }
  });
  await once(ws, "open");
  ws.expect = (op) => {
    const i = frames.findIndex((f) => f.op === op);
    if (i >= 0) return Promise.resolve(frames.splice(i, 1)[0]);
    return new Promise((resolve) => waiting.push({ op, resolve }));
  };
  ws.sendFrames = (...fs) => ws.send(JSON.stringify(fs));
  ws.sendFrames({ op: "open", token: TOKEN }, { op: "begin", ch: 1 });
  await ws.expect("open");
  await ws.expect("begin");
  return ws;
}

test("a feed: what one rhea client sends, another receives, with every prop mapped", async () => {
  const addr = address("feed");
  const a = await connect();
  const b = await connect();
  try {
    assert.equal(a.properties["wsq-tenant"], "acme");
    assert.equal(a.properties["wsq-sub"], "alice");
    const r = await receiver(b, { source: { address: addr } });
    const [outcome] = await send(a, addr, {
      body: { text: "hello", n: [1, 2.5, null, true] },
      subject: "orders.de",
      message_id: "m-1",
      content_type: "application/json",
      application_properties: { tenant_order: 42, origin: "eu" },
      ttl: 60000,
    });
    assert.equal(outcome.kind, "accepted");
    const { message } = await r.next();
    assert.deepEqual(message.body, { text: "hello", n: [1, 2.5, null, true] });
    assert.equal(message.subject, "orders.de");
    assert.equal(message.message_id, "m-1");
    assert.equal(message.content_type, "application/json");
    assert.deepEqual(message.application_properties, { tenant_order: 42, origin: "eu" });
    assert.match(message.message_annotations["x-opt-wsq-id"], /^\d+-\d+$/);
    assert.equal(message.message_annotations["x-opt-wsq-publisher"], "alice");
    const ttl = message.absolute_expiry_time.getTime() - message.creation_time.getTime();
    assert.equal(ttl, 60000);
  } finally {
    await closed(a);
    await closed(b);
  }
});

test("a data section of application/json is the JSON body; other data is rejected", async () => {
  const addr = address("data");
  const conn = await connect();
  try {
    const r = await receiver(conn, { source: { address: addr } });
    const json = rhea.message.data_section(Buffer.from('{"k":[1,2]}'));
    const binary = rhea.message.data_section(Buffer.from([0, 1, 2]));
    const outcomes = await send(
      conn,
      addr,
      { body: json, content_type: "application/json" },
      { body: binary, content_type: "application/octet-stream" },
    );
    assert.deepEqual(
      outcomes.map((o) => o.kind),
      ["accepted", "rejected"],
    );
    assert.equal(outcomes[1].state.error.condition, "amqp:invalid-field");
    assert.match(outcomes[1].state.error.description, /content-type/);
    assert.deepEqual((await r.next()).message.body, { k: [1, 2] });
    assert.equal(r.pending.length, 0);
  } finally {
    await closed(conn);
  }
});

test("a subject filter on the source, and dedup by message-id", async () => {
  const addr = address("filtered");
  const conn = await connect();
  try {
    const topic = rhea.types.wrap_described("eu.*", "wsq:subject-filter:string");
    const r = await receiver(conn, { source: { address: addr, filter: { subject: topic } } });
    await send(
      conn,
      addr,
      { body: 1, subject: "us.x" },
      { body: 2, subject: "eu.x", message_id: "once" },
      { body: 3, subject: "eu.y", message_id: "once" },
      { body: 4, subject: "eu.z" },
    );
    assert.equal((await r.next()).message.body, 2);
    assert.equal((await r.next()).message.body, 4);
    assert.equal(r.pending.length, 0);
  } finally {
    await closed(conn);
  }
});

test("interop: wsq.v1 and the HTTP bridge on the same address as AMQP, both ways", async () => {
  const addr = address("interop");
  const conn = await connect();
  const v1 = await wsqClient();
  try {
    v1.sendFrames({ op: "attach", ch: 1, handle: 0, role: "receiver", address: addr, credit: 10 });
    await v1.expect("attach");
    const r = await receiver(conn, { source: { address: addr } });
    // AMQP in: wsq.v1 and HTTP out.
    await send(conn, addr, {
      body: { from: "amqp" },
      subject: "s.amqp",
      message_id: "amqp-1",
      application_properties: { h: "v" },
    });
    const t = await v1.expect("transfer");
    assert.deepEqual(t.body, { from: "amqp" });
    assert.equal(t.props.subject, "s.amqp");
    assert.equal(t.props.message_id, "amqp-1");
    assert.deepEqual(t.props.headers, { h: "v" });
    const [stored] = await httpRead(addr);
    assert.equal(stored.id, t.id);
    assert.deepEqual(stored.body, { from: "amqp" });
    assert.equal((await r.next()).message.message_annotations["x-opt-wsq-id"], t.id);
    // HTTP in: AMQP out.
    const id = await httpPublish(addr, { body: "from http", subject: "s.http", headers: { x: 1 } });
    const fromHttp = (await r.next()).message;
    assert.equal(fromHttp.body, "from http");
    assert.equal(fromHttp.subject, "s.http");
    assert.deepEqual(fromHttp.application_properties, { x: 1 });
    assert.equal(fromHttp.message_annotations["x-opt-wsq-id"], id);
    // wsq.v1 in: AMQP out.
    v1.sendFrames({ op: "attach", ch: 1, handle: 1, role: "sender", address: addr });
    await v1.expect("flow");
    v1.sendFrames({ op: "transfer", ch: 1, handle: 1, delivery: 0, body: [1, "two"], props: { content_type: "application/json" } });
    const fromV1 = (await r.next()).message;
    assert.deepEqual(fromV1.body, [1, "two"]);
    assert.equal(fromV1.content_type, "application/json");
  } finally {
    v1.close();
    await closed(conn);
  }
});

test("a refused token fails SASL; no connection opens", async () => {
  await assert.rejects(connect(BAD_TOKEN));
});

test("rights: a link the token does not allow is refused at link scope", async () => {
  const conn = await connect(TOKEN_NEWS);
  try {
    const refused = conn.open_receiver({ source: { address: "chat.secret" } });
    const ctx = await once(refused, "receiver_error");
    assert.equal(ctx.receiver.error.condition, "amqp:unauthorized-access");
    const s = conn.open_sender("news.eu");
    const sctx = await once(s, "sender_error");
    assert.equal(sctx.sender.error.condition, "amqp:unauthorized-access");
    // The connection goes on: an allowed link attaches.
    await receiver(conn, { source: { address: "news.eu" } });
  } finally {
    await closed(conn);
  }
});

test("a token that expires closes the connection with amqp:unauthorized-access", async () => {
  const conn = await connect(mint(2));
  const ctx = await once(conn, "connection_error", 15000);
  assert.equal(ctx.connection.error.condition, "amqp:unauthorized-access");
  assert.match(ctx.connection.error.description, /expired/);
});

/** A queue consumer: ``address::group``, no automatic credit or settlement. */
function consumer(conn, queue, credit = 0) {
  return receiver(conn, {
    source: { address: queue, distribution_mode: "move" },
    credit_window: 0,
    autoaccept: false,
  }).then((r) => {
    if (credit) r.add_credit(credit);
    return r;
  });
}

/** Resolves after ``ms``: to see that nothing more arrives. */
const quiet = (ms = 300) => new Promise((resolve) => setTimeout(resolve, ms));

test("a queue: competing receivers share it; credit is respected", async () => {
  const addr = address("queue");
  const conn = await connect();
  try {
    const a = await consumer(conn, `${addr}::workers`, 2);
    const b = await consumer(conn, `${addr}::workers`, 2);
    assert.equal(a.source.distribution_mode, "move");
    await send(conn, addr, ...[1, 2, 3, 4, 5, 6].map((n) => ({ body: n })));
    const got = [await a.next(), await a.next(), await b.next(), await b.next()];
    await quiet();
    assert.equal(a.pending.length + b.pending.length, 0, "no delivery beyond the credit");
    const bodies = got.map((ctx) => ctx.message.body).sort();
    assert.deepEqual(bodies, [1, 2, 3, 4]);
    for (const ctx of got) ctx.delivery.accept();
    a.add_credit(5);
    const rest = [(await a.next()).message.body, (await a.next()).message.body];
    assert.deepEqual(rest.sort(), [5, 6]);
  } finally {
    await closed(conn);
  }
});

test("a queue's outcomes: released goes to another, modified is counted, rejected is gone", async () => {
  const addr = address("outcomes");
  const queue = `${addr}::workers`;
  const conn = await connect();
  try {
    const a = await consumer(conn, queue, 1);
    await send(conn, addr, { body: "m1" });
    const first = await a.next();
    assert.equal(first.message.body, "m1");
    assert.equal(first.message.delivery_count, 0);
    const b = await consumer(conn, queue, 3);
    first.delivery.release();
    const again = await b.next();
    assert.equal(again.message.body, "m1");
    assert.equal(again.message.delivery_count, 0, "an explicit release is not counted");
    again.delivery.modified({ delivery_failed: true });
    const third = await b.next();
    assert.equal(third.message.body, "m1");
    assert.equal(third.message.delivery_count, 1, "modified(delivery-failed) is counted");
    third.delivery.reject({ condition: "amqp:internal-error", description: "cannot" });
    await quiet();
    assert.equal(a.pending.length + b.pending.length, 0, "a rejected message is not redelivered");
  } finally {
    await closed(conn);
  }
});

test("a consumer that vanishes gives its unsettled messages to another", async () => {
  const addr = address("vanish");
  const queue = `${addr}::workers`;
  const doomed = await connect();
  const survivor = await connect();
  try {
    const a = await consumer(doomed, queue, 2);
    await send(survivor, addr, { body: "x" }, { body: "y" });
    const held = [(await a.next()).message.body, (await a.next()).message.body];
    assert.deepEqual(held.sort(), ["x", "y"]);
    const b = await consumer(survivor, queue, 10);
    doomed.socket.end(); // the socket drops: no detach, no close
    const given = [await b.next(), await b.next()];
    assert.deepEqual(given.map((c) => c.message.body).sort(), ["x", "y"]);
    for (const ctx of given) {
      assert.equal(ctx.message.delivery_count, 1);
      ctx.delivery.accept();
    }
  } finally {
    await closed(survivor);
  }
});

/** SASL ANONYMOUS (rhea: a user name and no password): the token goes over $cbs. */
function connectAnonymous() {
  const container = rhea.create_container();
  const ws = container.websocket_connect(WebSocket);
  const conn = container.connect({
    connection_details: ws(WS_URL, ["amqp"]),
    username: "anonymous",
    reconnect: false,
  });
  return new Promise((resolve, reject) => {
    conn.once("connection_open", () => resolve(conn));
    conn.once("disconnected", (ctx) => reject(ctx.error ?? new Error("disconnected")));
  });
}

/** A sender and a receiver on $cbs; ``putToken(token)`` resolves with the answer. */
async function cbsNode(conn) {
  const replies = await receiver(conn, { source: { address: "$cbs" } });
  const requests = conn.open_sender("$cbs");
  await once(requests, "sendable");
  let n = 0;
  return {
    async putToken(token) {
      const id = `req-${n++}`;
      requests.send({
        message_id: id,
        application_properties: { operation: "put-token", type: "jwt", name: "wsq" },
        body: token,
      });
      const { message } = await replies.next();
      assert.equal(message.correlation_id, id);
      return message.application_properties;
    },
  };
}

test("ANONYMOUS with a put-token on $cbs: links wait for it, another refreshes it", async () => {
  const addr = address("cbs");
  const conn = await connectAnonymous();
  try {
    const early = conn.open_receiver({ source: { address: addr } });
    const refused = await once(early, "receiver_error");
    assert.equal(refused.receiver.error.condition, "amqp:unauthorized-access");
    const cbs = await cbsNode(conn);
    const first = await cbs.putToken(mint(60));
    assert.equal(first["status-code"], 202);
    assert.equal(first["wsq-tenant"], "acme");
    assert.equal(first["wsq-sub"], "carol");
    const r = await receiver(conn, { source: { address: addr } });
    await send(conn, addr, { body: "after the token" });
    assert.equal((await r.next()).message.body, "after the token");
    const second = await cbs.putToken(mint(600));
    assert.equal(second["status-code"], 202);
    assert.ok(second["wsq-exp"] > first["wsq-exp"], "the expiry moved");
    const error = once(conn, "connection_error");
    const bad = await cbs.putToken("not a token");
    assert.equal(bad["status-code"], 401, "a refused refresh is answered, then closes");
    assert.equal((await error).connection.error.condition, "amqp:unauthorized-access");
  } finally {
    await closed(conn);
  }
});

test("a put-token that is refused closes the connection with amqp:unauthorized-access", async () => {
  const conn = await connectAnonymous();
  const cbs = await cbsNode(conn);
  const error = once(conn, "connection_error");
  const answer = await cbs.putToken(BAD_TOKEN);
  assert.equal(answer["status-code"], 401);
  assert.equal((await error).connection.error.condition, "amqp:unauthorized-access");
});

test("a refresh for another sub closes the connection", async () => {
  const conn = await connectAnonymous();
  const cbs = await cbsNode(conn);
  assert.equal((await cbs.putToken(mint(60, "dave")))["status-code"], 202);
  const error = once(conn, "connection_error");
  assert.equal((await cbs.putToken(mint(60, "eve")))["status-code"], 401);
  const ctx = await error;
  assert.equal(ctx.connection.error.condition, "amqp:unauthorized-access");
  assert.match(ctx.connection.error.description, /same tenant and sub/);
});

test("position and rewind filters: from the oldest retained, or the last N", async () => {
  const addr = address("rewind");
  const conn = await connect();
  try {
    await send(conn, addr, { body: 1 }, { body: 2 }, { body: 3 });
    const described = (value, descriptor) => rhea.types.wrap_described(value, descriptor);
    const all = await receiver(conn, {
      source: { address: addr, filter: { from: described("^", "wsq:position-filter:string") } },
    });
    const bodies = [];
    for (let i = 0; i < 3; i++) bodies.push((await all.next()).message.body);
    assert.deepEqual(bodies, [1, 2, 3]);
    assert.ok(all.source.filter.from, "the applied filter is in the answer");
    const lastTwo = await receiver(conn, {
      source: {
        address: addr,
        filter: { rewind: described(rhea.types.wrap_uint(2), "wsq:rewind-filter:uint") },
      },
    });
    assert.deepEqual([(await lastTwo.next()).message.body, (await lastTwo.next()).message.body], [2, 3]);
    await quiet();
    assert.equal(lastTwo.pending.length, 0);
    const unknown = await receiver(conn, {
      source: { address: addr, filter: { x: described("?", "acme:unknown-filter") } },
    });
    assert.ok(!unknown.source.filter, "an unknown filter is left out of the answer");
  } finally {
    await closed(conn);
  }
});
