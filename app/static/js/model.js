// The model page: version, held-out metrics beside the baselines, and the trainer's report PNGs.
import { api, ApiError } from "./api.js";
import { initOnline } from "./online.js";

const $ = (selector) => document.querySelector(selector);

const LOWER_IS_BETTER = /^(rmse|mae|mse|loss)/i;
const METRIC_ORDER = ["rmse", "mae", "ndcg@10", "recall@10", "hr@10"];
const FIGURE_CAPTIONS = {
  "curves.png": "Training curves: losses and validation RMSE per epoch of the evaluation run.",
  "movie_pca.png": "Map of the movie factors: first two principal components, most-rated movies labelled.",
};

function showAlert(message) {
  const el = $("#alert");
  el.textContent = message;
  el.hidden = !message;
}

function isObject(value) {
  return value != null && typeof value === "object" && !Array.isArray(value);
}

/** Flatten nested metric objects into {"a.b": number}; strings are kept apart as notes. */
function flatten(obj, prefix = "", numbers = {}, notes = {}) {
  if (!isObject(obj)) return { numbers, notes };
  for (const [key, value] of Object.entries(obj)) {
    const name = prefix ? `${prefix}.${key}` : key;
    if (typeof value === "number") numbers[name] = value;
    else if (typeof value === "string") notes[name] = value;
    else if (isObject(value)) flatten(value, name, numbers, notes);
  }
  return { numbers, notes };
}

function fmt(value) {
  if (typeof value !== "number" || !Number.isFinite(value)) return "—";
  if (Number.isInteger(value)) return value.toLocaleString();
  return value.toFixed(4);
}

function pick(data, ...names) {
  const manifest = isObject(data.manifest) ? data.manifest : {};
  for (const name of names) {
    if (data[name] !== undefined) return data[name];
    if (manifest[name] !== undefined) return manifest[name];
  }
  return undefined;
}

function metricLabel(name) {
  return name.replace(/^rmse$/i, "RMSE").replace(/^mae$/i, "MAE").replace(/^ndcg/i, "NDCG")
    .replace(/^recall/i, "Recall").replace(/^hr@/i, "HR@");
}

function renderFacts(data) {
  const version = pick(data, "version", "model_version");
  $("#model-version").textContent = version != null ? `v${version}` : "(none)";
  document.title = `movierec — model v${version ?? "?"}`;
  const facts = $("#model-facts");
  facts.innerHTML = "";
  const counts = pick(data, "counts") || {};
  const params = pick(data, "params") || {};
  const rows = [
    ["Kind", pick(data, "kind")],
    ["Latent factors", pick(data, "factors")],
    ["Trained on", isObject(counts) && counts.ratings != null
      ? `${fmt(counts.ratings)} ratings · ${fmt(counts.users)} users · ${fmt(counts.movies)} movies` : undefined],
    ["Created", pick(data, "created_at")],
    ["Epochs", params.epochs],
    ["Training time", pick(data, "seconds") != null ? `${pick(data, "seconds")} s` : undefined],
    ["Source", pick(data, "source")],
  ];
  const gate = pick(data, "gate");
  if (isObject(gate) && gate.reason) rows.push(["Quality gate", gate.reason]);
  for (const [label, value] of rows) {
    if (value === undefined || value === null || value === "") continue;
    const dt = document.createElement("dt");
    dt.textContent = label;
    const dd = document.createElement("dd");
    dd.textContent = String(value);
    facts.append(dt, dd);
  }
  facts.setAttribute("aria-busy", "false");
}

