// The page of `dlforge serve` and `dlforge ui`: plain JavaScript, no library, nothing fetched from elsewhere.
// It reads the /ui/api routes (runs, curves, plots, model cards, the model registry) and talks to the served
// models through the server's own routes. Data is put in the page as text (textContent), never as HTML.
"use strict";

const state = { key: sessionStorage.getItem("dlforge-key") || "", detail: null, compared: null, history: [] };
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
const SVG = "http://www.w3.org/2000/svg";

const $ = (id) => document.getElementById(id);

function el(tag, text, attrs) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

function svgEl(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function fmt(v) {
  if (v === null || v === undefined) return "—";
  if (typeof v !== "number") return String(v);
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  return a !== 0 && (a >= 1e5 || a < 1e-3) ? v.toExponential(3) : String(+v.toFixed(4));
}

function tick(v) {
  // an axis label: 4 significant digits, in at most ~8 characters
  const short = String(Number(v.toPrecision(4)));
  return short.length > 8 ? v.toExponential(2) : short;
}

function when(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleString() : "—";
}

function setStatus(text) {
  $("status").textContent = text || "";
}

// --- HTTP: every request carries the key once one is given -------------------------------------------------------

async function api(path, options) {
  const headers = Object.assign({}, (options && options.headers) || {});
  if (state.key) headers.Authorization = "Bearer " + state.key;
  const response = await fetch(path, Object.assign({}, options || {}, { headers }));
  if (response.status === 401) {
    $("key-form").hidden = false;
    throw new Error("this server needs its API key: enter it above");
  }
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try {
      const body = await response.json();
      message = (body.error && body.error.message) || body.detail || message;
    } catch (_) { /* not JSON: the status says enough */ }
    throw new Error(message);
  }
  return response;
}

async function getJSON(path) {
  return (await api(path)).json();
}

function failed(noteId) {
  return (error) => {
    const note = $(noteId);
    note.textContent = error.message;
    note.classList.add("error");
  };
}

// --- charts: inline SVG line charts ------------------------------------------------------------------------------

function extent(values) {
  let lo = Math.min(...values), hi = Math.max(...values);
  if (lo === hi) { lo -= Math.abs(lo) * 0.05 || 1; hi += Math.abs(hi) * 0.05 || 1; }
  return [lo, hi];
}

// lines: [{label, points: [[x, y], ...]}], y null for a gap. Returns a <div class="chart"> holding one <svg>.
function lineChart(title, lines, width, height) {
  width = width || 360;
  height = height || 210;
  const pad = { left: 56, right: 12, top: 22, bottom: 28 };
  const box = el("div", null, { class: "chart", "data-title": title });
  const svg = svgEl("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": title });
  box.appendChild(svg);
  svg.appendChild(svgEl("text", { x: pad.left, y: 14 }, title));
  const points = lines.flatMap((l) => l.points.filter((p) => p[1] !== null));
  if (!points.length) {
    svg.appendChild(svgEl("text", { x: pad.left, y: height / 2 }, "no finite values"));
    return box;
  }
  const [x0, x1] = extent(points.map((p) => p[0]));
  const [y0, y1] = extent(points.map((p) => p[1]));
  const sx = (x) => pad.left + ((x - x0) / (x1 - x0)) * (width - pad.left - pad.right);
  const sy = (y) => height - pad.bottom - ((y - y0) / (y1 - y0)) * (height - pad.top - pad.bottom);
  svg.appendChild(svgEl("rect", { x: pad.left, y: pad.top, width: width - pad.left - pad.right,
    height: height - pad.top - pad.bottom, fill: "none", stroke: "#ccc" }));
  svg.appendChild(svgEl("text", { x: pad.left - 4, y: pad.top + 8, "text-anchor": "end" }, tick(y1)));
  svg.appendChild(svgEl("text", { x: pad.left - 4, y: height - pad.bottom, "text-anchor": "end" }, tick(y0)));
  svg.appendChild(svgEl("text", { x: pad.left, y: height - 10 }, tick(x0)));
  svg.appendChild(svgEl("text", { x: width - pad.right, y: height - 10, "text-anchor": "end" }, tick(x1)));
  svg.appendChild(svgEl("text", { x: (width + pad.left) / 2, y: height - 10, "text-anchor": "middle" }, "step"));
  lines.forEach((line, i) => {
    const color = COLORS[i % COLORS.length];
    let d = "", pen = "M";
    for (const [x, y] of line.points) {
      if (y === null) { pen = "M"; continue; }
      d += `${pen}${sx(x).toFixed(1)},${sy(y).toFixed(1)} `;
      pen = "L";
    }
    const drawn = line.points.filter((p) => p[1] !== null);
    if (drawn.length === 1) {
      svg.appendChild(svgEl("circle", { cx: sx(drawn[0][0]), cy: sy(drawn[0][1]), r: 3, fill: color }));
    } else {
      svg.appendChild(svgEl("path", { d, fill: "none", stroke: color, "stroke-width": 1.5, "data-label": line.label }));
    }
    if (lines.length > 1) {
      svg.appendChild(svgEl("text", { x: width - pad.right - 4, y: pad.top + 14 + 13 * i, "text-anchor": "end",
        fill: color }, line.label));
    }
  });
  return box;
}

