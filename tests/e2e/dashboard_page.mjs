// The live dashboard at /, as a person would use it, in real headless Chromium. Values are
// published from here through the HTTP bridge (as a backend would) and by the page's own demo
// feed. Checked: the connection state is true from the first paint; the latest value shows at
// once on open (rewind); a published value shows; a burst of 1,000 updates on one subject
// arrives as a handful of conflated transfers; the demo feed and the publish form work; no
// console error, no failed request, no horizontal scroll at 1280 and 390 px. Screenshots of
// both widths go to SCREENSHOTS/dashboard-MODE-{desktop,phone}.png.
//
// Usage: node dashboard_page.mjs MODE ORIGIN BRIDGE_TOKEN [PAGE_TOKEN] with SCREENSHOTS set.
// MODE "dev": the page gets its token from /dev/token; "tenants": from #token=PAGE_TOKEN.
import { launch } from "./browser.mjs";

const [mode, origin, bridgeToken, pageToken] = process.argv.slice(2);
const shots = process.env.SCREENSHOTS;
const ADDRESS = "demo.metrics";
const BURST = 1000;
const MAX_BURST_TRANSFERS = 10; // "a handful": conflated at 100 ms, not a thousand
const TIMEOUT = 8000;

function fail(why) {
  throw new Error(`${mode}: ${why}`);
}

async function publish(messages) {
  const response = await fetch(`${origin}/v1/addresses/${ADDRESS}/messages`, {
    method: "POST",
    headers: { Authorization: `Bearer ${bridgeToken}`, "Content-Type": "application/json" },
    body: JSON.stringify({ messages }),
  });
  if (response.status !== 201) fail(`bridge publish: ${response.status} ${await response.text()}`);
  return (await response.json()).ids;
}

// Every value #state takes, from the parser's first insertion of it on ("data-state|text").
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

async function openPage(browser, viewport) {
  const context = await browser.newContext({ viewport, deviceScaleFactor: 1 });
  await context.addInitScript(recordStates);
  const page = await context.newPage();
  watch(page);
  const url = mode === "tenants" ? `${origin}/#token=${pageToken}` : `${origin}/`;
  await page.goto(url);
  await page.waitForSelector('#state[data-state="subscribed"]', { timeout: TIMEOUT });
  const states = await page.evaluate(() => window.__states);
  const shown = states.join(" > ");
  if (!states[0]?.startsWith("connecting|")) fail(`first state shown: ${shown}`);
  if (states.some((s) => /idle/.test(s))) fail(`"idle" shown: ${shown}`);
  if (page.url().includes("token")) fail(`the token stayed in the address bar: ${page.url()}`);
  return page;
}

const valueOf = (page, subject) =>
  page.locator(`article.metric[data-subject="${subject}"] .metric-value`);

async function waitForValue(page, subject, text) {
  await page.waitForFunction(
    ([s, t]) =>
      document.querySelector(`article.metric[data-subject="${s}"] .metric-value`)?.textContent === t,
    [subject, text],
    { timeout: TIMEOUT },
  ).catch(async () => {
    const seen = await valueOf(page, subject).textContent({ timeout: 100 }).catch(() => "none");
    fail(`${subject}: expected ${JSON.stringify(text)}, shows ${JSON.stringify(seen)}`);
  });
}

/** At least `n` values in the chart of `subject` (its aria-label counts them). */
async function waitForHistory(page, subject, n) {
  await page.waitForFunction(
    ([s, n]) => {
      const label = document.querySelector(`article.metric[data-subject="${s}"] svg`)?.getAttribute("aria-label");
      return Number(/: (\d+) values?,/.exec(label ?? "")?.[1] ?? 0) >= n;
    },
    [subject, n],
    { timeout: TIMEOUT },
  );
}

async function noHorizontalScroll(page, width) {
  const scrollWidth = await page.evaluate(() => document.documentElement.scrollWidth);
  if (scrollWidth > width) fail(`${width} px wide: the page is ${scrollWidth} px wide`);
}

/** Disconnect, then Connect: "connecting…" while it does (never "idle" nor "disconnected"),
 * then live again; the rewind of the new connection adds no value twice to a chart. */
async function reconnect(page) {
  const label = () =>
    page.getAttribute('article.metric[data-subject="disk.web-1"] svg', "aria-label");
  const before = await label();
  const received = () => page.evaluate(() => window.wsqDashboard.bySubject["disk.web-1"]);
  const receivedBefore = await received();
  await page.click("#connection summary"); // unfold the connection form
  await page.click("#disconnect");
  await page.waitForSelector('#state[data-state="closed"]', { timeout: TIMEOUT });
  await page.evaluate(() => {
    window.__states = [];
  });
  await page.click("#connect");
  await page.waitForSelector('#state[data-state="subscribed"]', { timeout: TIMEOUT });
  const states = await page.evaluate(() => window.__states);
  if (!states[0].startsWith("connecting|") || states.some((s) => /idle|closed/.test(s))) {
    fail(`Connect after Disconnect: ${states.join(" > ")}`);
  }
  // The new connection's rewind hands disk.web-1's one value again; then a paint.
  await page.waitForFunction(
    (n) => window.wsqDashboard.bySubject["disk.web-1"] > n,
    receivedBefore,
    { timeout: TIMEOUT },
  );
  await page.evaluate(() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done))));
  if ((await label()) !== before) fail(`a value twice after the reconnect: ${await label()}`);
}

