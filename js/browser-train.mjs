#!/usr/bin/env node
// Usage: node js/browser-train.mjs PAGE_URL OUT_STATE.bin [--chromium PATH] [--screenshot PNG]
//        [--sample iris|digits] [--csv FILE] [--steps N] [--batch B]
// Drives the page of examples/web (served over http: python examples/web/serve.py) in headless
// Chromium as a person would: picks the sample bundle, uploads the CSV if given, sets steps and
// batch, presses Train, waits, presses Predict (the first row). Writes the trained state the
// page produced and a screenshot; prints JSON: steps, losses, final, prediction, curvePixels
// (pixels of each curve's colour on the page's canvas: loss, accuracy).
import { writeFile } from 'node:fs/promises';
import { chromium } from 'playwright-core';

function options(argv) {
  const [url, out, ...rest] = argv;
  if (!out) throw new Error('usage: browser-train.mjs PAGE_URL OUT_STATE.bin [--chromium PATH] [--screenshot PNG] [--sample NAME] [--csv FILE] [--steps N] [--batch B]');
  const o = { url, out, chromium: '/usr/bin/chromium', sample: 'iris', steps: '20', batch: '' };
  for (let i = 0; i < rest.length; i += 2) {
    const key = rest[i].replace(/^--/, '');
    if (!['chromium', 'screenshot', 'sample', 'csv', 'steps', 'batch'].includes(key) ||
        rest[i + 1] === undefined) throw new Error(`unknown option ${rest[i]}`);
    o[key] = rest[i + 1];
  }
  return o;
}

async function drive(page, o) {
  await page.goto(o.url);
  await page.waitForFunction(() => window.irkitReady, null, { timeout: 30000 });
  await page.selectOption('#sample', o.sample);
  if (o.csv) await page.setInputFiles('#csv', o.csv);
  await page.fill('#steps', o.steps);
  await page.fill('#batch', o.batch);
  await page.click('#train');
  await page.waitForFunction(() => window.irkitResult || window.irkitError, null,
                             { timeout: 120000 });
  const error = await page.evaluate(() => window.irkitError);
  if (error) throw new Error(error);
  await page.click('#predict');
  await page.waitForFunction(() => window.irkitPrediction || window.irkitError, null,
                             { timeout: 30000 });
  return page.evaluate(() => {
    const canvas = document.getElementById('curve');
    const { data } = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
    const curvePixels = { loss: 0, accuracy: 0 };
    for (let i = 0; i < data.length; i += 4) {
      if (data[i + 3] < 128) continue;
      if (data[i + 2] > data[i] + 60) curvePixels.loss += 1; // #1f77b4
      else if (data[i] > data[i + 2] + 60) curvePixels.accuracy += 1; // #ff7f0e
    }
    return { ...window.irkitResult, prediction: window.irkitPrediction, curvePixels };
  });
}

const o = options(process.argv.slice(2));
const browser = await chromium.launch({
  executablePath: o.chromium, headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--no-first-run'],
});
try {
  const page = await browser.newPage();
  const messages = [];
  page.on('pageerror', (e) => messages.push(e.message));
  const result = await drive(page, o).catch((e) => {
    throw new Error(`${e.message} ${messages.join(' | ')}`.trim());
  });
  await writeFile(o.out, Buffer.from(result.state, 'base64'));
  if (o.screenshot) await page.screenshot({ path: o.screenshot });
  delete result.state;
  console.log(JSON.stringify(result));
} catch (e) {
  console.error(`browser-train: error: ${e.message}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
