// The "Online" section of the model page: GET /model/online as a table, the z-test, and an SVG plot.
import { request } from "./api.js";

const $ = (selector) => document.querySelector(selector);
const SVG = "http://www.w3.org/2000/svg";
const COLOURS = ["#0a58ca", "#c2410c", "#116329", "#8250df", "#a40e26"];

function pct(est) {
  if (!est || est.value == null) return "—";
  const v = `${(100 * est.value).toFixed(1)} %`;
  return est.low == null ? v : `${v} [${(100 * est.low).toFixed(1)}, ${(100 * est.high).toFixed(1)}]`;
}

function mean(est) {
  if (!est || est.value == null) return "—";
  const v = est.value.toFixed(2);
  return est.low == null ? v : `${v} [${est.low.toFixed(2)}, ${est.high.toFixed(2)}]`;
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function renderTable(report) {
  const tbody = $("#online-table tbody");
  tbody.innerHTML = "";
  if (!report.versions.length) {
    const tr = document.createElement("tr");
    const td = cell("No recorded answers in this period.");
    td.colSpan = 7;
    tr.append(td);
    tbody.append(tr);
  }
  for (const v of report.versions) {
    const tr = document.createElement("tr");
    tr.dataset.version = String(v.model_version);
    const role = v.model_version === report.current_version ? " (current)"
      : report.candidate && v.model_version === report.candidate.version ? " (candidate)" : "";
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = `v${v.model_version ?? "—"}${role}`;
    tr.append(th, cell(v.impressions.toLocaleString()), cell(pct(v.hit_rate), "interval hit-rate"),
      cell(mean(v.mean_rating), "interval"), cell(v.coverage == null ? "—" : `${(100 * v.coverage).toFixed(1)} %`),
      cell(pct(v.personalized), "interval"), cell(pct(v.click_rate), "interval"));
    tbody.append(tr);
  }
  $("#online-table").setAttribute("aria-busy", "false");
  const split = report.candidate
    ? `Candidate v${report.candidate.version} serves ${(100 * report.candidate.share).toFixed(0)} % of users; ` +
      `v${report.current_version} the rest.` : "No candidate version: the current version serves every user.";
  $("#online-split").textContent = split + (report.candidate_error ? ` ${report.candidate_error}` : "");
  const cmp = report.comparison;
  $("#online-compare").textContent = cmp && cmp.hit_rate
    ? `Hit rate v${cmp.a} − v${cmp.b}: ${(100 * cmp.hit_rate.difference).toFixed(2)} points, ` +
      `z = ${cmp.hit_rate.z.toFixed(2)}, p = ${cmp.hit_rate.p_value.toPrecision(3)} — ` +
      (cmp.hit_rate.significant ? "significant at 5 %." : "not significant at 5 %.")
    : "";
}

function el(name, attrs, text) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function renderPlot(report) {
  const svg = $("#online-plot");
  for (const child of [...svg.children]) if (child.tagName !== "title") child.remove();
  const W = 640, H = 240, L = 44, R = 96, T = 12, B = 28;
  const x = (t) => L + ((t - report.since) / Math.max(1, report.until - report.since)) * (W - L - R);
  const points = report.versions.flatMap((v) => v.series.map((p) => p.hit_rate.high ?? 0));
  const top = Math.min(1, Math.max(0.05, ...points) * 1.1);
  const y = (r) => T + (1 - r / top) * (H - T - B);
  svg.append(el("line", { x1: L, y1: y(0), x2: W - R, y2: y(0), class: "axis" }),
    el("line", { x1: L, y1: T, x2: L, y2: y(0), class: "axis" }));
  for (const r of [0, top / 2, top]) svg.append(el("text", { x: 4, y: y(r) + 4 }, `${(100 * r).toFixed(0)} %`));
  const fmt = (t) => new Date(t * 1000).toISOString().slice(5, 16).replace("T", " ");
  svg.append(el("text", { x: L, y: H - 8 }, fmt(report.since)),
    el("text", { x: W - R, y: H - 8, "text-anchor": "end" }, fmt(report.until)));
  report.versions.forEach((v, i) => {
    const colour = COLOURS[i % COLOURS.length];
    const mid = (p) => p.start + report.bucket_s / 2;
    const pts = v.series.filter((p) => p.hit_rate.value != null);
    if (!pts.length) return;
    const band = [...pts.map((p) => `${x(mid(p))},${y(p.hit_rate.high)}`),
      ...pts.slice().reverse().map((p) => `${x(mid(p))},${y(p.hit_rate.low)}`)].join(" ");
    svg.append(el("polygon", { points: band, fill: colour, "fill-opacity": 0.15, stroke: "none" }));
    svg.append(el("polyline", { points: pts.map((p) => `${x(mid(p))},${y(p.hit_rate.value)}`).join(" "),
      fill: "none", stroke: colour, "stroke-width": 2, class: "series", "data-version": v.model_version }));
    for (const p of pts) svg.append(el("circle", { cx: x(mid(p)), cy: y(p.hit_rate.value), r: 2.5, fill: colour }));
    svg.append(el("text", { x: W - R + 8, y: T + 14 + 16 * i, fill: colour }, `v${v.model_version}`));
  });
}

export async function loadOnline() {
  try {
    const report = await request("GET", "model/online", { query: { days: $("#online-days").value } });
    renderTable(report);
    renderPlot(report);
  } catch (err) {
    $("#online-split").textContent = `Online metrics unavailable: ${err.message || err}`;
    $("#online-table").setAttribute("aria-busy", "false");
  }
}

export function initOnline() {
  $("#online-days").addEventListener("change", () => loadOnline());
  return loadOnline();
}
