#!/usr/bin/env node
// Usage: node js/profile-step.mjs BUNDLE_DIR [--steps N] [--batch B] [--skip K]
//        [--webgpu --chromium PATH]
// What onnxruntime-web makes of a bundle's train_step.onnx (benchmarks/README.md, "What the WASM
// and WebGPU providers run"). Default: WASM under Node with enableProfiling; prints one JSON
// line: steps, step_us (mean model_run after the first K steps), kernel_us, and per op type its
// microseconds a step, share and node count. --webgpu: the step in headless Chromium on
// onnxruntime-web's WebGPU provider (needs a WebGPU adapter: SwiftShader's is asked for); prints
// the adapter, the number of nodes on each provider (counts), the nodes themselves where more
// than one has some (placed; those on CPUExecutionProvider are the ones
// WebGPU has no kernel for), each step's milliseconds and loss. Batches are synthetic (the same
// batch every step: features (i % 17) / 17, labels i % classes), for timing and placement.
import { readFile } from 'node:fs/promises';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';


function options(argv) {
  const [bundle, ...rest] = argv;
  if (!bundle) throw new Error('usage: profile-step.mjs BUNDLE_DIR [--steps N] [--batch B] [--skip K] [--webgpu --chromium PATH]');
  const o = { bundle, steps: 50, batch: 32, skip: 5, webgpu: false, trace: false,
             chromium: '/usr/bin/chromium' };
  for (let i = 0; i < rest.length; i += 1) {
    const key = rest[i].replace(/^--/, '');
    if (key === 'webgpu' || key === 'trace') { o[key] = true; continue; }
    if (!(key in o) || rest[i + 1] === undefined) throw new Error(`unknown option ${rest[i]}`);
    o[key] = key === 'chromium' ? rest[i + 1] : Number(rest[i + 1]);
    i += 1;
  }
  return o;
}

/** Synthetic feeds for the bundle's batch inputs (B rows), the same in Node and the page. */
function syntheticBatch(ort, contract, B) {
  const feeds = {};
  for (const b of contract.batch) {
    const shape = b.shape.map((d) => (typeof d === 'number' && d > 0 ? d : B));
    const n = shape.reduce((a, c) => a * c, 1);
    const classes = (contract.classes || [0, 1]).length;
    const label = (i) => i % classes;
    feeds[b.name] = b.dtype === 'int64'
      ? new ort.Tensor('int64', BigInt64Array.from({ length: n }, (_, i) => BigInt(label(i))), shape)
      : b.dtype === 'int32' ? new ort.Tensor('int32', Int32Array.from({ length: n }, (_, i) => label(i)), shape)
        : new ort.Tensor(b.dtype, Float32Array.from({ length: n }, (_, i) => (i % 17) / 17), shape);
  }
  return feeds;
}

/** Run `steps` steps of the bundle's train step, feeding each next state back. */
async function runSteps(ort, bundleModule, read, steps, B, sessionOptions) {
  const contract = JSON.parse(new TextDecoder().decode(await read('bundle.json')));
  const session = await ort.InferenceSession.create(await read(contract.files.train_step),
                                                    sessionOptions);
  const state = bundleModule.stateFromBytes(ort, contract, (await read(contract.files.state)).slice());
  const feeds = syntheticBatch(ort, contract, B);
  const ms = [], losses = [];
  for (let i = 0; i < steps; i += 1) {
    const t0 = performance.now();
    const out = await session.run({ ...feeds, ...state });
    for (const [next, name] of Object.entries(contract.train_step.updates)) state[name] = out[next];
    ms.push(performance.now() - t0);
    losses.push(Number(out[contract.train_step.loss].data[0]));
  }
  return { session, ms, losses };
}

