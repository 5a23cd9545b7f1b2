// Reference descriptors from the upstream JavaScript implementation of face-api's
// FaceRecognitionNet, for tests/golden_descriptor.rs.
//
// How to run (outside the repository, the npm packages are not part of it):
//
//   mkdir -p /tmp/faceapi-ref && cd /tmp/faceapi-ref && npm init -y
//   npm install --ignore-scripts @vladmandic/face-api@1.7.15 @tensorflow/tfjs@4.22.0 \
//       @tensorflow/tfjs-backend-wasm@4.22.0 jpeg-js@0.4.4
//   cd /path/to/facegate
//   NODE_PATH=/tmp/faceapi-ref/node_modules node tools/faceapi_reference.mjs \
//       models/face-api ../shared/fixtures/faces/person-linda.jpg \
//       > tests/data/faceapi_descriptor_reference.json
//
// face-api.node-wasm.js runs on @tensorflow/tfjs 4.22 (the version face-api 1.7.15 was built
// with); the script selects the pure-JS 'cpu' backend, so no native binaries are needed. The first argument is the folder holding face_recognition_model*; the detector and
// 68-point landmark models used for the real chip come from the npm package's own model/ folder.
//
// Output: descriptors of
//   * "synthetic": a 150x150 RGB pattern R=(3x+5y)%256, G=(7x+2y+40)%256, B=(x*y)%256;
//   * "synthetic2": a second pattern R=(x+2y)%256, G=(5x*y+7)%256, B=(255-x+y)%256, run in one
//     batch of 2 together with "synthetic" (checks upstream batching too);
//   * "real": a 150x150 chip cut from a photo (the shared fixture person-linda.jpg): face-api's SSD detector and 68-point
//     landmarks give five points (eye centres = mean of points 36-41 / 42-47, nose tip 30,
//     mouth corners 48 / 54), mapped onto facegate's template by a least-squares similarity
//     and sampled bilinearly (pixel centres at integer coordinates, zero outside), the same
//     convention as src/preprocess/align.rs. The five points are recorded so the Rust side can
//     rebuild the chip.
// The net is called on 150x150 tensors directly, so toBatchTensor neither pads nor resizes.

import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(path.join(process.env.NODE_PATH || '/tmp/faceapi-ref/node_modules', 'x.js'));
// The node-wasm build takes tfjs from @tensorflow/tfjs (pure JS, CPU backend included) instead of
// tfjs-node; the browser ESM bundle stubs out node's util and does not run under node.
const faceapiPath = require.resolve('@vladmandic/face-api/dist/face-api.node-wasm.js');
const faceapi = require(faceapiPath);
const jpeg = require('jpeg-js');
const tf = faceapi.tf;

const modelDir = process.argv[2] || 'models/face-api';
const samplePath = process.argv[3];
const npmModelDir = path.join(path.dirname(faceapiPath), '..', 'model');

await tf.setBackend('cpu');
await tf.ready();

function loadWeightMap(dir, name) {
  const manifest = JSON.parse(fs.readFileSync(path.join(dir, `${name}-weights_manifest.json`), 'utf8'));
  const maps = {};
  for (const group of manifest) {
    const bufs = group.paths.map((p) => fs.readFileSync(path.join(dir, p)));
    const all = Buffer.concat(bufs);
    const ab = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength);
    Object.assign(maps, tf.io.decodeWeights(ab, group.weights));
  }
  return maps;
}

const SIZE = 150;
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

const recog = new faceapi.FaceRecognitionNet();
recog.loadFromWeightMap(loadWeightMap(modelDir, 'face_recognition_model'));

async function describe(chips) {
  // toNetInput takes a batch as an array of rank-3 tensors.
  const images = chips.map((c) => tf.tensor3d(c, [SIZE, SIZE, 3], 'float32'));
  const input = await faceapi.toNetInput(images);
  const out = recog.forwardInput(input);
  const rows = await out.array();
  out.dispose();
  images.forEach((t) => t.dispose());
  return rows;
}

const result = {
  generator: 'tools/faceapi_reference.mjs',
  face_api_version: faceapi.version,
  tfjs_version: tf.version.tfjs,
  backend: tf.getBackend(),
  input: 'NHWC float32 RGB 0..255, 150x150, no resize',
};
const [single] = await describe([synthetic]);
const pair = await describe([synthetic, synthetic2]);
result.synthetic = single;
result.synthetic2 = pair[1];
result.synthetic_batch2_max_abs_diff_vs_single = Math.max(...single.map((v, i) => Math.abs(v - pair[0][i])));

