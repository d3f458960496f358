// wsq-client in real headless Chromium: a page on the gateway's origin imports /wsq-client.js,
// subscribes, publishes and receives over one socket, and sees a refusal's condition.
// Usage: node client_module.mjs http://127.0.0.1:PORT TOKEN
import { launch } from "./browser.mjs";

const [origin, token] = process.argv.slice(2);

// The test runs as a module script in a document of the gateway's own origin (/healthz), so
// the page reaches the gateway as an ordinary same-origin page would.
const SCRIPT = `
  import { Client, SUBPROTOCOL } from "/wsq-client.js";
  const result = { sockets: 0, states: [], received: [] };
  class Counting extends WebSocket {
    constructor(...args) {
      super(...args);
      result.sockets += 1;
      // What the gateway answered to Chromium's offer of permessage-deflate ("" if declined).
      this.addEventListener("open", () => { result.extensions = this.extensions; });
    }
  }
  try {
    const client = new Client("/ws", { token: ${JSON.stringify(token)}, WebSocket: Counting });
    client.on("state", (s) => result.states.push(s));
    let sub;
    const done = new Promise((resolve) => {
      sub = client.subscribe("browser.e2e", (msg) => {
        result.received.push({ id: msg.id, body: msg.body, subject: msg.subject, publisher: msg.props.publisher });
        if (result.received.length === 2) resolve();
      });
    });
    await sub.ready;
    result.ids = [
      await client.publish("browser.e2e", { hello: "chromium" }, { subject: "greet.en" }),
      await client.publish("browser.e2e", "second"),
    ];
    await done;
    result.refused = await client.publish("secret.place", 1).then(() => "accepted", (e) => e.condition);
    result.protocol = SUBPROTOCOL;
    await client.close();
    result.finalState = client.state;
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
  await page.goto(`${origin}/healthz`);
  await page.addScriptTag({ type: "module", content: SCRIPT });
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
  if (result.sockets !== 1) fail("expected one socket");
  if (result.received.length !== 2) fail("expected two deliveries");
  const [first, second] = result.received;
  if (first.body?.hello !== "chromium" || first.subject !== "greet.en") fail("first delivery");
  if (second.body !== "second") fail("second delivery");
  if (first.id !== result.ids[0] || second.id !== result.ids[1])
    fail("publish ids vs delivered ids");
  if (first.publisher !== "browser") fail("publisher");
  if (result.refused !== "wsq:forbidden") fail("the refusal's condition");
  if (result.finalState !== "closed") fail("close()");
  if (errors.length) throw new Error(`page errors: ${errors.join("; ")}`);
  console.log(`extensions: ${JSON.stringify(result.extensions)}`);
  console.log("wsq-client in Chromium: subscribed, published, received");
} finally {
  await browser.close();
}
