// The operator view at /ops, as an operator would use it, in real headless Chromium.
//
// "tenants": gateways A and B (and OLD, stopped before) on one Redis publish their figures every
// 200 ms; B is draining (its readiness flag set, as a drain does first). /ops is opened on A with a token without the operator right (the refusal is said),
// then with an ops token: every node at once with history (rewind), exact connection counts
// that follow sockets opened here on A and B (by wsq-client in pages of each gateway), the
// publishes and deliveries of 50 messages published through B's HTTP bridge, OLD stale.
// A phone opens /ops with no token: the page asks for one, and a pasted ops token works.
// "dev": one gateway in development mode: /ops takes its token from /dev/token.
// Both: no console error, no failed request, no horizontal scroll at 1280 and 390 px;
// screenshots to SCREENSHOTS/ops-MODE-{desktop,phone}.png.
//
// Usage: node ops_page.mjs tenants A B OLD_NODE BRIDGE_TOKEN OPS_TOKEN PLAIN_TOKEN
//        node ops_page.mjs dev A
import { launch } from "./browser.mjs";

const [mode, a, b, oldNode, bridgeToken, opsToken, plainToken] = process.argv.slice(2);
const shots = process.env.SCREENSHOTS;
const TIMEOUT = 8000;
const PUBLISHED = 50;

function fail(why) {
  throw new Error(`ops (${mode}): ${why}`);
}

const problems = []; // console errors and warnings, page errors, failed requests, HTTP errors
const asked = []; // paths the pages requested

function watch(page) {
  page.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") problems.push(`console ${m.type()}: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`page error: ${e}`));
  page.on("requestfailed", (r) => problems.push(`request failed: ${r.url()}`));
  page.on("request", (r) => asked.push(new URL(r.url()).pathname));
  page.on("response", (r) => {
    if (r.status() >= 400) problems.push(`HTTP ${r.status()}: ${r.url()}`);
  });
}

// Every value #state takes, from the parser's first insertion of it on.
function recordStates() {
  window.__states = [];
  const record = () => {
    const el = document.getElementById("state");
    if (!el) return;
    const seen = `${el.dataset.state}|${el.textContent}`;
    if (window.__states.at(-1) !== seen) window.__states.push(seen);
  };
  new MutationObserver(record).observe(document, {
    subtree: true,
    childList: true,
    characterData: true,
    attributes: true,
    attributeFilter: ["data-state"],
  });
}

async function open(browser, viewport, url) {
  const context = await browser.newContext({ viewport, deviceScaleFactor: 1 });
  await context.addInitScript(recordStates);
  const page = await context.newPage();
  watch(page);
  await page.goto(url);
  return page;
}

const gw = (node) => `section.gw[data-node="${node}"]`;
const cell = (node, tenant, col) => `${gw(node)} tr[data-tenant="${tenant}"] td[data-col="${col}"]`;

async function waitText(page, selector, text, attribute) {
  await page
    .waitForFunction(
      ([s, t, attr]) => {
        const el = document.querySelector(s);
        return el && (attr ? el.getAttribute(attr) : el.textContent) === t;
      },
      [selector, text, attribute],
      { timeout: TIMEOUT },
    )
    .catch(async () => {
      const seen = await page.evaluate(
        ([s, attr]) => {
          const el = document.querySelector(s);
          return el ? (attr ? el.getAttribute(attr) : el.textContent) : "(none)";
        },
        [selector, attribute],
      );
      fail(`${selector}${attribute ? `[${attribute}]` : ""}: expected ${JSON.stringify(text)}, shows ${JSON.stringify(seen)}`);
    });
}

/** The points and the largest value of a node's chart, from its aria-label. */
async function chart(page, node, metric) {
  const label = await page.getAttribute(`${gw(node)} article[data-metric="${metric}"] svg`, "aria-label");
  const m = /: (\d+) values?, from (\S+) to (\S+), latest (\S+)/.exec(label ?? "");
  if (!m) fail(`${node} ${metric}: aria-label ${JSON.stringify(label)}`);
  const n = (s) => Number(s.replace(/,/g, ""));
  return { points: Number(m[1]), max: n(m[3]), latest: n(m[4]), label };
}

async function noHorizontalScroll(page, width) {
  const scrollWidth = await page.evaluate(() => document.documentElement.scrollWidth);
  if (scrollWidth > width) fail(`${width} px wide: the page is ${scrollWidth} px wide`);
}

