// The compact delivery form in real headless Chromium: a page imports /wsq-client.js, and two
// clients (the default, which offers compact and rows, and one with compact: false) replay the
// same retained messages. Chromium's own view of the frames (CDP Network.webSocketFrameReceived)
// must show compact frames of several messages on the first socket, per-message transfers on the
// second, and the handlers must have seen the same messages. Then two such clients, both
// subscribed live, get one publish of several messages (the HTTP bridge's batch: one broker
// batch): on the compact socket it arrives as compact rows (arrays), on the plain one as
// transfers, and the handlers (each changing its message's props) see the same messages.
// Usage: node compact_deliveries.mjs http://127.0.0.1:PORT TOKEN
import { launch } from "./browser.mjs";

const [origin, token] = process.argv.slice(2);
const COUNT = 25;
const LIVE = 20;

const SCRIPT = `
  import { Client } from "/wsq-client.js";
  const result = {};
  const seen = (m) => ({ id: m.id, body: m.body, props: m.props, subject: m.subject });
  try {
    const publisher = new Client("/ws", { token: ${JSON.stringify(token)}, compact: false });
    result.ids = [];
    for (let i = 0; i < ${COUNT}; i++) {
      result.ids.push(await publisher.publish("browser.compact", { i }, { subject: "s." + (i % 2) }));
    }
    await publisher.close();
    const receive = async (compact) => {
      const client = new Client("/ws", { token: ${JSON.stringify(token)}, ...compact });
      const got = [];
      let sub;
      const done = new Promise((resolve) => {
        sub = client.subscribe("browser.compact", (m) => {
          got.push(seen(m));
          if (got.length === ${COUNT}) resolve();
        }, { from: "^", credit: 100 });
      });
      await sub.ready;
      await done;
      const info = client.info;
      await client.close();
      return { got, compact: info.compact };
    };
    // One after the other: the CDP frames of each socket are told apart by their order.
    result.compact = await receive({});
    result.plain = await receive({ compact: false });

    // Live: both subscribed (the compact socket created first), then one publish of LIVE.
    const live = async (compact) => {
      const client = new Client("/ws", { token: ${JSON.stringify(token)}, ...compact });
      const got = [];
      let resolve;
      const done = new Promise((r) => (resolve = r));
      const sub = client.subscribe("browser.rows", (m) => {
        m.props.seenBy = m.id; // a handler's change to its props stays with its message
        got.push(seen(m));
        if (got.length === ${LIVE}) resolve();
      }, { credit: 100 });
      await sub.ready;
      return { client, got, done };
    };
    const rowsClient = await live({});
    const plainClient = await live({ compact: false });
    const messages = [];
    for (let i = 0; i < ${LIVE}; i++) {
      messages.push({ body: i % 5 === 4 ? [i] : { i }, ...(i >= 15 ? { subject: "s.live" } : {}) });
    }
    const res = await fetch("/v1/addresses/browser.rows/messages", {
      method: "POST",
      headers: { authorization: "Bearer " + ${JSON.stringify(token)}, "content-type": "application/json" },
      body: JSON.stringify({ messages }),
    });
    result.liveStatus = res.status;
    result.liveIds = (await res.json()).ids;
    await Promise.all([rowsClient.done, plainClient.done]);
    result.rows = { got: rowsClient.got, compact: rowsClient.client.info.compact, rows: rowsClient.client.info.rows };
    result.livePlain = { got: plainClient.got, rows: plainClient.client.info.rows };
    await rowsClient.client.close();
    await plainClient.client.close();
  } catch (error) {
    result.error = String((error && error.stack) || error);
  }
  document.body.dataset.result = JSON.stringify(result);
`;

