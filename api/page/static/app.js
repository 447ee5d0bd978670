// The page: a form generated from the served model's schema, its answer from the server and,
// when asked, from the same pinned graph run on this device; and a CSV scored as a table.
// Everything it shows of the model comes from GET /model; it knows no dataset.

import { FeatureBuilder, OUTPUTS, labelIndex } from "./features.js";

const $ = (id) => document.getElementById(id);
const UNKNOWN = "";  // the select option and number state for a missing value
const MAX_BATCH = Number(document.body.dataset.maxBatch) || 1000;
const state = { model: null, schema: null, devices: new Map() };

// ---- talking to the service ----------------------------------------------------------------

async function getJSON(url) {
  const response = await fetch(url);
  const body = await response.json();
  if (!response.ok) throw new Error(body?.error?.message || `${url}: HTTP ${response.status}`);
  return body;
}

async function predictOnServer(instances, routingKey = null) {
  const headers = { "content-type": "application/json" };
  if (routingKey) headers["x-routing-key"] = routingKey;
  let response;
  try {
    response = await fetch("/predict", { method: "POST", headers, body: JSON.stringify({ instances }) });
  } catch (error) {
    return { ok: false, status: 0, body: { error: { message: `the server did not answer (${error.message})` } } };
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = { error: { message: `HTTP ${response.status} with a body that is not JSON` } };
  }
  return { ok: response.ok, status: response.status, body, requestId: response.headers.get("x-request-id") };
}

// ---- on this device --------------------------------------------------------------------------

