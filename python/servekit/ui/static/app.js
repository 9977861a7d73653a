// The dashboard's pages: each reads one JSON route under /v2/ui and draws it. No figure is
// computed here that the API does not give; the pages only format and lay out.
"use strict";

const esc = Charts.esc;
const page = document.getElementById("page");
const statusLine = document.getElementById("status");
// Header values the user entered for restricted API groups, kept for this tab only.
const HEADERS_KEY = "servekit-ui-headers";
const REFRESH_MS = { live: 1000, drift: 2000 };
let timer = null;
let info = null;
const state = { compareModel: null, compareLineage: null, driftFeature: {} };

function savedHeaders() {
  try { return JSON.parse(sessionStorage.getItem(HEADERS_KEY) || "{}"); } catch (e) { return {}; }
}

class Locked extends Error {
  constructor(header, message) { super(message); this.header = header; }
}

async function api(path) {
  const resp = await fetch(`/v2/ui/${path}`, { headers: savedHeaders() });
  const body = await resp.json().catch(() => ({ error: `HTTP ${resp.status}` }));
  if (resp.status === 403) {
    const m = /expecting header '([^']+)'/.exec(body.error || "");
    throw new Locked(m ? m[1] : null, body.error || "forbidden");
  }
  if (!resp.ok) { throw new Error(body.error || `HTTP ${resp.status}`); }
  return body;
}

const fmt = (v, digits = 4) => {
  if (v === null || v === undefined) { return "-"; }
  if (typeof v !== "number") { return esc(v); }
  if (Number.isInteger(v)) { return v.toLocaleString("en-US"); }
  return Number(v.toPrecision(digits)).toString();
};
const bytes = (n) => {
  if (n === null || n === undefined) { return "-"; }
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return i ? `${n.toFixed(1)} ${units[i]}` : `${n} B`;
};
const badges = (items, cls = "") => items.map((a) => `<span class="badge ${cls}">${esc(a)}</span>`)
  .join("");
const table = (head, rows, attrs = () => "") => `<table><thead><tr>${head.map((h) =>
  `<th>${h}</th>`).join("")}</tr></thead><tbody>${rows.map((r, i) =>
  `<tr ${attrs(i)}>${r.map((c) => `<td>${c}</td>`).join("")}</tr>`).join("")}</tbody></table>`;
const cell = (name, value, text) => `<span data-metric="${esc(name)}" data-value="${
  value === null || value === undefined ? "" : esc(value)}">${text}</span>`;

// -- Models -------------------------------------------------------------------------------

function signatureText(sig) {
  if (!sig) { return '<span class="muted">unknown</span>'; }
  const t = (xs) => xs.map((x) => `${esc(x.name)} ${esc(x.datatype)}[${x.shape.join(",")}]`)
    .join(", ");
  return `in: ${t(sig.inputs || [])}<br>out: ${t(sig.outputs || [])}`;
}

function registeredModel(m) {
  const aliases = Object.entries(m.aliases).map(([a, v]) =>
    `<span class="badge" data-alias="${esc(a)}">@${esc(a)} → ${v}</span>`).join("");
  const versions = table(
    ["version", "variant", "format", "size", "digest", "verified", "signature", "metrics", "tags",
      "aliases"],
    m.versions.map((v) => [
      esc(v.ref) + (v.archived ? ' <span class="badge bad">archived</span>' : ""),
      esc(v.variant || "-"), esc(v.format), bytes(v.size_bytes),
      `<code title="${esc(v.digest)}">${esc(v.digest.slice(0, 19))}…</code>`,
      v.verification.verified ? '<span class="ok" data-verified="true">✓ intact</span>'
        : `<span class="bad" data-verified="false">✗ ${esc(v.verification.problems.join("; "))}`
          + "</span>",
      signatureText(v.signature),
      Object.entries(v.metrics).filter(([k]) => !/_b\d+$/.test(k) || /_b1$/.test(k))
        .map(([k, x]) => `${esc(k)}=${fmt(x)}`).join("<br>") || "-",
      Object.entries(v.tags).map(([k, x]) => `${esc(k)}=${esc(x)}`).join("<br>") || "-",
      badges(v.aliases.map((a) => `@${a}`)),
    ]),
    (i) => `data-ref="${esc(m.versions[i].ref)}"`);
  const history = m.alias_history.length ? table(
    ["time", "alias", "action", "from", "to", "actor", "reason"],
    m.alias_history.map((e) => [esc(e.time), `@${esc(e.alias)}`, esc(e.action),
      fmt(e.previous_version), fmt(e.new_version), esc(e.actor), esc(e.reason || "")]),
    () => 'data-history="1"') : '<p class="muted">no alias moves</p>';
  return `<section class="card" data-model="${esc(m.name)}"><h2>${esc(m.name)}</h2>
    <p>${aliases || '<span class="muted">no aliases</span>'} ${badges(Object.entries(m.tags)
      .map(([k, v]) => `${k}=${v}`))} <span class="muted">${esc(m.description)}</span></p>
    <h3>Versions</h3>${versions}
    <h3>Lineage</h3><div class="lineage">${Charts.graph(m.lineage.nodes, m.lineage.edges)}</div>
    <h3>Alias history</h3>${history}</section>`;
}