function metricsTable(table, columns, rows) {
  // rows: [[label, ...values]]
  table.replaceChildren();
  const head = el("tr");
  columns.forEach((c) => head.appendChild(el("th", c)));
  table.appendChild(el("thead")).appendChild(head);
  const body = table.appendChild(el("tbody"));
  for (const row of rows) {
    const tr = body.appendChild(el("tr"));
    row.forEach((v, i) => tr.appendChild(el("td", i === 0 ? v : fmt(v), i === 0 ? {} : { class: "num" })));
  }
}

function curveOrder(names) {
  // the training loss first, then the validation and test curves, then the rest (lr, throughput, ...)
  const rank = (n) => (n === "loss" ? 0 : n.startsWith("val/") ? 1 : n.startsWith("test/") ? 2 : 3);
  return names.slice().sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
}

// --- runs ----------------------------------------------------------------------------------------------------------

function finalSummary(run) {
  const metrics = run.metrics || {};
  const keys = Object.keys(metrics).filter((k) => k.startsWith("test/")).slice(0, 4);
  const shown = keys.length ? keys : Object.keys(metrics).slice(0, 4);
  return shown.map((k) => `${k} ${fmt(metrics[k])}`).join(", ") || run.headline || "—";
}

async function loadRuns() {
  const data = await getJSON("/ui/api/runs");
  const body = $("runs-table").tBodies[0];
  body.replaceChildren();
  $("runs-note").textContent = data.note || (data.runs.length ? "" : "No runs yet (dlforge train PRESET).");
  for (const run of data.runs) {
    const tr = el("tr", null, { class: "run", "data-name": run.name });
    const pick = el("input", null, { type: "checkbox", class: "pick", "aria-label": "compare " + run.name });
    pick.addEventListener("click", (event) => event.stopPropagation());
    pick.addEventListener("change", updateCompareButton);
    tr.appendChild(el("td")).appendChild(pick);
    [run.name, run.preset || "—", run.status || "—", when(run.started), finalSummary(run)].forEach((v) =>
      tr.appendChild(el("td", v)));
    tr.addEventListener("click", () => showRun(run.name).catch(failed("runs-note")));
    body.appendChild(tr);
  }
}

function updateCompareButton() {
  $("compare-button").disabled = document.querySelectorAll("#runs-table input.pick:checked").length < 2;
}