/** With tenants and no token in the URL: the page asks for one (no /dev/token), says so when
 * the gateway refuses the one pasted, and connects with a good one. */
async function pasteToken(browser) {
  const context = await browser.newContext({ viewport: { width: 390, height: 844 } });
  const page = await context.newPage();
  watch(page);
  await page.goto(`${origin}/`);
  await page.waitForSelector('#state[data-state="need-token"]', { timeout: TIMEOUT });
  if (!(await page.locator("#connection").evaluate((d) => d.open))) fail("the token form is folded");
  // A token the gateway refuses: said in the state and the errors, and asked again.
  await page.fill("#token", "not.a.token");
  await page.click("#connect");
  await page.waitForSelector('#state[data-state="need-token"]:has-text("refused")', { timeout: TIMEOUT });
  await page.waitForSelector("#errors li:has-text('wsq:unauthorized')", { timeout: TIMEOUT });
  await page.fill("#token", pageToken);
  await page.click("#connect");
  await page.waitForSelector('#state[data-state="subscribed"]', { timeout: TIMEOUT });
  await waitForValue(page, "cpu.web-1", "12.25 %");
  await context.close();
}

// Published before any page opens: the page must show them at once (rewind).
await publish([
  { body: { value: 73.5, unit: "%" }, subject: "cpu.web-1" },
  { body: { value: 41, unit: "%" }, subject: "mem.web-2" },
]);

const browser = await launch();
try {
  const desktop = await openPage(browser, { width: 1280, height: 900 });
  await waitForValue(desktop, "cpu.web-1", "73.5 %");
  await waitForValue(desktop, "mem.web-2", "41 %");
  console.log("rewind: the latest values at once on open");

  await publish([{ body: { value: 12.25, unit: "%" }, subject: "cpu.web-1" }]);
  await waitForValue(desktop, "cpu.web-1", "12.25 %");
  console.log("live: a value published through the bridge shows");

  if (mode === "tenants") await pasteToken(browser);

  // 1,000 updates of one subject, as 10 requests of 100 one after the other (~tens of ms).
  for (let from = 0; from < BURST; from += BURST / 10) {
    await publish(Array.from({ length: BURST / 10 }, (_, i) => ({ body: from + i, subject: "burst.load" })));
  }
  await waitForValue(desktop, "burst.load", "999");
  // The last value is shown: conflation never sends an older one after it, so this is final.
  const transfers = await desktop.evaluate(() => window.wsqDashboard.bySubject["burst.load"]);
  if (!(transfers >= 1 && transfers <= MAX_BURST_TRANSFERS)) {
    fail(`a burst of ${BURST} arrived as ${transfers} transfers`);
  }
  console.log(`conflation: a burst of ${BURST} updates arrived as ${transfers} transfers`);

  await desktop.click("#feed");
  await desktop.waitForSelector('#feed[aria-pressed="true"]');
  await desktop.waitForFunction(() => document.querySelectorAll("article.metric").length >= 20, null, {
    timeout: TIMEOUT,
  });
  await waitForHistory(desktop, "cpu.web-2", 8);
  console.log("demo feed: 20 metrics moving");

  await desktop.fill("#pub-subject", "disk.web-1");
  await desktop.fill("#pub-value", "55.5");
  await desktop.click("#publish");
  await desktop.waitForSelector("#publish-status:has-text('published 55.5 to disk.web-1')", {
    timeout: TIMEOUT,
  });
  await waitForValue(desktop, "disk.web-1", "55.5");

  const logged = await desktop.locator("#log li").count();
  if (logged < 1 || logged > 100) fail(`${logged} entries in the log`);
  await noHorizontalScroll(desktop, 1280);

  // A phone opens while the feed runs: every card at once (rewind), then moving.
  const phone = await openPage(browser, { width: 390, height: 844 });
  await waitForValue(phone, "disk.web-1", "55.5");
  await waitForHistory(phone, "cpu.web-2", 4);
  await noHorizontalScroll(phone, 390);
  await reconnect(phone);
  await desktop.click("#feed"); // stop: the screenshots show a running feed stopped
  await desktop.waitForSelector('#feed[aria-pressed="false"]');
  if (shots) {
    await desktop.screenshot({ path: `${shots}/dashboard-${mode}-desktop.png`, fullPage: true });
    await phone.screenshot({ path: `${shots}/dashboard-${mode}-phone.png`, fullPage: true });
  }
  const counts = await desktop.evaluate(() => window.wsqDashboard);
  console.log(`desktop page: ${counts.transfers} transfers, ${counts.paints} paints`);

  if (mode === "tenants" && asked.some((p) => p.startsWith("/dev/"))) {
    fail(`with tenants the page asked ${asked.filter((p) => p.startsWith("/dev/"))}`);
  }
  if (problems.length) fail(`problems:\n${problems.join("\n")}`);
  console.log(`dashboard (${mode}): no console errors`);
} finally {
  await browser.close();
}
