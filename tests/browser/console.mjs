// Drives shardmq's HTTP console in headless Chromium (Debian's /usr/bin/chromium, or
// $CHROMIUM) with playwright-core: logs in with HTTP basic credentials, opens the
// connections tab, waits until CLIENT_ID is listed, saves a screenshot to SHOT, clicks the
// client's "disconnect" button and waits until the row is gone. The screenshot is decoded
// in the page (canvas) and its distinct colours counted: a blank page has one or two.
// Prints "RESULT: ok colours=N" and exits 0, or "FAILED: reason" and exits 1.
//
// Usage: node console.mjs URL USER PASSWORD CLIENT_ID SHOT [TIMEOUT_MS]
import { chromium } from "playwright-core";
import { writeFileSync } from "node:fs";

const [url, username, password, clientId, shot] = process.argv.slice(2, 7);
const timeout = Number(process.argv[7] || 60000);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";

let browser;
try {
  browser = await chromium.launch({
    executablePath,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--no-first-run"],
    timeout,
  });
  const context = await browser.newContext({
    httpCredentials: { username, password },
    ignoreHTTPSErrors: url.startsWith("https:"),
    viewport: { width: 1280, height: 720 },
  });
  const page = await context.newPage();
  page.on("console", (m) => console.error(`console: ${m.text()}`));
  page.on("pageerror", (e) => console.error(`page error: ${e.message}`));
  const response = await page.goto(url + "#connections", { timeout });
  if (!response || response.status() !== 200) {
    throw new Error(`console page answered ${response && response.status()}`);
  }
  const button = page.locator(`#conns button[data-key="${clientId}"]`);
  await button.waitFor({ state: "visible", timeout });
  await page.waitForFunction(() => document.body.dataset.loaded === "connections", null, { timeout });
  const png = await page.screenshot({ fullPage: true });
  writeFileSync(shot, png);
  const colours = await page.evaluate(async (b64) => {
    const img = new Image();
    img.src = "data:image/png;base64," + b64;
    await img.decode();
    const c = document.createElement("canvas");
    c.width = img.width;
    c.height = img.height;
    const g = c.getContext("2d");
    g.drawImage(img, 0, 0);
    const d = g.getImageData(0, 0, c.width, c.height).data;
    const seen = new Set();
    for (let i = 0; i < d.length; i += 4 * 7) seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
    return seen.size;
  }, png.toString("base64"));
  if (await button.isDisabled()) throw new Error("the disconnect button is disabled (read-only user?)");
  await button.click();
  await page.waitForFunction(
    (id) => ![...document.querySelectorAll("#conns td")].some((td) => td.textContent === id),
    clientId,
    { timeout }
  );
  console.log(`RESULT: ok colours=${colours}`);
  await browser.close();
  process.exit(0);
} catch (e) {
  console.log(`FAILED: ${e.message}`);
  if (browser) await browser.close().catch(() => {});
  process.exit(1);
}
