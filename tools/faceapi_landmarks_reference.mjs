// Reference outputs of face-api's FaceLandmark68Net (upstream JavaScript), for
// tests/golden_landmarks.rs.
//
// How to run (outside the repository; the npm packages are not part of it):
//
//   mkdir -p /tmp/faceapi-ref && cd /tmp/faceapi-ref && npm init -y
//   npm install --ignore-scripts @vladmandic/face-api@1.7.15 @tensorflow/tfjs@4.22.0 \
//       @tensorflow/tfjs-backend-wasm@4.22.0 jpeg-js@0.4.4
//   cd /path/to/facegate
//   NODE_PATH=/tmp/faceapi-ref/node_modules node tools/faceapi_landmarks_reference.mjs \
//       models/face-api ../shared/fixtures/faces/cgi-model-1.jpg 613 109 160 \
//       > tests/data/faceapi_landmarks_reference.json
//
// It runs the pure-JS 'cpu' backend of @tensorflow/tfjs 4.22 (face-api 1.7.15's build), with
// the weights of models/face-api (the files `facegate models fetch` verified).
//
// Output: the network's raw 136 values (x0, y0, x1, y1, ... in 0..1 of the 112x112 input;
// on a 112x112 input face-api's postProcess is the identity) for
//   * "synthetic": a 112x112 RGB pattern R=(3x+5y)%256, G=(7x+2y+40)%256, B=(x*y)%256;
//   * "synthetic2": R=(x+2y)%256, G=(5x*y+7)%256, B=(255-x+y)%256, run in one batch of 2 with
//     "synthetic" (checks upstream batching too);
//   * "real": the square X Y SIDE of the photo (jpeg-js decode, no EXIF), resized to 112x112
//     by tf.image.resizeBilinear with alignCorners = halfPixelCenters = false, as face-api's
//     toBatchTensor does; the Rust side rebuilds it with its own decoder and resize.

import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(path.join(process.env.NODE_PATH || '/tmp/faceapi-ref/node_modules', 'x.js'));
const faceapi = require(require.resolve('@vladmandic/face-api/dist/face-api.node-wasm.js'));
const jpeg = require('jpeg-js');
const tf = faceapi.tf;

const [modelDir = 'models/face-api', samplePath, bx, by, bside] = process.argv.slice(2);

await tf.setBackend('cpu');
await tf.ready();

function loadWeightMap(dir, name) {
  const manifest = JSON.parse(fs.readFileSync(path.join(dir, `${name}-weights_manifest.json`), 'utf8'));
  const maps = {};
  for (const group of manifest) {
    const all = Buffer.concat(group.paths.map((p) => fs.readFileSync(path.join(dir, p))));
    const ab = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength);
    Object.assign(maps, tf.io.decodeWeights(ab, group.weights));
  }
  return maps;
}

const SIZE = 112;
function pattern(f) {
  const data = new Float32Array(SIZE * SIZE * 3);
  for (let y = 0; y < SIZE; y++) {
    for (let x = 0; x < SIZE; x++) {
      const [r, g, b] = f(x, y);
      const i = (y * SIZE + x) * 3;
      data[i] = r; data[i + 1] = g; data[i + 2] = b;
    }
  }
  return data;
}
const synthetic = pattern((x, y) => [(3 * x + 5 * y) % 256, (7 * x + 2 * y + 40) % 256, (x * y) % 256]);
const synthetic2 = pattern((x, y) => [(x + 2 * y) % 256, (5 * x * y + 7) % 256, (255 - x + y) % 256]);

const net = new faceapi.FaceLandmark68Net();
net.loadFromWeightMap(loadWeightMap(modelDir, 'face_landmark_68_model'));

async function run(inputs) {
  const images = inputs.map((c) => tf.tensor3d(c, [SIZE, SIZE, 3], 'float32'));
  const input = await faceapi.toNetInput(images);
  const out = net.forwardInput(input);
  const rows = await out.array();
  out.dispose();
  images.forEach((t) => t.dispose());
  return rows;
}

const result = {
  generator: 'tools/faceapi_landmarks_reference.mjs',
  face_api_version: faceapi.version,
  tfjs_version: tf.version.tfjs,
  backend: tf.getBackend(),
  input: 'NHWC float32 RGB 0..255, 112x112',
};
const [single] = await run([synthetic]);
const pair = await run([synthetic, synthetic2]);
result.synthetic = single;
result.synthetic2 = pair[1];
result.synthetic_batch2_max_abs_diff_vs_single = Math.max(...single.map((v, i) => Math.abs(v - pair[0][i])));

if (samplePath) {
  const [x0, y0, side] = [Number(bx), Number(by), Number(bside)];
  const img = jpeg.decode(fs.readFileSync(samplePath), { useTArray: true });
  const rgb = new Float32Array(side * side * 3);
  for (let y = 0; y < side; y++) {
    for (let x = 0; x < side; x++) {
      const s = ((y0 + y) * img.width + (x0 + x)) * 4;
      const d = (y * side + x) * 3;
      rgb[d] = img.data[s]; rgb[d + 1] = img.data[s + 1]; rgb[d + 2] = img.data[s + 2];
    }
  }
  const crop = tf.tensor4d(rgb, [1, side, side, 3], 'float32');
  const resized = tf.image.resizeBilinear(crop, [SIZE, SIZE], false, false);
  const chip = await resized.data();
  crop.dispose(); resized.dispose();
  const [out] = await run([Float32Array.from(chip)]);
  result.real = { image: path.basename(samplePath), box: [x0, y0, side], output: out };
}

process.stdout.write(`${JSON.stringify(result, null, 1)}\n`);
