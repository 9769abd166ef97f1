// The R1 server's page: no build step, no outside resources; every URL is relative to the page.
// It reads what the model takes from `readyz` (`inputs`: image, image+text or text) and draws
// whatever record comes back: boxes, class scores, answers or streamed text.
"use strict";

const $ = (id) => document.getElementById(id);
let info = null;
let picked = null;        // the chosen image File
let bitmap = null;        // ... decoded, for drawing
let controller = null;    // the running generation's AbortController

function setState(state) { document.body.dataset.state = state; }

function variantHeaders() {
  const v = $("variant").value;
  return v ? { "X-R1-Variant": v } : {};
}

function clearResult() {
  lastBoxes = null;
  $("score-row").hidden = true;
  for (const id of ["answered", "error", "answer", "output"]) $(id).textContent = "";
  $("bars").replaceChildren();
  $("canvas").hidden = !bitmap;
}

function showError(body, status) {
  const detail = body && (body.detail || (body.error && (body.error.message || body.error)));
  $("error").textContent = `${status || ""} ${detail || "request failed"}`.trim();
  setState("error");
}

function showAnswered(variant, body) {
  const parts = [`answered by variant ${variant || "?"}`];
  if (body && body.model) parts.push(`model ${body.model}`);
  if (body && body.latency_ms !== undefined) parts.push(`${body.latency_ms.toFixed(1)} ms`);
  $("answered").textContent = parts.join(" · ");
  $("answered").dataset.variant = variant || "";
}

async function init() {
  let r;
  try {
    r = await fetch("readyz");
  } catch (err) {
    $("status").textContent = "server unreachable";
    return setTimeout(init, 2000);
  }
  info = await r.json();
  $("model").textContent = info.model || "";
  if (!info.ready) {
    $("status").textContent = `loading… ${info.detail || ""}`;
    return setTimeout(init, 1000);
  }
  $("status").textContent = `${info.family} · ${info.inputs} · ${info.runtime}`;
  const select = $("variant");
  for (const name of Object.keys(info.variants || {})) {
    if (Object.keys(info.variants).length > 1) select.add(new Option(name, name));
  }
  select.parentElement.hidden = Object.keys(info.variants || {}).length < 2;
  const text = info.inputs === "text";
  $("text-form").hidden = !text;
  $("image-form").hidden = text;
  $("question-row").hidden = info.inputs !== "image+text";
  setState("ready");
}

// ------------------------------------------------------------------------------ images
async function pick(file) {
  if (!file) return;
  picked = file;
  $("file-name").textContent = `${file.name} (${Math.round(file.size / 1024)} KiB)`;
  try {
    bitmap = await createImageBitmap(file);
  } catch (err) {
    bitmap = null;  // the server says what is wrong with it
  }
  clearResult();
  drawImage();
  $("run-image").disabled = false;
}

function drawImage() {
  const canvas = $("canvas");
  if (!bitmap) { canvas.hidden = true; return 1; }
  // small images (digits, 32 px) are shown enlarged, large ones fit the page
  const scale = Math.min(720 / bitmap.width, Math.max(1, 360 / Math.max(bitmap.width, bitmap.height)));
  canvas.width = Math.round(bitmap.width * scale);
  canvas.height = Math.round(bitmap.height * scale);
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = scale < 1;
  ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  canvas.hidden = false;
  return scale;
}

const COLORS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324"];

let lastBoxes = null;

function drawBoxes(rec) {
  lastBoxes = rec;
  const scale = drawImage();
  const ctx = $("canvas").getContext("2d");
  const minScore = Number($("min-score").value) || 0;
  ctx.lineWidth = 2;
  ctx.font = "12px system-ui, sans-serif";
  let drawn = 0;
  rec.boxes.forEach((b, i) => {
    if (rec.scores[i] < minScore) return;
    drawn += 1;
    const color = COLORS[(rec.class_ids[i] || 0) % COLORS.length];
    const [x1, y1, x2, y2] = b.map((v) => v * scale);
    ctx.strokeStyle = color;
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    const label = `${rec.labels[i]} ${rec.scores[i].toFixed(2)}`;
    ctx.fillStyle = color;
    ctx.fillRect(x1, Math.max(0, y1 - 14), ctx.measureText(label).width + 6, 14);
    ctx.fillStyle = "#fff";
    ctx.fillText(label, x1 + 3, Math.max(11, y1 - 3));
  });
  $("score-row").hidden = false;
  $("drawn").textContent = `: ${drawn} drawn`;
  $("answer").textContent = `${rec.boxes.length} detection${rec.boxes.length === 1 ? "" : "s"}`;
  bars(rec.labels.map((l, i) => [l, rec.scores[i]]).slice(0, 10));
}