function hex(buffer) {
  return [...new Uint8Array(buffer)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

async function verifiedBytes(url) {
  if (!globalThis.crypto?.subtle) {
    throw new Error("this page is not a secure context (https or localhost), so it cannot check the model's SHA-256; on-device inference is off");
  }
  const response = await fetch(url);
  if (!response.ok) {
    const body = await response.json().catch(() => null);
    throw new Error(body?.error?.message || `${url}: HTTP ${response.status}`);
  }
  const expected = response.headers.get("x-content-sha256");
  const bytes = await response.arrayBuffer();
  const found = hex(await crypto.subtle.digest("SHA-256", bytes));
  if (!expected || found !== expected) {
    throw new Error(`${url}: SHA-256 ${found} does not match the header's ${expected}; not run`);
  }
  return { bytes, sha256: found };
}

let ortModule = null;
async function ort() {
  if (!ortModule) {
    try {
      ortModule = await import("/page/vendor/ort.wasm.bundle.min.mjs");
    } catch {
      throw new Error("onnxruntime-web is not installed on this server (`make web` installs it)");
    }
    // the loader is in the bundle; only the binary is fetched, from this server
    ortModule.env.wasm.wasmPaths = { wasm: "/page/vendor/ort-wasm-simd-threaded.wasm" };
    ortModule.env.wasm.numThreads = 1;
  }
  return ortModule;
}

/** The variant's graph and spec, downloaded once, checked against their SHA-256, loaded. */
async function device(variantName) {
  const variant = state.model.variants.find((v) => v.variant === variantName);
  if (!variant) throw new Error(`no variant ${variantName}`);
  const key = `${variant.variant}@${variant.md5}`;
  if (!state.devices.has(key)) {
    state.devices.set(key, (async () => {
      const started = performance.now();
      const query = `variant=${encodeURIComponent(variant.variant)}&md5=${variant.md5}`;
      const [graph, spec] = await Promise.all([
        verifiedBytes(`/model/onnx?${query}`),
        verifiedBytes(`/model/preprocess?${query}`),
      ]);
      const fetched = performance.now();
      const runtime = await ort();
      const session = await runtime.InferenceSession.create(new Uint8Array(graph.bytes), {
        executionProviders: ["wasm"],
      });
      const builder = new FeatureBuilder(
        JSON.parse(new TextDecoder().decode(spec.bytes)),
        variant.input_schema.features.map((f) => f.name),
      );
      return {
        variant, session, builder, runtime, sha256: graph.sha256,
        timings: { download_verify_ms: fetched - started, session_ms: performance.now() - fetched },
      };
    })());
  }
  try {
    return await state.devices.get(key);
  } catch (error) {
    state.devices.delete(key);
    throw error;
  }
}

/** Predictions for instances (objects by feature name) from the graph on this device, in the
 * shape /predict answers: {label, probabilities} or {value}. */
async function predictOnDevice(instances, variantName = state.model.variant) {
  const loaded = await device(variantName);
  const { variant, session, builder, runtime } = loaded;
  const names = variant.input_schema.features.map((f) => f.name);
  const started = performance.now();
  const matrix = builder.rows(instances.map((row) => names.map((n) => row[n] ?? null)));
  const input = new runtime.Tensor("float32", matrix, [instances.length, builder.inputs.length]);
  const task = variant.task;
  const output = (await session.run({ [session.inputNames[0]]: input }, [OUTPUTS[task]]))[OUTPUTS[task]];
  const values = output.data;
  let predictions;
  if (task === "classification") {
    const classes = variant.classes;
    predictions = instances.map((_, i) => {
      const row = Array.from(values.subarray(i * classes.length, (i + 1) * classes.length));
      return {
        label: classes[labelIndex(row)],
        probabilities: Object.fromEntries(classes.map((c, j) => [String(c), row[j]])),
      };
    });
  } else {
    predictions = Array.from(values, (value) => ({ value }));
  }
  return {
    predictions,
    model: { variant: variant.variant, name: variant.name, md5: variant.md5, rev: variant.rev },
    timings: { ...loaded.timings, inference_ms: performance.now() - started },
  };
}

// ---- the form --------------------------------------------------------------------------------

function exampleOf(schema, example) {
  return Object.fromEntries(schema.features.map((f) => {
    if (example && f.name in example) return [f.name, example[f.name]];
    if (f.type === "number") return [f.name, Math.round(((f.min + f.max) / 2) * 10) / 10];
    return [f.name, f.categories[0]];
  }));
}

function buildForm(schema) {
  const fields = $("fields");
  fields.replaceChildren();
  schema.features.forEach((feature, i) => {
    const row = document.createElement("div");
    row.className = "field";
    row.dataset.name = feature.name;
    const label = document.createElement("label");
    label.htmlFor = `field-${i}`;
    label.textContent = feature.name;
    let input;
    if (feature.type === "number") {
      input = document.createElement("input");
      input.type = "number";
      input.step = "any";
      input.min = feature.min;
      input.max = feature.max;
      input.placeholder = feature.nullable ? "unknown" : "";
      const hint = document.createElement("span");
      hint.className = "hint muted";
      hint.textContent = `${feature.min} – ${feature.max}`;
      row.append(label, input, hint);
    } else {
      input = document.createElement("select");
      const options = feature.nullable ? [UNKNOWN, ...feature.categories] : feature.categories;
      for (const value of options) {
        const option = document.createElement("option");
        option.value = value;
        option.textContent = value === UNKNOWN ? "unknown" : value;
        input.append(option);
      }
      row.append(label, input);
    }
    input.id = `field-${i}`;
    input.name = feature.name;
    const error = document.createElement("span");
    error.className = "field-error error";
    error.id = `error-${i}`;
    error.setAttribute("role", "alert");
    row.append(error);
    fields.append(row);
  });
}

function fillForm(schema, values) {
  schema.features.forEach((feature, i) => {
    const value = values[feature.name];
    $(`field-${i}`).value = value === null || value === undefined ? UNKNOWN : String(value);
  });
}

function readForm(schema) {
  return Object.fromEntries(schema.features.map((feature, i) => {
    const input = $(`field-${i}`);
    if (input.value === UNKNOWN) {
      // an empty number box that holds text the browser could not read is sent as that
      // text, so the service says what is wrong with it
      return [feature.name, input.validity?.badInput ? "not a number" : null];
    }
    if (feature.type !== "number") return [feature.name, input.value];
    // a number past float range is sent as typed, for the service to refuse (JSON has no
    // Infinity: it would arrive as null, a missing value)
    const number = Number(input.value);
    return [feature.name, Number.isFinite(number) ? number : input.value];
  }));
}

function clearErrors() {
  for (const el of document.querySelectorAll(".field-error")) el.textContent = "";
  for (const el of document.querySelectorAll(".field.invalid")) el.classList.remove("invalid");
  for (const id of ["form-error", "page-error"]) $(id).hidden = true;
}

/** The service's 422: each message beside the field it names; anything else above the form. */
function showErrors(schema, body, status) {
  const error = body?.error || {};
  let placed = false;
  for (const detail of error.details || []) {
    const i = schema.features.findIndex((f) => f.name === detail.field);
    if (i >= 0) {
      $(`error-${i}`).textContent = detail.message;
      $(`error-${i}`).closest(".field").classList.add("invalid");
      placed = true;
    }
  }
  if (!placed) {
    // the form holds one instance: "instance 0: " says nothing here
    const message = (error.message || `HTTP ${status}`).replace(/^instance 0(, field '[^']*')?: /, "");
    $("form-error").textContent = message;
    $("form-error").hidden = false;
  }
}

function fmt(x, digits = 4) {
  return Number.isFinite(x) ? x.toFixed(digits) : String(x);
}

function showAnswer(panel, prediction, model, extra) {
  panel.hidden = false;
  const bars = panel.querySelector(".bars");
  bars.replaceChildren();
  if ("probabilities" in prediction) {
    panel.querySelector(".label").textContent = String(prediction.label);
    for (const [name, p] of Object.entries(prediction.probabilities)) {
      const row = document.createElement("div");
      row.className = "bar";
      row.dataset.class = name;
      row.dataset.probability = String(p);
      const label = document.createElement("span");
      label.textContent = name;
      const track = document.createElement("span");
      track.className = "track";
      const fill = document.createElement("span");
      fill.className = "fill";
      fill.style.width = `${Math.max(0, Math.min(1, p)) * 100}%`;
      track.append(fill);
      const value = document.createElement("span");
      value.className = "value";
      value.textContent = fmt(p);
      row.append(label, track, value);
      bars.append(row);
    }
  } else {
    panel.querySelector(".label").textContent = `${state.model.target} = ${fmt(prediction.value)}`;
  }
  panel.querySelector(".label").dataset.value = JSON.stringify(prediction.label ?? prediction.value);
  const meta = panel.querySelector(".meta");
  meta.textContent = `variant ${model.variant} · md5 ${model.md5} · rev ${model.rev}${extra ? ` · ${extra}` : ""}`;
  meta.dataset.md5 = model.md5;
  meta.dataset.variant = model.variant;
}

function largestDifference(a, b) {
  if ("probabilities" in a) {
    return Math.max(...Object.keys(a.probabilities).map((k) => Math.abs(a.probabilities[k] - b.probabilities[k])));
  }
  return Math.abs(a.value - b.value);
}

async function submit(event) {
  event.preventDefault();
  const schema = state.schema;
  clearErrors();
  $("server-answer").hidden = true;
  $("device-answer").hidden = true;
  const status = $("device-status");
  status.hidden = true;
  status.classList.remove("error");
  delete status.dataset.done;
  const instance = readForm(schema);
  const started = performance.now();
  const answer = await predictOnServer([instance]);
  const serverMs = performance.now() - started;
  if (!answer.ok) {
    showErrors(schema, answer.body, answer.status);
    return;
  }
  const server = answer.body.predictions[0];
  showAnswer($("server-answer"), server, answer.body.model, `request ${answer.requestId} · ${fmt(serverMs, 1)} ms`);
  if ($("device-toggle").checked) {
    status.hidden = false;
    status.textContent = "running on this device…";
    try {
      // by default the variant that answered on the server (a canary or bandit picks one)
      const variant = $("device-variant").value || answer.body.model.variant;
      const local = await predictOnDevice([instance], variant);
      const t = local.timings;
      const same = local.model.md5 === answer.body.model.md5;
      const diff = same ? ` · largest difference from the server ${largestDifference(server, local.predictions[0]).toExponential(2)}` : "";
      showAnswer($("device-answer"), local.predictions[0], local.model, `inference ${fmt(t.inference_ms, 1)} ms`);
      status.textContent = `on this device: download and SHA-256 check ${fmt(t.download_verify_ms, 0)} ms (once), ` +
        `session ${fmt(t.session_ms, 0)} ms (once), inference ${fmt(t.inference_ms, 1)} ms${diff}`;
      status.dataset.done = "true";
    } catch (error) {
      status.textContent = String(error.message || error);
      status.classList.add("error");
    }
  }
}

// ---- a table ---------------------------------------------------------------------------------

// What the pipeline reads as missing in a raw table (contract/values.py NA_VALUES; a unit test
// holds the two lists equal), and a number as pandas reads one: decimal, nothing else.
export const MISSING = ["", "NA", "N/A", "NaN", "nan", "null", "NULL", "None"];
const NUMBER = /^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$/;
const SHOWN_ROWS = 500;

/** RFC 4180 CSV: a cell that starts with a quote may hold commas, line breaks and doubled
 * quotes; a quote anywhere else is an ordinary character. Rows that are blank are skipped.
 * Each row comes with the line it starts on. */
export function parseCSV(text) {
  const rows = [];
  let row = [], field = "", line = 1, start = 1, quotedFrom = 0, i = 0;
  if (text.charCodeAt(0) === 0xfeff) i = 1;  // a byte order mark
  const endRow = () => {
    row.push(field);
    field = "";
    if (row.length > 1 || row[0].trim() !== "") rows.push({ line: start, cells: row });
    row = [];
  };
  for (; i < text.length; i++) {
    const c = text[i];
    if (quotedFrom) {
      if (c === '"' && text[i + 1] === '"') { field += '"'; i++; }
      else if (c === '"') quotedFrom = 0;
      else { if (c === "\n") line++; field += c; }
    } else if (c === '"' && field === "") quotedFrom = line;
    else if (c === ",") { row.push(field); field = ""; }
    else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i++;
      endRow();
      line++;
      start = line;
    } else field += c;
  }
  if (quotedFrom) throw new Error(`the quoted cell that starts on line ${quotedFrom} is never closed`);
  if (field !== "" || row.length) endRow();
  return rows;
}

function csvCell(value) {
  const text = value === null || value === undefined ? "" : String(value);
  return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

function instancesFromTable(schema, rows) {
  if (rows.length < 2) throw new Error("the CSV needs a header row and at least one row");
  const header = rows[0].cells;
  const at = {};
  const absent = [];
  for (const f of schema.features) {
    let i = header.indexOf(f.name);
    if (i < 0) i = header.findIndex((h) => h.trim() === f.name.trim());
    if (i < 0) absent.push(`'${f.name}'`);
    at[f.name] = i;
  }
  if (absent.length) throw new Error(`the CSV has no column ${absent.join(", ")}`);
  return rows.slice(1).map(({ line, cells }) => {
    if (cells.length !== header.length) {
      throw new Error(`line ${line} has ${cells.length} cells, the header ${header.length}`);
    }
    return Object.fromEntries(schema.features.map((f) => {
      const cell = cells[at[f.name]];
      if (MISSING.includes(cell) || (f.type === "number" && cell.trim() === "")) return [f.name, null];
      if (f.type === "number") {
        const number = NUMBER.test(cell) ? Number(cell) : NaN;
        return [f.name, Number.isFinite(number) ? number : cell];
      }
      return [f.name, cell];
    }));
  });
}

/** Requests of at most MAX_BATCH rows and within the server's body limit. */
function chunks(instances) {
  const limit = Math.floor((Number(document.body.dataset.maxBodyBytes) || 1 << 20) * 0.9);
  const encoder = new TextEncoder();
  const out = [];
  let start = 0, bytes = 0;
  instances.forEach((instance, i) => {
    const size = encoder.encode(JSON.stringify(instance)).length + 1;
    if (i > start && (i - start >= MAX_BATCH || bytes + size > limit)) {
      out.push([start, i]);
      start = i;
      bytes = 0;
    }
    bytes += size;
  });
  if (instances.length) out.push([start, instances.length]);
  return out;
}

function randomKey() {
  return Array.from({ length: 16 }, () => Math.floor(Math.random() * 16).toString(16)).join("");
}

async function runBatch() {
  const schema = state.schema;
  const error = $("batch-error"), status = $("batch-status");
  const fail = (message) => {
    error.textContent = message;
    error.hidden = false;
    status.hidden = true;
  };
  error.hidden = true;
  status.hidden = true;
  delete status.dataset.done;
  $("batch-download").hidden = true;
  $("batch-table").replaceChildren();
  let rows, instances;
  try {
    rows = parseCSV($("batch-csv").value);
    instances = instancesFromTable(schema, rows);
  } catch (e) {
    fail(e.message);
    return;
  }
  status.hidden = false;
  const started = performance.now();
  const key = randomKey();  // one routing key: a canary answers the whole table from one variant
  const answers = [];
  for (const [from, to] of chunks(instances)) {
    status.textContent = `scoring rows ${from + 1}–${to} of ${instances.length}…`;
    const answer = await predictOnServer(instances.slice(from, to), key);
    if (!answer.ok) {
      const detail = answer.body?.error?.details?.[0];
      if (detail && Number.isInteger(detail.instance)) {
        const line = rows[from + detail.instance + 1].line;
        fail(detail.field
          ? `line ${line}, column '${detail.field}': ${detail.message}`
          : `line ${line}: ${detail.message}`);
      } else {
        fail(answer.body?.error?.message || `HTTP ${answer.status}`);
      }
      return;
    }
    for (const prediction of answer.body.predictions) answers.push([prediction, answer.body.model]);
  }
  const classes = state.model.classes || [];
  const inputs = rows[0].cells;
  const named = (name) => (inputs.includes(name) ? `predicted_${name}` : name);
  const header = [...inputs, ...(state.model.task === "classification"
    ? [named("label"), ...classes.map((c) => named(`p_${c}`))]
    : [`predicted_${state.model.target}`]), named("variant"), named("md5")];
  const table = rows.slice(1).map(({ cells }, i) => {
    const [p, model] = answers[i];
    const answer = "probabilities" in p
      ? [p.label, ...classes.map((c) => p.probabilities[String(c)])]
      : [p.value];
    return [...cells, ...answer, model.variant, model.md5];
  });
  renderTable(header, table);
  const csv = [header, ...table].map((r) => r.map(csvCell).join(",")).join("\r\n") + "\r\n";
  const link = $("batch-download");
  if (link.href) URL.revokeObjectURL(link.href);
  link.href = URL.createObjectURL(new Blob([csv], { type: "text/csv" }));
  link.hidden = false;
  const used = [...new Set(answers.map(([, m]) => `${m.variant} (md5 ${m.md5})`))].join(", ");
  const count = instances.length === 1 ? "1 row" : `${instances.length} rows`;
  const shown = instances.length > SHOWN_ROWS ? `; the first ${SHOWN_ROWS} are shown, predictions.csv has all` : "";
  status.textContent = `${count} scored by ${used} in ${fmt(performance.now() - started, 0)} ms${shown}`;
  status.dataset.done = "true";
}

function renderTable(header, rows) {
  const table = $("batch-table");
  const head = document.createElement("tr");
  for (const name of header) {
    const th = document.createElement("th");
    th.textContent = name;
    head.append(th);
  }
  const body = rows.slice(0, SHOWN_ROWS).map((cells) => {
    const tr = document.createElement("tr");
    for (const cell of cells) {
      const td = document.createElement("td");
      td.textContent = typeof cell === "number" ? fmt(cell) : String(cell ?? "");
      tr.append(td);
    }
    return tr;
  });
  table.replaceChildren(head, ...body);
}

// ---- start -----------------------------------------------------------------------------------

async function main() {
  try {
    state.model = await getJSON("/model");
  } catch (error) {
    $("page-error").textContent = `cannot read the served model: ${error.message}`;
    $("page-error").hidden = false;
    return;
  }
  const model = state.model;
  state.schema = model.input_schema;
  const variants = model.variants.map((v) => `${v.variant} ${v.md5.slice(0, 12)} (${v.rev})`).join(", ");
  $("model-line").textContent = `${model.name}: ${model.task} of ${model.target} · ` +
    `strategy ${model.strategy} · ${variants}`;
  buildForm(state.schema);
  const example = exampleOf(state.schema, model.example);
  fillForm(state.schema, example);
  const select = $("device-variant");
  const runnable = model.variants.filter((v) => v.onnx_in_artifact);
  if (model.variants.length > 1 && runnable.length === model.variants.length) {
    const option = document.createElement("option");
    option.value = "";
    option.textContent = "the variant that answered";
    select.append(option);
  }
  for (const v of runnable) {
    const option = document.createElement("option");
    option.value = v.variant;
    option.textContent = `${v.variant} (${v.md5.slice(0, 12)})`;
    select.append(option);
  }
  select.value = select.options[0]?.value ?? "";
  if (!select.options.length) {
    $("device-toggle").disabled = true;
    $("device-toggle").parentElement.title = "no served variant carries an ONNX graph";
  }
  const names = state.schema.features.map((f) => f.name);
  $("batch-csv").value = [names, names.map((n) => example[n])]
    .map((r) => r.map(csvCell).join(",")).join("\n") + "\n";
  $("predict-form").addEventListener("submit", submit);
  $("reset").addEventListener("click", () => {
    clearErrors();
    for (const id of ["server-answer", "device-answer", "device-status"]) $(id).hidden = true;
    fillForm(state.schema, example);
  });
  $("batch-run").addEventListener("click", runBatch);
  $("batch-file").addEventListener("change", async (event) => {
    const file = event.target.files[0];
    if (file) $("batch-csv").value = await file.text();
  });
  window.lockserve = { model, predictOnServer, predictOnDevice, parseCSV };
  document.body.dataset.ready = "true";
}

main();
