// The operator's console page: plain JS, no build step. Protocol: see hilserl_ray/console/server.py.
"use strict";

const token = new URLSearchParams(location.search).get("token") || "";
const KEYMAP = {
  " ": "space", ArrowUp: "up", ArrowDown: "down", ArrowLeft: "left", ArrowRight: "right",
  PageUp: "page_up", PageDown: "page_down", Escape: "esc",
};
const $ = (id) => document.getElementById(id);

let ws = null;
let hello = null;
let nextId = 1;
const sentAt = new Map();  // key message id -> performance.now() when sent
const down = new Set();    // keys this page holds down
const streams = [];        // index -> {img, kind, cam}
// Read by tests and bench/console_latency.py.
window.consoleStats = { frames: 0, keyToAck: [], keyToServer: [], keyToApplied: [], status: null, cues: [], crop: null };

// ------------------------------------------------------------------------- keys
function keyName(e) {
  if (KEYMAP[e.key]) return KEYMAP[e.key];
  return e.key && e.key.length === 1 ? e.key.toLowerCase() : null;
}

function send(name, isDown) {
  if (!ws || ws.readyState !== WebSocket.OPEN) return;
  const id = nextId++;
  sentAt.set(id, performance.now());
  ws.send(JSON.stringify({ type: "key", key: name, down: isDown, id }));
}
function press(name) {
  if (down.has(name)) return;
  down.add(name);
  unlockAudio();
  send(name, true);
}
function release(name) {
  if (!down.has(name)) return;
  down.delete(name);
  send(name, false);
}
function releaseAll() { for (const n of [...down]) release(n); }

window.addEventListener("keydown", (e) => {
  const name = keyName(e);
  if (!name || !hello || !hello.keys.includes(name) || e.ctrlKey || e.metaKey || e.altKey) return;
  e.preventDefault();
  if (!e.repeat) press(name);
});
window.addEventListener("keyup", (e) => {
  const name = keyName(e);
  if (!name || !down.has(name)) return;
  e.preventDefault();
  release(name);
});
window.addEventListener("blur", releaseAll);  // a key held while the tab loses focus must not stick

for (const b of document.querySelectorAll("button[data-key]")) {
  const name = b.dataset.key;
  b.addEventListener("pointerdown", (e) => { e.preventDefault(); press(name); if (!("hold" in b.dataset)) release(name); });
  if ("hold" in b.dataset) {
    b.addEventListener("pointerup", () => release(name));
    b.addEventListener("pointerleave", () => release(name));
  }
}

// --------------------------------------------------------------------- sounds
let audio = null;
function unlockAudio() {  // browsers allow audio only after a user gesture
  if (!audio && window.AudioContext) audio = new AudioContext();
}
function beep(freqs, dur = 0.09) {
  if (!$("sounds").checked || !audio) return;
  let t = audio.currentTime;
  for (const f of freqs) {
    const osc = audio.createOscillator();
    const gain = audio.createGain();
    osc.frequency.value = f;
    gain.gain.setValueAtTime(0.15, t);
    gain.gain.exponentialRampToValueAtTime(0.001, t + dur);
    osc.connect(gain).connect(audio.destination);
    osc.start(t);
    osc.stop(t + dur);
    t += dur + 0.03;
  }
}
$("sounds").addEventListener("change", unlockAudio);

// --------------------------------------------------------------------- cameras
function buildCameras() {
  const root = $("cameras");
  for (const el of root.querySelectorAll("figure")) el.remove();
  streams.length = 0;
  const cams = Object.keys(hello.cameras);
  $("nocams").hidden = cams.length > 0;
  const figs = {};
  for (const cam of cams) {
    const [h, w] = hello.cameras[cam];
    const crop = hello.crop[cam];
    const [ph, pw] = hello.image_size;
    const fig = document.createElement("figure");
    fig.className = "cam";
    fig.dataset.cam = cam;
    fig.innerHTML = `
      <div class="view"><div class="rawwrap"><img class="raw" alt="${cam} raw" data-frames="0"><canvas class="overlay"></canvas></div>
        <span>${cam}: raw ${w}×${h}</span></div>
      <div class="view policyview"><img class="policy" alt="${cam} as the policy sees it" data-frames="0">
        <span>as the policy sees it: ${crop ? `crop [${crop.join(", ")}] → ` : ""}${pw}×${ph}</span></div>`;
    root.appendChild(fig);
    figs[cam] = fig;
    setupCrop(fig, cam, h, w);
  }
  hello.streams.forEach((name, i) => {
    const [cam, kind] = name.split("/");
    streams[i] = { img: figs[cam].querySelector(kind === "raw" ? "img.raw" : "img.policy"), kind, cam };
  });
}