function servedModel(m) {
  return `<section class="card" data-served="${esc(m.name)}"><h2>${esc(m.name)}
    <span class="muted">(served)</span></h2>${table(["version", "state", "reason"],
    m.versions.map((v) => [fmt(v.version), v.state === "READY"
      ? `<span class="ok">${esc(v.state)}</span>` : `<span class="bad">${esc(v.state)}</span>`,
    esc(v.reason || "")]))}
    <details><summary>config</summary><pre>${esc(JSON.stringify(m.config, null, 2))}</pre>
    </details></section>`;
}

async function models() {
  const data = await api("models");
  const parts = [];
  if (data.registry !== null) {
    parts.push(`<p class="muted">registry ${esc(data.registry_root)}: ${data.registry.length}
      models</p>`, ...data.registry.map(registeredModel));
  }
  if (data.served !== null) {
    parts.push("<h2>Served models</h2>", ...data.served.map(servedModel));
  }
  return parts.join("");
}

// -- Compare ------------------------------------------------------------------------------

async function compare() {
  const names = (await api("compare")).models;
  if (!names.length) { return '<p class="muted">the registry holds no models</p>'; }
  if (!names.includes(state.compareModel)) { state.compareModel = names[0]; }
  const data = await api(`compare/${encodeURIComponent(state.compareModel)}`);
  const roots = data.lineages.map((l) => l.root);
  if (!roots.includes(state.compareLineage)) {
    const promoted = data.lineages.find((l) => l.variants.some((v) => v.aliases.length));
    state.compareLineage = (promoted || data.lineages[0] || {}).root || null;
  }
  const lineage = data.lineages.find((l) => l.root === state.compareLineage);
  const select = (id, values, chosen) => `<select id="${id}">${values.map((v) =>
    `<option ${v === chosen ? "selected" : ""}>${esc(v)}</option>`).join("")}</select>`;
  const parts = [`<p>model ${select("compare-model", names, state.compareModel)} lineage of
    ${select("compare-lineage", roots, state.compareLineage)}</p>`];
  if (!lineage) { return parts.join("") + '<p class="muted">no versions</p>'; }
  const sizes = [...new Set(lineage.variants.flatMap((v) => v.figures.batches.map((b) =>
    b.batch_size)))].sort((a, b) => a - b);
  const qualities = [...new Set(lineage.variants.flatMap((v) => Object.keys(v.figures.quality)))];
  const head = ["version", "variant", "size", "load ms", ...qualities, "agreement",
    ...sizes.flatMap((n) => [`p50 ms b${n}`, `p99 ms b${n}`, `rows/s b${n}`])];
  const rows = lineage.variants.map((v) => {
    const f = v.figures;
    const per = sizes.flatMap((n) => {
      const b = f.batches.find((x) => x.batch_size === n) || {};
      return [cell(`latency_p50_ms_b${n}`, b.p50_ms, fmt(b.p50_ms)),
        cell(`latency_p99_ms_b${n}`, b.p99_ms, fmt(b.p99_ms)),
        cell(`throughput_rows_s_b${n}`, b.throughput_rows_s, fmt(b.throughput_rows_s, 6))];
    });
    return [esc(v.ref) + " " + badges(v.aliases.map((a) => `@${a}`)), esc(v.variant || "-"),
      cell("size_bytes", f.size_bytes, bytes(f.size_bytes)),
      cell("load_time_ms", f.load_time_ms, fmt(f.load_time_ms)),
      ...qualities.map((q) => cell(q, f.quality[q], fmt(f.quality[q]))),
      cell("agreement_with_parent", f.agreement_with_parent, fmt(f.agreement_with_parent)),
      ...per];
  });
  parts.push(`<section class="card"><h2>Variants of ${esc(lineage.root)}</h2>${table(head, rows,
    (i) => `data-ref="${esc(lineage.variants[i].ref)}"`)}</section>`);
  const p = lineage.pareto;
  parts.push(`<section class="card"><h2>${p ? `${esc(p.y)} vs ${esc(p.x)}` : "Pareto"}</h2>${p
    ? Charts.scatter(p.points.map((q) => ({ ...q, label: q.ref })), { xlabel: p.x, ylabel: p.y })
      + `<p class="muted">larger dots: the Pareto front (no variant is both faster and more
        accurate)</p>`
    : '<p class="muted">no variant has both a quality metric and latency: run servekit bench with labels</p>'}</section>`);
  const pr = data.promotion;
  parts.push(`<section class="card" id="promotion"><h2>Last promotion</h2>${pr ? `<p>@${
    esc(pr.event.alias)}: ${fmt(pr.event.previous_version)} → ${fmt(pr.event.new_version)}
    (${esc(pr.event.action)}, ${esc(pr.event.time)}, ${esc(pr.event.actor)})</p>${
    pr.gates.length ? table(["gate", "left", "right", "verdict"], pr.gates.map((g) => [
      `<code>${esc(g.gate)}</code>`, fmt(g.left), fmt(g.right), g.passed
        ? '<span class="ok">pass</span>' : `<span class="bad">FAIL ${esc(g.message || "")}</span>`]))
      : `<p class="muted">${esc(pr.event.reason || "no gates recorded")}</p>`}`
    : '<p class="muted">no promotion recorded</p>'}</section>`);
  return parts.join("");
}

