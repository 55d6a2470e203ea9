// Drives headless Chromium (Debian's /usr/bin/chromium, or $CHROMIUM) with playwright-core
// (no browser download): opens URL, waits in real time until the page's #result is no
// longer "pending", prints "RESULT: <text>" and exits 0; exits 1 (with the reason) if the
// page does not finish within TIMEOUT_MS or the browser fails.
//
// Usage: node run.mjs URL [TIMEOUT_MS]   (https URLs: the test CA is not trusted by the
// browser, so certificate errors are ignored for this one page)
import { chromium } from "playwright-core";

const url = process.argv[2];
const timeout = Number(process.argv[3] || 60000);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";

let browser;
try {
  browser = await chromium.launch({
    executablePath,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
    timeout,
  });
  const context = await browser.newContext({ ignoreHTTPSErrors: url.startsWith("https:") });
  const page = await context.newPage();
  page.on("console", (m) => console.error(`console: ${m.text()}`));
  page.on("pageerror", (e) => console.error(`page error: ${e.message}`));
  await page.goto(url, { timeout });
  await page.waitForFunction(
    () => document.getElementById("result")?.textContent !== "pending",
    null,
    { timeout }
  );
  const text = await page.textContent("#result");
  console.log(`RESULT: ${text}`);
  await browser.close();
  process.exit(0);
} catch (e) {
  console.log(`FAILED: ${e.message}`);
  if (browser) {
    await browser.close().catch(() => {});
  }
  process.exit(1);
}