function onFrame(buf) {
  const s = streams[new Uint8Array(buf, 0, 1)[0]];
  if (!s) return;
  const url = URL.createObjectURL(new Blob([buf.slice(1)], { type: "image/jpeg" }));
  const old = s.img.src;
  s.img.onload = () => {
    if (old) URL.revokeObjectURL(old);
    s.img.dataset.frames = String(Number(s.img.dataset.frames) + 1);
    s.img.dataset.size = `${s.img.naturalWidth}x${s.img.naturalHeight}`; // stays while the next decodes
    window.consoleStats.frames += 1;
    if (s.kind === "raw") drawCrop(s.img.closest("figure"));
  };
  s.img.src = url;
}

// ----------------------------------------------------------------------- crop tool
function setupCrop(fig, cam, h, w) {
  const canvas = fig.querySelector("canvas.overlay");
  fig._crop = { cam, h, w, configured: hello.crop[cam] || null, box: null, drag: null };
  const toImage = (e) => {
    const r = canvas.getBoundingClientRect();
    const x = Math.round(((e.clientX - r.left) / r.width) * w);
    const y = Math.round(((e.clientY - r.top) / r.height) * h);
    return [Math.min(Math.max(y, 0), h), Math.min(Math.max(x, 0), w)];
  };
  canvas.addEventListener("pointerdown", (e) => {
    e.preventDefault();
    canvas.setPointerCapture(e.pointerId);
    const p = toImage(e);
    fig._crop.drag = [p, p];
    drawCrop(fig);
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!fig._crop.drag) return;
    fig._crop.drag[1] = toImage(e);
    drawCrop(fig);
  });
  canvas.addEventListener("pointerup", (e) => {
    const d = fig._crop.drag;
    if (!d) return;
    d[1] = toImage(e);
    fig._crop.drag = null;
    const top = Math.min(d[0][0], d[1][0]), left = Math.min(d[0][1], d[1][1]);
    const height = Math.abs(d[1][0] - d[0][0]), width = Math.abs(d[1][1] - d[0][1]);
    if (height >= 2 && width >= 2) {
      fig._crop.box = [top, left, height, width];
      showCrop(cam, fig._crop.box);
    }
    drawCrop(fig);
  });
}

function showCrop(cam, box) {
  const list = `[${box.join(", ")}]`;
  window.consoleStats.crop = { cam, box };
  $("crop-out").textContent =
    `# (top, left, height, width) in the raw ${cam} image\n` +
    `pipeline:\n  image:\n    crop:\n      ${cam}: ${list}\n\n` +
    `--pipeline.image.crop.${cam}=[${box.join(",")}]`;
}

function drawCrop(fig) {
  const c = fig._crop;
  const canvas = fig.querySelector("canvas.overlay");
  const img = fig.querySelector("img.raw");
  canvas.width = img.clientWidth;
  canvas.height = img.clientHeight;
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, canvas.width, canvas.height);
  const sx = canvas.width / c.w, sy = canvas.height / c.h;
  const rect = (box, color, dash) => {
    g.setLineDash(dash);
    g.strokeStyle = color;
    g.lineWidth = 2;
    g.strokeRect(box[1] * sx, box[0] * sy, box[3] * sx, box[2] * sy);
  };
  if (c.configured) rect(c.configured, "#9aa0aa", [3, 3]);  // the crop the policy sees now
  if (c.box) rect(c.box, "#ffd000", [6, 4]);  // the one drawn here, to paste
  if (c.drag) {
    const [a, b] = c.drag;
    rect([Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.abs(b[0] - a[0]), Math.abs(b[1] - a[1])], "#00e0ff", []);
  }
}

// ------------------------------------------------------------------------- status
const fmt = (v, f) => (v === null || v === undefined ? "–" : f(v));
const pct = (v) => `${Math.round(v * 100)}%`;
let lastEngaged = null;

function percentile(xs, q) {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}

