#!/usr/bin/env node
// Usage: node benchmarks/js/tfjs-train.mjs MODEL STEPS BATCH BACKEND
//   MODEL: iris_mlp | digits_cnn (the recipes of models/, built with tf.layers); BACKEND: cpu |
//   wasm (@tensorflow/tfjs-backend-wasm, one thread). Trains STEPS steps of Adam on random rows
//   (speed only), each batch made from Float32Array rows and the loss read back, as
//   js/bundle-train.mjs does; prints JSON: steady steps and seconds after the first 10.
import * as tf from '@tensorflow/tfjs';
import { setThreadsCount } from '@tensorflow/tfjs-backend-wasm';

const [name, stepsArg, batchArg, backend = 'cpu'] = process.argv.slice(2);
const steps = Number(stepsArg), batch = Number(batchArg);
const MODELS = {
  iris_mlp: { features: 4, classes: 3, lr: 0.01, layers: () => [
    tf.layers.dense({ inputShape: [4], units: 16, activation: 'relu' }),
    tf.layers.dense({ units: 3 })] },
  digits_cnn: { features: 64, classes: 10, lr: 0.003, layers: () => [
    tf.layers.reshape({ inputShape: [64], targetShape: [8, 8, 1] }),
    tf.layers.conv2d({ filters: 16, kernelSize: 3, padding: 'same' }),
    tf.layers.batchNormalization(), tf.layers.activation({ activation: 'relu' }),
    tf.layers.maxPooling2d({ poolSize: 2 }),
    tf.layers.conv2d({ filters: 32, kernelSize: 3, padding: 'same', activation: 'relu' }),
    tf.layers.maxPooling2d({ poolSize: 2 }), tf.layers.flatten(),
    tf.layers.dense({ units: 64, activation: 'relu' }), tf.layers.dropout({ rate: 0.2 }),
    tf.layers.dense({ units: 10 })] },
};

async function main() {
  const spec = MODELS[name];
  if (!spec || !(steps > 10) || !(batch > 0)) throw new Error('usage: tfjs-train.mjs MODEL STEPS BATCH [cpu|wasm]');
  if (backend === 'wasm') setThreadsCount(1);
  await tf.setBackend(backend);
  await tf.ready();
  const model = tf.sequential({ layers: spec.layers() });
  model.compile({ optimizer: tf.train.adam(spec.lr),
                  loss: (y, logits) => tf.losses.softmaxCrossEntropy(y, logits) });
  const rows = Float32Array.from({ length: steps * batch * spec.features }, () => Math.random());
  const labels = Int32Array.from({ length: steps * batch },
                                 () => Math.floor(Math.random() * spec.classes));
  let warm = 0;
  for (let s = 0; s < steps; s += 1) {
    if (s === 10) warm = performance.now();
    const x = tf.tensor2d(rows.subarray(s * batch * spec.features, (s + 1) * batch * spec.features),
                          [batch, spec.features]);
    const y = tf.oneHot(tf.tensor1d(labels.subarray(s * batch, (s + 1) * batch), 'int32'),
                        spec.classes);
    await model.trainOnBatch(x, y); // resolves with the loss, read back
    tf.dispose([x, y]);
  }
  const seconds = (performance.now() - warm) / 1000;
  console.log(JSON.stringify({ model: name, backend: tf.getBackend(), steady: { steps: steps - 10, seconds } }));
}

main().catch((e) => { console.error(`tfjs-train: error: ${e.message}`); process.exit(1); });
