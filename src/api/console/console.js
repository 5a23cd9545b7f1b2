// facegate capture console: webcam preview, a passive check on one frame, a head-turn
// challenge over two frames, and the BI report and live metrics. Talks only to this server
// (the native API: /facegate/v1/analyze and /facegate/v1/active; /idlive/bi_report; /metrics).
// Query parameters: auto=1 runs the camera, the passive check and the challenge by itself
// (kiosks, demos, the browser test); challenge=left|right|up|down fixes the direction (else
// random); delay=MS is the time given to turn (default 2500).
"use strict";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const DIRECTIONS = ["left", "right", "up", "down"];
const TURN_MS = Math.min(10000, Math.max(500, Number(params.get("delay")) || 2500));
let stream = null;

function phase(p) {
  document.body.dataset.phase = p;
}

function status(text) {
  $("status").textContent = text;
}

function headers(extra) {
  const h = Object.assign({}, extra || {});
  const key = $("api-key").value.trim();
  if (key) h["X-API-Key"] = key;
  return h;
}

function fmt(x, digits) {
  return typeof x === "number" && isFinite(x) ? x.toFixed(digits === undefined ? 3 : digits) : "–";
}

// --- camera ----------------------------------------------------------------------------------

async function startCamera() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new Error("this browser gives no camera access here (a secure origin is needed)");
  }
  stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  const v = $("video");
  v.srcObject = stream;
  await new Promise((resolve) => {
    if (v.readyState >= 2) return resolve();
    v.onloadeddata = () => resolve();
  });
  await v.play().catch(() => {});
  $("passive").disabled = false;
  $("active").disabled = false;
  $("start").textContent = "Camera on";
  $("start").disabled = true;
  status("Camera on: centre your face in the oval.");
  phase("camera");
}

// One frame of the camera as a JPEG blob, drawn into thumbnail canvas `thumb` too.
function grab(thumb) {
  const v = $("video");
  const c = document.createElement("canvas");
  c.width = v.videoWidth;
  c.height = v.videoHeight;
  c.getContext("2d").drawImage(v, 0, 0);
  if (thumb) {
    const t = $(thumb);
    t.getContext("2d").drawImage(c, 0, 0, t.width, t.height);
  }
  return new Promise((resolve, reject) =>
    c.toBlob((b) => (b ? resolve(b) : reject(new Error("the frame could not be encoded"))), "image/jpeg", 0.92));
}

// --- rendering -------------------------------------------------------------------------------

function verdict(kind, text) {
  const el = $("verdict");
  el.className = "verdict " + kind;
  el.textContent = text;
  el.dataset.verdict = kind;
}

function rows(tbody, list) {
  const body = $(tbody).tBodies[0] || $(tbody);
  body.replaceChildren();
  for (const [name, value, fired] of list) {
    const tr = document.createElement("tr");
    const a = document.createElement("td");
    a.textContent = name;
    const b = document.createElement("td");
    b.textContent = value;
    tr.append(a, b);
    if (fired !== undefined) {
      const c = document.createElement("td");
      c.textContent = fired ? "fired" : "ok";
      c.className = fired ? "fired" : "ok";
      tr.append(c);
    }
    body.append(tr);
  }
}

// The signals of one analysis: PAD per network, the fused score, quality and its reasons.
function analysisSignals(a, label) {
  const out = [];
  const p = label ? label + " " : "";
  if (a.rejection) out.push([p + "quality gate", a.rejection.code + ": " + a.rejection.message, true]);
  if (a.liveness) {
    for (const n of a.liveness.networks) {
      out.push([p + "PAD " + n.name + " (live softmax)", fmt(n.softmax[1]), n.softmax[1] < 0.5]);
    }
    out.push([p + "PAD fused probability (" + a.liveness.calibration + ")", fmt(a.liveness.probability), !a.liveness.is_live]);
  }
  if (a.quality) {
    out.push([p + "quality score", fmt(a.quality.score, 2)]);
    const pose = a.quality.pose || {};
    const angles = Object.keys(pose).map((k) => k + " " + fmt(pose[k], 1)).join(", ");
    if (angles) out.push([p + "pose", angles]);
  }
  out.push([p + "faces found", String(a.faces.length), a.faces.length !== 1]);
  return out;
}

function timingRows(t, roundTrip, res) {
  const list = [["round trip (browser)", fmt(roundTrip, 1) + " ms"]];
  for (const h of ["x-queue-time", "x-inference-time"]) {
    const v = res.headers.get(h);
    if (v !== null) list.push([h, v + " ms"]);
  }
  if (t) for (const k of Object.keys(t)) list.push([k, fmt(t[k], 2)]);
  rows("timings", list);
}

async function call(path, init) {
  const t0 = performance.now();
  const res = await fetch(path, init);
  const ms = performance.now() - t0;
  const body = await res.json().catch(() => null);
  if (!res.ok) {
    const msg = body && body.error ? body.error.message : res.status + " " + res.statusText;
    throw new Error(msg);
  }
  return { res, body, ms };
}

