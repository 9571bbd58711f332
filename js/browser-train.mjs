#!/usr/bin/env node
// Usage: node js/browser-train.mjs PAGE_URL OUT_STATE.bin [CHROMIUM]
// Opens js/browser.html (served over http with the bundle and the CSV) in headless Chromium,
// waits for the page's training to end, writes the trained state it produced, prints JSON.
import { writeFile } from 'node:fs/promises';
import { chromium } from 'playwright-core';

const [url, out, executablePath = '/usr/bin/chromium'] = process.argv.slice(2);
if (!out) {
  console.error('usage: browser-train.mjs PAGE_URL OUT_STATE.bin [CHROMIUM]');
  process.exit(2);
}
const browser = await chromium.launch({
  executablePath, headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--no-first-run'],
});
try {
  const page = await browser.newPage();
  const messages = [];
  page.on('console', (m) => messages.push(m.text()));
  page.on('pageerror', (e) => messages.push(e.message));
  await page.goto(url);
  await page.waitForFunction(() => window.irkitResult || window.irkitError, null,
                             { timeout: 120000 });
  const error = await page.evaluate(() => window.irkitError);
  if (error) throw new Error(`${error} (${messages.join(' | ')})`);
  const result = await page.evaluate(() => window.irkitResult);
  await writeFile(out, Buffer.from(result.state, 'base64'));
  console.log(JSON.stringify({ steps: result.steps, losses: result.losses, final: result.final }));
} catch (e) {
  console.error(`browser-train: error: ${e.message}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