const browser = await launch();
try {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => console.log(`page ${m.type()}: ${m.text()}`));
  // Chromium's record of every frame each socket received, by socket (CDP requestId).
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("Network.enable");
  const sockets = new Map();
  cdp.on("Network.webSocketCreated", (e) => sockets.set(e.requestId, []));
  cdp.on("Network.webSocketFrameReceived", (e) => {
    const value = JSON.parse(e.response.payloadData);
    sockets.get(e.requestId)?.push(...(Array.isArray(value) ? value : [value]));
  });
  await page.goto(`${origin}/healthz`);
  await page.addScriptTag({ type: "module", content: SCRIPT });
  await page
    .waitForFunction(() => document.body.dataset.result, null, { timeout: 30000 })
    .catch((e) => {
      throw new Error(`${e.message}; page errors: ${errors}`);
    });
  const result = JSON.parse(await page.evaluate(() => document.body.dataset.result));
  const fail = (why) => {
    throw new Error(`${why}: ${JSON.stringify(result).slice(0, 2000)}`);
  };
  if (result.error) fail("the page failed");
  if (result.compact.compact !== true || result.plain.compact !== false) fail("negotiation");
  const ids = (r) => r.got.map((m) => m.id);
  if (JSON.stringify(ids(result.compact)) !== JSON.stringify(result.ids)) fail("compact ids");
  if (JSON.stringify(result.compact.got) !== JSON.stringify(result.plain.got))
    fail("the handlers saw different messages");
  if (result.liveStatus !== 201) fail("the live publish");
  if (result.rows.compact !== true || result.rows.rows !== true || result.livePlain.rows !== false)
    fail("rows negotiation");
  if (JSON.stringify(ids(result.rows)) !== JSON.stringify(result.liveIds)) fail("rows ids");
  if (JSON.stringify(result.rows.got) !== JSON.stringify(result.livePlain.got))
    fail("the live handlers saw different messages");
  if (result.rows.got.some((m, i) => m.props.seenBy !== result.liveIds[i] || typeof m.props.ts !== "number"))
    fail("the live messages' props");
  const [, compactFrames, plainFrames, rowsFrames, livePlainFrames] = [...sockets.values()];
  const deliveries = (frames, op) => frames.filter((f) => f.op === op);
  const compact = deliveries(compactFrames, "transfers");
  const counted = compact.reduce((n, f) => n + f.msgs.length, 0);
  if (deliveries(compactFrames, "transfer").length || counted !== COUNT)
    fail(`compact socket: ${compact.length} transfers frames holding ${counted} messages`);
  if (Math.max(...compact.map((f) => f.msgs.length)) < 2) fail("no compact frame of several");
  if (deliveries(plainFrames, "transfers").length || deliveries(plainFrames, "transfer").length !== COUNT)
    fail("plain socket");
  // The live batch: rows only (the first with its props, bodies alone after), on the compact
  // socket; per-message transfers on the plain one.
  const rows = deliveries(rowsFrames, "transfers");
  const elements = rows.flatMap((f) => f.msgs);
  if (deliveries(rowsFrames, "transfer").length || elements.length !== LIVE)
    fail(`rows socket: ${rows.length} transfers frames holding ${elements.length} messages`);
  if (!elements.every(Array.isArray)) fail(`rows socket: elements that are not rows ${JSON.stringify(elements)}`);
  if (elements[0].length !== 3 || !elements.some((r) => r.length === 1))
    fail(`rows socket: row shapes ${elements.map((r) => r.length)}`);
  if (deliveries(livePlainFrames, "transfers").length || deliveries(livePlainFrames, "transfer").length !== LIVE)
    fail("live plain socket");
  if (errors.length) throw new Error(`page errors: ${errors.join("; ")}`);
  console.log(
    `compact frames: ${compact.length} for ${COUNT} messages (${compact.map((f) => f.msgs.length)})`,
  );
  console.log(`live rows: ${elements.map((r) => r.length)} in ${rows.length} frames`);
  console.log("wsq-client in Chromium: live rows and plain deliveries agree");
  console.log("wsq-client in Chromium: compact and plain deliveries agree");
} finally {
  await browser.close();
}
