// Train an irkit training bundle (irkit export SOURCE --bundle DIR) with stock onnxruntime-web.
// No irkit on this side: everything comes from the bundle's bundle.json (the contract).
// Works in Node and in the browser: `read(name)` returns a file of the bundle as a Uint8Array.

const ARRAYS = {
  float32: Float32Array, float64: Float64Array, int32: Int32Array, int64: BigInt64Array,
  uint8: Uint8Array, bool: Uint8Array,
};

/** Open a bundle: its contract, the train and eval sessions, the initial state (from the
 * bundle's init.onnx where it has one: a graph with no inputs whose outputs are the state, its
 * values read from state.bin; else from state.bin's layout in bundle.json). `useInit: false`
 * reads the layout even when init.onnx is there. `executionProviders: ['webgpu']` (the browser
 * build ort.webgpu.min.mjs; a `--target web` bundle runs there whole) keeps the state on the GPU
 * between steps: only the loss and metrics come back each step. */
export async function openBundle(ort, read, { useInit = true, executionProviders = ['wasm'] } = {}) {
  const contract = JSON.parse(new TextDecoder().decode(await read('bundle.json')));
  if (contract.format !== 'irkit-bundle' || contract.version !== 1) {
    throw new Error('not an irkit bundle (version 1): bundle.json format/version');
  }
  const stateBytes = (await read(contract.files.state)).slice(); // own, aligned buffer
  if (stateBytes.byteLength !== contract.state_bytes) {
    throw new Error(`${contract.files.state}: ${stateBytes.byteLength} bytes, not ${contract.state_bytes}`);
  }
  // the step and eval graphs read the state as inputs; model.onnx reads its weights from a state
  // file as ONNX external data (inferenceSession), so the bundle holds one copy of them
  const options = { executionProviders, logSeverityLevel: 3 };
  const gpu = executionProviders.includes('webgpu');
  const train = await ort.InferenceSession.create(await read(contract.files.train_step), {
    ...options, ...(gpu ? { preferredOutputLocation: Object.fromEntries(
      Object.keys(contract.train_step.updates).map((next) => [next, 'gpu-buffer'])) } : {}) });
  const evaluation = await ort.InferenceSession.create(await read(contract.files.eval), options);
  const state = contract.files.init && useInit
    ? await initialState(ort, await read(contract.files.init), contract, stateBytes, options)
    : stateFromBytes(ort, contract, stateBytes);
  return new BundleTrainer(ort, contract, train, evaluation, state);
}

/** The initial state as init.onnx gives it: run with no inputs, its weights the state file's. */
async function initialState(ort, initModel, contract, stateBytes, options) {
  const init = await ort.InferenceSession.create(initModel, {
    ...options, externalData: [{ path: contract.files.state, data: stateBytes }] });
  const state = await init.run({});
  await init.release();
  return state;
}

/** The state tensors of a state file (bytes in the layout of contract.state). */
export function stateFromBytes(ort, contract, bytes) {
  const state = {};
  for (const e of contract.state) {
    const Array_ = ARRAYS[e.dtype];
    const count = e.shape.reduce((a, b) => a * b, 1);
    const data = new Array_(bytes.buffer.slice(bytes.byteOffset + e.offset,
                                               bytes.byteOffset + e.offset + e.length));
    state[e.name] = new ort.Tensor(e.dtype, data.length === count ? data : data.slice(0, count),
                                   e.shape);
  }
  return state;
}

/** The state file's bytes (same layout as the bundle's state.bin) of `state`. */
export function stateToBytes(contract, state) {
  const out = new Uint8Array(contract.state_bytes);
  for (const e of contract.state) {
    const d = state[e.name].data;
    out.set(new Uint8Array(d.buffer, d.byteOffset, e.length), e.offset);
  }
  return out;
}

export class BundleTrainer {
  constructor(ort, contract, train, evaluation, state) {
    Object.assign(this, { ort, contract, train, evaluation, state });
    this.steps = 0;
  }