function bindCompare() {
  const m = document.getElementById("compare-model");
  const l = document.getElementById("compare-lineage");
  if (m) { m.onchange = () => { state.compareModel = m.value; state.compareLineage = null; show(); }; }
  if (l) { l.onchange = () => { state.compareLineage = l.value; show(); }; }
}

// -- Live ---------------------------------------------------------------------------------

async function live() {
  const data = await api("live");
  if (!data.models.length) { return '<p class="muted">no model version is served</p>'; }
  return data.models.map((m) => {
    const key = `${m.name}/${m.version}`;
    const last = m.series[m.series.length - 1] || {};
    const t0 = m.series.length ? m.series[0].time : 0;
    const pts = (k) => m.series.map((p) => [p.time - t0, p[k]]);
    const fig = (name, value, label) => `<span class="figure">${label}<b data-field="${name}">${
      value}</b></span>`;
    const lq = m.latency_ms.request;
    return `<section class="card" data-live="${esc(key)}"><h2>${esc(m.name)}
      <span class="muted">version ${esc(m.version)}</span></h2>
      <div>${fig("requests", fmt(m.requests), "requests")}${fig("request_rate",
      fmt(last.request_rate, 3), "requests/s")}${fig("p50_ms", fmt(lq.p50), "p50 ms")}${
      fig("p99_ms", fmt(lq.p99), "p99 ms")}${fig("queue_p50_ms", fmt(m.latency_ms.queue.p50),
      "queue p50 ms")}${fig("mean_batch", fmt(last.mean_batch_size, 3), "rows/batch")}${
      fig("errors", fmt(m.errors.reduce((a, e) => a + e.count, 0)), "errors")}</div>
      <div class="row"><div>${Charts.line([{ name: "requests/s", points: pts("request_rate") },
        { name: "errors/s", points: pts("error_rate") }], { xlabel: "seconds", ylabel: "rate" })}
      </div><div>${Charts.line([{ name: "p50", points: pts("p50_ms") }, { name: "p90",
        points: pts("p90_ms") }, { name: "p99", points: pts("p99_ms") }],
      { xlabel: "seconds", ylabel: "request latency ms" })}</div><div>${
        m.batch_sizes.length ? Charts.bars(m.batch_sizes.map((b) => String(b.batch_size)),
          [{ name: "executions", values: m.batch_sizes.map((b) => b.executions) }],
          { xlabel: "batch size", ylabel: "executions" }) : ""}</div></div>
      <h3>Errors by status</h3>${m.errors.length ? table(["status", "reason", "count"],
      m.errors.map((e) => [fmt(e.status), esc(e.reason), fmt(e.count)]))
      : '<p class="muted">none</p>'}</section>`;
  }).join("");
}

// -- Drift --------------------------------------------------------------------------------

function statCells(s) {
  if (!s) { return ["-", "-", "-"]; }
  const c = (x, v) => `<span class="${x.exceeded ? "bad" : ""}">${fmt(v)} <span class="muted">/
    ${fmt(x.threshold)}</span></span>`;
  return [c(s.psi, s.psi.value), c(s.ks, s.ks.pvalue), c(s.js, s.js.value)];
}

