// The demo page, as a person would use it: two tabs on one address; what one publishes the
// other shows live. The connection state it shows is true from the first paint: "connecting…"
// (never "idle") until the client reports its state, also when Connect is pressed again after
// Disconnect. Usage: node demo_page.mjs http://127.0.0.1:PORT/ [screenshot.png]
import { launch } from "./browser.mjs";

const [url, screenshot] = process.argv.slice(2);

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

function checkStates(who, states, { first }) {
  const shown = states.join(" > ");
  if (states.length === 0) throw new Error(`${who}: no state recorded`);
  if (!states[0].startsWith(`${first}|`)) throw new Error(`${who}: first state shown: ${shown}`);
  if (states.some((s) => /idle/.test(s))) throw new Error(`${who}: "idle" shown: ${shown}`);
  if (!states.at(-1).startsWith("subscribed|")) throw new Error(`${who}: last state: ${shown}`);
}

// Slow /dev/token: the page waits on it before (re)connecting, so that what it shows in the
// meantime is seen.
async function slowDevToken(page) {
  await page.route("**/dev/token*", async (route) => {
    await new Promise((done) => setTimeout(done, 400));
    await route.continue();
  });
}

const browser = await launch();
try {
  const context = await browser.newContext();
  await context.addInitScript(recordStates);
  const alice = await context.newPage();
  const bob = await context.newPage();
  const errors = [];
  for (const page of [alice, bob]) {
    page.on("pageerror", (e) => errors.push(String(e)));
    await slowDevToken(page);
    await page.goto(url);
    await page.waitForSelector('#state[data-state="subscribed"]', { timeout: 10000 });
    checkStates("first load", await page.evaluate(() => window.__states), { first: "connecting" });
  }
  const text = `hello from alice ${Date.now()}`;
  await alice.fill("#body", text);
  await alice.fill("#subject", "demo.greeting");
  await alice.click("#publish");
  await alice.waitForSelector("#publish-status:has-text('published')", { timeout: 5000 });
  const item = bob.locator("li.message", { hasText: text });
  await item.waitFor({ timeout: 5000 });
  const subject = await item.locator(".msg-subject").textContent();
  if (!subject.includes("demo.greeting")) throw new Error(`subject shown: ${subject}`);
  // alice sees her own message too (she is subscribed to the same address).
  await alice.locator("li.message", { hasText: text }).waitFor({ timeout: 5000 });
  // Disconnect, then Connect again: "connecting…" while it does, not "disconnected".
  await bob.click("#disconnect");
  await bob.waitForSelector('#state[data-state="closed"]', { timeout: 5000 });
  await bob.evaluate(() => {
    window.__states = [];
  });
  await bob.click("#connect");
  await bob.waitForSelector('#state[data-state="subscribed"]', { timeout: 10000 });
  checkStates("Connect after Disconnect", await bob.evaluate(() => window.__states), {
    first: "connecting",
  });
  if (errors.length) throw new Error(`page errors: ${errors.join("; ")}`);
  if (screenshot) await bob.screenshot({ path: screenshot, fullPage: true });
  console.log("demo page: delivered across tabs");
} finally {
  await browser.close();
}
