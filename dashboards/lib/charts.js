// SVG charts drawn here (no library, nothing from another origin). Heights are placed with floats; every
// figure printed (tooltips, axis) goes through the money format.

import { PALETTE, s } from "./dom.js";
import { PICO_PER_USD, axisStepPico, toPico, usd } from "./money.js";

const picoOf = (v) => (v === null || v === undefined ? 0n : toPico(v));

// Stacked bars: labels (x: YYYY-MM-DD), series [{name, values: [amount per label]}], amounts as the API's
// decimal strings (or BigInt pico-dollars for the "other" series).
export function stackedBars(labels, series, titleText) {
  // Drawn for the window's width (up to 820 units), so that its text stays legible on a phone.
  const W = Math.round(Math.min(820, Math.max(340, window.innerWidth - 60))), H = W < 600 ? 240 : 280, L = 64, B = 40, T = 12;
  const totals = labels.map((_, i) => series.reduce((acc, sr) => acc + picoOf(sr.values[i]), 0n));
  const max = totals.reduce((a, b) => (b > a ? b : a), 0n);
  const step = axisStepPico(max);
  const top = Number(step * 4n) / Number(PICO_PER_USD);
  const bw = (W - L - 10) / Math.max(labels.length, 1);
  const y = (v) => T + (H - T - B) * (1 - v / top);
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": titleText });
  svg.append(s("title", { text: titleText }));
  for (let k = 0n; k <= 4n; k++) {
    const v = Number(step * k) / Number(PICO_PER_USD);
    svg.append(s("line", { x1: L, x2: W - 10, y1: y(v), y2: y(v), stroke: "#d5dbe1" }));
    svg.append(s("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", "font-size": 11, fill: "#4a5561",
      text: usd(step * k) }));
  }
  const every = Math.ceil(labels.length / Math.max(4, Math.floor(W / 80)));
  labels.forEach((label, i) => {
    let base = 0;
    series.forEach((sr, j) => {
      const v = Number(picoOf(sr.values[i])) / Number(PICO_PER_USD);
      if (v <= 0) return;
      const rect = s("rect", { x: L + i * bw + 1, y: y(base + v), width: Math.max(bw - 2, 1),
        height: Math.max(y(base) - y(base + v), 0.5), fill: PALETTE[j % PALETTE.length], "data-day": label });
      rect.append(s("title", { text: `${label} · ${sr.name ?? "(none)"}: ${usd(sr.values[i])}` }));
      svg.append(rect);
      base += v;
    });
    if (i % every === 0) {
      svg.append(s("text", { x: L + i * bw + bw / 2, y: H - B + 16, "text-anchor": "middle", "font-size": 11,
        fill: "#4a5561", text: label.slice(5) }));
    }
  });
  return svg;
}

// Usage buckets -> chart series by `field`: the largest `limit` groups, the rest as "other" (whose bar
// heights are the sum of the API's amounts; a chart's placement, not a figure the page reports).
export function seriesOf(usage, field, limit = 7) {
  const totals = new Map();
  for (const b of usage.buckets) for (const r of b.results) {
    const key = r[field] ?? "(none)";
    totals.set(key, (totals.get(key) ?? 0n) + picoOf(r.cost));
  }
  const ranked = [...totals.entries()].sort((a, b) => (b[1] > a[1] ? 1 : b[1] < a[1] ? -1 : 0)).map((e) => e[0]);
  const top = ranked.slice(0, limit);
  const names = ranked.length > limit ? [...top, "other"] : top;
  const series = names.map((name) => ({ name, values: usage.buckets.map(() => null) }));
  usage.buckets.forEach((b, i) => {
    for (const r of b.results) {
      const key = r[field] ?? "(none)";
      const idx = top.includes(key) ? top.indexOf(key) : names.length - 1;
      series[idx].values[i] = idx < top.length ? r.cost : (series[idx].values[i] ?? 0n) + picoOf(r.cost);
    }
  });
  return series;
}

// The overview's days ([{date, by_model: {model: amount}}]) -> series by model, in the order of `ranked`
// (the API's top models), then any other model.
export function seriesOfDays(days, ranked = []) {
  const models = [...new Set([...ranked, ...days.flatMap((d) => Object.keys(d.by_model))])]
    .filter((m) => days.some((d) => m in d.by_model));
  return models.map((name) => ({ name, values: days.map((d) => d.by_model[name] ?? null) }));
}

// A horizontal bar of shares (token counts, never money).
export function shareBar(parts, label) {
  const total = parts.reduce((a, p) => a + p.value, 0);
  const bar = s("svg", { class: "chart", viewBox: "0 0 820 34", role: "img", "aria-label": label });
  let x = 0;
  parts.forEach((p, i) => {
    const w = total ? (820 * p.value) / total : 0;
    const rect = s("rect", { x, y: 2, width: w, height: 30, fill: PALETTE[i % PALETTE.length] });
    rect.append(s("title", { text: p.title }));
    bar.append(rect);
    x += w;
  });
  return bar;
}
