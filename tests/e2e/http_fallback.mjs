// wsq-client in real headless Chromium with window.WebSocket removed: the client falls back to
// wsq.v1 over HTTP by itself (and says so), then a round trip, a feed resumed after its stream
// was lost, and queue work with accept and release, all through the origin it is given (the
// test puts HAProxy in front of two gateways there, no sticky sessions).
// Usage: node http_fallback.mjs http://127.0.0.1:PORT TOKEN
import { launch } from "./browser.mjs";

const [origin, token] = process.argv.slice(2);

const SCRIPT = `
  import { Client } from "/wsq-client.js";
  const TOKEN = ${JSON.stringify(token)};
  const result = { hasWebSocket: typeof WebSocket !== "undefined" };
  const until = (check, what, ms = 15000) => new Promise((resolve, reject) => {
    const start = Date.now();
    const poll = () => {
      if (check()) return resolve();
      if (Date.now() - start > ms) return reject(new Error("timed out waiting for " + what));
      setTimeout(poll, 20);
    };
    poll();
  });
  const open = (name) => {
    const client = new Client("/ws", { token: TOKEN, maxReconnectDelay: 300, clientName: name });
    const seen = { transports: [], opens: [] };
    client.on("transport", (t) => seen.transports.push(t));
    client.on("open", (info) => seen.opens.push(info.node));
    client.on("error", (e) => console.log(name + " error " + e.condition + " " + e.description));
    return { client, seen };
  };
  try {
    // 1. Round trip.
    const a = open("rt");
    const rt = [];
    const sub = a.client.subscribe("browser.http.rt", (msg) => { rt.push({ id: msg.id, body: msg.body }); });
    await sub.ready;
    const ids = [await a.client.publish("browser.http.rt", { n: 1 }), await a.client.publish("browser.http.rt", { n: 2 })];
    await until(() => rt.length === 2, "the round trip");
    result.roundTrip = { transports: a.seen.transports, transport: a.client.transport,
      ok: rt[0].id === ids[0] && rt[1].id === ids[1] && rt[0].body.n === 1 && rt[1].body.n === 2 };

    // 2. Resume: the feed's stream is lost mid-way; what was published meanwhile comes after.
    const feed = [];
    const fsub = a.client.subscribe("browser.http.feed", (msg) => { feed.push(msg.body); });
    await fsub.ready;
    for (let i = 0; i < 10; i++) await a.client.publish("browser.http.feed", i);
    await until(() => feed.length === 10, "the first ten");
    const pub = open("publisher");
    const opensBefore = a.seen.opens.length;
    a.client._conn.ws.close(); // the HTTP stream drops (as a network would cut it)
    for (let i = 10; i < 20; i++) await pub.client.publish("browser.http.feed", i);
    await until(() => feed.length >= 20, "the feed resumed");
    result.resume = { feed, reopened: a.seen.opens.length > opensBefore, nodes: a.seen.opens };

    // 3. Move mode: two consumers of one group; the first delivery of job 7 is released and
    // comes back; every job is accepted once.
    const c1 = open("w1"), c2 = open("w2");
    const done = [];
    let failedOnce = false;
    const work = (who) => (msg) => {
      if (msg.body === 7 && !failedOnce) { failedOnce = msg.release(); return; }
      msg.accept();
      done.push({ who, job: msg.body });
    };
    c1.client.on("error", () => {}); c2.client.on("error", () => {});
    const q = { mode: "move", group: "workers", credit: 4 };
    const s1 = c1.client.subscribe("browser.http.jobs", work("w1"), q);
    const s2 = c2.client.subscribe("browser.http.jobs", work("w2"), q);
    await Promise.all([s1.ready, s2.ready]);
    for (let i = 0; i < 20; i++) await pub.client.publish("browser.http.jobs", i);
    await until(() => done.length >= 20, "twenty jobs");
    result.move = { done, failedOnce, transports: [c1.client.transport, c2.client.transport] };
    for (const c of [a, pub, c1, c2]) await c.client.close();
  } catch (error) {
    result.error = String((error && error.stack) || error);
  }
  document.body.dataset.result = JSON.stringify(result);
`;

const browser = await launch();
try {
  const context = await browser.newContext();
  // Before any script of the page: no WebSocket in this window at all.
  await context.addInitScript(() => {
    delete window.WebSocket;
  });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => console.log(`page ${m.type()}: ${m.text()}`));
  page.on("response", (r) => {
    if (r.status() >= 400) r.text().then((t) => console.log(`page answer ${r.status()} ${r.request().method()} ${r.url()} ${t.slice(0, 200)}`), () => {});
  });
  await page.goto(`${origin}/healthz`);
  await page.addScriptTag({ type: "module", content: SCRIPT });
  await page
    .waitForFunction(() => document.body.dataset.result, null, { timeout: 60000 })
    .catch((e) => {
      throw new Error(`${e.message}; page errors: ${errors}`);
    });
  const result = JSON.parse(await page.evaluate(() => document.body.dataset.result));
  const fail = (why) => {
    throw new Error(`${why}: ${JSON.stringify(result)}`);
  };
  if (result.error) fail("the page failed");
  if (result.hasWebSocket) fail("window.WebSocket was not removed");
  const rt = result.roundTrip;
  if (rt.transport !== "http" || rt.transports.length !== 1) fail("no fallback said");
  if (rt.transports[0].transport !== "http") fail("the transport event");
  if (!rt.ok) fail("the round trip");
  const feed = result.resume.feed;
  if (JSON.stringify(feed) !== JSON.stringify([...Array(20).keys()])) fail("the resumed feed");
  if (!result.resume.reopened) fail("the stream was not reopened");
  const jobs = result.move.done.map((d) => d.job).sort((x, y) => x - y);
  if (JSON.stringify(jobs) !== JSON.stringify([...Array(20).keys()])) fail("the jobs");
  if (!result.move.failedOnce) fail("no release");
  if (result.move.transports.some((t) => t !== "http")) fail("a consumer not over HTTP");
  if (errors.length) throw new Error(`page errors: ${errors.join("; ")}`);
  console.log(`nodes: ${JSON.stringify(result.resume.nodes)}`);
  console.log("wsq-client in Chromium without WebSocket: round trip, resume, move mode over HTTP");
} finally {
  await browser.close();
}