/** Per op type figures of ort-web's profile (trace events it prints as JSON on stdout). */
function summarize(events, skip) {
  const runs = events.filter((e) => e.cat === 'Session' && e.name === 'model_run');
  const from = runs[skip].ts;
  const steps = runs.length - skip;
  const ops = {};
  let kernels = 0;
  for (const e of events) {
    if (e.cat !== 'Node' || !e.name.endsWith('_kernel_time') || e.ts < from) continue;
    const op = ops[e.args.op_name] ||= { us: 0, nodes: 0, providers: new Set() };
    op.us += e.dur; op.nodes += 1; op.providers.add(e.args.provider); kernels += e.dur;
  }
  const table = Object.entries(ops).sort((a, b) => b[1].us - a[1].us).map(([op, v]) => ({
    op, us: +(v.us / steps).toFixed(1), share: +(v.us / kernels).toFixed(3),
    nodes: v.nodes / steps, providers: [...v.providers] }));
  const stepUs = runs.slice(skip).reduce((a, r) => a + r.dur, 0) / steps;
  return { steps, step_us: Math.round(stepUs), kernel_us: Math.round(kernels / steps), ops: table };
}

/** The profiled steps, in a child process: the WASM profiler writes its trace straight to
 * the process's stdout, where the parent reads it. */
async function wasmTrace(o) {
  const ort = await import('onnxruntime-web');
  const bundle = await import('./bundle.mjs');
  ort.env.wasm.numThreads = 1;
  const read = async (n) => new Uint8Array(await readFile(path.join(o.bundle, n)));
  const { session } = await runSteps(ort, bundle, read, o.steps, o.batch, {
    executionProviders: ['wasm'], enableProfiling: true, logSeverityLevel: 3 });
  session.endProfiling();
}

function wasmProfile(o) {
  const args = [fileURLToPath(import.meta.url), ...process.argv.slice(2), '--trace'];
  const child = spawnSync(process.execPath, args, { encoding: 'utf8', maxBuffer: 1 << 30 });
  if (child.status !== 0) throw new Error(child.stderr.trim() || 'the profiled run failed');
  const text = child.stdout;
  const events = JSON.parse(text.slice(text.indexOf('['), text.lastIndexOf(']') + 1));
  console.log(JSON.stringify({ provider: 'wasm', ...summarize(events, o.skip) }));
}

async function pageSteps(steps, B) { // runs in the page
  const ort = await import('/ort/ort.webgpu.min.mjs');
  const bundle = await import('/bundle.mjs');
  const adapter = await navigator.gpu?.requestAdapter();
  if (!adapter) return { adapter: null };
  const read = async (n) => new Uint8Array(await (await fetch(`/bundle/${n}`)).arrayBuffer());
  const { ms, losses } = await window.runSteps(ort, bundle, read, steps, B, {
    executionProviders: ['webgpu'], logSeverityLevel: 0, logVerbosityLevel: 0 });
  return { adapter: `${adapter.info.vendor} ${adapter.info.architecture}`, ms, losses };
}

async function webgpuPlacement(o) {
  const { withWebGpuPage } = await import('./webgpu-page.mjs');
  await withWebGpuPage(o.bundle, o.chromium, async (page, logs) => {
    await page.evaluate(`window.syntheticBatch = ${syntheticBatch}; window.runSteps = ${runSteps
      .toString().replace('syntheticBatch(', 'window.syntheticBatch(')};`);
    const result = await page.evaluate(`(${pageSteps})(${o.steps}, ${o.batch})`);
    const placed = {}, counts = {}; // onnxruntime logs "All nodes placed on [EP]" when one EP has all
    let provider = null;
    for (const line of logs) {
      const head = line.match(/(All nodes|Node\(s\)) placed on \[(\w+)\]\. Number of nodes: (\d+)/);
      if (head) {
        provider = head[1] === 'All nodes' ? null : head[2];
        placed[head[2]] = []; counts[head[2]] = Number(head[3]);
        continue;
      }
      const node = line.match(/VerifyEachNodeIsAssignedToAnEp\]\s+(\w+) \((.*)\)$/);
      if (node && provider) placed[provider].push(`${node[1]}(${node[2]})`);
    }
    console.log(JSON.stringify({ provider: 'webgpu', ...result, counts, placed }));
  });
}

const o = options(process.argv.slice(2));
const run = o.trace ? wasmTrace : o.webgpu ? webgpuPlacement : wasmProfile;
Promise.resolve().then(() => run(o)).catch((e) => {
  console.error(`profile-step: error: ${e.message}`);
  process.exit(1);
});