function histogram(h, title) {
  const labels = h.labels ? [...h.labels.map(String), "other"]
    : h.window.map((_, i) => (i === 0 ? `<${fmt(h.cuts[0], 2)}` : i === h.cuts.length
      ? `≥${fmt(h.cuts[i - 1], 2)}` : `${fmt(h.cuts[i - 1], 2)}`));
  return Charts.bars(labels, [{ name: "reference", values: h.reference, color: "#9aa3b5" },
    { name: "window", values: h.window, color: "#2f6fde" }], { xlabel: title,
    ylabel: "share of rows", width: 520, height: 220 });
}

async function drift() {
  const data = await api("drift");
  if (!data.telemetry) { return '<p class="muted">telemetry is off on this server</p>'; }
  const parts = data.models.map((m) => {
    const key = `${m.name}/${m.version}`;
    if (!m.report) {
      return `<section class="card" data-drift="${esc(key)}"><h2>${esc(m.name)} <span
        class="muted">version ${esc(m.version)}</span></h2><p class="muted">${esc(m.reason)}</p>
        </section>`;
    }
    const r = m.report;
    const chosen = state.driftFeature[key] && m.histograms[state.driftFeature[key]]
      ? state.driftFeature[key] : r.drifted_features[0] || (r.features[0] || {}).name;
    const rows = r.features.map((f) => [esc(f.name), f.drifted ? '<span class="bad">drifted</span>'
      : f.judged ? "ok" : '<span class="muted">not judged</span>', fmt(f.window_size),
    ...statCells(f.statistics)]);
    const pred = r.prediction;
    return `<section class="card" data-drift="${esc(key)}"><h2>${esc(m.name)} <span
      class="muted">version ${esc(m.version)}</span></h2>
      <p><b data-field="dataset_drift" class="${r.dataset_drift ? "bad" : "ok"}">${
        r.dataset_drift ? "DATASET DRIFT" : "no dataset drift"}</b>: ${
        r.drifted_features.length} of ${r.judged_features} judged features drifted (share ${
        fmt(r.drifted_share, 3)}, threshold ${fmt(r.dataset_share_threshold)}); window ${
        fmt(r.window_rows)} rows of ${fmt(r.total_rows)}; prediction ${pred ? (pred.drifted
        ? '<b class="bad" data-field="prediction_drift">drifted</b>'
        : '<b class="ok" data-field="prediction_drift">ok</b>') : "not monitored"}</p>
      <p>drifted: ${r.drifted_features.map((f) =>
        `<span class="badge bad" data-drifted-feature="${esc(f)}">${esc(f)}</span>`).join("")
        || '<span class="muted">none</span>'}</p>
      <div class="row"><div>${chosen ? histogram(m.histograms[chosen], `feature ${chosen}`)
        : ""}</div><div>${m.prediction_histogram ? histogram(m.prediction_histogram,
        "prediction") : ""}</div></div>
      <h3>Features <span class="muted">(value / threshold; click a row for its
        histogram)</span></h3>${table(["feature", "state", "window", "PSI", "KS p-value",
        "JS distance"], rows, (i) => `data-feature="${esc(r.features[i].name)}" class="${
        r.features[i].drifted ? "drifted" : ""} ${r.features[i].name === chosen ? "selected"
        : ""}"`)}</section>`;
  });
  parts.push(`<section class="card" id="alerts"><h2>Alert log</h2>${data.alerts.length ? table(
    ["time", "event", "state", "model", "version", "details"], data.alerts.slice().reverse()
      .map((a) => [esc(a.time), esc(a.event), a.state === "ok" ? '<span class="ok">ok</span>'
        : `<span class="bad">${esc(a.state)}</span>`, esc(a.model), esc(a.version),
      esc(a.event === "drift" ? `${(a.drifted_features || []).length} drifted features`
        : `p99 ${fmt(a.p99_ms)} ms / ${fmt(a.objective_p99_ms)} ms`)]))
    : '<p class="muted">no alerts</p>'}</section>`);
  return parts.join("");
}

function bindDrift() {
  page.querySelectorAll("[data-drift]").forEach((section) => {
    section.querySelectorAll("tr[data-feature]").forEach((tr) => {
      tr.onclick = () => { state.driftFeature[section.dataset.drift] = tr.dataset.feature; show(); };
    });
  });
}

// -- Restricted APIs, routing -------------------------------------------------------------