  /** Batch feeds from rows: features (array of Float32Array rows) and target values. */
  batch(features, targets) {
    const [f, t] = ['features', 'target'].map((r) => this.contract.batch.find((b) => b.role === r));
    const width = features[0].length;
    const wants = f.shape.slice(1).reduce((a, b) => a * b, 1);
    if (width !== wants) {
      throw new Error(`rows of ${width} features, but the bundle's input ${f.name} takes ${wants} (shape ${JSON.stringify(f.shape)}); give a CSV made for this bundle`);
    }
    const x = new Float32Array(features.length * width);
    features.forEach((row, i) => x.set(row, i * width));
    const Target = ARRAYS[t.dtype];
    const y = Target === BigInt64Array ? BigInt64Array.from(targets, (v) => BigInt(v))
      : Target.from(targets);
    const shape = [features.length, ...f.shape.slice(1)];
    return { [f.name]: new this.ort.Tensor(f.dtype, x, shape),
             [t.name]: new this.ort.Tensor(t.dtype, y, [targets.length, ...t.shape.slice(1)]) };
  }

  /** One optimizer step; each next/<name> output becomes the state <name>. */
  async step(feeds) {
    const out = await this.train.run({ ...feeds, ...this.state });
    for (const [next, name] of Object.entries(this.contract.train_step.updates)) {
      if (this.state[name].location === 'gpu-buffer') this.state[name].dispose();
      this.state[name] = out[next];
    }
    this.steps += 1;
    return this.figures(out, this.contract.train_step);
  }

  /** Loss and metrics of the current weights on a batch (no update). */
  async evaluate(feeds) {
    const weights = Object.fromEntries(this.contract.eval.weights.map((n) => [n, this.state[n]]));
    return this.figures(await this.evaluation.run({ ...feeds, ...weights }), this.contract.eval);
  }

  figures(out, spec) {
    const result = { loss: Number(out[spec.loss].data[0]) };
    for (const m of spec.metrics) result[m] = Number(out[m].data[0]);
    return result;
  }

  /** The state file's bytes of the current state (downloaded from the GPU if it is there). */
  async stateBytes() {
    const state = {};
    for (const [name, t] of Object.entries(this.state)) {
      state[name] = { data: t.location === 'gpu-buffer' ? await t.getData() : t.data };
    }
    return stateToBytes(this.contract, state);
  }
}

/** The inference model with the weights of `stateBytes` (a state file: trained or initial). */
export async function inferenceSession(ort, read, contract, stateBytes) {
  return ort.InferenceSession.create(await read(contract.files.inference), {
    externalData: [{ path: contract.files.state, data: stateBytes }],
    executionProviders: ['wasm'], logSeverityLevel: 3 });
}

/** Parse CSV text (header row; the label column holds class names or indices). */
export function parseCsv(text, contract, labelColumn = 'label') {
  const lines = text.split(/\r?\n/).filter((l) => l.trim());
  const header = lines[0].split(',').map((h) => h.trim());
  const li = header.indexOf(labelColumn);
  if (li < 0) throw new Error(`the CSV has no column ${labelColumn}`);
  const classes = contract.classes || [];
  const features = [], targets = [];
  for (const line of lines.slice(1)) {
    const cells = line.split(',');
    const label = cells[li].trim();
    const index = classes.indexOf(label);
    const target = index >= 0 ? index : Number(label);
    if (!Number.isFinite(target)) {
      throw new Error(`line ${targets.length + 2}: label ${label} is neither a class of the bundle nor a number`);
    }
    targets.push(target);
    features.push(Float32Array.from(cells.filter((_, i) => i !== li), Number));
  }
  return { features, targets };
}

/** Train `steps` steps over the rows in order, `batchSize` a step, epoch after epoch (the last
 * batch of an epoch may be smaller), as irkit's fit(shuffle=False) does. */
export async function trainRows(trainer, rows, steps, batchSize, onStep) {
  const n = rows.targets.length;
  const losses = [];
  while (trainer.steps < steps) {
    for (let start = 0; start < n && trainer.steps < steps; start += batchSize) {
      const end = Math.min(start + batchSize, n);
      const feeds = trainer.batch(rows.features.slice(start, end), rows.targets.slice(start, end));
      const figures = await trainer.step(feeds);
      losses.push(figures.loss);
      if (onStep) await onStep(trainer.steps, figures);
    }
  }
  return losses;
}