async function showRun(name) {
  setStatus("loading " + name + "…");
  const run = await getJSON("/ui/api/runs/" + encodeURIComponent(name));
  state.detail = run;
  document.querySelectorAll("#runs-table tr.run").forEach((tr) =>
    tr.classList.toggle("selected", tr.dataset.name === name));
  $("run-detail").hidden = false;
  $("run-title").textContent = `${run.name} (${run.status || "not in the registry"})`;
  const curves = $("run-curves");
  curves.replaceChildren();
  const names = curveOrder(Object.keys(run.series));
  if (!names.length) curves.appendChild(el("p", "No metrics.jsonl in this run.", { class: "note" }));
  for (const n of names) curves.appendChild(lineChart(n, [{ label: n, points: run.series[n] }]));
  metricsTable($("run-final"), ["metric", "value"], Object.entries(run.final).map(([k, v]) => [k, v]));
  const plots = $("run-plots");
  plots.replaceChildren();
  if (!run.plots.length) plots.appendChild(el("p", "No plots.", { class: "note" }));
  for (const file of run.plots) {
    const img = el("img", null, { alt: file, title: file, "data-file": file });
    plots.appendChild(img);
    // fetched, not linked, so that the request carries the key
    api(`/ui/api/runs/${encodeURIComponent(name)}/plots/${encodeURIComponent(file)}`)
      .then((r) => r.blob()).then((blob) => { img.src = URL.createObjectURL(blob); })
      .catch((error) => { img.alt = file + ": " + error.message; });
  }
  $("run-card").textContent = run.card || "(no model card: the run did not finish)";
  setStatus("");
}

async function compareSelected() {
  const names = [...document.querySelectorAll("#runs-table input.pick:checked")].map(
    (box) => box.closest("tr").dataset.name);
  const query = names.map((n) => "run=" + encodeURIComponent(n)).join("&");
  const data = await getJSON("/ui/api/compare?" + query);
  state.compared = data;
  $("compare-detail").hidden = false;
  const curves = curveOrder([...new Set(data.runs.flatMap((r) => Object.keys(r.series)))]);
  const select = $("compare-metric");
  select.replaceChildren(...curves.map((c) => el("option", c, { value: c })));
  drawComparison();
  metricsTable($("compare-table"), ["metric", ...data.runs.map((r) => r.name)],
    data.metrics.map((m) => [m, ...data.runs.map((r) => (m in r.metrics ? r.metrics[m] : null))]));
}

function drawComparison() {
  const metric = $("compare-metric").value;
  const lines = state.compared.runs.filter((r) => r.series[metric]).map((r) => ({ label: r.name,
    points: r.series[metric] }));
  $("compare-chart").replaceChildren(lineChart(metric || "no curves", lines, 720, 300));
}

// --- the model registry --------------------------------------------------------------------------------------------

async function loadRegistry() {
  const data = await getJSON("/ui/api/registry");
  const body = $("registry-table").tBodies[0];
  body.replaceChildren();
  $("registry-note").textContent = data.note || "";
  for (const entry of data.names) {
    for (const v of entry.versions) {
      const metrics = Object.entries(v.metrics || {}).filter(([k]) => k.startsWith("test/")).slice(0, 3);
      const tr = body.appendChild(el("tr", null, { "data-ref": v.ref }));
      [entry.name, v.version, (v.aliases || []).join(", ") || "—", when(v.created), v.run || "—",
        metrics.map(([k, x]) => `${k} ${fmt(x)}`).join(", ") || "—"].forEach((x) => tr.appendChild(el("td", x)));
    }
  }
}

// --- what the server serves: chat, RAG, images ---------------------------------------------------------------------

async function loadServed() {
  const [server, models] = await Promise.all([getJSON("/ui/api/server"), getJSON("/v1/models")]);
  const byKind = (kind) => models.data.filter((m) => m.kind === kind);
  const chat = byKind("generate");
  offer("chat", chat, "No language model is served here: start `dlforge serve RUN` with a GPT run to chat.");
  $("rag-form").hidden = !server.rag;
  $("rag-note").textContent = server.rag ? "" : "No index is served here: start `dlforge serve --rag INDEX` to ask.";
  const images = [];
  for (const m of byKind("predict")) {
    const meta = await getJSON("/v2/models/" + encodeURIComponent(m.id));
    if ((meta.inputs || []).some((t) => t.name === "pixel_values" || (t.shape || []).length >= 3)) images.push(m);
  }
  offer("image", images, "No image model is served here: start `dlforge serve RUN` with an image classifier.");
}