function renderMetrics(data) {
  let metrics = pick(data, "metrics") || {};
  let baselines = pick(data, "baseline_metrics", "baselines", "baseline");
  // Also accept {metrics: {model: {...}, baseline_metrics: {...}}}-style nesting.
  if (isObject(metrics) && baselines === undefined) {
    const nested = metrics.baseline_metrics ?? metrics.baselines ?? metrics.baseline;
    if (nested !== undefined) {
      baselines = nested;
      metrics = metrics.metrics ?? metrics.model ?? Object.fromEntries(
        Object.entries(metrics).filter(([k]) => !["baseline_metrics", "baselines", "baseline"].includes(k)));
    }
  }
  const model = flatten(metrics);
  const base = flatten(baselines || {});
  const thead = $("#metrics-table thead");
  const tbody = $("#metrics-table tbody");
  thead.innerHTML = "";
  tbody.innerHTML = "";
  const names = Object.keys(model.numbers).filter((n) => !/users$/.test(n));
  names.sort((a, b) => {
    const ia = METRIC_ORDER.indexOf(a);
    const ib = METRIC_ORDER.indexOf(b);
    return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || a.localeCompare(b);
  });
  const head = document.createElement("tr");
  for (const label of ["Metric", "This model", "Baseline"]) {
    const th = document.createElement("th");
    th.scope = "col";
    th.textContent = label;
    head.append(th);
  }
  thead.append(head);
  if (!names.length) {
    const tr = document.createElement("tr");
    const td = document.createElement("td");
    td.colSpan = 3;
    td.textContent = "This model's manifest records no metrics.";
    tr.append(td);
    tbody.append(tr);
  }
  for (const name of names) {
    const ours = model.numbers[name];
    const theirs = base.numbers[name];
    const tr = document.createElement("tr");
    tr.dataset.metric = name;
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = metricLabel(name);
    const a = document.createElement("td");
    a.className = "model-value";
    a.textContent = fmt(ours);
    const b = document.createElement("td");
    b.className = "baseline-value";
    b.textContent = fmt(theirs);
    if (typeof theirs === "number" && ours !== theirs) {
      const lower = LOWER_IS_BETTER.test(name.split(".").pop());
      const oursBetter = lower ? ours < theirs : ours > theirs;
      (oursBetter ? a : b).classList.add("best");
    }
    tr.append(th, a, b);
    tbody.append(tr);
  }
  const notes = Object.entries(base.notes).map(([key, text]) => `${key.replace(/_/g, " ")}: ${text}`);
  $("#baseline-notes").textContent = notes.length ? `Baselines — ${notes.join("; ")}.`
    : Object.keys(base.numbers).length ? "" : "The API returned no baseline metrics for this version.";
}

function renderFigures(data) {
  const box = $("#figures");
  box.innerHTML = "";
  const files = (pick(data, "files") || [])
    .map((f) => (typeof f === "string" ? f : f && (f.name || f.file)))
    .filter((name) => typeof name === "string" && /\.(png|jpe?g|svg|webp)$/i.test(name));
  if (!files.length) {
    const p = document.createElement("p");
    p.className = "note";
    p.textContent = "This version has no report figures.";
    box.append(p);
    return;
  }
  // Training curves first, then the factor map, then anything else.
  files.sort((x, y) => (x.includes("curve") ? 0 : x.includes("pca") ? 1 : 2) - (y.includes("curve") ? 0 : y.includes("pca") ? 1 : 2));
  for (const name of files) {
    const figure = document.createElement("figure");
    const img = document.createElement("img");
    const caption = FIGURE_CAPTIONS[name] || name;
    img.src = `model/files/${encodeURIComponent(name)}`;
    img.alt = caption;
    img.decoding = "async";
    const link = document.createElement("a");
    link.href = img.src;
    link.append(img);
    const figcaption = document.createElement("figcaption");
    figcaption.textContent = `${caption} (${name})`;
    figure.append(link, figcaption);
    box.append(figure);
  }
}

async function init() {
  try {
    const data = await api.model();
    if (!isObject(data)) throw new Error("unexpected response from /model");
    renderFacts(data);
    renderMetrics(data);
    renderFigures(data);
  } catch (err) {
    $("#model-version").textContent = "(unavailable)";
    $("#model-facts").setAttribute("aria-busy", "false");
    showAlert(err instanceof ApiError && err.status === 503
      ? "No model is being served yet. Train one with `movierec train` (or `make run`)."
      : `Could not load the model: ${err.message || err}`);
  }
  await initOnline();
  document.documentElement.dataset.ready = "true";
}

init();
