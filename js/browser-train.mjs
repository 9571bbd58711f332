#!/usr/bin/env node
// Usage: node js/browser-train.mjs PAGE_URL OUT_STATE.bin [CHROMIUM] [SCREENSHOT.png]
// Opens js/browser.html (served over http with the bundle and the CSV) in headless Chromium,
// waits for the page's training to end, writes the trained state it produced (and a
// screenshot of the page), prints JSON: steps, losses, final figures, curvePixels (pixels of
// the loss curve's colour on the page's canvas).
import { writeFile } from 'node:fs/promises';
import { chromium } from 'playwright-core';

const [url, out, executablePath = '/usr/bin/chromium', screenshot] = process.argv.slice(2);
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
  const curvePixels = await page.evaluate(() => {
    const canvas = document.getElementById('curve');
    const { data } = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
    let n = 0;
    for (let i = 0; i < data.length; i += 4) {
      if (data[i + 3] > 128 && data[i + 2] > data[i] + 60) n += 1; // the curve's blue
    }
    return n;
  });
  if (screenshot) await page.screenshot({ path: screenshot });
  console.log(JSON.stringify({ steps: result.steps, losses: result.losses, final: result.final,
                               curvePixels }));
} catch (e) {
  console.error(`browser-train: error: ${e.message}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