/** `n` wsq-client connections of tenant acme from a page of `origin` (so the gateway's origin
 * check sees its own); the first one subscribes to ops.test. Answers the page. */
async function sockets(browser, origin, n) {
  const context = await browser.newContext();
  // A JSON page has no <link rel="icon">: spare it the browser's request for /favicon.ico.
  await context.route("**/favicon.ico", (route) => route.fulfill({ status: 204 }));
  const page = await context.newPage();
  watch(page);
  await page.goto(`${origin}/healthz`);
  await page.evaluate(
    async ([token, n]) => {
      const { Client } = await import("/wsq-client.js");
      window.clients = [];
      for (let i = 0; i < n; i++) {
        const client = new Client("/ws", { token, clientName: "ops-test" });
        window.clients.push(client);
        await new Promise((done) => client.on("open", done));
      }
      await window.clients[0].subscribe("ops.test", () => {}).ready;
    },
    [bridgeToken, n],
  );
  return page;
}

async function publish(origin, count) {
  const messages = Array.from({ length: count }, (_, i) => ({ body: i }));
  const response = await fetch(`${origin}/v1/addresses/ops.test/messages`, {
    method: "POST",
    headers: { Authorization: `Bearer ${bridgeToken}`, "Content-Type": "application/json" },
    body: JSON.stringify({ messages }),
  });
  if (response.status !== 201) fail(`bridge publish: ${response.status} ${await response.text()}`);
}

async function firstStates(page) {
  const states = await page.evaluate(() => window.__states);
  if (!states[0]?.startsWith("connecting|")) fail(`first state shown: ${states.join(" > ")}`);
  if (page.url().includes("token=")) fail(`the token stayed in the address bar: ${page.url()}`);
}

async function tenants(browser) {
  const desktop = await open(browser, { width: 1280, height: 900 }, `${a}/ops#token=${plainToken}`);
  // A token without the operator right: connected, the attach refused, and said so.
  await desktop.waitForSelector("#denied:not([hidden])", { timeout: TIMEOUT });
  await waitText(desktop, "#state", "connected — not subscribed (wsq:forbidden)");
  await firstStates(desktop);
  if (!(await desktop.locator("#connection").evaluate((d) => d.open))) fail("the token form is folded");
  console.log("a token without ops: refused with wsq:forbidden, said on the page");

  await desktop.fill("#token", opsToken);
  await desktop.click("#connect");
  await desktop.waitForSelector('#state[data-state="subscribed"]', { timeout: TIMEOUT });
  await desktop.waitForSelector(gw("gw-a"), { timeout: TIMEOUT });
  await desktop.waitForSelector(gw("gw-b"), { timeout: TIMEOUT });
  // At once: the charts hold the figures published before the page opened (rewind).
  for (const node of ["gw-a", "gw-b", oldNode]) {
    const { points } = await chart(desktop, node, "connections");
    if (points < 4) fail(`${node}: ${points} points right after opening, no history`);
  }
  if (!(await desktop.locator("#denied").isHidden())) fail("the refusal is still shown");
  console.log("rewind: every node's charts have their history at once");

  // Exact connections: the page's own on A, none on B.
  await waitText(desktop, cell("gw-a", "acme", "connections"), "1");
  await waitText(desktop, `${gw("gw-b")} article[data-metric="connections"] .metric-value`, "0");

  await sockets(browser, b, 3); // open until the browser closes
  await waitText(desktop, cell("gw-b", "acme", "connections"), "3");
  await waitText(desktop, cell("gw-b", "acme", "links"), "1 / 0");
  await waitText(desktop, `${gw("gw-b")} article[data-metric="connections"] .metric-value`, "3");
  await waitText(desktop, `${gw("gw-b")} article[data-metric="links"] .metric-value`, "1");
  console.log("connections: 3 sockets opened on B shown on B");

  await publish(b, PUBLISHED);
  await waitText(desktop, cell("gw-b", "acme", "publishes"), String(PUBLISHED), "data-total");
  await waitText(desktop, cell("gw-b", "acme", "deliveries"), String(PUBLISHED), "data-total");
  for (const metric of ["publishes", "deliveries"]) {
    const { max } = await chart(desktop, "gw-b", metric);
    if (!(max > 0)) fail(`B ${metric}/s never above 0 after ${PUBLISHED} messages`);
  }
  // Gone by: the rate falls back to 0 (200 ms later nothing more was published).
  await waitText(desktop, cell("gw-b", "acme", "publishes"), "0");
  const { max: aMax } = await chart(desktop, "gw-a", "publishes");
  if (aMax !== 0) fail(`A shows publishes (${aMax}/s) though all went to B`);
  console.log(`publishes: ${PUBLISHED} through B's bridge counted on B (and delivered), none on A`);

  const onA = await sockets(browser, a, 2);
  await waitText(desktop, cell("gw-a", "acme", "connections"), "3");
  await onA.context().close();
  await waitText(desktop, cell("gw-a", "acme", "connections"), "1");
  console.log("connections: 2 sockets opened and closed on A, shown on A");

  await desktop.waitForSelector(`${gw(oldNode)} .badge[data-badge="stale"]:has-text("stale")`, { timeout: TIMEOUT });
  for (const node of ["gw-a", "gw-b"]) {
    await waitText(desktop, `${gw(node)} .badge[data-badge="stale"]`, "reporting");
    await waitText(desktop, `${gw(node)} .badge[data-badge="broker"]`, "broker up");
  }
  await waitText(desktop, `${gw("gw-a")} .badge[data-badge="ready"]`, "ready");
  await waitText(desktop, `${gw("gw-a")} .badge[data-badge="draining"]`, "serving");
  await waitText(desktop, `${gw("gw-b")} .badge[data-badge="ready"]`, "not ready: draining");
  await waitText(desktop, `${gw("gw-b")} .badge[data-badge="draining"]`, "draining");
  console.log("badges: the stopped node stale; A ready and serving, B draining and not ready; broker up");
  await noHorizontalScroll(desktop, 1280);

  // No token given: the page asks for one (and never asks /dev/token, absent with tenants).
  const phone = await open(browser, { width: 390, height: 844 }, `${a}/ops`);
  await phone.waitForSelector('#state[data-state="need-token"]', { timeout: TIMEOUT });
  await firstStates(phone);
  if (!(await phone.locator("#connection").evaluate((d) => d.open))) fail("the token form is folded");
  await phone.fill("#token", opsToken);
  await phone.click("#connect");
  await phone.waitForSelector('#state[data-state="subscribed"]', { timeout: TIMEOUT });
  await waitText(phone, cell("gw-b", "acme", "connections"), "3");
  if (asked.some((p) => p.startsWith("/dev/"))) fail(`with tenants the page asked ${asked.filter((p) => p.startsWith("/dev/"))}`);
  console.log("no token: the page asks for one; a pasted ops token works");
  await noHorizontalScroll(phone, 390);
  return [desktop, phone]; // B's 3 sockets stay open for the screenshots
}