// --- checks ----------------------------------------------------------------------------------

let lastFrame = null;
let lastPassive = null;

async function passiveCheck() {
  phase("passive");
  status("Passive check…");
  lastFrame = await grab("frame0");
  const { res, body, ms } = await call("/facegate/v1/analyze", {
    method: "POST",
    headers: headers({ "Content-Type": "image/jpeg" }),
    body: lastFrame,
  });
  const v = body.verdict;
  lastPassive = v;
  verdict(v === "LIVE" ? "live" : v === "SPOOF" ? "spoof" : "rejected", "Passive: " + v);
  rows("signals", analysisSignals(body));
  timingRows(body.timings, ms, res);
  status("Passive check done.");
  phase("passive-done");
  return body;
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

async function activeCheck() {
  phase("challenge");
  const direction = DIRECTIONS.includes(params.get("challenge"))
    ? params.get("challenge")
    : DIRECTIONS[crypto.getRandomValues(new Uint32Array(1))[0] % DIRECTIONS.length];
  document.body.dataset.challenge = direction;
  const first = await grab("frame0");
  const prompt = $("prompt");
  prompt.hidden = false;
  const until = performance.now() + TURN_MS;
  while (performance.now() < until) {
    prompt.textContent = "Turn your head " + direction.toUpperCase() + " … " + Math.ceil((until - performance.now()) / 1000);
    await sleep(100);
  }
  prompt.hidden = true;
  const second = await grab("frame1");
  status("Active check…");
  const form = new FormData();
  form.append("frame0", first, "frame0.jpg");
  form.append("frame1", second, "frame1.jpg");
  const { res, body, ms } = await call("/facegate/v1/active?challenge=" + direction, {
    method: "POST",
    headers: headers(),
    body: form,
  });
  verdict(body.live ? "live" : "spoof", "Challenge (" + direction + "): " + (body.live ? "LIVE" : "NOT LIVE"));
  const list = [];
  if (lastPassive) list.push(["passive check (its own frame)", lastPassive, lastPassive !== "LIVE"]);
  list.push(["session score", fmt(body.score)]);
  body.frames.forEach((f, i) => {
    const c = f.check;
    if (c.check === "judged") list.push(["frame " + i + " passive probability", fmt(c.probability), !c.live]);
    else if (c.check === "rejected") list.push(["frame " + i + " quality gate", c.rejection, true]);
    else list.push(["frame " + i, "incomplete (no landmarks or template)", true]);
  });
  for (const m of body.motion) {
    list.push(["3-D motion " + (m.frame - 1) + "→" + m.frame + " (motion " + fmt(m.motion) + ", parallax " + fmt(m.parallax) + ")", fmt(m.score), !m.live]);
  }
  if (body.challenge) {
    const c = body.challenge;
    list.push(["challenge " + c.asked.join(",") + " (yaw " + fmt(c.d_yaw, 1) + "°, pitch " + fmt(c.d_pitch, 1) + "°)", c.passed ? "passed" : "failed", !c.passed]);
  } else {
    list.push(["challenge", "not judged", true]);
  }
  if (body.same_person) {
    list.push(["same person (template distance)", fmt(body.same_person.max_distance), !body.same_person.same]);
  }
  for (const f of body.frames) {
    if (f.analysis.quality) list.push([f.name + " quality score", fmt(f.analysis.quality.score, 2)]);
    if (f.analysis.liveness) {
      for (const n of f.analysis.liveness.networks) {
        list.push([f.name + " PAD " + n.name, fmt(n.softmax[1]), n.softmax[1] < 0.5]);
      }
    }
  }
  rows("signals", list);
  timingRows(null, ms, res);
  status("Challenge done.");
  phase("active-done");
  return body;
}

async function guarded(f) {
  try {
    await f();
  } catch (e) {
    verdict("none", "Error: " + e.message);
    status(e.message);
    phase("error");
  }
}

// --- reports and metrics -----------------------------------------------------------------------

function histogram(el, bins) {
  const max = Math.max(1, ...bins.map((b) => b[1]));
  const box = $(el);
  box.replaceChildren();
  for (const [label, n] of bins) {
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.height = (100 * n) / max + "%";
    bar.title = label + ": " + n;
    const l = document.createElement("span");
    l.textContent = label;
    const c = document.createElement("b");
    c.textContent = n ? String(n) : "";
    bar.append(c, l);
    box.append(bar);
  }
}

async function loadReport() {
  const q = new URLSearchParams();
  if ($("date-from").value) q.set("date_from", $("date-from").value);
  if ($("date-to").value) q.set("date_to", $("date-to").value);
  $("report-status").textContent = "loading…";
  try {
    const { body } = await call("/idlive/bi_report?" + q, { headers: headers() });
    const sums = { probability: {}, quality: {} };
    const errors = {};
    for (const [k, n] of Object.entries(body)) {
      if (k === "total") continue;
      const m = k.match(/_(probability|quality)_(\d\.\d-\d\.\d)$/);
      if (m) sums[m[1]][m[2]] = (sums[m[1]][m[2]] || 0) + n;
      else {
        const code = k.split("_").slice(2).join("_") || k;
        errors[code] = (errors[code] || 0) + n;
      }
    }
    const bins = [];
    for (let i = 0; i < 10; i++) bins.push((i / 10).toFixed(1) + "-" + ((i + 1) / 10).toFixed(1));
    histogram("hist-probability", bins.map((b) => [b.slice(0, 3), sums.probability[b] || 0]));
    histogram("hist-quality", bins.map((b) => [b.slice(0, 3), sums.quality[b] || 0]));
    rows("report-errors", Object.entries(errors).map(([c, n]) => [c, String(n)]));
    $("report-status").textContent = body.total + " records";
  } catch (e) {
    $("report-status").textContent = "error: " + e.message;
  }
}

// Prometheus text: samples by metric name, each {labels, value}.
function parseMetrics(text) {
  const out = {};
  for (const line of text.split("\n")) {
    if (!line || line[0] === "#") continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    if (m[3]) for (const kv of m[3].matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[kv[1]] = kv[2];
    (out[m[1]] = out[m[1]] || []).push({ labels, value: Number(m[4]) });
  }
  return out;
}

// Cumulative buckets summed over every label set but `le`: [[le, count]], ascending.
function buckets(samples) {
  const by = {};
  for (const s of samples || []) {
    const le = s.labels.le === "+Inf" ? Infinity : Number(s.labels.le);
    by[le] = (by[le] || 0) + s.value;
  }
  return Object.keys(by).map(Number).sort((a, b) => a - b).map((le) => [le, by[le]]);
}

function quantile(bs, q) {
  if (!bs.length) return NaN;
  const total = bs[bs.length - 1][1];
  if (!total) return NaN;
  let prevLe = 0, prevN = 0;
  for (const [le, n] of bs) {
    if (n >= q * total) {
      if (!isFinite(le)) return prevLe;
      return prevLe + ((le - prevLe) * (q * total - prevN)) / Math.max(1e-9, n - prevN);
    }
    prevLe = le;
    prevN = n;
  }
  return prevLe;
}

const sum = (samples) => (samples || []).reduce((a, s) => a + s.value, 0);
let lastTotal = null;

async function pollMetrics() {
  if ($("reports").hidden) return;
  try {
    const res = await fetch("/metrics", { headers: headers() });
    if (!res.ok) throw new Error(res.status + " " + res.statusText);
    const m = parseMetrics(await res.text());
    const now = performance.now();
    const total = sum(m.facegate_requests_total);
    if (lastTotal) $("m-throughput").textContent = fmt(((total - lastTotal.n) * 1000) / (now - lastTotal.t), 1);
    lastTotal = { n: total, t: now };
    const lat = buckets(m.facegate_request_duration_seconds_bucket);
    $("m-p50").textContent = fmt(quantile(lat, 0.5) * 1000, 1) + " ms";
    $("m-p99").textContent = fmt(quantile(lat, 0.99) * 1000, 1) + " ms";
    $("m-queue").textContent = String(sum(m.facegate_queue_depth));
    $("m-inflight").textContent = String(sum(m.facegate_in_flight_requests));
    const b = buckets(m.facegate_batch_size_bucket);
    let prev = 0;
    histogram("hist-batch", b.filter(([le]) => isFinite(le)).map(([le, n]) => {
      const d = n - prev;
      prev = n;
      return ["≤" + le, d];
    }));
    $("metrics-status").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    $("metrics-status").textContent = "error: " + e.message;
  }
}

// --- wiring ----------------------------------------------------------------------------------

function showTab(name) {
  for (const t of document.querySelectorAll(".tab")) t.classList.toggle("active", t.dataset.tab === name);
  $("capture").hidden = name !== "capture";
  $("reports").hidden = name !== "reports";
  if (name === "reports") {
    loadReport();
    pollMetrics();
  }
}

function init() {
  phase("idle");
  const today = new Date();
  const week = new Date(today.getTime() - 6 * 86400000);
  $("date-to").value = today.toISOString().slice(0, 10);
  $("date-from").value = week.toISOString().slice(0, 10);
  for (const t of document.querySelectorAll(".tab")) t.addEventListener("click", () => showTab(t.dataset.tab));
  $("start").addEventListener("click", () => guarded(startCamera));
  $("passive").addEventListener("click", () => guarded(passiveCheck));
  $("active").addEventListener("click", () => guarded(activeCheck));
  $("load-report").addEventListener("click", loadReport);
  setInterval(pollMetrics, 2000);
  if (params.get("auto") === "1") {
    guarded(async () => {
      await startCamera();
      await passiveCheck();
      await activeCheck();
    });
  }
}

init();
