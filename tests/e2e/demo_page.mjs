// The demo page, as a person would use it: two tabs on one address; what one publishes the
// other shows live. Usage: node demo_page.mjs http://127.0.0.1:PORT/ [screenshot.png]
import { launch } from "./browser.mjs";

const [url, screenshot] = process.argv.slice(2);
const browser = await launch();
try {
  const context = await browser.newContext();
  const alice = await context.newPage();
  const bob = await context.newPage();
  const errors = [];
  for (const page of [alice, bob]) {
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(url);
    await page.waitForSelector('#state[data-state="subscribed"]', { timeout: 10000 });
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
  if (errors.length) throw new Error(`page errors: ${errors.join("; ")}`);
  if (screenshot) await bob.screenshot({ path: screenshot, fullPage: true });
  console.log("demo page: delivered across tabs");
} finally {
  await browser.close();
}
