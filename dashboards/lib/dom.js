// Building the page: elements from plain data, never from HTML strings (no innerHTML anywhere).

import { usd } from "./money.js";

export const PALETTE = ["#0b5cad", "#d95f02", "#1b9e77", "#7570b3", "#c2185b", "#5d8a00", "#8d6e00", "#616161"];
const SVG_NS = "http://www.w3.org/2000/svg";
const HTML_NS = "http://www.w3.org/1999/xhtml";

export function h(tag, props = {}, ...children) {
  const el = document.createElementNS(tag === "svg" || props.svg ? SVG_NS : HTML_NS, tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "svg" || v === undefined || v === null || v === false) continue;
    if (k === "text") el.textContent = v;
    else if (k === "style") el.style.cssText = v; // CSSOM, which the page's CSP allows (inline style attributes it does not)
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function s(tag, props = {}, ...children) { return h(tag, { ...props, svg: true }, ...children); }

// An amount from the API in the one money format, its exact value in the tooltip and in data-exact.
export function money(value) {
  const known = value !== null && value !== undefined;
  return h("span", { class: "money", "data-exact": known ? String(value) : "",
    title: known ? `${value} USD exactly` : "unpriced: the rate card has no price for this usage" }, usd(value));
}

export const int = (n) => (n === null || n === undefined ? "—" : Number(n).toLocaleString("en-US"));
export const pct = (num, den) => (den > 0 ? `${((100 * num) / den).toFixed(1)}%` : "—");

export function card(label, value, note, id) {
  return h("div", { class: "card", "data-figure": id },
    h("div", { class: "label", text: label }), h("div", { class: "value" }, value),
    note ? h("div", { class: "note" }, note) : null);
}

// headers: [{label, num?}] or strings; rows: arrays of cells (text or nodes); the first cell heads its row.
// `stack`: on a phone, each row is shown as a block of labelled lines instead of a wide row.
export function table(headers, rows, { caption, id, rowAttrs, foot, stack } = {}) {
  const head = headers.map((x) => (typeof x === "string" ? { label: x } : x));
  const cells = (row, tag0) => row.map((cell, i) => h(i === 0 ? tag0 : "td",
    { scope: i === 0 && tag0 === "th" ? "row" : null, class: head[i].num ? "num" : null,
      "data-label": stack ? head[i].label : null }, cell));
  return h("div", { class: "scroll" }, h("table", { id, class: stack ? "stack" : null },
    caption ? h("caption", { class: "muted", text: caption }) : null,
    h("thead", {}, h("tr", {}, head.map((x) => h("th", { scope: "col", class: x.num ? "num" : null }, x.label)))),
    h("tbody", {}, rows.map((row, r) => h("tr", rowAttrs ? rowAttrs(r) : {}, cells(row, "th")))),
    foot ? h("tfoot", {}, h("tr", {}, cells(foot, "th"))) : null));
}

export function legend(names) {
  return h("div", { class: "legend" }, names.map((name, i) =>
    h("span", {}, h("span", { class: "swatch", style: `background:${PALETTE[i % PALETTE.length]}` }), name ?? "(none)")));
}

export function title(text) {
  document.title = `${text} · Metering`;
  return h("h2", { text });
}

export function panel(heading, id, ...children) {
  return h("section", { class: "panel", "aria-labelledby": id }, h("h3", { id, text: heading }), ...children);
}
