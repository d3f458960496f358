// rhea's browser build (dist/rhea-umd.js) in real headless Chromium, over the WebSocket
// subprotocol `amqp`: a page on the gateway's origin sends and receives on a feed, consumes a
// queue, and sees a refused link's condition.
// Usage: node amqp_browser.mjs http://127.0.0.1:PORT TOKEN
import { fileURLToPath } from "node:url";
import { launch } from "./browser.mjs";

const [origin, token] = process.argv.slice(2);
const RHEA = fileURLToPath(new URL("./node_modules/rhea/dist/rhea-umd.js", import.meta.url));

const SCRIPT = `
(async () => {
  const result = { received: [] };
  try {
    const rhea = window.rheaUmd;
    const ws = rhea.websocket_connect(WebSocket);
    const url = location.origin.replace(/^http/, "ws") + "/ws";
    const conn = rhea.connect({
      connection_details: ws(url, ["amqp"]),
      username: "browser",
      password: ${JSON.stringify(token)},
      reconnect: false,
    });
    const once = (emitter, event) => new Promise((resolve) => emitter.once(event, resolve));
    await once(conn, "connection_open");
    result.tenant = conn.properties["wsq-tenant"];
    const feed = conn.open_receiver({ source: { address: "browser.amqp" } });
    await once(feed, "receiver_open");
    const got = new Promise((resolve) => feed.on("message", (ctx) => {
      result.received.push({ body: ctx.message.body, subject: ctx.message.subject });
      if (result.received.length === 2) resolve();
    }));
    const sender = conn.open_sender("browser.amqp");
    await once(sender, "sendable");
    sender.send({ body: { hello: "chromium" }, subject: "greet.en" });
    sender.send({ body: "second" });
    await got;
    const jobs = conn.open_receiver({
      source: { address: "browser.jobs::workers", distribution_mode: "move" },
      autoaccept: false,
    });
    await once(jobs, "receiver_open");
    const job = new Promise((resolve) => jobs.once("message", (ctx) => {
      ctx.delivery.accept();
      resolve(ctx.message.body);
    }));
    conn.open_sender("browser.jobs").send({ body: { job: 1 } });
    result.job = await job;
    const refused = conn.open_receiver({ source: { address: "secret.place" } });
    const error = await once(refused, "receiver_error");
    result.refused = error.receiver.error.condition;
    conn.close();
    await once(conn, "connection_close");
    result.closed = true;
  } catch (error) {
    result.error = String((error && error.stack) || error);
  }
  document.body.dataset.result = JSON.stringify(result);
})();
`;

const browser = await launch();
try {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(`${origin}/healthz`);
  await page.addScriptTag({ path: RHEA });
  await page.addScriptTag({ content: SCRIPT });
  await page
    .waitForFunction(() => document.body.dataset.result, null, { timeout: 15000 })
    .catch((e) => {
      throw new Error(`${e.message}; page errors: ${errors}`);
    });
  const result = JSON.parse(await page.evaluate(() => document.body.dataset.result));
  const fail = (why) => {
    throw new Error(`${why}: ${JSON.stringify(result)}`);
  };
  if (result.error) fail("the page failed");
  if (result.tenant !== "acme") fail("the open's tenant");
  const [first, second] = result.received;
  if (first?.body?.hello !== "chromium" || first.subject !== "greet.en") fail("first delivery");
  if (second?.body !== "second") fail("second delivery");
  if (result.job?.job !== 1) fail("the queue's job");
  if (result.refused !== "amqp:unauthorized-access") fail("the refusal's condition");
  if (!result.closed) fail("close");
  if (errors.length) throw new Error(`page errors: ${errors.join("; ")}`);
  console.log("rhea in Chromium over amqp: sent, received, consumed, refused");
} finally {
  await browser.close();
}
