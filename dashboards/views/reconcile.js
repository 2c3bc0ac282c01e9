// Reconciliation (admin): a provider's own usage report, read from files on this computer, against the
// ledger per UTC day x model (POST /v1/reconcile), each row a match or a drift; the same as CSV or XLSX.

import { ApiError, download, post, query, session } from "../lib/api.js";
import { addDays, presetRange, todayIn } from "../lib/dates.js";
import { card, h, int, money, table, title } from "../lib/dom.js";
import { adminOnly } from "./common.js";

const PROVIDERS = { openai: "OpenAI (organization usage: completions)", anthropic: "Anthropic (usage report: messages)" };
const CLASSES = [["requests", "Requests"], ["input_tokens", "Input"], ["cached_tokens", "Cached"],
  ["cache_write_tokens", "Cache writes"], ["output_tokens", "Output"], ["web_search_requests", "Web searches"]];
const SPLITS = { "": "No split", project_id: "OpenAI project_id", workspace_id: "Anthropic workspace_id",
  api_key_id: "The provider's api_key_id" };

function readFile(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error(`${file.name}: could not be read`));
    reader.readAsText(file);
  });
}

// The pages of the report: each file one page or an array of pages (as a script paging through the
// provider's admin API saves them). Token counts stay far below 2^53, so JSON.parse keeps them exact.
async function pagesOf(files) {
  const pages = [];
  for (const file of files) {
    let parsed;
    try {
      parsed = JSON.parse(await readFile(file));
    } catch (err) {
      throw new Error(`${file.name}: not JSON (${err.message})`);
    }
    pages.push(...(Array.isArray(parsed) ? parsed : [parsed]));
  }
  return pages;
}

function signed(n) {
  return n === null || n === undefined ? "—" : n > 0 ? `+${int(n)}` : int(n);
}

function diffCell(row, name, provider) {
  const d = row.difference[name];
  const detail = d === null ? `${provider} does not report this` : `${provider} ${int(row.provider[name])} · ledger `
    + `${int(row.ledger[name])}${row.relative_difference[name] ? ` · relative ${row.relative_difference[name]}` : ""}`;
  return h("span", { title: detail, class: d ? "changed" : null }, signed(d));
}

function notes(summary) {
  const items = [
    summary.warning,
    summary.days_not_covered.length ? `Days the report does not cover: ${summary.days_not_covered.join(", ")}` : null,
    summary.days_partially_covered.length ? `Days covered in part: ${summary.days_partially_covered.join(", ")}` : null,
    summary.days_outside_range.length ? `Days in the report outside the range (left out): ${summary.days_outside_range.join(", ")}` : null,
    summary.unpriced_models.length ? `Models our rate card does not price (no costs): ${summary.unpriced_models.join(", ")}` : null,
    summary.not_reported.length ? `Not in this report, so not compared: ${summary.not_reported.join(", ")}` : null,
    `Tolerance ${summary.tolerance}: ${summary.tolerance_rule}.`,
    `Costs: ${summary.cost_rule}.`,
  ].filter(Boolean);
  return h("ul", { class: "notes" }, items.map((text) => h("li", { text })));
}

function results(result, request) {
  const { summary, rows } = result;
  const split = summary.split !== null;
  const compared = CLASSES.filter(([name]) => !summary.not_reported.includes(name)); // the others are listed in the notes
  const show = h("select", { name: "show" }, h("option", { value: "", text: "All rows" }),
    h("option", { value: "drift", text: "Drift only" }), h("option", { value: "match", text: "Match only" }));
  const count = h("p", { class: "muted", role: "status", "data-figure": "recon-count" });
  const holder = h("div", {});
  const render = () => {
    const shown = rows.filter((r) => !show.value || r.status === show.value);
    count.textContent = `${shown.length} of ${rows.length} rows`;
    holder.replaceChildren(table(
      ["Date", "Model", ...(split ? ["Group"] : []), "Status", ...compared.map(([, label]) => ({ label: `${label} Δ`, num: true })),
        { label: "Provider cost", num: true }, { label: "Ledger cost", num: true }, { label: "Cost Δ", num: true }, "Reasons"],
      shown.map((r) => [r.date, r.model, ...(split ? [r.group ?? "—"] : []),
        h("span", { class: `badge ${r.status}`, text: r.status }),
        ...compared.map(([name]) => diffCell(r, name, summary.provider)),
        money(r.provider_cost), money(r.ledger_cost), money(r.cost_difference),
        h("span", { class: "reasons", text: [...r.reasons, ...r.notes].join("; ") || "—" })]),
      { id: "recon-table", stack: true, caption: "Δ = the provider's figure minus the ledger's; hover over a cell for both.",
        rowAttrs: (i) => ({ "data-row": `${shown[i].date} ${shown[i].model}${split ? ` ${shown[i].group}` : ""}`,
          "data-status": shown[i].status }) }));
  };
  show.addEventListener("change", render);
  render();
  const saved = h("p", { class: "muted", role: "status", "data-figure": "recon-saved" });
  const save = async (format) => {
    saved.classList.remove("error");
    try {
      const response = await post(`/v1/reconcile?${query({ ...request.params, format })}`, request.body);
      const file = await download(response, `reconcile.${format}`);
      saved.textContent = `Saved ${file.name}.`;
    } catch (err) {
      saved.classList.add("error");
      saved.textContent = `Could not download: ${err.message}`;
    }
  };
  return [
    h("div", { class: "cards" },
      card("Status", h("span", { class: `badge ${summary.status}`, text: summary.status }),
        `${summary.provider} · ${summary.start} to ${addDays(summary.end, -1)} (UTC)`, "recon-status"),
      card("Rows", `${int(summary.match)} match · ${int(summary.drift)} drift`, `${int(summary.rows)} day × model rows`, "recon-rows"),
      card("Provider's usage at our prices", money(summary.provider_cost), null, "recon-provider-cost"),
      card("Ledger", money(summary.ledger_cost), null, "recon-ledger-cost"),
      card("Difference", money(summary.cost_difference), "provider minus ledger", "recon-cost-difference")),
    notes(summary),
    h("form", { class: "controls", "aria-label": "Rows", onsubmit: (e) => e.preventDefault() },
      h("label", {}, "Show", show),
      h("button", { type: "button", "data-download": "recon-csv", onclick: () => save("csv"), text: "Download CSV" }),
      h("button", { type: "button", "data-download": "recon-xlsx", onclick: () => save("xlsx"), text: "Download XLSX" })),
    saved, count, holder,
  ];
}

