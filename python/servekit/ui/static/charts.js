// SVG charts for the dashboard: no library, nothing fetched. Each function returns markup.
"use strict";

const Charts = (() => {
  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => (
    { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  const COLORS = ["#2f6fde", "#d9822b", "#237a3b", "#c8362b", "#7a4cc2", "#138a8a", "#8a6d13"];

  function ticks(lo, hi, n) {
    if (!(hi > lo)) { return [lo]; }
    const step = Math.pow(10, Math.floor(Math.log10((hi - lo) / n)));
    const nice = [1, 2, 5, 10].map((m) => m * step).find((s) => (hi - lo) / s <= n) || step * 10;
    const out = [];
    for (let v = Math.ceil(lo / nice) * nice; v <= hi + 1e-12; v += nice) { out.push(v); }
    return out;
  }
  const fmt = (v) => (Math.abs(v) >= 1000 ? v.toFixed(0) : Number(v.toPrecision(3)).toString());

  // Axes box: returns {x, y, svg parts}; x/y map data to pixels.
  function frame(w, h, xr, yr, xlabel, ylabel, xfmt) {
    const m = { l: 52, r: 12, t: 10, b: 34 };
    const x = (v) => m.l + ((v - xr[0]) / ((xr[1] - xr[0]) || 1)) * (w - m.l - m.r);
    const y = (v) => h - m.b - ((v - yr[0]) / ((yr[1] - yr[0]) || 1)) * (h - m.t - m.b);
    const parts = [];
    for (const t of ticks(yr[0], yr[1], 4)) {
      parts.push(`<line class="grid" x1="${m.l}" x2="${w - m.r}" y1="${y(t)}" y2="${y(t)}"/>`,
        `<text x="${m.l - 4}" y="${y(t) + 4}" text-anchor="end">${fmt(t)}</text>`);
    }
    for (const t of xfmt === null ? [] : ticks(xr[0], xr[1], 5)) {
      parts.push(`<text x="${x(t)}" y="${h - m.b + 14}" text-anchor="middle">${
        esc(xfmt ? xfmt(t) : fmt(t))}</text>`);
    }
    parts.push(`<line class="axis" x1="${m.l}" x2="${w - m.r}" y1="${h - m.b}" y2="${h - m.b}"/>`,
      `<line class="axis" x1="${m.l}" x2="${m.l}" y1="${m.t}" y2="${h - m.b}"/>`,
      `<text x="${(m.l + w - m.r) / 2}" y="${h - 4}" text-anchor="middle">${esc(xlabel)}</text>`,
      `<text transform="translate(12 ${(h - m.b) / 2}) rotate(-90)" text-anchor="middle">${
        esc(ylabel)}</text>`);
    return { x, y, parts };
  }

  function range(values, zero) {
    const v = values.filter((a) => a !== null && Number.isFinite(a));
    if (!v.length) { return [0, 1]; }
    let lo = zero ? Math.min(0, ...v) : Math.min(...v);
    let hi = Math.max(...v);
    if (hi === lo) { hi = lo + (Math.abs(lo) || 1); if (!zero) { lo -= (hi - lo) / 2; } }
    const pad = zero ? 0 : (hi - lo) * 0.08;
    return [lo - pad, hi + pad];
  }

  // series: [{name, points: [[x, y|null], ...]}]
  function line(series, opts) {
    const w = opts.width || 460, h = opts.height || 200;
    const xs = series.flatMap((s) => s.points.map((p) => p[0]));
    const ys = series.flatMap((s) => s.points.map((p) => p[1]));
    const f = frame(w, h, range(xs, false), range(ys, true), opts.xlabel, opts.ylabel, opts.xfmt);
    const parts = f.parts.slice();
    series.forEach((s, i) => {
      const pts = s.points.filter((p) => p[1] !== null).map((p) => `${f.x(p[0])},${f.y(p[1])}`);
      if (pts.length) {
        parts.push(`<polyline fill="none" stroke="${COLORS[i % COLORS.length]}" stroke-width="2"` +
          ` points="${pts.join(" ")}" data-series="${esc(s.name)}"/>`);
      }
      parts.push(`<text x="${w - 12}" y="${14 + 13 * i}" text-anchor="end" ` +
        `style="fill:${COLORS[i % COLORS.length]}">${esc(s.name)}</text>`);
    });
    return `<svg width="${w}" height="${h}" role="img">${parts.join("")}</svg>`;
  }

  // Grouped bars: labels[i] with one value per group; groups: [{name, values, color}].
  function bars(labels, groups, opts) {
    const w = opts.width || 460, h = opts.height || 200;
    const all = groups.flatMap((g) => g.values);
    const f = frame(w, h, [0, labels.length], range(all, true), opts.xlabel, opts.ylabel, null);
    const parts = f.parts.slice();
    const slot = (f.x(1) - f.x(0)) * 0.8 / groups.length;
    labels.forEach((label, i) => {
      groups.forEach((g, j) => {
        const v = g.values[i] || 0;
        const x0 = f.x(i) + (f.x(1) - f.x(0)) * 0.1 + j * slot;
        parts.push(`<rect x="${x0}" y="${f.y(v)}" width="${Math.max(slot - 1, 1)}" height="${
          f.y(0) - f.y(v)}" fill="${g.color || COLORS[j]}" data-group="${esc(g.name)}"` +
          ` data-bin="${i}"><title>${esc(label)}: ${fmt(v)}</title></rect>`);
      });
      if (labels.length <= 16) {
        parts.push(`<text x="${f.x(i + 0.5)}" y="${h - 20}" text-anchor="middle">${
          esc(label)}</text>`);
      }
    });
    groups.forEach((g, j) => parts.push(`<text x="${w - 12}" y="${14 + 13 * j}" ` +
      `text-anchor="end" style="fill:${g.color || COLORS[j]}">${esc(g.name)}</text>`));
    return `<svg width="${w}" height="${h}" role="img">${parts.join("")}</svg>`;
  }

  // points: [{x, y, label, front}] ; the Pareto front is joined by a dashed line.
  function scatter(points, opts) {
    const w = opts.width || 520, h = opts.height || 260;
    const f = frame(w, h, range(points.map((p) => p.x), false), range(points.map((p) => p.y),
      false), opts.xlabel, opts.ylabel);
    const parts = f.parts.slice();
    const front = points.filter((p) => p.front).sort((a, b) => a.x - b.x);
    if (front.length > 1) {
      parts.push(`<polyline fill="none" stroke="#9aa3b5" stroke-dasharray="4 3" points="${
        front.map((p) => `${f.x(p.x)},${f.y(p.y)}`).join(" ")}"/>`);
    }
    points.forEach((p, i) => {
      parts.push(`<circle cx="${f.x(p.x)}" cy="${f.y(p.y)}" r="${p.front ? 6 : 4}" fill="${
        COLORS[i % COLORS.length]}" data-ref="${esc(p.label)}" data-front="${p.front}"/>`,
      f.x(p.x) > w * 0.7
        ? `<text x="${f.x(p.x) - 8}" y="${f.y(p.y) - 8}" text-anchor="end">${esc(p.label)}</text>`
        : `<text x="${f.x(p.x) + 8}" y="${f.y(p.y) - 6}">${esc(p.label)}</text>`);
    });
    return `<svg width="${w}" height="${h}" role="img">${parts.join("")}</svg>`;
  }

  // Lineage: nodes [{ref, variant, depth, aliases}], edges [[parent, child]].
  function graph(nodes, edges) {
    const cols = {};
    nodes.forEach((n) => { (cols[n.depth] = cols[n.depth] || []).push(n); });
    const pos = {};
    const nw = 150, nh = 34, gx = 60, gy = 14;
    let rows = 1;
    Object.keys(cols).forEach((d) => {
      cols[d].forEach((n, i) => { pos[n.ref] = { x: 10 + d * (nw + gx), y: 10 + i * (nh + gy) }; });
      rows = Math.max(rows, cols[d].length);
    });
    const w = 20 + (Object.keys(cols).length) * (nw + gx) - gx, h = 20 + rows * (nh + gy) - gy;
    const parts = edges.filter((e) => pos[e[0]] && pos[e[1]]).map((e) => {
      const a = pos[e[0]], b = pos[e[1]];
      return `<line x1="${a.x + nw}" y1="${a.y + nh / 2}" x2="${b.x}" y2="${b.y + nh / 2}" ` +
        `stroke="#9aa3b5" stroke-width="1.5" marker-end="url(#arrow)" data-edge="${
          esc(e[0])}->${esc(e[1])}"/>`;
    });
    nodes.forEach((n) => {
      const p = pos[n.ref];
      const alias = n.aliases.length ? ` @${n.aliases.join(" @")}` : "";
      parts.push(`<g class="node" data-ref="${esc(n.ref)}"><rect x="${p.x}" y="${p.y}" ` +
        `width="${nw}" height="${nh}" rx="5" fill="${n.aliases.length ? "#e6edfb" : "#fff"}" ` +
        `stroke="#2f6fde"/><text x="${p.x + 8}" y="${p.y + 14}">${esc(n.ref)}${esc(alias)}` +
        `</text><text x="${p.x + 8}" y="${p.y + 28}" class="muted">${
          esc(n.variant || "-")}</text></g>`);
    });
    return `<svg width="${w}" height="${h}" role="img"><defs><marker id="arrow" ` +
      `viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" ` +
      `orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#9aa3b5"/></marker></defs>${
        parts.join("")}</svg>`;
  }

  return { esc, line, bars, scatter, graph, COLORS };
})();
