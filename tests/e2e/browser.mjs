// Launch the machine's Chromium for tests (playwright-core cannot download browsers here).
import { chromium } from "playwright-core";

export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      // The machine has no network beyond localhost: keep Chromium from trying.
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}