export function reconcile() {
  if (!session.admin) return adminOnly("Reconciliation");
  const [start, end] = presetRange("last-7", todayIn("UTC"));
  const out = h("section", { class: "panel", "aria-label": "Result", id: "recon-result", hidden: true });
  const error = h("p", { role: "alert", hidden: true }); // .error only while it shows one
  const form = h("form", { class: "controls", "aria-label": "Report", onsubmit: async (e) => {
    e.preventDefault();
    const data = new FormData(form);
    const through = form.querySelector("[name=through]");
    through.setCustomValidity(through.value && through.value < data.get("start")
      ? "The last day must not be before the first day." : "");
    if (!form.reportValidity()) return;
    error.hidden = true;
    error.classList.remove("error");
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const pages = await pagesOf(form.querySelector("input[type=file]").files);
      const params = { provider: data.get("provider"), start: data.get("start"), end: addDays(data.get("through"), 1),
        tolerance: data.get("tolerance").trim(), models: data.get("models").trim(), split_by: data.get("split_by"),
        match_to: data.get("split_by") ? data.get("match_to").trim() : "",
        map: data.get("split_by") ? data.get("map").split(/\s*[\n,]\s*/).filter(Boolean) : [] };
      const request = { params, body: JSON.stringify(pages.length === 1 ? pages[0] : pages) };
      const response = await post(`/v1/reconcile?${query(params)}`, request.body);
      out.replaceChildren(h("h3", { text: "Result" }), ...results(await response.json(), request));
      out.hidden = false;
    } catch (err) {
      out.hidden = true;
      error.textContent = err instanceof ApiError ? `The service refused the report: ${err.message}` : err.message;
      error.classList.add("error");
      error.hidden = false;
    } finally {
      button.disabled = false;
    }
  } },
  h("label", {}, "Provider", h("select", { name: "provider" }, Object.entries(PROVIDERS).map(([v, label]) =>
    h("option", { value: v }, label)))),
  h("label", {}, "From (UTC)", h("input", { type: "date", name: "start", value: start, min: "2000-01-01", max: "2099-12-31",
    required: true })),
  h("label", {}, "Through (UTC)", h("input", { type: "date", name: "through", value: addDays(end, -1), min: "2000-01-01",
    max: "2099-12-31", required: true })),
  h("label", {}, "Tolerance", h("input", { name: "tolerance", inputmode: "decimal", placeholder: "0 = exact", size: 8,
    pattern: "\\s*(0(\\.[0-9]+)?|1(\\.0+)?|\\.[0-9]+)?\\s*", title: "a fraction from 0 to 1: 0.001 allows 0.1%" })),
  h("label", {}, "Models (optional)", h("input", { name: "models", placeholder: "gpt-*, o3-*", size: 14 })),
  h("label", { class: "file" }, "Report files (JSON pages)", h("input", { type: "file", name: "report", multiple: true,
    accept: ".json,application/json", required: true })),
  h("details", { class: "wide" }, h("summary", { text: "Split by the provider's project, workspace or key" }),
    h("div", { class: "controls" },
      h("label", {}, "Split by", h("select", { name: "split_by" }, Object.entries(SPLITS).map(([v, label]) =>
        h("option", { value: v }, label)))),
      h("label", {}, "Our side", h("input", { name: "match_to", value: "api_key_id", size: 14 })),
      h("label", {}, "Map (PROVIDER_ID=OUR_VALUE, one a line)", h("textarea", { name: "map", rows: 3, cols: 30 })))),
  h("button", { type: "submit", text: "Reconcile" }));
  return [
    title("Reconciliation"),
    h("p", { class: "muted", text: "The provider's usage report as its admin API returns it (OpenAI: GET "
      + "/v1/organization/usage/completions with group_by=model; Anthropic: GET /v1/organizations/usage_report/messages "
      + "with group_by[]=model; daily or hourly buckets), compared per UTC day and model with what this service metered." }),
    h("section", { class: "panel" }, form, error),
    out,
  ];
}