function lockBox(err, name) {
  const header = err.header;
  const groups = ((info && info.restricted && info.restricted[name]) || [])
    .filter((g) => !header || g.header === header).map((g) => g.group);
  const sent = header && Object.prototype.hasOwnProperty.call(savedHeaders(), header);
  return `<div class="lock" id="lock" data-groups="${esc(groups.join(","))}"><b>Locked:</b>
    ${groups.length ? `the restricted API group${groups.length > 1 ? "s" : ""} <b>${
      esc(groups.join(", "))}</b> of this page` : "this page"}: ${esc(err.message)}${
      sent ? " (the value entered was refused)" : ""}${header ? `
    <form id="unlock"><label>value of header <code>${esc(header)}</code>
    <input id="unlock-value" type="password" autocomplete="off"></label>
    <button type="submit">Unlock</button></form>` : ""}</div>`;
}

function bindLock(header) {
  const form = document.getElementById("unlock");
  if (!form) { return; }
  form.onsubmit = (ev) => {
    ev.preventDefault();
    const headers = savedHeaders();
    headers[header] = document.getElementById("unlock-value").value;
    sessionStorage.setItem(HEADERS_KEY, JSON.stringify(headers));
    show();
  };
}

const PAGES = { models, compare, live, drift };
const BINDERS = { compare: bindCompare, drift: bindDrift };

function current() {
  const name = (location.hash.replace(/^#\//, "") || "models").split("?")[0];
  return PAGES[name] ? name : "models";
}

// Bring `into`'s attributes and children to those of `from` in place: nodes that did not change
// stay as they are, so a refresh lays out and paints only what changed, and an open select or
// a focused field survives the Drift and Live pages' refreshes.
function patch(into, from) {
  for (const { name } of Array.from(into.attributes)) {
    if (!from.hasAttribute(name)) { into.removeAttribute(name); }
  }
  for (const { name, value } of Array.from(from.attributes)) {
    if (into.getAttribute(name) !== value) { into.setAttribute(name, value); }
  }
  patchChildren(into, from);
}

function patchChildren(into, from) {
  const old = Array.from(into.childNodes);
  const fresh = Array.from(from.childNodes);  // appending a node moves it out of `from`
  fresh.forEach((node, i) => {
    const here = old[i];
    if (!here) {
      into.appendChild(node);
    } else if (here.nodeType !== node.nodeType || here.nodeName !== node.nodeName) {
      into.replaceChild(node, here);
    } else if (node.nodeType === Node.ELEMENT_NODE) {
      patch(here, node);
    } else if (here.nodeValue !== node.nodeValue) {
      here.nodeValue = node.nodeValue;
    }
  });
  for (let i = old.length - 1; i >= fresh.length; i -= 1) { old[i].remove(); }
}

function render(name, html) {
  if (page.dataset.page !== name) {  // another page: draw it afresh
    page.innerHTML = html;
    return;
  }
  const next = document.createElement("div");
  next.innerHTML = html;
  patchChildren(page, next);
}

let rendering = false;
async function show() {
  if (rendering) { return; }
  rendering = true;
  const name = current();
  document.querySelectorAll("#nav a").forEach((a) => a.classList.toggle("active",
    a.dataset.page === name));
  try {
    const html = await PAGES[name]();
    if (name === current()) {
      render(name, html);
      page.dataset.page = name;
      page.dataset.loaded = String(Date.now());
      (BINDERS[name] || (() => {}))();
      statusLine.textContent = `updated ${new Date().toLocaleTimeString()}`;
    }
  } catch (err) {
    page.dataset.page = name;
    if (err instanceof Locked) {
      page.innerHTML = lockBox(err, name);
      bindLock(err.header);
    } else {
      page.innerHTML = `<div class="error" id="error">${esc(err.message)}</div>`;
    }
    page.dataset.loaded = String(Date.now());
  } finally {
    rendering = false;
  }
}

function route() {
  clearInterval(timer);
  timer = null;
  const name = current();
  show();
  if (REFRESH_MS[name]) {
    timer = setInterval(() => { if (!document.getElementById("lock")) { show(); } },
      REFRESH_MS[name]);
  }
}

async function start() {
  try {
    info = await api("info");
    document.querySelectorAll("#nav a").forEach((a) => a.classList.toggle("disabled",
      !info.pages.includes(a.dataset.page)));
  } catch (err) {
    info = { registry: false, pages: Object.keys(PAGES), restricted: {} };
  }
  window.addEventListener("hashchange", route);
  route();
}

start();
