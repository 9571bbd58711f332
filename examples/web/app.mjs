// The page's logic: open a bundle (samples/NAME/ or ?bundle=URL/), read its data.csv or a picked
// CSV, train with onnxruntime-web (WASM, one thread), plot the curves, predict with model.onnx
// and the trained state. window.irkitResult holds the outcome (for tests and the console).
import * as ort from './vendor/ort.wasm.min.mjs';
import { inferenceSession, openBundle, parseCsv, trainRows } from './vendor/bundle.mjs';

const $ = (id) => document.getElementById(id);
const query = new URLSearchParams(location.search);
ort.env.wasm.wasmPaths = new URL('./vendor/', location.href).href;
ort.env.wasm.numThreads = 1; // the same sums as under Node: weights comparable across runtimes
let trained = null;

function bundleBase() {
  return new URL(query.get('bundle') || `samples/${$('sample').value}/`, location.href);
}

async function fetchBytes(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
}

function plot(losses, accuracy) {
  const canvas = $('curve'), g = canvas.getContext('2d');
  const top = Math.max(...losses), w = canvas.width - 20, h = canvas.height - 20;
  g.clearRect(0, 0, canvas.width, canvas.height);
  const line = (values, scale, colour) => {
    g.strokeStyle = colour; g.lineWidth = 2; g.beginPath();
    values.forEach((v, i) => {
      const x = 10 + (i / Math.max(1, values.length - 1)) * w, y = 10 + h - (v / scale) * h;
      i ? g.lineTo(x, y) : g.moveTo(x, y);
    });
    g.stroke();
  };
  line(losses, top, '#1f77b4');
  line(accuracy, 1, '#ff7f0e');
}

async function train() {
  $('train').disabled = true; $('predict').disabled = true;
  const base = bundleBase();
  const read = (name) => fetchBytes(new URL(name, base));
  const trainer = await openBundle(ort, read);
  const file = $('csv').files[0];
  const text = file ? await file.text() : new TextDecoder().decode(await read('data.csv'));
  const rows = parseCsv(text, trainer.contract, query.get('label') || 'label');
  const steps = Number($('steps').value);
  const batch = Number($('batch').value) || trainer.contract.settings.batch_size;
  const losses = [], accuracy = [];
  let shown = 0;
  await trainRows(trainer, rows, steps, batch, async (step, figures) => {
    losses.push(figures.loss);
    accuracy.push('correct' in figures ? figures.correct / Math.min(batch, rows.targets.length) : 0);
    if (performance.now() - shown > 100 || step === steps) {
      shown = performance.now();
      $('status').textContent = `step ${step}: loss ${figures.loss.toFixed(4)}`;
      plot(losses, accuracy);
      await new Promise((r) => setTimeout(r)); // let the page paint
    }
  });
  const final = await trainer.evaluate(trainer.batch(rows.features, rows.targets));
  const state = await trainer.stateBytes();
  const model = await inferenceSession(ort, read, trainer.contract, state);
  trained = { trainer, model, rows };
  $('download').href = URL.createObjectURL(new Blob([state])); $('download').hidden = false;
  $('row').value ||= Array.from(rows.features[0]).join(',');
  $('status').textContent = `trained ${trainer.steps} steps: loss ${final.loss.toFixed(4)}` +
    ('correct' in final ? `, accuracy ${(final.correct / rows.targets.length).toFixed(3)}` : '');
  $('train').disabled = false; $('predict').disabled = false;
  window.irkitResult = { steps: trainer.steps, losses, accuracy, final, state: base64(state) };
}

async function predict() {
  const { trainer, model } = trained;
  const values = $('row').value.split(',').map(Number);
  const input = trainer.contract.inference.inputs[0];
  const spec = trainer.contract.batch.find((b) => b.name === input) || { shape: [1, values.length] };
  const tensor = new ort.Tensor('float32', Float32Array.from(values), [1, ...spec.shape.slice(1)]);
  const out = await model.run({ [input]: tensor });
  const scores = Array.from(out[trainer.contract.inference.outputs[0]].data);
  const best = scores.indexOf(Math.max(...scores));
  const name = (trainer.contract.classes || [])[best] ?? String(best);
  $('prediction').textContent = `class ${name}`;
  window.irkitPrediction = { index: best, name, scores };
}

function base64(bytes) {
  let text = '';
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text);
}

const fail = (e) => {
  $('status').textContent = `error: ${e.message}`; window.irkitError = e.message;
  $('train').disabled = false;
};
$('train').addEventListener('click', () => train().catch(fail));
$('predict').addEventListener('click', () => predict().catch(fail));
$('sample').addEventListener('change', () => { $('row').value = ''; });
window.irkitReady = true;
