#!/usr/bin/env node
// Usage: node js/webgpu-train.mjs BUNDLE_DIR DATA.csv OUT_STATE.bin [--steps N] [--batch-size B]
//        [--chromium PATH]
// Trains the bundle as js/bundle-train.mjs does, but in headless Chromium on onnxruntime-web's
// WebGPU provider (SwiftShader's adapter where there is no GPU; see js/webgpu-page.mjs), the state
// kept on the GPU between steps (js/bundle.mjs openBundle with executionProviders ['webgpu']).
// Writes the trained state in the layout of state.bin; prints one JSON line: adapter, steps,
// losses (adapter null, and no state written, when Chromium offers no WebGPU adapter).
import { readFile, writeFile } from 'node:fs/promises';
import { withWebGpuPage } from './webgpu-page.mjs';

function options(argv) {
  const [bundle, data, out, ...rest] = argv;
  if (!out) throw new Error('usage: webgpu-train.mjs BUNDLE_DIR DATA.csv OUT_STATE.bin [--steps N] [--batch-size B] [--chromium PATH]');
  const o = { bundle, data, out, steps: 20, batchSize: 0, chromium: '/usr/bin/chromium' };
  for (let i = 0; i < rest.length; i += 2) {
    const key = { '--steps': 'steps', '--batch-size': 'batchSize', '--chromium': 'chromium' }[rest[i]];
    if (!key || rest[i + 1] === undefined) throw new Error(`unknown option ${rest[i]}`);
    o[key] = key === 'chromium' ? rest[i + 1] : Number(rest[i + 1]);
  }
  return o;
}

async function pageTrain(csv, steps, batchSize) { // runs in the page
  const ort = await import('/ort/ort.webgpu.min.mjs');
  const bundle = await import('/bundle.mjs');
  const adapter = await navigator.gpu?.requestAdapter();
  if (!adapter) return { adapter: null };
  const read = async (n) => new Uint8Array(await (await fetch(`/bundle/${n}`)).arrayBuffer());
  const trainer = await bundle.openBundle(ort, read, { executionProviders: ['webgpu'] });
  const rows = bundle.parseCsv(csv, trainer.contract);
  const losses = await bundle.trainRows(trainer, rows, steps,
                                        batchSize || trainer.contract.settings.batch_size);
  return { adapter: `${adapter.info.vendor} ${adapter.info.architecture}`, steps: trainer.steps,
           losses, state: Array.from(await trainer.stateBytes()) };
}

async function main() {
  const o = options(process.argv.slice(2));
  const csv = await readFile(o.data, 'utf8');
  const result = await withWebGpuPage(o.bundle, o.chromium, (page) => page.evaluate(
    `(${pageTrain})(${JSON.stringify(csv)}, ${o.steps}, ${o.batchSize})`));
  if (result.state) await writeFile(o.out, Uint8Array.from(result.state));
  delete result.state;
  console.log(JSON.stringify(result));
}

main().catch((e) => { console.error(`webgpu-train: error: ${e.message}`); process.exit(1); });