function offer(section, models, absent) {
  $(section + "-form").hidden = !models.length;
  $(section + "-note").textContent = models.length ? "" : absent;
  $(section + "-model").replaceChildren(...models.map((m) => el("option", m.id, { value: m.id })));
}

async function sendChat(event) {
  event.preventDefault();
  const input = $("chat-input");
  const content = input.value.trim();
  if (!content) return;
  input.value = "";
  state.history.push({ role: "user", content });
  $("chat-log").appendChild(el("div", content, { class: "message user" }));
  const reply = $("chat-log").appendChild(el("div", "", { class: "message assistant" }));
  $("chat-send").disabled = true;
  try {
    const response = await api("/v1/chat/completions", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ model: $("chat-model").value, messages: state.history, stream: true,
        max_tokens: Number($("chat-max").value) || 64, temperature: Number($("chat-temperature").value) }),
    });
    const text = await readStream(response, (sofar) => { reply.textContent = sofar; });
    state.history.push({ role: "assistant", content: text });
    reply.dataset.done = "true";
  } catch (error) {
    reply.classList.add("error");
    reply.textContent = error.message;
    state.history.pop();
  } finally {
    $("chat-send").disabled = false;
  }
}

// Server-sent events read as they arrive: each `data:` line is a chunk whose delta is added to the text.
async function readStream(response, show) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "", text = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") return text;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
        if (delta && delta.content) {
          text += delta.content;
          show(text);
        }
      }
    }
  }
  return text;
}

async function askRag(event) {
  event.preventDefault();
  const question = $("rag-question").value.trim();
  if (!question) return;
  $("rag-answer").textContent = "…";
  $("rag-citations").replaceChildren();
  try {
    const response = await api("/v1/rag/ask", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ question }) });
    const result = await response.json();
    $("rag-answer").textContent = result.answer;
    for (const c of result.citations || []) {
      const where = c.heading ? ` — ${c.heading}` : "";
      $("rag-citations").appendChild(el("li", `[${c.n}] ${c.relpath || c.source}${where}`));
    }
  } catch (error) {
    $("rag-answer").textContent = error.message;
  }
}

async function predictImages(event) {
  event.preventDefault();
  const files = $("image-files").files;
  if (!files.length) return;
  const form = new FormData();
  form.append("model", $("image-model").value);
  for (const f of files) form.append("files", f, f.name);
  const table = $("image-predictions");
  try {
    const result = await (await api("/v1/predict", { method: "POST", body: form })).json();
    const columns = [...new Set(result.predictions.flatMap((r) => Object.keys(r)))];
    metricsTable(table, ["file", ...columns], result.predictions.map((r, i) => [files[i] ? files[i].name : i,
      ...columns.map((c) => (typeof r[c] === "object" && r[c] !== null ? JSON.stringify(r[c]) : r[c]))]));
  } catch (error) {
    table.replaceChildren(el("caption", error.message, { class: "error" }));
  }
}

// --- start ---------------------------------------------------------------------------------------------------------

function loadAll() {
  loadRuns().catch(failed("runs-note"));
  loadRegistry().catch(failed("registry-note"));
  loadServed().catch(failed("chat-note"));
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.key = $("key-input").value;
  sessionStorage.setItem("dlforge-key", state.key);
  $("key-form").hidden = true;
  document.querySelectorAll(".note.error").forEach((n) => n.classList.remove("error"));
  loadAll();
});
$("compare-button").addEventListener("click", () => compareSelected().catch(failed("runs-note")));
$("compare-metric").addEventListener("change", drawComparison);
$("chat-form").addEventListener("submit", sendChat);
$("rag-form").addEventListener("submit", askRag);
$("image-form").addEventListener("submit", predictImages);
loadAll();