function onStatus(s) {
  window.consoleStats.status = s;
  $("s-episode").textContent = fmt(s.episode, String);
  $("s-step").textContent = fmt(s.step, String) + (s.human ? " (human)" : "");
  $("s-return").textContent = fmt(s.return, (v) => v.toFixed(2));
  $("s-last").textContent = s.last_return === undefined ? "–" :
    `${s.last_success ? "success" : "failure"}, return ${s.last_return.toFixed(2)}`;
  $("s-success").textContent = fmt(s.success_rate, pct);
  $("s-intervention").textContent = fmt(s.intervention_rate, pct);
  $("s-hz").textContent = fmt(s.policy_hz, (v) => `${v.toFixed(1)} Hz`);
  $("s-classifier").textContent = fmt(s.classifier_prob, (v) => v.toFixed(2));
  $("s-weights").textContent = fmt(s.weights_version, String);
  $("s-learner").textContent = s.updates === undefined ? "–" :
    `${s.updates} updates` + (s.updates_per_s === undefined ? "" : `, ${s.updates_per_s.toFixed(1)}/s`);
  const mode = $("mode");
  const m = s.paused ? "paused" : s.engaged ? "human" : "policy";
  mode.className = `badge ${m}`;
  mode.textContent = m === "human" ? "HUMAN" : m.toUpperCase();
  $("b-takeover").firstChild.textContent = s.engaged ? "Hand back " : "Take over ";
  $("b-takeover").classList.toggle("active", !!s.engaged);
  $("b-pause").firstChild.textContent = s.paused ? "Resume " : "Pause ";
  $("b-pause").classList.toggle("active", !!s.paused);
  for (const b of document.querySelectorAll("button.steer")) b.disabled = !s.engaged;
  lastEngaged = s.engaged;
}

function showLatency() {
  const a = window.consoleStats.keyToServer.slice(-50);
  const p = window.consoleStats.keyToApplied.slice(-50);
  let t = a.length ? `${percentile(a, 0.5).toFixed(1)} ms (p50)` : "–";
  if (p.length) t += `; applied in a step ${percentile(p, 0.5).toFixed(0)} ms`;
  $("s-latency").textContent = t;
}

function flash(cls) {
  for (const f of document.querySelectorAll("figure.cam")) {
    f.classList.add(cls);
    setTimeout(() => f.classList.remove(cls), 400);
  }
}

function onJson(m) {
  if (m.type === "hello") {
    hello = m;
    $("title").textContent = `${m.title} · ${m.task} (${m.robot})`;
    document.title = `${m.title} · hilserl_ray console`;
    $("sounds").checked = !!m.sounds;
    $("nosteer").hidden = !!m.steer;
    buildCameras();
    for (const [cam, box] of Object.entries(m.crop)) showCrop(cam, box);
  } else if (m.type === "status") {
    onStatus(m);
  } else if (m.type === "ack") {
    const t0 = sentAt.get(m.id);
    if (t0 !== undefined) {
      window.consoleStats.keyToAck.push(performance.now() - t0);
      // one way, on one machine: both sides read the same wall clock
      window.consoleStats.keyToServer.push(m.t - (performance.timeOrigin + t0));
    }
    showLatency();
  } else if (m.type === "applied") {
    for (const id of m.ids) {
      const t0 = sentAt.get(id);
      if (t0 !== undefined) window.consoleStats.keyToApplied.push(performance.now() - t0);
      sentAt.delete(id);
    }
    showLatency();
  } else if (m.type === "cue") {
    window.consoleStats.cues.push(m);
    if (m.cue === "start") beep([660]);
    else if (m.cue === "takeover") beep([520, 520], 0.06);
    else if (m.cue === "rerecord") beep([300], 0.15);
    else if (m.cue === "end") { beep(m.success ? [660, 880] : [440, 330]); flash(m.success ? "flash-good" : "flash-bad"); }
  }
}

// ---------------------------------------------------------------------- connection
function connect() {
  const proto = location.protocol === "https:" ? "wss" : "ws";
  ws = new WebSocket(`${proto}://${location.host}/ws?token=${encodeURIComponent(token)}`);
  ws.binaryType = "arraybuffer";
  ws.onopen = () => { $("conn").textContent = "live"; };
  ws.onclose = (e) => {
    down.clear();
    $("conn").textContent = e.code === 1001 ? "the run stopped" : "disconnected, retrying…";
    if (e.code !== 1001) setTimeout(connect, 1000);
  };
  ws.onmessage = (e) => (typeof e.data === "string" ? onJson(JSON.parse(e.data)) : onFrame(e.data));
}
connect();