async function dev(browser) {
  const desktop = await open(browser, { width: 1280, height: 900 }, `${a}/ops`);
  await desktop.waitForSelector('#state[data-state="subscribed"]', { timeout: TIMEOUT });
  await firstStates(desktop);
  await desktop.waitForSelector("section.gw", { timeout: TIMEOUT });
  await waitText(desktop, "section.gw tr[data-tenant=\"dev\"] td[data-col=\"connections\"]", "1");
  await noHorizontalScroll(desktop, 1280);
  const phone = await open(browser, { width: 390, height: 844 }, `${a}/ops`);
  await phone.waitForSelector('#state[data-state="subscribed"]', { timeout: TIMEOUT });
  await waitText(desktop, "section.gw tr[data-tenant=\"dev\"] td[data-col=\"connections\"]", "2");
  await noHorizontalScroll(phone, 390);
  console.log("development mode: the token from /dev/token, this node with its 2 connections");
  return [desktop, phone];
}

const browser = await launch();
try {
  const [desktop, phone] = mode === "dev" ? await dev(browser) : await tenants(browser);
  // The dashboard links here and back.
  if ((await desktop.getAttribute('header nav a', "href")) !== "/") fail("no link to the dashboard");
  if (shots) {
    await desktop.screenshot({ path: `${shots}/ops-${mode}-desktop.png`, fullPage: true });
    await phone.screenshot({ path: `${shots}/ops-${mode}-phone.png`, fullPage: true });
  }
  const counts = await desktop.evaluate(() => window.wsqOps);
  console.log(`desktop page: ${counts.snapshots} snapshots, ${counts.paints} paints`);
  if (problems.length) fail(`problems:\n${problems.join("\n")}`);
  console.log(`ops (${mode}): no console errors`);
} finally {
  await browser.close();
}