// --- similarity transform + bilinear warp (same convention as src/preprocess/align.rs) ---
const TEMPLATE = [
  [47.549183, 46.599033], [100.476133, 46.599033], [74.0127, 76.5625],
  [50.4149, 103.0233], [97.6104, 103.0233],
];
function similarity(src, dst) {
  const n = src.length;
  let mx = 0, my = 0, nx = 0, ny = 0;
  for (let i = 0; i < n; i++) { mx += src[i][0]; my += src[i][1]; nx += dst[i][0]; ny += dst[i][1]; }
  mx /= n; my /= n; nx /= n; ny /= n;
  let a = 0, b = 0, v = 0;
  for (let i = 0; i < n; i++) {
    const sx = src[i][0] - mx, sy = src[i][1] - my, dx = dst[i][0] - nx, dy = dst[i][1] - ny;
    a += sx * dx + sy * dy; b += sx * dy - sy * dx; v += sx * sx + sy * sy;
  }
  const c = a / v, s = b / v; // scale*cos, scale*sin
  return [c, -s, nx - (c * mx - s * my), s, c, ny - (s * mx + c * my)];
}
function warp(rgb, w, h, m) {
  // invert the 2x3 map: chip -> image
  const det = m[0] * m[4] - m[1] * m[3];
  const ia = m[4] / det, ib = -m[1] / det, ic = -m[3] / det, id = m[0] / det;
  const it = -(ia * m[2] + ib * m[5]), iu = -(ic * m[2] + id * m[5]);
  const out = new Float32Array(SIZE * SIZE * 3);
  const px = (x, y, c) => (x < 0 || y < 0 || x >= w || y >= h ? 0 : rgb[(y * w + x) * 3 + c]);
  for (let v = 0; v < SIZE; v++) {
    for (let u = 0; u < SIZE; u++) {
      const sx = ia * u + ib * v + it, sy = ic * u + id * v + iu;
      const x0 = Math.floor(sx), y0 = Math.floor(sy), fx = sx - x0, fy = sy - y0;
      for (let c = 0; c < 3; c++) {
        const top = px(x0, y0, c) * (1 - fx) + px(x0 + 1, y0, c) * fx;
        const bot = px(x0, y0 + 1, c) * (1 - fx) + px(x0 + 1, y0 + 1, c) * fx;
        out[(v * SIZE + u) * 3 + c] = top * (1 - fy) + bot * fy;
      }
    }
  }
  return out;
}

if (samplePath) {
  const img = jpeg.decode(fs.readFileSync(samplePath), { useTArray: true });
  const rgb = new Uint8Array(img.width * img.height * 3);
  for (let i = 0; i < img.width * img.height; i++) {
    rgb[i * 3] = img.data[i * 4]; rgb[i * 3 + 1] = img.data[i * 4 + 1]; rgb[i * 3 + 2] = img.data[i * 4 + 2];
  }
  await faceapi.nets.ssdMobilenetv1.loadFromWeightMap(loadWeightMap(npmModelDir, 'ssd_mobilenetv1_model'));
  await faceapi.nets.faceLandmark68Net.loadFromWeightMap(loadWeightMap(npmModelDir, 'face_landmark_68_model'));
  const imgT = tf.tensor3d(rgb, [img.height, img.width, 3], 'int32');
  const det = await faceapi.detectSingleFace(imgT, new faceapi.SsdMobilenetv1Options({ minConfidence: 0.5 })).withFaceLandmarks();
  imgT.dispose();
  if (!det) throw new Error(`no face found in ${samplePath}`);
  const p = det.landmarks.positions;
  const mean = (ids) => [ids.reduce((s, i) => s + p[i].x, 0) / ids.length, ids.reduce((s, i) => s + p[i].y, 0) / ids.length];
  const five = [mean([36, 37, 38, 39, 40, 41]), mean([42, 43, 44, 45, 46, 47]), [p[30].x, p[30].y], [p[48].x, p[48].y], [p[54].x, p[54].y]];
  const m = similarity(five, TEMPLATE);
  const chip = warp(rgb, img.width, img.height, m);
  const [desc] = await describe([chip]);
  result.real = {
    image: path.basename(samplePath),
    image_size: [img.width, img.height],
    landmarks5: five,
    transform: m,
    descriptor: desc,
  };
}

process.stdout.write(`${JSON.stringify(result, null, 1)}\n`);