function bars(rows) {
  const table = $("bars");
  table.replaceChildren();
  for (const [label, p] of rows) {
    const tr = table.insertRow();
    tr.insertCell().textContent = label;
    const bar = tr.insertCell();
    bar.className = "bar";
    const div = document.createElement("div");
    div.style.width = `${Math.max(1, p * 100).toFixed(1)}%`;
    bar.appendChild(div);
    tr.insertCell().textContent = p.toFixed(3);
  }
}

function render(rec) {
  if (Array.isArray(rec.boxes)) return drawBoxes(rec);
  drawImage();
  if (Array.isArray(rec.top)) {                // class scores
    $("answer").textContent = rec.label;
    return bars(rec.top.map((t) => [t.label, t.score]));
  }
  if (Array.isArray(rec.top_k)) {              // answers to a question
    $("answer").textContent = rec.answer;
    return bars(rec.top_k.map((a) => [a.answer, a.probability]));
  }
  $("output").textContent = JSON.stringify(rec, null, 2);
}

async function predictImage() {
  if (!picked) return;
  clearResult();
  setState("busy");
  const form = new FormData();
  form.append("file", picked, picked.name);
  form.append("top_k", "5");
  if (info.inputs === "image+text") form.append("text", $("question").value);
  try {
    const r = await fetch("v1/predict", { method: "POST", body: form, headers: variantHeaders() });
    const body = await r.json();
    if (!r.ok) return showError(body, r.status);
    showAnswered(r.headers.get("X-R1-Variant"), body);
    render(body.result);
    setState("done");
  } catch (err) {
    showError({ detail: String(err) });
  }
}

// ------------------------------------------------------------------------------ text
async function generate() {
  clearResult();
  setState("busy");
  const prompt = $("prompt").value;
  const out = $("output");
  const span = document.createElement("span");
  span.className = "prompt";
  span.textContent = prompt;
  const generated = document.createElement("span");
  generated.id = "generated";
  out.replaceChildren(span, generated);
  controller = new AbortController();
  $("stop").disabled = false;
  $("run-text").disabled = true;
  try {
    const r = await fetch("v1/completions", {
      method: "POST", signal: controller.signal,
      headers: { "content-type": "application/json", ...variantHeaders() },
      body: JSON.stringify({ prompt, max_tokens: Number($("max-tokens").value),
                             temperature: Number($("temperature").value), stream: true }),
    });
    if (!r.ok) return showError(await r.json(), r.status);
    showAnswered(r.headers.get("X-R1-Variant"), null);
    await readEvents(r.body.getReader(), (chunk) => {
      if (chunk.error) return showError(chunk);
      const choice = chunk.choices[0];
      generated.textContent += choice.text;
      if (choice.finish_reason) {
        const usage = chunk.usage ? ` · ${chunk.usage.completion_tokens} tokens` : "";
        $("answered").textContent += ` · finished: ${choice.finish_reason}${usage}`;
      }
    });
    if (document.body.dataset.state === "busy") setState("done");
  } catch (err) {
    if (err.name === "AbortError") { $("answered").textContent += " · stopped"; setState("done"); }
    else showError({ detail: String(err) });
  } finally {
    $("stop").disabled = true;
    $("run-text").disabled = false;
  }
}

async function readEvents(reader, onChunk) {
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += decoder.decode(value, { stream: true });
    let at;
    while ((at = buf.indexOf("\n\n")) >= 0) {
      const event = buf.slice(0, at);
      buf = buf.slice(at + 2);
      if (!event.startsWith("data: ")) continue;
      const data = event.slice(6);
      if (data === "[DONE]") return;
      onChunk(JSON.parse(data));
    }
  }
}

// ------------------------------------------------------------------------------ wiring
$("file").addEventListener("change", (e) => pick(e.target.files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  pick(e.dataTransfer.files[0]);
});
$("run-image").addEventListener("click", predictImage);
$("min-score").addEventListener("input", () => lastBoxes && drawBoxes(lastBoxes));
$("question").addEventListener("keydown", (e) => { if (e.key === "Enter") predictImage(); });
$("run-text").addEventListener("click", generate);
$("stop").addEventListener("click", () => controller && controller.abort());
init();
