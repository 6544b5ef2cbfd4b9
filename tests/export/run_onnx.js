// Runs an exported ShiftViT ONNX model in ONNX Runtime for Node.js (the npm
// package onnxruntime-node, installed in this folder by scripts/install-deps.sh):
//
//   node tests/export/run_onnx.js MODEL.onnx INPUT.f32 N OUT.f32
//
// INPUT.f32: N images as raw little-endian float32, the shape the model's
// input "image" declares (NHWC). Writes the "logits" output [N, K] as raw
// float32 to OUT.f32 and prints one JSON line: the input and output shapes
// (probabilities: null for a model without that output, e.g. torch.onnx.export's),
// the model's metadata (class names, input size) and the runtime's version.
'use strict';
const fs = require('fs');
const path = require('path');
const ort = require(path.join(__dirname, 'node_modules', 'onnxruntime-node'));

async function main() {
  const [modelPath, inputPath, nText, outPath] = process.argv.slice(2);
  if (!outPath) {
    console.error('usage: node run_onnx.js MODEL.onnx INPUT.f32 N OUT.f32');
    process.exit(2);
  }
  const session = await ort.InferenceSession.create(modelPath, {
    executionProviders: ['cpu'], intraOpNumThreads: 1, graphOptimizationLevel: 'all'});
  const n = parseInt(nText, 10);
  const buf = fs.readFileSync(inputPath);
  const data = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
  const side = Math.round(Math.sqrt(data.length / (3 * n)));
  if (n * side * side * 3 !== data.length) throw new Error(`${inputPath}: ${data.length} floats are not ${n} NHWC images`);
  const feeds = {image: new ort.Tensor('float32', data, [n, side, side, 3])};
  const out = await session.run(feeds);
  const logits = out.logits;
  fs.writeFileSync(outPath, Buffer.from(logits.data.buffer, logits.data.byteOffset, logits.data.byteLength));
  let meta = {};
  try { meta = session.handler.metadata || {}; } catch (e) { meta = {}; }
  console.log(JSON.stringify({inputs: session.inputNames, outputs: session.outputNames,
                              input_shape: [n, side, side, 3], logits_shape: logits.dims,
                              probabilities_shape: out.probabilities ? out.probabilities.dims : null,
                              runtime: 'onnxruntime-node ' + require(path.join(__dirname, 'node_modules', 'onnxruntime-node', 'package.json')).version}));
}

main().catch((e) => { console.error('run_onnx.js: ' + (e && e.message ? e.message : e)); process.exit(1); });
