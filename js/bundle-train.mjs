#!/usr/bin/env node
// Usage: node js/bundle-train.mjs BUNDLE_DIR DATA.csv OUT_STATE.bin [--steps N]
//        [--batch-size B] [--label-column NAME] [--no-init]
// Trains the bundle with onnxruntime-web (WASM) under Node and writes the trained state in the
// layout of the bundle's state.bin (model.onnx beside it predicts with it; irkit import-state
// reads it). Prints one JSON line: steps, losses, final (evaluation on all rows), seconds (the
// training loop's wall time, batches built from the rows included), steady (steps and seconds
// after the first 10, which warm up the WASM code), init (whether init.onnx gave the initial
// state; --no-init reads it from state.bin's layout in bundle.json instead).
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import * as ort from 'onnxruntime-web';
import { openBundle, parseCsv, trainRows } from './bundle.mjs';

function options(argv) {
  const [bundle, data, out, ...rest] = argv;
  if (!out) throw new Error('usage: bundle-train.mjs BUNDLE_DIR DATA.csv OUT_STATE.bin [--steps N] [--batch-size B] [--label-column NAME] [--no-init]');
  const o = { bundle, data, out, steps: 20, batchSize: null, labelColumn: 'label', useInit: true };
  for (let i = 0; i < rest.length; i += 2) {
    if (rest[i] === '--no-init') { o.useInit = false; i -= 1; continue; }
    const key = { '--steps': 'steps', '--batch-size': 'batchSize', '--label-column': 'labelColumn' }[rest[i]];
    if (!key || rest[i + 1] === undefined) throw new Error(`unknown option ${rest[i]}`);
    o[key] = key === 'labelColumn' ? rest[i + 1] : Number(rest[i + 1]);
  }
  return o;
}

async function main() {
  const o = options(process.argv.slice(2));
  ort.env.wasm.numThreads = 1; // deterministic sums, the same in Node and in the browser
  const trainer = await openBundle(ort, async (name) => new Uint8Array(
    await readFile(path.join(o.bundle, name))), { useInit: o.useInit });
  const rows = parseCsv(await readFile(o.data, 'utf8'), trainer.contract, o.labelColumn);
  const batchSize = o.batchSize || trainer.contract.settings.batch_size;
  const started = performance.now();
  const warmup = Math.min(10, Math.floor(o.steps / 2));
  let warm = started;
  const losses = await trainRows(trainer, rows, o.steps, batchSize, (step) => {
    if (step === warmup) warm = performance.now();
  });
  const now = performance.now();
  const seconds = (now - started) / 1000;
  const steady = { steps: o.steps - warmup, seconds: (now - warm) / 1000 };
  const final = await trainer.evaluate(trainer.batch(rows.features, rows.targets));
  await writeFile(o.out, await trainer.stateBytes());
  const init = Boolean(trainer.contract.files.init && o.useInit);
  console.log(JSON.stringify({ steps: trainer.steps, losses, final, seconds, steady, init }));
}

main().catch((e) => { console.error(`bundle-train: error: ${e.message}`); process.exit(1); });
